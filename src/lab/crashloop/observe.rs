//! What the harness sees after each kill (and after the final pass): the mirror's files with their
//! identity, and the ledger's rows, read while no daemon runs; and the [`Tracker`] that compares
//! each look with the ones before.
//!
//! # How a second publish is caught
//!
//! The daemon publishes an item only by renaming a freshly written `<item>.json.part` onto
//! `<item>.json`. The `.part` is a new inode created while any earlier final file still exists, so
//! a second publish always leaves a final file with another inode (and a later mtime, which also
//! covers an inode number reused after two publishes between looks). The tracker remembers each
//! final file's (device, inode, mtime, length) the first time it sees it, and each mirrored row's
//! (sha256, bytes, path); a later look that finds either changed, or gone, counts the item as
//! published twice. Two publishes inside one daemon life, before any look, are caught from the
//! sandbox's side instead ([`super::verdict`]): a publish needs a full body, and without injected
//! faults an item is served more than once only when a kill found it in flight.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::world::{PROVIDER, World};
use crate::ledger::Ledger;
use crate::model::{ItemState, ProviderName};
use crate::storage::{PART_SUFFIX, ROOT_LOCK};

/// A final file's identity: a new publish (rename of a new `.part`) always changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

/// A mirrored row's record of its publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub sha256: Option<String>,
    pub bytes: Option<u64>,
    pub path: Option<String>,
}

/// The ledger as a look found it.
#[derive(Debug, Default)]
pub(super) struct LedgerView {
    pub mirrored: HashMap<usize, Record>,
    pub downloading: Vec<usize>,
    /// Item rows of any state.
    pub rows: u64,
    /// Rows of items not finished at the provider yet.
    pub pending: u64,
    /// When a listing last finished (the ledger's `last_pass_at`).
    pub listed_at: Option<DateTime<Utc>>,
    pub quick_check: Vec<String>,
    /// Rows naming an item the account does not have.
    pub unknown: Vec<String>,
}

/// One look at the mirror and the ledger while no daemon runs.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    pub files: HashMap<usize, FileId>,
    /// sha256 and length of the final files not seen before (each file is hashed once).
    pub digests: HashMap<usize, (String, u64)>,
    pub parts: Vec<PathBuf>,
    pub unexpected: Vec<PathBuf>,
    /// None while no daemon has created the ledger yet.
    pub ledger: Option<LedgerView>,
    /// Why the ledger could not be read, when it exists.
    pub ledger_error: Option<String>,
}

/// Walks the mirror (blocking): identities of final files, hashes of new ones, `.part` files.
pub(super) fn scan_mirror(
    world: &World,
    root: &Path,
    known: &HashMap<usize, FileId>,
) -> std::io::Result<Snapshot> {
    let mut snap = Snapshot::default();
    let mut stack = vec![root.to_owned()];
    // The daemon's lock on the root is neither a result nor a stray.
    let lock = root.join(ROOT_LOCK);
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if path == lock {
                continue;
            }
            if path.to_string_lossy().ends_with(PART_SUFFIX) {
                snap.parts.push(path);
                continue;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let Some(k) = world.by_rel(rel) else {
                snap.unexpected.push(path);
                continue;
            };
            let id = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
                len: meta.len(),
            };
            if known.get(&k) != Some(&id) {
                snap.digests.insert(k, sha256_file(&path)?);
            }
            snap.files.insert(k, id);
        }
    }
    Ok(snap)
}

fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Reads the ledger read-only: mirrored and downloading rows, the row count, `quick_check`.
pub(super) async fn read_ledger(
    world: &World,
    path: &Path,
) -> Result<Option<LedgerView>, crate::error::LedgerError> {
    if !path.exists() {
        return Ok(None);
    }
    let ledger = match Ledger::open_read_only(path) {
        Ok(l) => l,
        // Killed before its first migration committed: as good as no ledger.
        Err(crate::error::LedgerError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let provider = ProviderName::parse(PROVIDER).expect("a valid provider name");
    let mut view = LedgerView::default();
    for state in ItemState::ALL {
        for row in ledger.items_in_state(&provider, state, usize::MAX).await? {
            view.rows += 1;
            let Some(k) = world.index(&row.batch, &row.item) else {
                view.unknown.push(format!("{}/{}", row.batch, row.item));
                continue;
            };
            match state {
                ItemState::Mirrored => {
                    let record = Record {
                        sha256: row.sha256,
                        bytes: row.bytes,
                        path: row.path,
                    };
                    view.mirrored.insert(k, record);
                }
                ItemState::Downloading => view.downloading.push(k),
                ItemState::Pending => view.pending += 1,
                _ => {}
            }
        }
    }
    let names = [(provider, "extract_page".to_owned())];
    let summary = ledger.summary(&names, Utc::now(), Duration::ZERO).await?;
    view.listed_at = summary.first().and_then(|s| s.last_pass_at);
    view.quick_check = ledger.quick_check().await?;
    Ok(Some(view))
}

/// What the kills found, for the verdict and for proving the kills landed mid-work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KillStats {
    /// Daemons killed with SIGKILL.
    pub kills: u32,
    /// Daemons that exited on their own before their kill (`sync --once` that finished).
    pub exited_early: u32,
    /// Kills before the daemon's listing had finished (in start-up, recovery or the listing).
    pub during_listing: u32,
    /// Kills with at least one row `downloading` (claimed, not yet recorded).
    pub downloads_in_flight: u32,
    /// Kills between an item's publish (rename) and its `mirrored` commit.
    pub published_not_recorded: u32,
    /// Kills with items not mirrored yet.
    pub items_unmirrored: u32,
    /// Kills with items the ledger knew as still pending at the provider.
    pub items_pending: u32,
    /// Most rows found `downloading` at one kill.
    pub max_in_flight: usize,
}

/// Compares each look with the ones before; see the module doc for what counts as a second
/// publish.
#[derive(Debug)]
pub(super) struct Tracker {
    /// The most rows the daemon may hold claimed ([`crate::download::claimed_at_most`]).
    claimed: usize,
    seen_file: HashMap<usize, (FileId, u32)>,
    seen_record: HashMap<usize, (Record, u32)>,
    /// Items whose published file vanished (reported once).
    gone: BTreeSet<usize>,
    /// Per item: kills that found its row `downloading`.
    pub in_flight_kills: Vec<u32>,
    /// Σ over kills of the lengths of the items in flight.
    pub in_flight_bytes: u64,
    pub stats: KillStats,
    pub republished: BTreeSet<usize>,
    pub corrupt: BTreeSet<usize>,
    pub problems: Vec<String>,
}

impl Tracker {
    pub(super) fn new(world: &World, claimed: usize) -> Tracker {
        Tracker {
            claimed,
            seen_file: HashMap::new(),
            seen_record: HashMap::new(),
            gone: BTreeSet::new(),
            in_flight_kills: vec![0; world.items.len()],
            in_flight_bytes: 0,
            stats: KillStats::default(),
            republished: BTreeSet::new(),
            corrupt: BTreeSet::new(),
            problems: Vec::new(),
        }
    }

    /// Identities already seen, so a look hashes only new files.
    pub(super) fn known_files(&self) -> HashMap<usize, FileId> {
        self.seen_file
            .iter()
            .map(|(k, (id, _))| (*k, *id))
            .collect()
    }

    pub(super) fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    /// Takes in the look after loop `at`, whose daemon started at `started`; `killed`: it ended
    /// by SIGKILL, so its rows in flight count.
    pub(super) fn observe(
        &mut self,
        world: &World,
        snap: &Snapshot,
        at: u32,
        started: DateTime<Utc>,
        killed: bool,
    ) {
        let name = |k: usize| format!("{}/{}", world.items[k].batch, world.items[k].item);
        for (&k, id) in &snap.files {
            self.gone.remove(&k);
            match self.seen_file.get(&k) {
                None => {
                    self.seen_file.insert(k, (*id, at));
                }
                Some((seen, since)) if seen != id => {
                    let since = *since;
                    self.republished.insert(k);
                    self.problem(format!(
                        "{}: final file replaced after loop {at} (seen after loop {since}): published twice",
                        name(k)
                    ));
                    // Each further publish is reported once too.
                    self.seen_file.insert(k, (*id, at));
                }
                Some(_) => {}
            }
            if let Some(digest) = snap.digests.get(&k) {
                match &world.items[k].expected {
                    Some(want) if want == digest => {}
                    Some(_) => {
                        self.corrupt.insert(k);
                        self.problem(format!(
                            "{}: final file after loop {at} differs from what was served",
                            name(k)
                        ));
                    }
                    None => self.problem(format!(
                        "{}: a final file for an item that has no result",
                        name(k)
                    )),
                }
            }
        }
        // A file that vanished keeps its old identity: if it comes back, that is a second publish.
        let vanished: Vec<usize> = self
            .seen_file
            .keys()
            .filter(|k| !snap.files.contains_key(k) && !self.gone.contains(k))
            .copied()
            .collect();
        for k in vanished {
            self.gone.insert(k);
            self.problem(format!("{}: published file gone after loop {at}", name(k)));
        }
        for p in &snap.unexpected {
            self.problems
                .push(format!("unexpected file in the mirror: {}", p.display()));
        }
        if let Some(e) = &snap.ledger_error {
            self.problem(format!("ledger unreadable after loop {at}: {e}"));
        }
        let Some(view) = &snap.ledger else {
            if snap.ledger_error.is_none() && !snap.files.is_empty() {
                self.problem(format!("files published after loop {at} but no ledger"));
            }
            if killed {
                // Killed before the ledger existed: start-up, before any listing.
                self.stats.kills += 1;
                self.stats.during_listing += 1;
                self.stats.items_unmirrored += 1;
            }
            return;
        };
        self.check_ledger(world, snap, view, at);
        if killed {
            self.count_kill(world, snap, view, started);
        }
    }

    fn check_ledger(&mut self, world: &World, snap: &Snapshot, view: &LedgerView, at: u32) {
        let name = |k: usize| format!("{}/{}", world.items[k].batch, world.items[k].item);
        for u in &view.unknown {
            self.problem(format!("ledger row for an item the account lacks: {u}"));
        }
        if view.quick_check != ["ok"] {
            self.problem(format!(
                "quick_check after loop {at}: {}",
                view.quick_check.join("; ")
            ));
        }
        if view.downloading.len() > self.claimed {
            self.problem(format!(
                "{} rows downloading after loop {at}, more than the {} a daemon claims at once",
                view.downloading.len(),
                self.claimed
            ));
        }
        for (&k, record) in &view.mirrored {
            if !snap.files.contains_key(&k) {
                self.problem(format!(
                    "{}: mirrored in the ledger after loop {at} but its file is missing",
                    name(k)
                ));
            }
            match self.seen_record.get(&k) {
                None => {
                    self.seen_record.insert(k, (record.clone(), at));
                }
                Some((seen, since)) if seen != record => {
                    let since = *since;
                    self.republished.insert(k);
                    self.problem(format!(
                        "{}: mirrored row re-recorded after loop {at} (seen after loop {since}): {seen:?} → {record:?}",
                        name(k)
                    ));
                    self.seen_record.insert(k, (record.clone(), at));
                }
                Some(_) => {}
            }
        }
        let unmirrored: Vec<usize> = self
            .seen_record
            .keys()
            .filter(|k| !view.mirrored.contains_key(k))
            .copied()
            .collect();
        for k in unmirrored {
            self.seen_record.remove(&k);
            self.republished.insert(k);
            self.problem(format!(
                "{}: was mirrored, no longer is after loop {at}",
                name(k)
            ));
        }
        for &k in snap.files.keys() {
            if !view.mirrored.contains_key(&k) && !view.downloading.contains(&k) {
                self.problem(format!(
                    "{}: file published after loop {at} but its row is neither mirrored nor in flight",
                    name(k)
                ));
            }
        }
    }

    fn count_kill(
        &mut self,
        world: &World,
        snap: &Snapshot,
        view: &LedgerView,
        started: DateTime<Utc>,
    ) {
        let s = &mut self.stats;
        s.kills += 1;
        s.max_in_flight = s.max_in_flight.max(view.downloading.len());
        // Listing ends with `record_pass`; every life lists again (page cursors are not kept).
        if view.rows < world.items.len() as u64 || view.listed_at.is_none_or(|t| t < started) {
            s.during_listing += 1;
        }
        if !view.downloading.is_empty() {
            s.downloads_in_flight += 1;
        }
        if view.downloading.iter().any(|k| snap.files.contains_key(k)) {
            s.published_not_recorded += 1;
        }
        if view.mirrored.len() < world.succeeded() {
            s.items_unmirrored += 1;
        }
        if view.pending > 0 {
            s.items_pending += 1;
        }
        for &k in &view.downloading {
            self.in_flight_kills[k] += 1;
            self.in_flight_bytes += world.len(k);
        }
    }
}
