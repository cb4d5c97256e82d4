//! The ledger's schema and connection set-up: the start-up integrity check, the pragmas (WAL,
//! `synchronous=FULL`, foreign keys, busy timeout) and the migrations keyed by `PRAGMA user_version`.
//!
//! Migration `n` (1-based) takes the schema from version `n - 1` to `n`, in one transaction that
//! also stores the new `user_version`, so a crash mid-migration leaves the previous version intact.
//! Nothing here ever re-creates or rewrites a database it does not understand.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use crate::error::LedgerError;

/// How long a statement waits for another connection's write lock (e.g. `status` reading while
/// the daemon commits) before giving up with `SQLITE_BUSY`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Every migration in order; the schema version is the number applied.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The newest schema version this build understands.
pub const SUPPORTED_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 1: batches, items, listing cursors and per-provider pass state.
///
/// Indexes: `items_due (state, deadline, next_attempt_at)` serves `claim_due` (equality on state,
/// then deadline order, the retry time checked inside the index), `in_flight` and the global
/// `at_risk`; `items_provider_state (provider, state, deadline)` serves the per-provider counts,
/// at-risk figures and earliest deadline of `summary` and `items_in_state` from the index alone;
/// `batches_open (provider, handled, batch_id)` serves `unhandled_batches`.
const V1: &str = "
CREATE TABLE batches (
    provider     TEXT    NOT NULL,
    batch_id     TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    terminal     INTEGER NOT NULL DEFAULT 0,
    total_items  INTEGER,
    expires_at   INTEGER,
    created_at   INTEGER,
    handled      INTEGER NOT NULL DEFAULT 0,
    seen_at      INTEGER NOT NULL,
    PRIMARY KEY (provider, batch_id)
);

CREATE INDEX batches_open ON batches (provider, handled, batch_id);

CREATE TABLE items (
    provider         TEXT    NOT NULL,
    batch_id         TEXT    NOT NULL,
    item_id          TEXT    NOT NULL,
    remote_status    TEXT,
    state            TEXT    NOT NULL,
    deadline         INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    bytes            INTEGER,
    sha256           TEXT,
    path             TEXT,
    last_error       TEXT,
    locator          TEXT,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (provider, batch_id, item_id),
    FOREIGN KEY (provider, batch_id) REFERENCES batches (provider, batch_id)
);

CREATE INDEX items_due ON items (state, deadline, next_attempt_at);
CREATE INDEX items_provider_state ON items (provider, state, deadline);

CREATE TABLE cursors (
    provider  TEXT NOT NULL,
    scope     TEXT NOT NULL,
    cursor    TEXT NOT NULL,
    PRIMARY KEY (provider, scope)
);

CREATE TABLE provider_state (
    provider      TEXT PRIMARY KEY NOT NULL,
    last_pass_at  INTEGER,
    last_error    TEXT,
    -- When the current run of failed passes began; NULL while the provider answers.
    failing_since INTEGER
);

