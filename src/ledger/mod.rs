//! The ledger: batchmirror's SQLite record of every batch and item, and the sole owner of its
//! connection. This file holds the typed async API ([`Ledger`]), opening (locks, integrity check,
//! migrations) and [`ItemRow`].
//!
//! - `lock`: the writer's locks, on `<path>.lock` and on the database file itself.
//! - [`schema`]: pragmas, the integrity check and the `user_version` migrations.
//! - `queries`: the SQL of each operation that writes (no SQL lives outside `src/ledger/`).
//! - `reads`: the read-only queries (cursors, summary, at-risk and row listings).
//! - `rows`: column ↔ domain value conversions (timestamps are INTEGER ms since the epoch).
//! - `report`: summaries, at-risk items and row listings for status, metrics and tests.
//! - `uploads`: the drop folder's upload rows and their states.
//! - `contract`: [`LedgerStore`], the operations as a trait, which [`Ledger`] and the shared
//!   PostgreSQL ledger ([`pg::PgLedger`]) implement.
//! - `verify`: the paged reads and the repairs of `batchmirror verify`.
//!
//! One [`rusqlite::Connection`] sits behind a `std::sync::Mutex`; every async method runs its work
//! in `tokio::task::spawn_blocking` and holds the mutex only inside that closure. The API speaks in
//! domain operations (claim due items, mark mirrored, save a cursor with its page) so a shared
//! PostgreSQL ledger can implement the same calls later (DESIGN.md, "Growth path").

pub mod schema;

mod contract;
mod contract_sqlite;
mod lock;
mod pace;
pub mod pg;
mod queries;
mod reads;
mod report;
mod rows;
mod snapshot;
#[cfg(test)]
mod tests;
mod uploads;
mod verify;
mod walks;

pub use contract::LedgerStore;
pub use lock::lock_path;
pub use report::Listed;
pub use snapshot::{Plan, snapshot_into};
pub use uploads::{Finished, NewUpload, Upload, UploadState};
pub use verify::VerifyRow;
/// The non-final states as SQL, and the lock wait, for the bench's ledger set-ups.
#[cfg(feature = "sandbox")]
pub(crate) use {queries::NOT_FINAL, schema::BUSY_TIMEOUT};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};

use crate::error::LedgerError;
use crate::model::{BatchId, DueItem, ItemState, ProviderName, Published, RemoteBatch, RemoteItem};
use queries::{ItemPageArgs, Outcome};
use rows::ms;

/// What `open_read_only` says when there is no ledger to read yet.
const NO_LEDGER_YET: &str = "open (no ledger yet: run `batchmirror sync --once` first)";

/// One item's row, for tests, diagnostics and status listings.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    pub provider: String,
    pub batch: String,
    pub item: String,
    pub remote_status: Option<String>,
    pub state: ItemState,
    pub deadline: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
    pub path: Option<String>,
    pub last_error: Option<String>,
}

/// A handle on the ledger; cheap to clone (all clones share one connection and one lock).
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    // Declared before `_lock`: the connection closes before the locks' descriptors do, or closing
    // the database's would drop SQLite's own POSIX locks on it (see `lock`).
    conn: Mutex<Connection>,
    /// Outcomes waiting for the next group commit (see [`Ledger::finish`]).
    finishing: Mutex<Vec<Finishing>>,
    /// The exclusive locks on `<path>.lock` and on the database file, held for the ledger's life
    /// (`None` when read-only).
    _lock: Option<lock::Held>,
}

/// One queued outcome and who waits for its commit.
struct Finishing {
    item: DueItem,
    outcome: Outcome,
    now: i64,
    done: tokio::sync::oneshot::Sender<Result<bool, LedgerError>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.inner.path)
            .field("locked", &self.inner._lock.is_some())
            .finish()
    }
}

use lock::io_error;

