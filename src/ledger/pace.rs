//! Each provider's learned pacing, kept in `provider_state` after every pass so that a restart
//! starts from the cap the provider taught us instead of throttling it all over again.

use rusqlite::{Connection, OptionalExtension, params};

use super::Ledger;
use crate::error::LedgerError;
use crate::model::{Pace, ProviderName};

/// The pace recorded for `provider`; `None` before one is (or on a ledger from before schema v3,
/// which `status` reads without migrating: `walks` came in the same version).
pub(crate) fn read(conn: &Connection, provider: &str) -> rusqlite::Result<Option<Pace>> {
    if !super::schema::has_table(conn, "walks")? {
        return Ok(None);
    }
    let row: Option<(Option<f64>, Option<i64>, Option<i64>)> = conn
        .prepare_cached(
            "SELECT pace_per_min, throttles, waited_ms FROM provider_state WHERE provider = ?1",
        )?
        .query_row([provider], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(row.and_then(|(per_minute, throttles, waited)| {
        let (throttles, waited) = (throttles?, waited?);
        Some(Pace {
            per_minute,
            throttles: u64::try_from(throttles).unwrap_or(0),
            waited_secs: waited as f64 / 1000.0,
        })
    }))
}

impl Ledger {
    /// Records `provider`'s pace after a pass.
    pub async fn save_pace(&self, provider: &ProviderName, pace: Pace) -> Result<(), LedgerError> {
        let provider = provider.as_str().to_owned();
        self.run(move |c| {
            c.prepare_cached(
                "INSERT INTO provider_state (provider, pace_per_min, throttles, waited_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (provider) DO UPDATE SET pace_per_min = excluded.pace_per_min,
                     throttles = excluded.throttles, waited_ms = excluded.waited_ms",
            )?
            .execute(params![
                provider,
                pace.per_minute,
                i64::try_from(pace.throttles).unwrap_or(i64::MAX),
                (pace.waited_secs * 1000.0) as i64
            ])
            .map(drop)
        })
        .await
    }

    /// The pace last recorded for `provider`.
    pub async fn pace(&self, provider: &ProviderName) -> Result<Option<Pace>, LedgerError> {
        let provider = provider.as_str().to_owned();
        self.run(move |c| read(c, &provider)).await
    }
}
