//! Noticing files in the inbox: `notify` events (inotify, or polling where no events arrive) and
//! the settling rule that decides when a file is complete.
//!
//! Events are hints, never the only source: the inbox is also rescanned in full at start, on an
//! event-queue overflow and on a timer, so a lost event delays a file but never loses it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{Event, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::files::Stamp;
use crate::config::WatchMode;

/// What an event says about an inbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created or written to: a writer may still be at work.
    Written(OsString),
    /// Closed after writing, or moved in whole: complete once it also settles.
    Closed(OsString),
    /// Events were lost or are unreliable: scan the whole inbox.
    Rescan,
}

/// A running watcher; dropping it stops the events.
pub struct Watch {
    _watcher: Box<dyn Watcher + Send>,
    /// The mode actually used (`auto` resolved).
    pub mode: WatchMode,
    pub changes: mpsc::UnboundedReceiver<Change>,
}

/// File systems where inotify sees only local changes, i.e. usually none: network and FUSE.
fn is_remote_fs(fstype: &str) -> bool {
    matches!(
        fstype,
        "nfs" | "nfs4" | "cifs" | "smb3" | "smbfs" | "9p" | "afs" | "ceph" | "fuseblk" | "fuse"
    ) || fstype.starts_with("fuse.")
}

/// The file system type of the mount holding `path`, from `/proc/self/mountinfo` (the longest
/// mount point that contains it).
pub fn fs_type(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount), Some(fstype)) = (fields.get(4), fields.get(sep + 1)) else {
            continue;
        };
        // mountinfo escapes spaces and the like as octal (\040).
        let mount = mount.replace("\\040", " ").replace("\\011", "\t");
        if path.starts_with(&mount) && best.as_ref().is_none_or(|(len, _)| mount.len() >= *len) {
            best = Some((mount.len(), (*fstype).to_owned()));
        }
    }
    best.map(|(_, t)| t)
}

/// Resolves `auto`: polling on network and FUSE mounts, inotify elsewhere.
pub fn resolve(mode: WatchMode, inbox: &Path) -> WatchMode {
    match mode {
        WatchMode::Auto => match fs_type(inbox) {
            Some(t) if is_remote_fs(&t) => {
                tracing::info!(
                    inbox = %inbox.display(),
                    fs = %t,
                    "the drop folder is on a network or FUSE file system, where inotify gets no events: polling it instead"
                );
                WatchMode::Poll
            }
            _ => WatchMode::Inotify,
        },
        other => other,
    }
}

/// `polling`: a poller sees changes but no opens or closes, so a change only restarts the settle
/// time (it never marks a writer that no close would ever clear).
fn translate(
    event: notify::Result<Event>,
    inbox: &Path,
    polling: bool,
    tx: &mpsc::UnboundedSender<Change>,
) {
    let event = match event {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("drop folder watch error, rescanning: {e}");
            let _ = tx.send(Change::Rescan);
            return;
        }
    };
    if event.need_rescan() {
        let _ = tx.send(Change::Rescan);
        return;
    }
    let names = || {
        event
            .paths
            .iter()
            .filter(|p| p.parent() == Some(inbox))
            .filter_map(|p| p.file_name().map(OsString::from))
    };
    let send = |make: fn(OsString) -> Change, names: &mut dyn Iterator<Item = OsString>| {
        for n in names {
            let _ = tx.send(make(n));
        }
    };
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
            send(Change::Closed, &mut names())
        }
        // Moved in whole (`mv` from elsewhere, or a writer's rename of its temp file).
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => send(Change::Closed, &mut names()),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            if let Some(to) = event.paths.get(1).filter(|p| p.parent() == Some(inbox))
                && let Some(n) = to.file_name()
            {
                let _ = tx.send(Change::Closed(n.to_owned()));
            }
        }
        EventKind::Create(_) | EventKind::Modify(_) if polling => {
            send(Change::Closed, &mut names())
        }
        // chmod, touch, a link count change: no writer involved, only the settle time restarts
        // (as Written it would wait for a close that never comes).
        EventKind::Modify(ModifyKind::Metadata(_)) => send(Change::Closed, &mut names()),
        EventKind::Create(_) | EventKind::Modify(_) => send(Change::Written, &mut names()),
        // Opens (ours included), reads and removals change nothing: the next stat sees a
        // removal.
        _ => {}
    }
}

