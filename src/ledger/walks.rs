//! Listing positions: each provider's walk over its batch listing (number, state, position,
//! `since`) and the watermark of the newest walk that reached the end, so that a walk cut short
//! resumes where it stopped and an early stop never hides a batch (invariant 4); and the saved
//! cursors of item change feeds.
//!
//! A page's batch rows and the walk's new position commit in one transaction
//! ([`Ledger::apply_list_page`]); a walk is marked complete only when it reached the end of the
//! listing (or a page the watermark proves the rest was listed before), and only then do the
//! watermark and the next walk's `since` advance.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::Ledger;
use super::queries::{self, upsert_batch};
use super::reads;
use super::rows::{from_ms, ms, opt_ms, parsed, ts};
use crate::error::LedgerError;
use crate::model::{BatchId, BatchSeen, ProviderName, RemoteBatch, Walk, WalkState};

type SqlResult<T> = rusqlite::Result<T>;

const WALK_COLUMNS: &str = "walk, state, position, early_stop, since, complete_through,
    complete_since, started_at, updated_at, pages, last_error";

fn walk_row(r: &Row<'_>) -> SqlResult<Walk> {
    Ok(Walk {
        walk: r.get(0)?,
        state: parsed(r, 1, |s| {
            WalkState::parse(s).ok_or_else(|| format!("unknown walk state {s:?}"))
        })?,
        position: r.get(2)?,
        early_stop: r.get(3)?,
        since: ts(r, 4)?,
        complete_through: r.get(5)?,
        complete_since: ts(r, 6)?,
        started_at: from_ms(7, r.get(7)?)?,
        updated_at: from_ms(8, r.get(8)?)?,
        pages: r.get::<_, i64>(9)?.max(0) as u64,
        last_error: r.get(10)?,
    })
}

fn read_walk(conn: &Connection, provider: &str) -> SqlResult<Option<Walk>> {
    conn.prepare_cached(&format!(
        "SELECT {WALK_COLUMNS} FROM walks WHERE provider = ?1"
    ))?
    .query_row([provider], walk_row)
    .optional()
}

/// Starts walk number (previous + 1) from the head, keeping the watermark.
fn begin(
    conn: &mut Connection,
    provider: &str,
    early_stop: bool,
    since: Option<i64>,
    now: i64,
) -> SqlResult<Walk> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(
        "INSERT INTO walks (provider, walk, state, position, early_stop, since, started_at,
                            updated_at, pages)
         VALUES (?1, 1, 'running', NULL, ?2, ?3, ?4, ?4, 0)
         ON CONFLICT (provider) DO UPDATE SET
             walk = walks.walk + 1, state = 'running', position = NULL,
             early_stop = excluded.early_stop, since = excluded.since,
             started_at = excluded.started_at, updated_at = excluded.updated_at, pages = 0,
             last_error = NULL",
    )?
    .execute(params![provider, early_stop, since, now])?;
    let walk = read_walk(&tx, provider)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    tx.commit()?;
    Ok(walk)
}

/// Marks `walk` complete: the watermark moves to it, and the next walk lists since its start
/// (less `margin`, for clocks that disagree).
fn complete_in(
    tx: &rusqlite::Transaction<'_>,
    provider: &str,
    walk: i64,
    margin_ms: i64,
    now: i64,
) -> SqlResult<()> {
    tx.prepare_cached(
        "UPDATE walks SET state = 'complete', position = NULL, complete_through = walk,
             complete_since = started_at - ?3, updated_at = ?4, last_error = NULL
         WHERE provider = ?1 AND walk = ?2",
    )?
    .execute(params![provider, walk, margin_ms, now])?;
    Ok(())
}

struct PageArgs<'a> {
    provider: &'a str,
    walk: i64,
    batches: &'a [RemoteBatch],
    next: Option<&'a str>,
    at_end: bool,
    margin_ms: i64,
    now: i64,
}