CREATE TABLE alerts_fired (
    key       TEXT PRIMARY KEY NOT NULL,
    fired_at  INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 2: the drop folder's uploads, one row per file taken from the inbox.
///
/// A row is committed (`submitting`) before the job is created, with the idempotency key the
/// request carries, so a crash between the request and the answer is resumed with the same key
/// and never pays twice. `uploads_open (state)` serves the start-up and delivery scans;
/// `uploads_content (provider, sha256)` finds an earlier job for the same content.
const V2: &str = "
CREATE TABLE uploads (
    id               INTEGER PRIMARY KEY,
    provider         TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    size             INTEGER NOT NULL,
    sha256           TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    batch_id         TEXT,
    item_id          TEXT,
    -- The name the file got in done/ or failed/ (collisions are suffixed).
    filed_as         TEXT,
    -- The earlier upload of the same content whose job this one reuses.
    linked_to        INTEGER REFERENCES uploads (id),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE INDEX uploads_open ON uploads (state, provider);
CREATE INDEX uploads_content ON uploads (provider, sha256);
";

/// Version 3: each provider's listing walk, so a walk cut short resumes where it stopped, and
/// the walk that first saw each batch (the early-stop watermark compares against it); and each
/// provider's learned pacing (`provider_state.pace_per_min`, NULL = uncapped), so a restart does
/// not hammer a provider that had throttled.
///
/// `walks` holds one row per provider: the current walk's number, state, position (the cursor or
/// offset of the next page; NULL = the head) and `since`, plus the watermark `complete_through`
/// (the newest walk that reached the end) and `complete_since` (when that walk started). Batches
/// listed before this version have `first_walk` NULL until a walk lists them again.
const V3: &str = "
CREATE TABLE walks (
    provider          TEXT PRIMARY KEY NOT NULL,
    walk              INTEGER NOT NULL,
    state             TEXT    NOT NULL,
    position          TEXT,
    early_stop        INTEGER NOT NULL,
    since             INTEGER,
    complete_through  INTEGER,
    complete_since    INTEGER,
    started_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    pages             INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT
);

ALTER TABLE batches ADD COLUMN first_walk INTEGER;

ALTER TABLE provider_state ADD COLUMN pace_per_min REAL;
ALTER TABLE provider_state ADD COLUMN throttles INTEGER;
ALTER TABLE provider_state ADD COLUMN waited_ms INTEGER;
";

/// Version 4: the deferred items (ready, next attempt later) of a provider straight from an
/// index. `status` counts and lists them; over 1,000,000 items with 20,000 ready, the count
/// looked up each ready row in the table (54 ms of a 117 ms `status`). Partial, so only ready
/// rows pay for it.
const V4: &str = "
CREATE INDEX items_deferred ON items (provider, next_attempt_at) WHERE state = 'ready';
";

/// True when the schema has `table`: `status` reads older ledgers without migrating them.
pub(crate) fn has_table(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
    )?
    .query_row([table], |r| r.get(0))
}

/// True when SQLite says the file is not a database or is damaged.
pub(crate) fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

/// Maps an error met while opening: damage becomes `Corrupt`, anything else `Sqlite`.
pub(crate) fn open_error(path: &Path, e: rusqlite::Error) -> LedgerError {
    if is_corruption(&e) {
        LedgerError::Corrupt {
            path: path.to_owned(),
            message: e.to_string(),
        }
    } else {
        LedgerError::Sqlite {
            path: path.to_owned(),
            source: e,
        }
    }
}

/// Runs `PRAGMA quick_check` (which also reads the header, so garbage fails here) before anything
/// writes to the file.
pub(crate) fn check_integrity(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check")
        .map_err(|e| open_error(path, e))?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.take(5).collect::<Result<Vec<_>, _>>())
        .map_err(|e| open_error(path, e))?;
    if lines.len() == 1 && lines[0] == "ok" {
        Ok(())
    } else {
        Err(LedgerError::Corrupt {
            path: path.to_owned(),
            message: format!("integrity check: {}", lines.join("; ")),
        })
    }
}

/// The stored schema version.
pub(crate) fn user_version(conn: &Connection, path: &Path) -> Result<i64, LedgerError> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| open_error(path, e))
}

/// Refuses a schema newer than this build.
pub(crate) fn check_not_too_new(found: i64, path: &Path) -> Result<(), LedgerError> {
    if found > SUPPORTED_VERSION {
        Err(LedgerError::TooNew {
            path: path.to_owned(),
            found,
            supported: SUPPORTED_VERSION,
        })
    } else {
        Ok(())
    }
}

/// The durability and concurrency settings of a writing connection.
pub(crate) fn apply_pragmas(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let sqlite = |source| LedgerError::Sqlite {
        path: path.to_owned(),
        source,
    };
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LedgerError::Io {
            path: path.to_owned(),
            action: "switch to WAL journal mode",
            source: std::io::Error::other(format!("journal_mode stayed {mode:?}")),
        });
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sqlite)?;
    Ok(())
}

/// Runs `f` with `synchronous=NORMAL`: its commit goes to the WAL without a fsync, and becomes
/// durable with the next `FULL` commit (a claim, a listing page) or checkpoint, as the WAL is
/// replayed in order. For outcomes only: a power cut that loses one leaves its row `downloading`,
/// which start-up recovery settles from the disk (a published result is adopted, anything else
/// fetched again), so nothing is lost or published twice; what must be durable before an effect
/// outside the ledger (a claim before its publish, an upload before its submit) stays `FULL`.
/// Measured (issue 15): one WAL fsync per outcome batch was 5,401 fsyncs for 10,000 results.
pub(crate) fn relaxed<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let out = f(conn);
    // Back to FULL even when `f` failed: every other write relies on it.
    conn.pragma_update(None, "synchronous", "FULL")?;
    out
}

/// Applies every migration above `from`, each in its own immediate transaction.
pub(crate) fn migrate(conn: &mut Connection, from: i64) -> rusqlite::Result<()> {
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version <= from {
            continue;
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Re-read inside the write lock: another process may have migrated meanwhile.
        let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if current < version {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version)?;
            tracing::info!(version, "ledger schema migrated");
        }
        tx.commit()?;
    }
    Ok(())
}
