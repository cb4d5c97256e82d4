//! The PostgreSQL ledger's schema, by versioned migrations: all pending ones in ONE transaction
//! under a transaction-scoped advisory lock, so daemons starting together migrate once and a
//! failure leaves the previous version intact. `ledger_migrations` records each version applied.
//!
//! The tables mirror SQLite's (timestamps BIGINT ms since the epoch) plus the leases:
//! `items.lease_owner`/`lease_until` and `walkers` (one walker turn per provider), both by the
//! server's clock (`now()`), so daemons with skewed clocks agree on expiry.

use super::PgLedger;
use crate::error::LedgerError;

/// The advisory lock key of migrations ("bm-ledgr" in ASCII).
const MIGRATION_LOCK: i64 = 0x626d_2d6c_6564_6772;

const MIGRATIONS: &[&str] = &[V1];

const V1: &str = "
CREATE TABLE batches (
    provider     TEXT    NOT NULL,
    batch_id     TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    terminal     BOOLEAN NOT NULL DEFAULT false,
    total_items  BIGINT,
    expires_at   BIGINT,
    created_at   BIGINT,
    handled      BOOLEAN NOT NULL DEFAULT false,
    seen_at      BIGINT  NOT NULL,
    first_walk   BIGINT,
    PRIMARY KEY (provider, batch_id)
);
CREATE INDEX batches_open ON batches (provider, batch_id) WHERE NOT handled;

CREATE TABLE items (
    id               BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    provider         TEXT    NOT NULL,
    batch_id         TEXT    NOT NULL,
    item_id          TEXT    NOT NULL,
    remote_status    TEXT,
    state            TEXT    NOT NULL,
    deadline         BIGINT,
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    bytes            BIGINT,
    sha256           TEXT,
    path             TEXT,
    last_error       TEXT,
    locator          TEXT,
    updated_at       BIGINT  NOT NULL,
    lease_owner      TEXT,
    lease_until      TIMESTAMPTZ,
    PRIMARY KEY (provider, batch_id, item_id),
    FOREIGN KEY (provider, batch_id) REFERENCES batches (provider, batch_id)
);
-- claim_due: ready items in claim order, and leases that may have expired.
CREATE INDEX items_ready ON items (deadline, next_attempt_at) WHERE state = 'ready';
CREATE INDEX items_leased ON items (lease_until) WHERE state = 'downloading';
CREATE INDEX items_provider_state ON items (provider, state, deadline);
CREATE INDEX items_deferred ON items (provider, next_attempt_at) WHERE state = 'ready';

CREATE TABLE cursors (
    provider  TEXT NOT NULL,
    scope     TEXT NOT NULL,
    cursor    TEXT NOT NULL,
    PRIMARY KEY (provider, scope)
);

CREATE TABLE provider_state (
    provider       TEXT PRIMARY KEY,
    last_pass_at   BIGINT,
    last_error     TEXT,
    failing_since  BIGINT,
    pace_per_min   DOUBLE PRECISION,
    throttles      BIGINT,
    waited_ms      BIGINT
);

CREATE TABLE alerts_fired (
    key       TEXT PRIMARY KEY,
    fired_at  BIGINT NOT NULL
);

CREATE TABLE walks (
    provider          TEXT PRIMARY KEY,
    walk              BIGINT  NOT NULL,
    state             TEXT    NOT NULL,
    position          TEXT,
    early_stop        BOOLEAN NOT NULL,
    since             BIGINT,
    complete_through  BIGINT,
    complete_since    BIGINT,
    started_at        BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL,
    pages             BIGINT  NOT NULL DEFAULT 0,
    last_error        TEXT
);

CREATE TABLE walkers (
    provider  TEXT PRIMARY KEY,
    owner     TEXT NOT NULL,
    until     TIMESTAMPTZ NOT NULL
);
";

/// Creates `schema` if missing and applies the migrations it lacks.
pub(super) async fn migrate(ledger: &PgLedger, schema: &str) -> Result<(), LedgerError> {
    let mut client = ledger.client().await?;
    let pg = ledger.pg("migrate the schema");
    let tx = client.transaction().await.map_err(&pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(&pg)?;
    // `schema` is checked to be a plain name (`valid_schema`) before it gets here.
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS ledger_migrations (
             version     BIGINT PRIMARY KEY,
             applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(&pg)?;
    let applied: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM ledger_migrations",
            &[],
        )
        .await
        .map_err(&pg)?
        .get(0);
    let supported = MIGRATIONS.len() as i64;
    if applied > supported {
        return Err(ledger.data(format!(
            "the ledger has schema version {applied}, newer than this batchmirror understands \
             ({supported}); upgrade batchmirror"
        )));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.batch_execute(sql).await.map_err(&pg)?;
        tx.execute(
            "INSERT INTO ledger_migrations (version) VALUES ($1)",
            &[&(n as i64 + 1)],
        )
        .await
        .map_err(&pg)?;
    }
    tx.commit().await.map_err(&pg)
}
