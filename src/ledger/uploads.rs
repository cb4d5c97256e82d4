//! The drop folder's uploads: one row per file taken from the inbox, from before its job is
//! created until its result (or the reason there is none) is in the outbox.
//!
//! States, in order: `submitting` (row committed, the request may or may not have reached the
//! provider) or `waiting` (refused for now: no credits, a configuration problem; retried later with
//! the same key) → `accepted` (the job exists; `filed_as` is set once the file is in `done/`) →
//! `delivered` (the result is in the outbox) or `failed` (the job produced nothing to deliver).
//! `rejected` is a permanent refusal of the file itself (moved to `failed/`).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::Ledger;
use super::rows::{from_ms, ms};
use crate::error::LedgerError;
use crate::model::{BatchId, ItemId, ItemState, ProviderName};

/// Where an upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    Submitting,
    Waiting,
    Accepted,
    Delivered,
    Failed,
    Rejected,
}

impl UploadState {
    pub const ALL: [UploadState; 6] = [
        Self::Submitting,
        Self::Waiting,
        Self::Accepted,
        Self::Delivered,
        Self::Failed,
        Self::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitting => "submitting",
            Self::Waiting => "waiting",
            Self::Accepted => "accepted",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Not yet a job: the file is still in the inbox and will be (re)submitted with its key.
    pub fn is_unsubmitted(self) -> bool {
        matches!(self, Self::Submitting | Self::Waiting)
    }
}

/// One upload row.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub id: i64,
    pub provider: String,
    /// The file's name in the inbox.
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub idempotency_key: String,
    pub state: UploadState,
    pub batch: Option<String>,
    pub item: Option<String>,
    pub filed_as: Option<String>,
    pub linked_to: Option<i64>,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// The file of a new upload, as hashed.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// An accepted upload whose job's item reached a final state: what the outbox gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub upload: Upload,
    pub item_state: ItemState,
    /// The mirrored result, relative to the storage root (when `item_state` is `Mirrored`).
    pub result_path: Option<String>,
    pub item_error: Option<String>,
}

const COLUMNS: &str = "id, provider, name, size, sha256, idempotency_key, state, batch_id, \
     item_id, filed_as, linked_to, attempts, next_attempt_at, last_error";

fn upload_row(r: &Row<'_>) -> rusqlite::Result<Upload> {
    let state: String = r.get(6)?;
    Ok(Upload {
        id: r.get(0)?,
        provider: r.get(1)?,
        name: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        sha256: r.get(4)?,
        idempotency_key: r.get(5)?,
        state: UploadState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                6,
                rusqlite::types::Type::Text,
                format!("unknown upload state {state:?}").into(),
            )
        })?,
        batch: r.get(7)?,
        item: r.get(8)?,
        filed_as: r.get(9)?,
        linked_to: r.get(10)?,
        attempts: r.get::<_, i64>(11)? as u32,
        next_attempt_at: r
            .get::<_, Option<i64>>(12)?
            .map(|v| from_ms(12, v))
            .transpose()?,
        last_error: r.get(13)?,
    })
}

fn one(c: &Connection, id: i64) -> rusqlite::Result<Upload> {
    c.query_row(
        &format!("SELECT {COLUMNS} FROM uploads WHERE id = ?1"),
        [id],
        upload_row,
    )
}

