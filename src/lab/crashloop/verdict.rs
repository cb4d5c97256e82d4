//! The checks after the final, uninterrupted pass, and the verdict they add up to.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::observe::{KillStats, Snapshot, Tracker};
use super::world::World;
use batchmirror_sandbox::Stats;

/// What a crash loop found. [`CrashloopVerdict::line`] is the one-line summary.
#[derive(Debug, Clone)]
pub struct CrashloopVerdict {
    pub seed: u64,
    pub loops: u32,
    /// Items with a result to mirror.
    pub items: usize,
    /// Items with a result but no mirrored row and file after the final pass.
    pub lost: usize,
    /// Items whose file or mirrored row ever disagreed with what the sandbox served.
    pub corrupt: usize,
    /// Items published more than once (see [`super::observe`] for how that is caught).
    pub duplicate: usize,
    /// Σ over items of (times served − 1) × length.
    pub refetched_bytes: u64,
    /// Σ over kills of the lengths of the items the ledger had in flight at the kill.
    pub in_flight_bytes: u64,
    /// kills × rows claimed at most × the largest result: the bound the config alone allows.
    pub in_flight_cap_bytes: u64,
    /// `PRAGMA quick_check` after the final pass (`["ok"]` when sound).
    pub quick_check: Vec<String>,
    pub kills: KillStats,
    /// Rows the daemon may hold claimed at once ([`crate::download::claimed_at_most`]).
    pub claimed: usize,
    /// Exit code of the final `sync --once` (None: killed by a signal or timed out).
    pub final_exit: Option<i32>,
    /// Every broken invariant, one line each.
    pub problems: Vec<String>,
    /// How long each result body was held back, so kills find downloads in flight.
    pub result_delay: Duration,
    pub elapsed: Duration,
    /// The mirror, ledger and daemon log, kept when the loop failed (or when asked).
    pub work_dir: Option<PathBuf>,
}

/// Lines of problems printed by [`CrashloopVerdict::details`].
const SHOWN_PROBLEMS: usize = 12;

impl CrashloopVerdict {
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.corrupt == 0
            && self.duplicate == 0
            && self.refetched_bytes <= self.in_flight_bytes
            && self.in_flight_bytes <= self.in_flight_cap_bytes
            && self.quick_check == ["ok"]
            && self.final_exit == Some(0)
            && self.problems.is_empty()
    }

    /// `crashloop seed=… loops=… items=…: 0 lost / 0 corrupt / 0 duplicate / refetched … ≤
    /// in-flight bound … / quick_check ok — PASS`
    pub fn line(&self) -> String {
        let le = cmp(self.refetched_bytes, self.in_flight_bytes);
        let qc = match self.quick_check.as_slice() {
            [one] => one.clone(),
            [] => "missing".to_owned(),
            [first, ..] => format!("{first} (+{} more)", self.quick_check.len() - 1),
        };
        format!(
            "crashloop seed={} loops={} items={}: {} lost / {} corrupt / {} duplicate / refetched {} {le} in-flight bound {} / quick_check {qc} — {}",
            self.seed,
            self.loops,
            self.items,
            self.lost,
            self.corrupt,
            self.duplicate,
            self.refetched_bytes,
            self.in_flight_bytes,
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }

    /// A few lines on how the kills landed, the bounds, and the first problems.
    pub fn details(&self) -> Vec<String> {
        let k = &self.kills;
        let mut out = vec![
            format!(
                "  kills: {} by SIGKILL ({} before their listing finished, {} with downloads in flight, {} between a publish and its commit, {} with items unmirrored, {} with items still pending); {} exited on their own",
                k.kills,
                k.during_listing,
                k.downloads_in_flight,
                k.published_not_recorded,
                k.items_unmirrored,
                k.items_pending,
                k.exited_early
            ),
            format!(
                "  bytes: refetched {} {} in flight at the kills {} {} kills × {} rows claimed × largest result = {}; most rows in flight at one kill: {}",
                self.refetched_bytes,
                cmp(self.refetched_bytes, self.in_flight_bytes),
                self.in_flight_bytes,
                cmp(self.in_flight_bytes, self.in_flight_cap_bytes),
                self.claimed,
                self.in_flight_cap_bytes,
                k.max_in_flight
            ),
            format!(
                "  final sync --once exit {}; result delay {:?}; took {:.1}s",
                self.final_exit
                    .map_or_else(|| "none".to_owned(), |c| c.to_string()),
                self.result_delay,
                self.elapsed.as_secs_f64()
            ),
        ];
        if !self.problems.is_empty() {
            out.push(format!("  {} problem(s):", self.problems.len()));
            out.extend(
                self.problems
                    .iter()
                    .take(SHOWN_PROBLEMS)
                    .map(|p| format!("    {p}")),
            );
        }
        if let Some(dir) = &self.work_dir {
            out.push(format!("  kept for inspection: {}", dir.display()));
        }
        out
    }
}

