//! Measuring a run: wall time, peak RSS and CPU of a child process, sampled from `/proc` while it
//! runs (the crate forbids `unsafe`, so no `wait4`), and the CPU of this process's threads.
//!
//! The child is sampled every [`POLL`]: its peak RSS is the kernel's own high-water mark
//! (`VmHWM`), so only growth in the last few milliseconds before exit could be missed; its CPU is
//! the last sample of `utime + stime`, short by at most one poll interval.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// How often a running child is sampled.
const POLL: Duration = Duration::from_millis(5);
/// `/proc/<pid>/stat` counts CPU in clock ticks; Linux fixes USER_HZ at 100 for user space.
const TICK: Duration = Duration::from_millis(10);

/// What one child run cost.
#[derive(Debug, Clone)]
pub struct Measured {
    pub wall: Duration,
    /// Peak resident set size of the child, in bytes.
    pub peak_rss: u64,
    /// User + system CPU of the child.
    pub cpu: Duration,
    /// CPU this process (the in-process sandbox, mostly) used meanwhile.
    pub host_cpu: Duration,
    pub status: ExitStatus,
}

impl Measured {
    /// This run followed by `next`, as one: times and CPU add up, the peak is the higher one,
    /// the status is the later one's.
    pub fn then(self, next: &Measured) -> Measured {
        Measured {
            wall: self.wall + next.wall,
            peak_rss: self.peak_rss.max(next.peak_rss),
            cpu: self.cpu + next.cpu,
            host_cpu: self.host_cpu + next.host_cpu,
            status: next.status,
        }
    }
}

/// Runs `cmd` to completion, sampling it.
pub async fn run_child(mut cmd: tokio::process::Command) -> std::io::Result<Measured> {
    let host_before = process_cpu("self").unwrap_or_default();
    let started = Instant::now();
    let mut child = cmd.kill_on_drop(true).spawn()?;
    let pid = child.id().map(|p| p.to_string());
    let (mut peak_rss, mut cpu) = (0, Duration::ZERO);
    let status = loop {
        if let Some(pid) = &pid {
            peak_rss = peak_rss.max(peak_rss_of(pid).unwrap_or(0));
            cpu = cpu.max(process_cpu(pid).unwrap_or_default());
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(POLL).await;
    };
    let wall = started.elapsed();
    let host_cpu = process_cpu("self")
        .unwrap_or_default()
        .saturating_sub(host_before);
    Ok(Measured {
        wall,
        peak_rss,
        cpu,
        host_cpu,
        status,
    })
}

/// `VmHWM` of `/proc/<pid>/status`, in bytes.
fn peak_rss_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system CPU of a whole process (`pid` or `self`), from `/proc/<pid>/stat`.
pub fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields follow the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u32 = fields.get(11)?.parse().ok()?;
    let stime: u32 = fields.get(12)?.parse().ok()?;
    Some(TICK * (utime + stime))
}

/// Nanoseconds on CPU per thread of this process, from `/proc/self/task/*/schedstat` (precise,
/// unlike the tick counts of `stat`).
pub fn thread_cpu() -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path().join("schedstat");
        let ns = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
        if let Some(ns) = ns {
            out.insert(task.file_name().to_string_lossy().into_owned(), ns);
        }
    }
    out
}

/// CPU this process spent between two [`thread_cpu`] snapshots. A thread that exited in between
/// is not counted (its time cannot be read any more).
pub fn cpu_between(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> Duration {
    let ns = after
        .iter()
        .map(|(tid, n)| n.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    Duration::from_nanos(ns)
}

/// Total size of the regular files under `dir`, and how many there are; a batchmirror root's lock
/// file is not one of them (no result, and the other tools write none).
pub fn tree_size(dir: &Path) -> std::io::Result<(u64, u64)> {
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![dir.to_owned()];
    let lock = dir.join(crate::storage::ROOT_LOCK);
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() && entry.path() != lock {
                bytes += entry.metadata()?.len();
                files += 1;
            }
        }
    }
    Ok((bytes, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_that_allocates_shows_its_peak_rss_and_cpu() {
        // `sh` reading 64 MiB from /dev/zero into a variable: its peak RSS must exceed that.
        let mut cmd = tokio::process::Command::new("sh");
        // It then sleeps, so the sampler sees the grown process before it exits.
        cmd.args([
            "-c",
            "x=$(head -c 67108864 /dev/zero | tr '\\0' a); sleep 1; echo ${#x}",
        ])
        .stdout(std::process::Stdio::null());
        let m = run_child(cmd).await.unwrap();
        assert!(m.status.success());
        assert!(m.peak_rss > 64 * 1024 * 1024, "{m:?}");
        assert!(m.cpu > Duration::ZERO, "{m:?}");
    }

    #[test]
    fn the_cpu_of_busy_work_on_a_thread_is_counted() {
        let before = thread_cpu();
        // Busy until the kernel says this thread ran 50 ms (CPU time, not wall time).
        let t = std::thread::spawn(|| {
            let own = || {
                std::fs::read_to_string("/proc/thread-self/schedstat")
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap()
            };
            let mut x = 0u64;
            while own() < 50_000_000 {
                for _ in 0..10_000 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            }
            // Read while the thread still exists, so its time is counted.
            thread_cpu()
        });
        let after = t.join().unwrap();
        assert!(cpu_between(&before, &after) >= Duration::from_millis(50));
    }
}