/// One transaction: the page's batches (first seen by `walk` when new), then the walk's next
/// position, or its completion when the page was the last.
fn apply_page(conn: &mut Connection, a: PageArgs<'_>) -> SqlResult<Vec<BatchSeen>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let watermark: Option<i64> = tx
        .prepare_cached("SELECT complete_through FROM walks WHERE provider = ?1")?
        .query_row([a.provider], |r| r.get(0))
        .optional()?
        .flatten();
    let mut seen = Vec::with_capacity(a.batches.len());
    for b in a.batches {
        let handled = upsert_batch(&tx, a.provider, b.id.as_str(), b, Some(a.walk), a.now)?;
        let first: Option<i64> = tx
            .prepare_cached("SELECT first_walk FROM batches WHERE provider = ?1 AND batch_id = ?2")?
            .query_row(params![a.provider, b.id.as_str()], |r| r.get(0))?;
        let within = matches!((first, watermark), (Some(f), Some(w)) if f <= w);
        seen.push(BatchSeen { handled, within });
    }
    tx.prepare_cached(
        "UPDATE walks SET position = ?3, pages = pages + 1, updated_at = ?4
         WHERE provider = ?1 AND walk = ?2",
    )?
    .execute(params![a.provider, a.walk, a.next, a.now])?;
    if a.at_end {
        complete_in(&tx, a.provider, a.walk, a.margin_ms, a.now)?;
    }
    tx.commit()?;
    Ok(seen)
}

impl Ledger {
    pub async fn item_cursor(
        &self,
        provider: &ProviderName,
        batch: &BatchId,
    ) -> Result<Option<String>, LedgerError> {
        self.cursor(provider, &queries::items_scope(batch.as_str()))
            .await
    }

    /// A listing cursor by scope (item feeds use `items:<batch id>`).
    pub async fn cursor(
        &self,
        provider: &ProviderName,
        scope: &str,
    ) -> Result<Option<String>, LedgerError> {
        let (provider, scope) = (provider.as_str().to_owned(), scope.to_owned());
        self.run(move |c| reads::cursor(c, &provider, &scope)).await
    }

    /// Saves (or with `None` clears) a listing cursor on its own. Call it only after the rows of
    /// the page it follows are committed (invariant 4); item pages use [`Self::apply_item_page`].
    pub async fn save_cursor(
        &self,
        provider: &ProviderName,
        scope: &str,
        cursor: Option<&str>,
    ) -> Result<(), LedgerError> {
        let (provider, scope) = (provider.as_str().to_owned(), scope.to_owned());
        let cursor = cursor.map(str::to_owned);
        self.run(move |c| queries::save_cursor(c, &provider, &scope, cursor.as_deref()))
            .await
    }

    /// The provider's walk as last recorded (`None` before its first walk, and on a ledger from
    /// before walks were recorded that `status` reads without migrating it).
    pub async fn walk(&self, provider: &ProviderName) -> Result<Option<Walk>, LedgerError> {
        let provider = provider.as_str().to_owned();
        self.run(move |c| {
            if super::schema::has_table(c, "walks")? {
                read_walk(c, &provider)
            } else {
                Ok(None)
            }
        })
        .await
    }