impl Ledger {
    /// Records a file about to be submitted (`submitting`), committed before any request. The key
    /// is `key_for(row id)`, so it can be unique per upload when content is not deduplicated.
    pub async fn upload_begin(
        &self,
        provider: &ProviderName,
        file: NewUpload,
        key_for: impl FnOnce(i64) -> String + Send + 'static,
        now: DateTime<Utc>,
    ) -> Result<Upload, LedgerError> {
        let provider = provider.as_str().to_owned();
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO uploads (provider, name, size, sha256, idempotency_key, state, \
                 created_at, updated_at) VALUES (?1, ?2, ?3, ?4, '', 'submitting', ?5, ?5)",
                params![provider, file.name, file.size as i64, file.sha256, ms(now)],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "UPDATE uploads SET idempotency_key = ?2 WHERE id = ?1",
                params![id, key_for(id)],
            )?;
            let row = one(&tx, id)?;
            tx.commit()?;
            Ok(row)
        })
        .await
    }

    /// Links a file to the job of an earlier upload of the same content (no request at all).
    pub async fn upload_link(
        &self,
        earlier: &Upload,
        file: NewUpload,
        now: DateTime<Utc>,
    ) -> Result<Upload, LedgerError> {
        let e = earlier.clone();
        self.run(move |c| {
            c.execute(
                "INSERT INTO uploads (provider, name, size, sha256, idempotency_key, state, \
                 batch_id, item_id, linked_to, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'accepted', ?6, ?7, ?8, ?9, ?9)",
                params![
                    e.provider,
                    file.name,
                    file.size as i64,
                    file.sha256,
                    e.idempotency_key,
                    e.batch,
                    e.item,
                    e.id,
                    ms(now)
                ],
            )?;
            one(c, c.last_insert_rowid())
        })
        .await
    }

    /// The latest upload of this content whose job exists and has not failed: what a second drop
    /// of the same bytes links to.
    pub async fn upload_with_content(
        &self,
        provider: &ProviderName,
        sha256: &str,
    ) -> Result<Option<Upload>, LedgerError> {
        let (provider, sha256) = (provider.as_str().to_owned(), sha256.to_owned());
        self.run(move |c| {
            c.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM uploads WHERE provider = ?1 AND sha256 = ?2 \
                     AND state IN ('accepted', 'delivered') AND batch_id IS NOT NULL \
                     ORDER BY id DESC LIMIT 1"
                ),
                params![provider, sha256],
                upload_row,
            )
            .optional()
        })
        .await
    }

    /// Uploads still owning a file in the inbox under `name`: not submitted yet, or accepted but
    /// not yet moved to `done/` (a crash between the two).
    pub async fn uploads_holding(
        &self,
        provider: &ProviderName,
        name: &str,
    ) -> Result<Vec<Upload>, LedgerError> {
        let (provider, name) = (provider.as_str().to_owned(), name.to_owned());
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM uploads WHERE provider = ?1 AND name = ?2 \
                 AND (state IN ('submitting', 'waiting') \
                      OR (state = 'accepted' AND filed_as IS NULL)) ORDER BY id"
            ))?;
            stmt.query_map(params![provider, name], upload_row)?
                .collect()
        })
        .await
    }

    /// Every upload in `state`, oldest first.
    pub async fn uploads_in(
        &self,
        provider: &ProviderName,
        state: UploadState,
    ) -> Result<Vec<Upload>, LedgerError> {
        let provider = provider.as_str().to_owned();
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM uploads WHERE state = ?1 AND provider = ?2 ORDER BY id"
            ))?;
            stmt.query_map(params![state.as_str(), provider], upload_row)?
                .collect()
        })
        .await
    }

    /// The job exists: records its ids (the file is still to be filed in `done/`).
    pub async fn upload_accepted(
        &self,
        id: i64,
        batch: &BatchId,
        item: Option<&ItemId>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let (batch, item) = (
            batch.as_str().to_owned(),
            item.map(|i| i.as_str().to_owned()),
        );
        self.run(move |c| {
            c.execute(
                "UPDATE uploads SET state = 'accepted', batch_id = ?2, item_id = ?3, \
                 attempts = attempts + 1, next_attempt_at = NULL, last_error = NULL, \
                 updated_at = ?4 WHERE id = ?1",
                params![id, batch, item, ms(now)],
            )
            .map(drop)
        })
        .await
    }

    /// Where the file went (`done/` or `failed/`), once it is there.
    pub async fn upload_filed(
        &self,
        id: i64,
        filed_as: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let filed_as = filed_as.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE uploads SET filed_as = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, filed_as, ms(now)],
            )
            .map(drop)
        })
        .await
    }

    /// Refused for now (no credits, a configuration problem): the file stays, retried after `at`.
    pub async fn upload_waiting(
        &self,
        id: i64,
        error: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let error = error.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE uploads SET state = 'waiting', attempts = attempts + 1, \
                 next_attempt_at = ?3, last_error = ?2, updated_at = ?4 WHERE id = ?1",
                params![id, error, ms(at), ms(now)],
            )
            .map(drop)
        })
        .await
    }

    /// Ends an upload: `Rejected` (the file was refused), `Failed` (no result will come) or
    /// `Delivered`, with the reason when there is one.
    pub async fn upload_finish(
        &self,
        id: i64,
        state: UploadState,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let error = error.map(str::to_owned);
        self.run(move |c| {
            c.execute(
                "UPDATE uploads SET state = ?2, last_error = ?3, next_attempt_at = NULL, \
                 updated_at = ?4 WHERE id = ?1",
                params![id, state.as_str(), error, ms(now)],
            )
            .map(drop)
        })
        .await
    }

    /// Accepted uploads, already filed, whose job's item is final: ready for the outbox.
    pub async fn uploads_finished(
        &self,
        provider: &ProviderName,
    ) -> Result<Vec<Finished>, LedgerError> {
        let provider = provider.as_str().to_owned();
        self.run(move |c| {
            let cols: String = COLUMNS
                .split(", ")
                .map(|col| format!("u.{col}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut stmt = c.prepare(&format!(
                "SELECT {cols}, i.state, i.path, i.last_error FROM uploads u \
                 JOIN items i ON i.provider = u.provider AND i.batch_id = u.batch_id \
                   AND (u.item_id IS NULL OR i.item_id = u.item_id) \
                 WHERE u.state = 'accepted' AND u.provider = ?1 AND u.filed_as IS NOT NULL \
                   AND i.state IN ('mirrored', 'failed', 'lost', 'skipped') ORDER BY u.id"
            ))?;
            stmt.query_map([provider], |r| {
                let state: String = r.get(14)?;
                Ok(Finished {
                    upload: upload_row(r)?,
                    item_state: ItemState::parse(&state).unwrap_or(ItemState::Failed),
                    result_path: r.get(15)?,
                    item_error: r.get(16)?,
                })
            })?
            .collect()
        })
        .await
    }

    /// Counts per upload state, for `status` (none on a ledger from before the drop folder, which
    /// `status` reads without migrating).
    pub async fn upload_counts(&self) -> Result<Vec<(String, u64)>, LedgerError> {
        self.run(|c| {
            let exists: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'uploads')",
                [],
                |r| r.get(0),
            )?;
            if !exists {
                return Ok(Vec::new());
            }
            let mut stmt = c.prepare("SELECT state, COUNT(*) FROM uploads GROUP BY state")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect()
        })
        .await
    }
}
