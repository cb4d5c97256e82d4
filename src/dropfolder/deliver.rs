//! Delivery of finished jobs to the outbox, and what happens when the outbox does not take one.
//!
//! A result is copied to `outbox/<filed>.json` (or `outbox/<filed>.error.txt` says why there is
//! none). [`deliver`](DropFolder::deliver) runs after every pass and every `result_poll`, so a
//! failing write must not be retried, and logged, at that pace forever:
//! - a failure retrying cannot mend (the name refused by the file system: `ENAMETOOLONG`, `EINVAL`,
//!   `EILSEQ`) ends the upload `failed` with the reason, which `status` counts, logged once;
//! - any other failure (outbox missing or read-only, disk full) is retried after a wait doubling
//!   from [`FIRST_WAIT`] up to [`MAX_WAIT`], logged as an error once and then at debug level until
//!   it succeeds, which is logged too.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use backon::BackoffBuilder;
use chrono::Utc;
use tokio::time::Instant;

use super::DropFolder;
use super::files;
use super::names;
use super::submit::{blocking, one_line};
use crate::error::Error;
use crate::ledger::UploadState;
use crate::model::ItemState;

/// The wait after a delivery's first failure.
const FIRST_WAIT: Duration = Duration::from_secs(1);

/// The longest wait between two attempts at one delivery.
const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// One delivery that failed and is waiting for its next attempt.
#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    next_at: Instant,
}

/// The deliveries that failed, by upload id; in memory only, as a restart may well have fixed
/// the cause (and its first attempt is logged again, once).
#[derive(Debug, Default)]
pub(super) struct Retries(Mutex<HashMap<i64, Retry>>);

impl Retries {
    fn due(&self, id: i64, now: Instant) -> bool {
        self.lock().get(&id).is_none_or(|r| r.next_at <= now)
    }

    /// Records one more failure; returns how many in a row and the wait before the next attempt.
    fn failed(&self, id: i64, now: Instant) -> (u32, Duration) {
        let mut map = self.lock();
        let r = map.entry(id).or_insert(Retry {
            failures: 0,
            next_at: now,
        });
        r.failures += 1;
        let wait = wait_after(r.failures);
        r.next_at = now + wait;
        (r.failures, wait)
    }

    /// Forgets `id`; returns the failures it had.
    fn clear(&self, id: i64) -> u32 {
        self.lock().remove(&id).map_or(0, |r| r.failures)
    }

