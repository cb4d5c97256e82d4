//! The shared PostgreSQL ledger: [`PgLedger`], the [`LedgerStore`](super::LedgerStore) of several
//! daemons mirroring the same accounts. It keeps the SQLite ledger's semantics operation for
//! operation (same states, same merge rule, timestamps as BIGINT ms since the epoch) and adds
//! what several writers need:
//!
//! - item claims under a lease (`lease_owner`, `lease_until` by the server's clock): claims use
//!   `FOR UPDATE SKIP LOCKED`, an expired lease makes its item due again, outcomes are recorded
//!   only by the lease's owner (`claims`);
//! - one walker per provider at a time, by a lease row in `walkers` (`walks`);
//! - versioned migrations applied in one transaction under an advisory lock (`schema`).
//!
//! Files: `schema` (migrations), `listing` (batches, cursors), `pages` (item pages), `walks`
//! (listing walks and walker turns), `claims` (claims, leases, outcomes), `reads` (reports,
//! alerts, passes, pacing), `rows` (row decoding) and `store` (the trait's delegation).

mod claims;
mod listing;
mod pages;
mod reads;
mod rows;
mod schema;
mod store;
mod walks;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use crate::error::LedgerError;

/// How a [`PgLedger`] connects and leases.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// The schema holding the ledger's tables (created when missing): `[a-z0-9_]{1,63}`.
    pub schema: String,
    /// How long a claim holds an item before another daemon may take it over, unless renewed.
    pub lease: Duration,
    /// How long a walker turn lasts unless renewed.
    pub walker_lease: Duration,
    /// Connections in the pool.
    pub pool_size: usize,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            schema: "public".to_owned(),
            lease: Duration::from_secs(300),
            walker_lease: Duration::from_secs(300),
            pool_size: 16,
        }
    }
}

/// A handle on the shared ledger; cheap to clone (clones share the pool and the owner id).
#[derive(Clone)]
pub struct PgLedger {
    pool: Pool,
    /// The URL without password or query, for errors and logs.
    url: String,
    /// This daemon's id in `lease_owner` and `walkers.owner`.
    owner: String,
    lease_secs: f64,
    walker_secs: f64,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("url", &self.url)
            .field("owner", &self.owner)
            .finish()
    }
}

/// `url` without its password and query (which may carry one): safe for errors and logs.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(None);
            }
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<unparsable PostgreSQL URL>".to_owned(),
    }
}

fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl PgLedger {
    /// Connects to `url` (`postgres://user@host:port/db`; the password may be in it or in
    /// `PGPASSWORD`) and migrates the schema. Each call gets its own owner id: two `PgLedger`s
    /// are two daemons as far as leases go.
    pub async fn connect(url: &str, settings: PgSettings) -> Result<PgLedger, LedgerError> {
        let shown = redacted(url);
        let bad = |message: String| LedgerError::PgData {
            url: shown.clone(),
            message,
        };
        if !valid_schema(&settings.schema) {
            return Err(bad(format!(
                "schema {:?} is not a plain name ([a-z0-9_], not starting with a digit)",
                settings.schema
            )));
        }
        let mut cfg = tokio_postgres::Config::from_str(url)
            .map_err(|e| bad(format!("not a PostgreSQL URL: {e}")))?;
        if cfg.get_password().is_none()
            && let Ok(p) = std::env::var("PGPASSWORD")
        {
            cfg.password(p);
        }
        cfg.options(format!("-c search_path={}", settings.schema));
        cfg.application_name("batchmirror");
        let manager = Manager::from_config(
            cfg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .build()
            .map_err(|e| bad(format!("connection pool: {e}")))?;
        let ledger = PgLedger {
            pool,
            url: shown,
            owner: format!("{}-{:016x}", std::process::id(), rand::random::<u64>()),
            lease_secs: settings.lease.as_secs_f64(),
            walker_secs: settings.walker_lease.as_secs_f64(),
        };
        schema::migrate(&ledger, &settings.schema).await?;
        Ok(ledger)
    }

    /// This daemon's owner id in leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The URL, without password.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(super) async fn client(&self) -> Result<deadpool_postgres::Client, LedgerError> {
        self.pool.get().await.map_err(|e| LedgerError::PgPool {
            url: self.url.clone(),
            message: e.to_string(),
        })
    }

    /// Maps a driver error to the ledger's, naming the operation.
    pub(super) fn pg(&self, action: &'static str) -> impl Fn(tokio_postgres::Error) -> LedgerError {
        let url = self.url.clone();
        move |source| LedgerError::Postgres {
            url: url.clone(),
            action,
            source,
        }
    }

    /// A row that does not decode (an id or state this build does not accept).
    pub(super) fn data(&self, message: String) -> LedgerError {
        LedgerError::PgData {
            url: self.url.clone(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let shown = redacted("postgres://mirror:s3cret@db.example:5432/bm?password=other");
        assert!(
            !shown.contains("s3cret") && !shown.contains("other"),
            "{shown}"
        );
        assert!(shown.contains("mirror@db.example:5432/bm"), "{shown}");
    }

    #[test]
    fn schema_names_are_plain() {
        assert!(valid_schema("t_1a"));
        for bad in ["", "1a", "a;drop", "A", "a-b"] {
            assert!(!valid_schema(bad), "{bad}");
        }
    }
}