    /// Starts the provider's next walk from the head of its listing.
    pub async fn begin_walk(
        &self,
        provider: &ProviderName,
        early_stop: bool,
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Walk, LedgerError> {
        let provider = provider.as_str().to_owned();
        self.run(move |c| begin(c, &provider, early_stop, opt_ms(since), ms(now)))
            .await
    }

    /// ONE transaction: upserts a listed page's batches and moves `walk` to `next` (the position
    /// of the following page), completing it when `at_end`. Returns, per batch and in order,
    /// whether it was handled before and whether it lies within the watermark.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply_list_page(
        &self,
        provider: &ProviderName,
        walk: i64,
        batches: &[RemoteBatch],
        next: Option<&str>,
        at_end: bool,
        since_margin: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<BatchSeen>, LedgerError> {
        let provider = provider.as_str().to_owned();
        let batches = batches.to_vec();
        let next = next.map(str::to_owned);
        let margin_ms = i64::try_from(since_margin.as_millis()).unwrap_or(i64::MAX);
        self.run(move |c| {
            apply_page(
                c,
                PageArgs {
                    provider: &provider,
                    walk,
                    batches: &batches,
                    next: next.as_deref(),
                    at_end,
                    margin_ms,
                    now: ms(now),
                },
            )
        })
        .await
    }

    /// Marks `walk` complete without a further page (it stopped early within the watermark).
    pub async fn complete_walk(
        &self,
        provider: &ProviderName,
        walk: i64,
        since_margin: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let provider = provider.as_str().to_owned();
        let margin_ms = i64::try_from(since_margin.as_millis()).unwrap_or(i64::MAX);
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            complete_in(&tx, &provider, walk, margin_ms, ms(now))?;
            tx.commit()
        })
        .await
    }

    /// Marks `walk` failed at its saved position, with the error: the next pass resumes there.
    pub async fn fail_walk(
        &self,
        provider: &ProviderName,
        walk: i64,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let (provider, error) = (provider.as_str().to_owned(), error.to_owned());
        self.run(move |c| {
            c.prepare_cached(
                "UPDATE walks SET state = 'failed', last_error = ?3, updated_at = ?4
                 WHERE provider = ?1 AND walk = ?2",
            )?
            .execute(params![provider, walk, error, ms(now)])
            .map(drop)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::model::{BatchId, BatchStatus};

    fn done(id: &str) -> RemoteBatch {
        RemoteBatch {
            id: BatchId::parse(id).unwrap(),
            status: BatchStatus::Completed,
            total_items: Some(0),
            created_at: None,
            expires_at: None,
        }
    }

    #[tokio::test]
    async fn a_batch_is_within_the_watermark_only_once_a_walk_that_saw_it_completed() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("l.sqlite3")).unwrap();
        let p = ProviderName::parse("acme").unwrap();
        let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let margin = Duration::from_secs(60);
        assert_eq!(l.walk(&p).await.unwrap(), None);

        let w1 = l.begin_walk(&p, false, None, now).await.unwrap();
        assert_eq!(
            (w1.walk, w1.state, w1.complete_through),
            (1, WalkState::Running, None)
        );
        let seen = l
            .apply_list_page(&p, 1, &[done("a")], Some("c2"), false, margin, now)
            .await
            .unwrap();
        assert!(!seen[0].within, "no walk has completed yet");
        l.fail_walk(&p, 1, "page 2: HTTP 503", now).await.unwrap();
        let failed = l.walk(&p).await.unwrap().unwrap();
        assert_eq!(failed.state, WalkState::Failed);
        assert_eq!(
            failed.position.as_deref(),
            Some("c2"),
            "resumes at the next page"
        );
        assert_eq!((failed.pages, failed.complete_since), (1, None));

        // The resumed walk reaches the end: the watermark and `since` move only now.
        l.apply_list_page(&p, 1, &[done("b")], None, true, margin, now)
            .await
            .unwrap();
        let complete = l.walk(&p).await.unwrap().unwrap();
        assert_eq!(complete.state, WalkState::Complete);
        assert_eq!(complete.complete_through, Some(1));
        assert_eq!(
            complete.complete_since,
            Some(now - chrono::Duration::seconds(60))
        );

        // Walk 2 sees `a` (first seen by walk 1: within) and a new batch `n` (not within, even
        // though walk 2 keeps the watermark of walk 1).
        let w2 = l.begin_walk(&p, true, None, now).await.unwrap();
        assert_eq!(
            (w2.walk, w2.complete_through, w2.position),
            (2, Some(1), None)
        );
        let seen = l
            .apply_list_page(
                &p,
                2,
                &[done("n"), done("a")],
                Some("x"),
                false,
                margin,
                now,
            )
            .await
            .unwrap();
        assert_eq!(
            seen.iter().map(|s| s.within).collect::<Vec<_>>(),
            [false, true]
        );
    }

    #[tokio::test]
    async fn batches_known_before_walks_existed_join_the_watermark_when_next_listed() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("l.sqlite3")).unwrap();
        let p = ProviderName::parse("acme").unwrap();
        let now = Utc::now();
        // A row written without a walk (as by a ledger from before schema v3).
        l.upsert_batches(&p, &[done("old")], now).await.unwrap();
        let w = l.begin_walk(&p, false, None, now).await.unwrap();
        l.apply_list_page(&p, w.walk, &[done("old")], None, true, Duration::ZERO, now)
            .await
            .unwrap();
        let w = l.begin_walk(&p, true, None, now).await.unwrap();
        let seen = l
            .apply_list_page(
                &p,
                w.walk,
                &[done("old")],
                Some("c"),
                false,
                Duration::ZERO,
                now,
            )
            .await
            .unwrap();
        assert!(seen[0].within, "{seen:?}");
    }
}
