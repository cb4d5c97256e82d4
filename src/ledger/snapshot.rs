//! The dry run's side of the ledger: a throwaway copy of the real ledger ([`snapshot_into`]) that
//! a listing may write into, and the plan read back from it ([`Ledger::plan`]): what a pass would
//! fetch, what it would lose, what is not ready yet.
//!
//! The copy is taken without the ledger lock, so a dry run works while the daemon holds the real
//! ledger; the real file is only read, and no file appears beside it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};

use super::queries::NOT_FINAL;
use super::report::{Listed, listed};
use super::rows::ms;
use super::{Ledger, schema};
use crate::error::LedgerError;
use crate::model::ProviderName;

/// Copies the ledger at `src` into a new file `dest`, one consistent state of it even while a
/// daemon writes `src`, leaving `src` and the files beside it as they were. A missing `src`
/// copies nothing: opening `dest` then starts an empty ledger, which is what the first pass
/// would start from.
pub fn snapshot_into(src: &Path, dest: &Path) -> Result<(), LedgerError> {
    let io = |path: &Path, action, source| LedgerError::Io {
        path: path.to_owned(),
        action,
        source,
    };
    if !src
        .try_exists()
        .map_err(|e| io(src, "look for the ledger", e))?
    {
        return Ok(());
    }
    if !copy_if_closed(src, dest)? {
        vacuum_into(src, dest)?;
    }
    // Checked on the copy, so the real file is never opened twice, but named as the real one.
    let conn = Connection::open_with_flags(dest, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| schema::open_error(src, e))?;
    schema::check_not_too_new(schema::user_version(&conn, src)?, src)
}

/// `<path><suffix>`, a file SQLite keeps beside the database.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Copies the file's bytes when no connection has the ledger open (no `-wal`, no `-journal`
/// beside it: the file alone is the whole database). A SQLite connection, even a read-only one,
/// would create `-wal` and `-shm` files that only a writer removes again. False when a
/// connection is open, or came and went during the copy (the file changed under it).
fn copy_if_closed(src: &Path, dest: &Path) -> Result<bool, LedgerError> {
    let io = |path: &Path, action, source| LedgerError::Io {
        path: path.to_owned(),
        action,
        source,
    };
    let open = || ["-wal", "-journal"].iter().any(|s| beside(src, s).exists());
    let stamp = || {
        std::fs::metadata(src)
            .and_then(|m| Ok((m.len(), m.modified()?)))
            .map_err(|e| io(src, "read the ledger's metadata", e))
    };
    if open() {
        return Ok(false);
    }
    let before = stamp()?;
    std::fs::copy(src, dest).map_err(|e| io(src, "copy the ledger", e))?;
    if !open() && stamp()? == before {
        return Ok(true);
    }
    std::fs::remove_file(dest).map_err(|e| io(dest, "remove a torn copy of the ledger", e))?;
    Ok(false)
}

/// `VACUUM INTO` through a read-only connection: SQLite's own consistent read, beside a daemon
/// that has the ledger open (its `-wal` and `-shm` files exist already, and it removes them).
fn vacuum_into(src: &Path, dest: &Path) -> Result<(), LedgerError> {
    let conn = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| schema::open_error(src, e))?;
    conn.busy_timeout(schema::BUSY_TIMEOUT)
        .map_err(|e| schema::open_error(src, e))?;
    let dest = dest.to_str().ok_or_else(|| LedgerError::Io {
        path: dest.to_owned(),
        action: "copy the ledger (the copy's path is not UTF-8)",
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    conn.execute("VACUUM INTO ?1", [dest])
        .map_err(|e| schema::open_error(src, e))?;
    Ok(())
}

/// What a pass starting now would do with the ledger's items, per [`Ledger::plan`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Due and not past their deadline: what the downloader would claim, in its order.
    pub fetch: Listed,
    /// Sum of the known sizes of all of `fetch` (listings rarely give one).
    pub fetch_bytes: u64,
    /// Not mirrored and past their deadline: the provider may already have deleted them.
    pub lose: Listed,
    /// Not finished at the provider yet (and not past their deadline).
    pub not_ready: u64,
    /// Ready, but waiting for their next attempt after a failed one: not fetched this pass.
    pub deferred: u64,
    /// Marked lost by earlier passes (reported then; not this pass's loss).
    pub lost_before: u64,
}