impl Ledger {
    /// Opens (creating if needed) the ledger for writing: takes `<path>.lock` and a lock on the
    /// database file itself (so no other name for it, such as a hard link, gets in), checks
    /// integrity, sets WAL / `synchronous=FULL` / foreign keys and migrates the schema. A file
    /// that is not a sound database is reported as [`LedgerError::Corrupt`] and left untouched.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| io_error(path, "create the ledger directory", e))?;
        }
        // Creates the database file (empty) if missing, so SQLite never needs to.
        let held = lock::take(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn =
            Connection::open_with_flags(path, flags).map_err(|e| schema::open_error(path, e))?;
        // Nothing below writes before these checks pass.
        schema::check_integrity(&conn, path)?;
        let version = schema::user_version(&conn, path)?;
        schema::check_not_too_new(version, path)?;
        schema::apply_pragmas(&conn, path)?;
        schema::migrate(&mut conn, version).map_err(|e| schema::open_error(path, e))?;
        Ok(Ledger {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                conn: Mutex::new(conn),
                finishing: Mutex::default(),
                _lock: Some(held),
            }),
        })
    }

    /// Opens the ledger read-only, without the lock and without migrating: for `status`, which may
    /// run while a daemon writes. A missing (or never migrated) ledger says no pass has run yet.
    pub fn open_read_only(path: &Path) -> Result<Ledger, LedgerError> {
        let not_yet = || io_error(path, NO_LEDGER_YET, std::io::ErrorKind::NotFound.into());
        if !path
            .try_exists()
            .map_err(|e| io_error(path, "look for the ledger", e))?
        {
            return Err(not_yet());
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| schema::open_error(path, e))?;
        conn.busy_timeout(schema::BUSY_TIMEOUT)
            .map_err(|e| schema::open_error(path, e))?;
        let version = schema::user_version(&conn, path)?;
        schema::check_not_too_new(version, path)?;
        if version == 0 {
            return Err(not_yet());
        }
        Ok(Ledger {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                conn: Mutex::new(conn),
                finishing: Mutex::default(),
                _lock: None,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn sqlite(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError::Sqlite {
            path: self.inner.path.clone(),
            source,
        }
    }

    /// Runs `f` on the connection in a blocking task; the mutex is held only inside it.
    async fn run<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            // A panic inside a closure rolls its transaction back on unwind, so the connection
            // behind a poisoned mutex is still consistent.
            let mut conn = this
                .inner
                .conn
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            f(&mut conn).map_err(|e| this.sqlite(e))
        })
        .await
        .map_err(|e| LedgerError::Task(e.to_string()))?
    }

    /// Upserts batches as listed; returns, per input batch and in order, whether it was already
    /// `handled` (terminal and every item final) *before* this call and its status (and known
    /// item total) is unchanged. A batch whose status or total changed is no longer handled.
    pub async fn upsert_batches(
        &self,
        provider: &ProviderName,
        batches: &[RemoteBatch],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, LedgerError> {
        let provider = provider.as_str().to_owned();
        let batches = batches.to_vec();
        self.run(move |c| queries::upsert_batches(c, &provider, &batches, ms(now)))
            .await
    }

    /// The provider's batches that are not handled yet (not terminal, or with items still to
    /// mirror): the ones a pass must read even when the listing did not reach them.
    pub async fn unhandled_batches(
        &self,
        provider: &ProviderName,
    ) -> Result<Vec<BatchId>, LedgerError> {
        let provider = provider.as_str().to_owned();
        self.run(move |c| reads::unhandled_batches(c, &provider))
            .await
    }

    /// ONE transaction: update the batch (if given), upsert the items, then save `next_cursor` (if
    /// Some): the cursor is only saved together with its page's rows (invariant 4).
    ///
    /// A new item gets `status.initial_state()` and its deadline; a final or `Downloading` item
    /// keeps its state; `Pending` follows the new status; `Ready` stays unless the new status means
    /// Skipped. remote_status, deadline (when Some) and updated_at always refresh; a skipped item's
    /// remote error goes to last_error. Without `batch_info`, a batch row not seen yet is created
    /// as `pending` (items need their batch row).
    pub async fn apply_item_page(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
        batch_info: Option<&RemoteBatch>,
        items: &[RemoteItem],
        next_cursor: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let provider = provider.as_str().to_owned();
        let batch = batch.as_str().to_owned();
        let batch_info = batch_info.cloned();
        let items = items.to_vec();
        let next_cursor = next_cursor.map(str::to_owned);
        self.run(move |c| {
            queries::apply_item_page(
                c,
                ItemPageArgs {
                    provider: &provider,
                    batch: &batch,
                    batch_info: batch_info.as_ref(),
                    items: &items,
                    next_cursor: next_cursor.as_deref(),
                    now: ms(now),
                },
            )
        })
        .await
    }

    /// Recomputes and stores `handled` = batch terminal AND no item of it in Pending/Ready/
    /// Downloading AND (total_items unknown OR item rows >= total_items). Returns it (false for a
    /// batch the ledger does not know).
    pub async fn refresh_handled(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
    ) -> Result<bool, LedgerError> {
        let (provider, batch) = (provider.as_str().to_owned(), batch.as_str().to_owned());
        self.run(move |c| queries::refresh_handled(c, &provider, &batch))
            .await
    }

    /// Atomically claims up to `limit` Ready items with next_attempt_at <= `not_after`, earliest
    /// deadline first (NULL deadlines last), marking them Downloading. `providers` restricts to
    /// those names (empty = all).
    pub async fn claim_due(
        &self,
        providers: &[ProviderName],
        not_after: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueItem>, LedgerError> {
        let providers: Vec<String> = providers.iter().map(|p| p.as_str().to_owned()).collect();
        let now = queries::now_ms();
        self.run(move |c| queries::claim_due(c, &providers, ms(not_after), limit, now))
            .await
    }

    /// Records how a claimed item ended; an unknown or already final row is left as it is.
    ///
    /// Group commit: the outcome is queued; the caller that found the queue empty leads, and its
    /// blocking task commits every outcome queued by the time it holds the connection, in one
    /// transaction. The others only wait for their answer: a blocking task and a turn at the
    /// connection each cost more than their row (issue 15's profile: a store group's results
    /// finished in batches of 3.7, most of the futex time). Each caller still returns only once
    /// its own outcome is committed; a batch that fails is retried one outcome at a time, so
    /// each caller gets its own error.
    async fn finish(&self, item: &DueItem, outcome: Outcome, now: i64) -> Result<(), LedgerError> {
        let (done, committed) = tokio::sync::oneshot::channel();
        let leads = {
            let mut queue = self
                .inner
                .finishing
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            queue.push(Finishing {
                item: item.clone(),
                outcome,
                now,
                done,
            });
            queue.len() == 1
        };
        // No await between the push and the spawn inside `run`: a leader aborted after its push
        // has still started the commit its followers wait for.
        if leads && let Err(e) = self.commit_finishing().await {
            // The commit never ran (its task was cancelled): fail what it would have taken, or
            // the next caller would queue behind a leader that is gone and wait forever.
            std::mem::take(
                &mut *self
                    .inner
                    .finishing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            return Err(e);
        }
        let changed = committed
            .await
            .map_err(|_| LedgerError::Task("the group commit was dropped".into()))??;
        if !changed {
            tracing::warn!(provider = %item.provider, batch = %item.batch, item = %item.item,
                "ledger left an item as it was: it is unknown or already final");
        }
        Ok(())
    }

    /// Commits the queued outcomes (see [`Ledger::finish`]).
    async fn commit_finishing(&self) -> Result<(), LedgerError> {
        let this = self.clone();
        self.run(move |c| {
            let batch = std::mem::take(
                &mut *this
                    .inner
                    .finishing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            // Never empty (only a leader commits, and it queued one), but harmless if it were.
            if batch.is_empty() {
                return Ok(());
            }
            let ops: Vec<_> = batch.iter().map(|f| (&f.item, &f.outcome, f.now)).collect();
            match schema::relaxed(c, |c| queries::finish_all(c, &ops)) {
                Ok(changed) => {
                    for (f, changed) in batch.into_iter().zip(changed) {
                        let _ = f.done.send(Ok(changed));
                    }
                }
                Err(_) => {
                    for f in batch {
                        let one = schema::relaxed(c, |c| {
                            queries::finish_all(c, &[(&f.item, &f.outcome, f.now)])
                        });
                        let _ = f.done.send(one.map(|v| v[0]).map_err(|e| this.sqlite(e)));
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Records a durable publish: state Mirrored with bytes, sha256 and path (invariant 1).
    pub async fn mark_mirrored(
        &self,
        item: &DueItem,
        published: &Published,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.finish(item, Outcome::Mirrored(published.clone()), ms(now))
            .await
    }

    /// Back to Ready, attempts+1, last_error, next_attempt_at.
    pub async fn mark_retry(
        &self,
        item: &DueItem,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let outcome = Outcome::Retry {
            error: error.to_owned(),
            next_attempt_at: ms(next_attempt_at),
        };
        self.finish(item, outcome, queries::now_ms()).await
    }

    /// Records a note on an item without changing its state (a sidecar that could not be kept).
    pub async fn note_error(&self, item: &DueItem, note: &str) -> Result<(), LedgerError> {
        let (due, note) = (item.clone(), note.to_owned());
        self.run(move |c| queries::note_error(c, &due, &note)).await
    }

    /// A permanent error: Failed, attempts+1, last_error.
    pub async fn mark_failed(&self, item: &DueItem, error: &str) -> Result<(), LedgerError> {
        self.finish(item, Outcome::Failed(error.to_owned()), queries::now_ms())
            .await
    }

    /// The result is gone (HTTP 410): Lost, attempts+1, last_error.
    pub async fn mark_lost(&self, item: &DueItem, error: &str) -> Result<(), LedgerError> {
        self.finish(item, Outcome::Lost(error.to_owned()), queries::now_ms())
            .await
    }

    /// Back to Ready without counting an attempt (shutdown interrupted it). Only rows still
    /// Downloading change.
    pub async fn release(&self, items: &[DueItem]) -> Result<(), LedgerError> {
        let items = items.to_vec();
        let now = queries::now_ms();
        self.run(move |c| queries::release(c, &items, now)).await
    }

    /// Rows left Downloading by a crash (start-up recovery decides what each becomes).
    pub async fn in_flight(&self) -> Result<Vec<DueItem>, LedgerError> {
        self.run(|c| reads::in_flight(c)).await
    }

    /// Claims the right to fire the alert `key` (e.g. `lost:<provider>/<batch>/<item>`): true the
    /// first time only, across restarts, so each event alerts once.
    pub async fn claim_alert(&self, key: &str, now: DateTime<Utc>) -> Result<bool, LedgerError> {
        let key = key.to_owned();
        self.run(move |c| queries::claim_alert(c, &key, ms(now)))
            .await
    }

    /// Forgets `key`, so the event may alert again (a provider failing again after recovering).
    pub async fn clear_alert(&self, key: &str) -> Result<(), LedgerError> {
        let key = key.to_owned();
        self.run(move |c| queries::clear_alert(c, &key)).await
    }

    /// Records that a pass over `provider` ended at `at`, with its error if it had one. Returns
    /// since when the provider has been failing (the first failed pass of the current run).
    pub async fn record_pass(
        &self,
        provider: &ProviderName,
        at: DateTime<Utc>,
        error: Option<&str>,
    ) -> Result<Option<DateTime<Utc>>, LedgerError> {
        let provider = provider.as_str().to_owned();
        let error = error.map(str::to_owned);
        let since = self
            .run(move |c| queries::record_pass(c, &provider, ms(at), error.as_deref()))
            .await?;
        Ok(since.and_then(DateTime::from_timestamp_millis))
    }

    /// `EXPLAIN QUERY PLAN` detail lines of the claim statements, for the index test. Blocking
    /// (briefly takes the connection); not for use on an async worker in a hot path.
    pub fn explain_claim(&self) -> Result<Vec<String>, LedgerError> {
        let conn = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        queries::explain_claim(&conn).map_err(|e| self.sqlite(e))
    }
}

/// A duration in milliseconds, saturating.
fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