/// Starts watching `inbox` (not recursive). `poll_every` paces the polling watcher.
pub fn start(inbox: &Path, mode: WatchMode, poll_every: Duration) -> notify::Result<Watch> {
    let (tx, changes) = mpsc::unbounded_channel();
    let mode = resolve(mode, inbox);
    let dir: PathBuf = inbox.canonicalize().unwrap_or_else(|_| inbox.to_owned());
    let handler = {
        let dir = dir.clone();
        let polling = mode == WatchMode::Poll;
        move |e: notify::Result<Event>| translate(e, &dir, polling, &tx)
    };
    let mut watcher: Box<dyn Watcher + Send> = match mode {
        WatchMode::Poll => Box::new(notify::PollWatcher::new(
            handler,
            notify::Config::default().with_poll_interval(poll_every),
        )?),
        _ => Box::new(notify::RecommendedWatcher::new(
            handler,
            notify::Config::default(),
        )?),
    };
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(Watch {
        _watcher: watcher,
        mode,
        changes,
    })
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    stamp: Option<Stamp>,
    since: Instant,
    /// A write event came and no close yet (only trusted when events are).
    writing: bool,
}

/// Decides when an entry is complete: no writer known to hold it open (with inotify: a
/// close-after-write or a move-in came after the last write), and size and mtime unchanged for
/// `settle`.
#[derive(Debug)]
pub struct Settler {
    settle: Duration,
    /// A writer silent this long (no event, same size and mtime) is presumed gone: its close may
    /// have been lost with an event-queue overflow.
    stale_writer: Duration,
    files: HashMap<OsString, Tracked>,
}

impl Settler {
    pub fn new(settle: Duration, stale_writer: Duration) -> Self {
        Self {
            settle,
            stale_writer,
            files: HashMap::new(),
        }
    }

    /// Applies an event's word on `name`.
    pub fn change(&mut self, change: &Change, now: Instant) {
        let (name, writing) = match change {
            Change::Written(n) => (n, true),
            Change::Closed(n) => (n, false),
            Change::Rescan => return,
        };
        let t = self.files.entry(name.clone()).or_insert(Tracked {
            stamp: None,
            since: now,
            writing,
        });
        t.writing = writing;
        t.since = now;
    }

    /// A scan found `name`: tracked from now unless it already is.
    pub fn seen(&mut self, name: &OsString, now: Instant) {
        let t = self.files.entry(name.clone()).or_insert(Tracked {
            stamp: None,
            since: now,
            writing: false,
        });
        if t.writing && now.duration_since(t.since) >= self.stale_writer {
            t.writing = false;
        }
    }