/// "≤" when the bound holds, ">" when it is broken.
fn cmp(value: u64, bound: u64) -> &'static str {
    if value <= bound { "≤" } else { ">" }
}

/// What the run produced, for [`judge`].
pub(super) struct Outcome<'a> {
    pub seed: u64,
    pub loops: u32,
    pub claimed: usize,
    pub world: &'a World,
    pub tracker: Tracker,
    /// The look after the final pass, with every file hashed.
    pub last: &'a Snapshot,
    pub served: &'a Stats,
    pub final_exit: Option<i32>,
    pub result_delay: Duration,
    pub elapsed: Duration,
}

/// The final checks: every item with a result mirrored once, with the served bytes, in the file
/// and in the ledger; nothing half-written left; each item served at most once more than the
/// kills that found it in flight; the ledger sound.
pub(super) fn judge(o: Outcome<'_>) -> CrashloopVerdict {
    let Outcome {
        world,
        mut tracker,
        last,
        served,
        ..
    } = o;
    let name = |k: usize| format!("{}/{}", world.items[k].batch, world.items[k].item);
    let empty = Default::default();
    let view = last.ledger.as_ref().unwrap_or(&empty);
    if last.ledger.is_none() {
        tracker.problem("no ledger after the final pass".to_owned());
    }
    if !last.parts.is_empty() {
        tracker.problem(format!(
            "{} .part file(s) left after the final pass, e.g. {}",
            last.parts.len(),
            last.parts[0].display()
        ));
    }
    if !view.downloading.is_empty() {
        tracker.problem(format!(
            "{} row(s) still downloading after the final pass",
            view.downloading.len()
        ));
    }
    if last.files.len() != view.mirrored.len() {
        tracker.problem(format!(
            "{} final files but {} mirrored rows",
            last.files.len(),
            view.mirrored.len()
        ));
    }
    let mut lost = 0;
    let mut corrupt = tracker.corrupt.clone();
    let mut over_served = BTreeSet::new();
    let mut refetched_bytes = 0;
    for (k, item) in world.items.iter().enumerate() {
        let key = (item.batch.clone(), item.item.clone());
        let times = served
            .result_requests
            .get(&key)
            .copied()
            .unwrap_or(0)
            .max(served.store_downloads.get(&key).copied().unwrap_or(0));
        let (file, row) = (last.digests.get(&k), view.mirrored.get(&k));
        let Some((sha, len)) = &item.expected else {
            if file.is_some() || row.is_some() {
                tracker.problem(format!("{}: mirrored, but it has no result", name(k)));
            }
            continue;
        };
        let (Some(file), Some(row)) = (file, row) else {
            lost += 1;
            tracker.problem(format!(
                "{}: lost (file {}, mirrored row {})",
                name(k),
                if file.is_some() { "present" } else { "missing" },
                if row.is_some() { "present" } else { "missing" }
            ));
            continue;
        };
        let rel = item.rel.to_string_lossy();
        if file.0 != *sha
            || file.1 != *len
            || row.sha256.as_deref() != Some(sha.as_str())
            || row.bytes != Some(*len)
            || row.path.as_deref() != Some(rel.as_ref())
        {
            corrupt.insert(k);
            tracker.problem(format!(
                "{}: file ({} bytes, {}) or row {row:?} differs from the served {len} bytes, {sha}",
                name(k),
                file.1,
                file.0
            ));
        }
        if times == 0 {
            // The counters would not match the ids, and the check below would pass vacuously.
            tracker.problem(format!(
                "{}: mirrored, but the sandbox never counted it served",
                name(k)
            ));
        }
        // Without injected faults an item is served again only after a kill found it in flight.
        let allowed = 1 + u64::from(tracker.in_flight_kills[k]);
        if times > allowed {
            over_served.insert(k);
            tracker.problem(format!(
                "{}: served {times} times, but only {} kill(s) found it in flight",
                name(k),
                allowed - 1
            ));
        }
        refetched_bytes += times.saturating_sub(1) * len;
    }
    let in_flight_cap_bytes = u64::from(tracker.stats.kills) * o.claimed as u64 * world.max_len();
    let duplicate = tracker.republished.union(&over_served).count();
    CrashloopVerdict {
        seed: o.seed,
        loops: o.loops,
        items: world.succeeded(),
        lost,
        corrupt: corrupt.len(),
        duplicate,
        refetched_bytes,
        in_flight_bytes: tracker.in_flight_bytes,
        in_flight_cap_bytes,
        quick_check: view.quick_check.clone(),
        kills: tracker.stats.clone(),
        claimed: o.claimed,
        final_exit: o.final_exit,
        problems: tracker.problems,
        result_delay: o.result_delay,
        elapsed: o.elapsed,
        work_dir: None,
    }
}