    /// Keeps only the uploads still waiting for delivery.
    fn retain(&self, ids: &[i64]) {
        self.lock().retain(|id, _| ids.contains(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Retry>> {
        // Nothing panics while holding it; a poisoned map is still a correct map.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The wait after `failures` failures in a row: doubling from [`FIRST_WAIT`], capped; backon
/// times it, as it does every other retry. No jitter: one daemon retrying one file has nobody to
/// spread out from.
fn wait_after(failures: u32) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(FIRST_WAIT)
        .with_max_delay(MAX_WAIT)
        .without_max_times()
        .build()
        // Past 2^16 s the cap has long been reached; the bound keeps a huge count cheap.
        .nth(failures.saturating_sub(1).min(16) as usize)
        .unwrap_or(MAX_WAIT)
}

/// True when writing the same name again cannot succeed: the file system refuses the name itself.
fn permanent(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENAMETOOLONG | libc::EINVAL | libc::EILSEQ)
    )
}

impl DropFolder {
    /// Copies every finished job's result into the outbox (or writes why there is none).
    pub async fn deliver(&self) -> Result<usize, Error> {
        let s = &self.settings;
        let limit = self.name_limit();
        let finished = self.ledger.uploads_finished(&s.provider).await?;
        let ids: Vec<i64> = finished.iter().map(|f| f.upload.id).collect();
        self.retries.retain(&ids);
        let mut delivered = 0;
        for f in finished {
            let Some(filed) = f.upload.filed_as.clone() else {
                continue;
            };
            let id = f.upload.id;
            if !self.retries.due(id, Instant::now()) {
                continue;
            }
            let outbox = s.outbox.clone();
            let mirrored = f.item_state == ItemState::Mirrored;
            let (result, why) = match (mirrored, &f.result_path) {
                (true, Some(rel)) => {
                    let src = self.storage_root.join(rel);
                    let name = names::derived(&filed, ".json", limit);
                    let r = blocking(move || publish_once(&outbox, &name, &src)).await;
                    (r, None)
                }
                _ => {
                    let why = one_line(&format!(
                        "no result: the job's item ended {}{}",
                        f.item_state.as_str(),
                        f.item_error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ));
                    let note = format!("{why}\n");
                    let name = names::derived(&filed, ".error.txt", limit);
                    let r = blocking(move || files::publish(&outbox, &name, note.as_bytes())).await;
                    (r, Some(why))
                }
            };
            match result {
                Ok(out) => {
                    let (state, error) = if mirrored {
                        (UploadState::Delivered, None)
                    } else {
                        (UploadState::Failed, f.item_error.as_deref())
                    };
                    self.ledger
                        .upload_finish(id, state, error, Utc::now())
                        .await?;
                    if let Some(why) = why {
                        tracing::error!(file = %filed, outbox = %out, "drop folder: {why}");
                    }
                    let failures = self.retries.clear(id);
                    tracing::info!(
                        file = %filed,
                        outbox = %out,
                        failed_attempts = failures,
                        "drop folder: result delivered"
                    );
                    delivered += 1;
                }
                Err(e) if permanent(&e) => {
                    self.retries.clear(id);
                    let kept = match (&why, f.result_path.as_deref()) {
                        (Some(why), _) => format!("; {why}"),
                        (None, Some(p)) => format!("; the result stays in the mirror at {p}"),
                        (None, None) => String::new(),
                    };
                    let reason = one_line(&format!(
                        "cannot deliver to {}: {e}{kept}",
                        s.outbox.display()
                    ));
                    self.ledger
                        .upload_finish(id, UploadState::Failed, Some(&reason), Utc::now())
                        .await?;
                    tracing::error!(
                        file = %filed,
                        "drop folder: {reason} (retrying cannot help; counted as failed)"
                    );
                }
                Err(e) => {
                    let (failures, wait) = self.retries.failed(id, Instant::now());
                    let why = why.map(|w| format!(" ({w})")).unwrap_or_default();
                    if failures == 1 {
                        tracing::error!(
                            file = %filed,
                            "drop folder: cannot write to the outbox {}: {e}{why}; retried in {}s, \
                             then less and less often (up to every {} min), logged again only once delivered",
                            s.outbox.display(),
                            wait.as_secs(),
                            MAX_WAIT.as_secs() / 60
                        );
                    } else {
                        tracing::debug!(
                            file = %filed,
                            failures,
                            retry_in_s = wait.as_secs(),
                            "drop folder: still cannot write to the outbox {}: {e}",
                            s.outbox.display()
                        );
                    }
                }
            }
        }
        Ok(delivered)
    }
}

/// Publishes `src` as `dir/name`, unless a crash after an earlier publish already left the same
/// bytes there (then that file is the delivery: nothing is written twice).
fn publish_once(dir: &Path, name: &str, src: &Path) -> std::io::Result<String> {
    let existing = dir.join(name);
    if same_bytes(&existing, src)? {
        return Ok(name.to_owned());
    }
    files::publish(dir, name, std::fs::File::open(src)?)
}

/// True when both files exist with the same bytes (compared in chunks, not loaded whole).
fn same_bytes(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return Ok(false);
    };
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_a_second_up_to_ten_minutes() {
        let waits: Vec<u64> = (1..=12).map(|n| wait_after(n).as_secs()).collect();
        assert_eq!(waits[..5], [1, 2, 4, 8, 16]);
        assert_eq!(waits[11], 600);
        assert_eq!(wait_after(u32::MAX), MAX_WAIT);
    }

    #[test]
    fn only_a_refused_name_is_permanent() {
        for errno in [libc::ENAMETOOLONG, libc::EINVAL, libc::EILSEQ] {
            assert!(permanent(&std::io::Error::from_raw_os_error(errno)));
        }
        for errno in [
            libc::ENOSPC,
            libc::EACCES,
            libc::EROFS,
            libc::ENOENT,
            libc::EEXIST,
        ] {
            assert!(!permanent(&std::io::Error::from_raw_os_error(errno)));
        }
        assert!(!permanent(&std::io::Error::other("no free name")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_delivery_is_not_due_until_its_wait_is_over() {
        let r = Retries::default();
        let t0 = Instant::now();
        assert!(r.due(7, t0));
        assert_eq!(r.failed(7, t0), (1, Duration::from_secs(1)));
        assert!(!r.due(7, t0 + Duration::from_millis(999)));
        assert!(r.due(7, t0 + Duration::from_secs(1)));
        assert_eq!(r.failed(7, t0).1, Duration::from_secs(2));
        assert!(r.due(8, t0), "other uploads are not held up");
        r.retain(&[8]);
        assert!(
            r.due(7, t0),
            "forgotten once no longer waiting for delivery"
        );
        assert_eq!(r.clear(7), 0);
    }
}