    /// Stops tracking `name` (taken, refused or gone); a later event or scan tracks it anew.
    pub fn forget(&mut self, name: &OsString) {
        self.files.remove(name);
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Re-stats every tracked entry with `stat` (None = gone) and returns those complete now,
    /// with the stamp they settled at. Entries `stat` refuses are returned too (as `Err`), once.
    pub fn due<E>(
        &mut self,
        now: Instant,
        mut stat: impl FnMut(&OsString) -> Result<Option<Stamp>, E>,
    ) -> Vec<(OsString, Result<Stamp, E>)> {
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (name, t) in &mut self.files {
            match stat(name) {
                Ok(None) => gone.push(name.clone()),
                Err(e) => out.push((name.clone(), Err(e))),
                Ok(Some(s)) => {
                    if t.stamp != Some(s) {
                        t.stamp = Some(s);
                        t.since = now;
                    } else if !t.writing && now.duration_since(t.since) >= self.settle {
                        out.push((name.clone(), Ok(s)));
                    }
                }
            }
        }
        for name in gone.iter().chain(out.iter().map(|(n, _)| n)) {
            self.files.remove(name);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn stamp(size: u64) -> Stamp {
        Stamp {
            size,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(size),
        }
    }

    fn due(s: &mut Settler, now: Instant, size: u64) -> Vec<OsString> {
        s.due(now, |_| Ok::<_, ()>(Some(stamp(size))))
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn a_growing_file_is_never_due_and_a_still_one_is_after_settle() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut s = Settler::new(Duration::from_secs(2), Duration::from_secs(300));
        let a = OsString::from("a.pdf");
        s.seen(&a, t0);
        // Growing by a little every second (a 1 KB/s writer): never due.
        for i in 0..10u32 {
            assert!(due(&mut s, t0 + sec * i, u64::from(i)).is_empty());
        }
        // Then still: due once 2 s have passed with the same stamp, and only then.
        // The last change was seen at 9 s.
        assert!(due(&mut s, t0 + sec * 10, 9).is_empty());
        assert_eq!(due(&mut s, t0 + sec * 11, 9), vec![a.clone()]);
        assert!(s.is_empty(), "a due file is handed over once");
    }

    #[test]
    fn with_events_a_file_open_for_writing_waits_for_its_close() {
        let t0 = Instant::now();
        let mut s = Settler::new(Duration::from_secs(2), Duration::from_secs(300));
        let a = OsString::from("scan.pdf");
        s.change(&Change::Written(a.clone()), t0);
        // A writer that pauses longer than settle is still not done.
        assert!(due(&mut s, t0, 5).is_empty());
        assert!(due(&mut s, t0 + Duration::from_secs(60), 5).is_empty());
        s.change(&Change::Closed(a.clone()), t0 + Duration::from_secs(61));
        assert!(due(&mut s, t0 + Duration::from_secs(62), 5).is_empty());
        assert_eq!(due(&mut s, t0 + Duration::from_secs(64), 5), vec![a]);
    }

    #[test]
    fn a_writer_silent_past_the_stale_limit_is_presumed_gone_at_the_next_scan() {
        let t0 = Instant::now();
        let mut s = Settler::new(Duration::from_secs(2), Duration::from_secs(300));
        let a = OsString::from("lost-close.pdf");
        s.change(&Change::Written(a.clone()), t0);
        s.seen(&a, t0 + Duration::from_secs(299));
        assert!(due(&mut s, t0 + Duration::from_secs(299), 5).is_empty());
        // The stamp settles from here; the writer is still presumed active until the limit.
        assert!(due(&mut s, t0 + Duration::from_secs(302), 5).is_empty());
        // Unchanged for 300 s by the next scan: taken, since its stamp has long settled.
        s.seen(&a, t0 + Duration::from_secs(602));
        assert_eq!(due(&mut s, t0 + Duration::from_secs(602), 5), vec![a]);
    }

    #[test]
    fn vanished_files_are_dropped_and_refusals_reported_once() {
        let t0 = Instant::now();
        let mut s = Settler::new(Duration::ZERO, Duration::from_secs(300));
        let (a, b) = (OsString::from("a"), OsString::from("b"));
        s.seen(&a, t0);
        s.seen(&b, t0);
        let out = s.due(t0, |n| if *n == a { Ok(None) } else { Err("fifo") });
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, b);
        assert!(s.is_empty());
    }

    #[test]
    fn network_and_fuse_mounts_poll() {
        for t in ["nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "fuseblk", "9p"] {
            assert!(is_remote_fs(t), "{t}");
        }
        for t in ["ext4", "xfs", "btrfs", "tmpfs", "overlay"] {
            assert!(!is_remote_fs(t), "{t}");
        }
        assert!(fs_type(Path::new("/")).is_some(), "/ has a mount");
    }
}

#[cfg(test)]
mod live {
    use super::*;

    #[tokio::test]
    async fn inotify_reports_writes_and_the_close() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = start(dir.path(), WatchMode::Inotify, Duration::from_millis(100)).unwrap();
        assert_eq!(w.mode, WatchMode::Inotify);
        {
            use std::io::Write;
            let mut f = std::fs::File::create(dir.path().join("a.pdf")).unwrap();
            f.write_all(b"x").unwrap();
        }
        let mut seen = Vec::new();
        while let Ok(Some(c)) =
            tokio::time::timeout(Duration::from_millis(500), w.changes.recv()).await
        {
            seen.push(c);
        }
        let a = OsString::from("a.pdf");
        assert_eq!(seen.first(), Some(&Change::Written(a.clone())), "{seen:?}");
        assert_eq!(seen.last(), Some(&Change::Closed(a)), "{seen:?}");
    }
}