/// Would be fetched: what `claim_due` selects (ready, next attempt due), minus the items whose
/// deadline has passed (those are [`lose`]); rows left `downloading` count too, because start-up
/// recovery releases them to be claimed again (or a running daemon is fetching them now).
const FETCH: &str = "state IN ('ready', 'downloading')
     AND (next_attempt_at IS NULL OR next_attempt_at <= ?2)
     AND (deadline IS NULL OR deadline > ?2)";
/// `claim_due`'s order: deadlines first, earliest first, then the rest by next attempt.
const FETCH_ORDER: &str =
    "deadline IS NULL, deadline, next_attempt_at, provider, batch_id, item_id";
/// Past the deadline and not mirrored: pending, ready or in flight.
fn lose() -> String {
    format!("state IN {NOT_FINAL} AND deadline <= ?2")
}

impl Ledger {
    /// The plan of a pass starting at `now` over `providers`' items: the first `limit` items to
    /// fetch and to lose (each counted in full), and the counts of the rest.
    pub async fn plan(
        &self,
        providers: &[ProviderName],
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Plan, LedgerError> {
        let providers: Vec<String> = providers.iter().map(|p| p.as_str().to_owned()).collect();
        let now = ms(now);
        self.run(move |c| {
            // A first page of none: only the count is wanted.
            let count = |filter: &str, args: &[i64]| {
                listed(c, &providers, filter, args, "provider", 0).map(|l| l.count)
            };
            let fetch_bytes: i64 = c
                .prepare_cached(&format!(
                    "SELECT COALESCE(SUM(bytes), 0) FROM items
                     WHERE provider IN (SELECT value FROM json_each(?1)) AND ({FETCH})"
                ))?
                .query_row(
                    rusqlite::params![serde_json::to_string(&providers).unwrap_or_default(), now],
                    |r| r.get(0),
                )?;
            Ok(Plan {
                fetch: listed(c, &providers, FETCH, &[now], FETCH_ORDER, limit)?,
                fetch_bytes: u64::try_from(fetch_bytes).unwrap_or(0),
                lose: listed(
                    c,
                    &providers,
                    &lose(),
                    &[now],
                    "deadline, provider, batch_id, item_id",
                    limit,
                )?,
                not_ready: count(
                    "state = 'pending' AND (deadline IS NULL OR deadline > ?2)",
                    &[now],
                )?,
                deferred: count(
                    "state = 'ready' AND next_attempt_at > ?2 AND (deadline IS NULL OR deadline > ?2)",
                    &[now],
                )?,
                lost_before: count("state = 'lost'", &[])?,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        BatchId, BatchStatus, DueItem, ItemId, RemoteBatch, RemoteItem, RemoteStatus,
    };

    fn name() -> ProviderName {
        ProviderName::parse("ep").unwrap()
    }

    /// A ledger with items ready (some without a deadline), one deferred, one pending, one
    /// past its deadline and one lost.
    async fn seeded(ledger: &Ledger) {
        let now = Utc::now();
        let b = BatchId::parse("b").unwrap();
        let batch = RemoteBatch {
            id: b.clone(),
            status: BatchStatus::Running,
            total_items: None,
            created_at: Some(now),
            expires_at: None,
        };
        ledger.upsert_batches(&name(), &[batch], now).await.unwrap();
        let hours = |h: i64| Some(now + chrono::Duration::hours(h));
        let items = [
            ("late", RemoteStatus::Succeeded, hours(30)),
            ("soon", RemoteStatus::Succeeded, hours(2)),
            ("none", RemoteStatus::Succeeded, None),
            ("mid", RemoteStatus::Succeeded, hours(10)),
            ("deferred", RemoteStatus::Succeeded, hours(5)),
            ("running", RemoteStatus::Running, hours(5)),
            ("past", RemoteStatus::Succeeded, hours(-1)),
            ("gone", RemoteStatus::Succeeded, hours(3)),
        ];
        for (id, status, deadline) in items {
            let item = RemoteItem {
                id: ItemId::parse(id).unwrap(),
                status,
                deadline,
                error: None,
                locator: None,
            };
            ledger
                .apply_item_page(&name(), &b, None, &[item], None, now)
                .await
                .unwrap();
            let due = DueItem {
                provider: name(),
                batch: b.clone(),
                item: ItemId::parse(id).unwrap(),
                deadline,
                attempts: 0,
                locator: None,
            };
            match id {
                "deferred" => ledger
                    .mark_retry(&due, "reset", now + chrono::Duration::hours(1))
                    .await
                    .unwrap(),
                "gone" => ledger.mark_lost(&due, "HTTP 410").await.unwrap(),
                _ => {}
            }
        }
    }

    /// The plan lists, in order, what the downloader would claim, except what is past its
    /// deadline; the rest is counted where it belongs.
    #[tokio::test]
    async fn the_plan_is_what_the_downloader_claims_minus_the_past_deadlines() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("l.db")).unwrap();
        seeded(&ledger).await;
        let now = Utc::now();
        let plan = ledger.plan(&[name()], now, 2).await.unwrap();
        let ids = |l: &Listed| l.first.iter().map(|r| r.item.clone()).collect::<Vec<_>>();
        assert_eq!(
            (plan.fetch.count, ids(&plan.fetch)),
            (4, vec!["soon".into(), "mid".into()])
        );
        assert_eq!((plan.lose.count, ids(&plan.lose)), (1, vec!["past".into()]));
        assert_eq!((plan.not_ready, plan.deferred, plan.lost_before), (1, 1, 1));
        let all = ledger.plan(&[name()], now, 100).await.unwrap();
        let claimed: Vec<String> = ledger
            .claim_due(&[name()], now, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.item.to_string())
            .filter(|i| i != "past")
            .collect();
        assert_eq!(ids(&all.fetch), claimed);
        let other = ProviderName::parse("other").unwrap();
        assert_eq!(
            ledger.plan(&[other], now, 100).await.unwrap(),
            Plan::default()
        );
    }

    /// The copy holds the rows, and taking it leaves the source as it was, whether a writer holds
    /// it open or not.
    #[tokio::test]
    async fn a_snapshot_copies_the_rows_and_leaves_the_source_alone() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("l.db");
        let writer = Ledger::open(&src).unwrap();
        seeded(&writer).await;
        let before = std::fs::read(&src).unwrap();
        let dest = dir.path().join("copy.db");
        snapshot_into(&src, &dest).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), before);
        let copy = Ledger::open(&dest).unwrap();
        let plan = copy.plan(&[name()], Utc::now(), 10).await.unwrap();
        assert_eq!(plan.fetch.count, 4);
        // Closed, the ledger is copied without SQLite: no -wal or -shm appears beside it.
        drop(writer);
        assert!(!beside(&src, "-wal").exists());
        let again = dir.path().join("again.db");
        snapshot_into(&src, &again).unwrap();
        assert!(!beside(&src, "-wal").exists() && !beside(&src, "-shm").exists());
        assert_eq!(
            Ledger::open(&again)
                .unwrap()
                .plan(&[name()], Utc::now(), 10)
                .await
                .unwrap(),
            plan
        );
        snapshot_into(&dir.path().join("missing.db"), &dir.path().join("c2.db")).unwrap();
        assert!(!dir.path().join("c2.db").exists());
    }
}
