//! Ledger set-ups for `batchmirror bench`: filling a ledger with many rows straight in SQL, so the
//! idle-pass and `status` figures can be taken on 100,000 and 1,000,000 items without downloading
//! them first. They open the ledger file themselves: the daemon's ledger knows nothing of them.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use crate::ledger::{BUSY_TIMEOUT, NOT_FINAL};

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // The daemon's own connection may hold the write lock; wait as long as the daemon would.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Every non-final item of `provider` becomes mirrored (with `bytes` and `sha256`, the file
/// assumed present) and its batches handled when terminal and complete. The ledger at `path`
/// must exist (opened once by [`crate::ledger::Ledger::open`]).
pub(crate) fn mark_all_mirrored(
    path: &Path,
    provider: &str,
    bytes: u64,
    sha256: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<u64> {
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    mark_all(
        &mut open(path)?,
        provider,
        bytes,
        sha256,
        now.timestamp_millis(),
    )
}

/// `batches` × `items_per_batch` generated rows for `provider` (see [`generate_rows`] for the
/// mix) in the existing ledger at `path`.
pub(crate) fn generate(
    path: &Path,
    provider: &str,
    batches: u64,
    items_per_batch: u64,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    generate_rows(
        &mut open(path)?,
        provider,
        batches,
        items_per_batch,
        now.timestamp_millis(),
    )
}

/// Marks every non-final item of `provider` mirrored (at `<provider>/<batch>/<item>.json`, with
/// the given size and digest) and recomputes `handled` for its batches the way
/// `refresh_handled` does: what a finished `sync --once` leaves behind. Returns the rows changed.
fn mark_all(
    conn: &mut Connection,
    provider: &str,
    bytes: i64,
    sha256: &str,
    now: i64,
) -> rusqlite::Result<u64> {
    let tx = conn.transaction()?;
    let changed = tx.execute(
        &format!(
            "UPDATE items SET state = 'mirrored', bytes = ?2, sha256 = ?3,
                 path = provider || '/' || batch_id || '/' || item_id || '.json', updated_at = ?4
             WHERE provider = ?1 AND state IN {NOT_FINAL}"
        ),
        params![provider, bytes, sha256, now],
    )?;
    tx.execute(
        &format!(
            "UPDATE batches SET handled = (
                 terminal
                 AND NOT EXISTS (SELECT 1 FROM items i WHERE i.provider = batches.provider
                                 AND i.batch_id = batches.batch_id AND i.state IN {NOT_FINAL})
                 AND (total_items IS NULL OR total_items <= (SELECT COUNT(*) FROM items i
                      WHERE i.provider = batches.provider AND i.batch_id = batches.batch_id)))
             WHERE provider = ?1"
        ),
        params![provider],
    )?;
    tx.commit()?;
    Ok(changed as u64)
}

/// Inserts `batches` completed batches of `items_per_batch` items for `provider`, in one
/// transaction, with a realistic mix for `status`: about 1 in 50 items not mirrored yet (ready,
/// deadlines spread over the next three days), 1 in 200 failed, the rest mirrored.
fn generate_rows(
    conn: &mut Connection,
    provider: &str,
    batches: u64,
    items_per_batch: u64,
    now: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let (batches, per) = (batches as i64, items_per_batch as i64);
    tx.execute(
        "WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k + 1 < ?2)
         INSERT INTO batches (provider, batch_id, status, terminal, total_items, created_at,
                              handled, seen_at)
         SELECT ?1, printf('batch_%07d', k), 'completed', 1, ?3, ?4 - k * 60000, 1, ?4 FROM n",
        params![provider, batches, per, now],
    )?;
    // Item k of the whole ledger: batch k / per, position k % per; the state mix follows k.
    tx.execute(
        "WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k + 1 < ?2 * ?3)
         INSERT INTO items (provider, batch_id, item_id, remote_status, state, deadline, attempts,
                            bytes, sha256, path, last_error, updated_at)
         SELECT ?1, printf('batch_%07d', k / ?3), printf('item_%06d', k % ?3),
                CASE WHEN k % 200 = 7 THEN 'failed' ELSE 'succeeded' END,
                CASE WHEN k % 200 = 7 THEN 'failed' WHEN k % 50 = 3 THEN 'ready'
                     ELSE 'mirrored' END,
                ?4 + (k * 7919) % 259200000, 0,
                CASE WHEN k % 50 = 3 OR k % 200 = 7 THEN NULL ELSE 20000 END,
                CASE WHEN k % 50 = 3 OR k % 200 = 7 THEN NULL ELSE printf('%064x', k) END,
                CASE WHEN k % 50 = 3 OR k % 200 = 7 THEN NULL
                     ELSE printf('%s/batch_%07d/item_%06d.json', ?1, k / ?3, k % ?3) END,
                CASE WHEN k % 200 = 7 THEN 'extraction_failed' END,
                ?4
         FROM n",
        params![provider, batches, per, now],
    )?;
    // The few not mirrored yet keep their batch open, as a real ledger would.
    tx.execute(
        &format!(
            "UPDATE batches SET handled = 0 WHERE provider = ?1 AND EXISTS (SELECT 1 FROM items i
             WHERE i.provider = ?1 AND i.batch_id = batches.batch_id AND i.state IN {NOT_FINAL})"
        ),
        params![provider],
    )?;
    tx.commit()
}

/// `batches` × `items_per_batch` items of `provider`, every one mirrored at
/// `<provider>/batch_%07d/item_%06d.json` with the given size and digest (deadlines three days
/// on), in the existing ledger at `path`: what `verify` reads, without downloading anything.
pub(crate) fn generate_mirrored(
    path: &Path,
    provider: &str,
    (batches, items_per_batch): (u64, u64),
    (bytes, sha256): (u64, &str),
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    let mut conn = open(path)?;
    let tx = conn.transaction()?;
    let (batches, per) = (batches as i64, items_per_batch as i64);
    let (bytes, now) = (
        i64::try_from(bytes).unwrap_or(i64::MAX),
        now.timestamp_millis(),
    );
    tx.execute(
        "WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k + 1 < ?2)
         INSERT INTO batches (provider, batch_id, status, terminal, total_items, created_at,
                              handled, seen_at)
         SELECT ?1, printf('batch_%07d', k), 'completed', 1, ?3, ?4, 1, ?4 FROM n",
        params![provider, batches, per, now],
    )?;
    tx.execute(
        "WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k + 1 < ?2 * ?3)
         INSERT INTO items (provider, batch_id, item_id, remote_status, state, deadline, attempts,
                            bytes, sha256, path, updated_at)
         SELECT ?1, printf('batch_%07d', k / ?3), printf('item_%06d', k % ?3), 'succeeded',
                'mirrored', ?4 + 259200000, 0, ?5, ?6,
                printf('%s/batch_%07d/item_%06d.json', ?1, k / ?3, k % ?3), ?4
         FROM n",
        params![provider, batches, per, now, bytes, sha256],
    )?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;
    use crate::model::{
        BatchId, BatchStatus, ItemId, ProviderName, RemoteBatch, RemoteItem, RemoteStatus,
    };

    fn name() -> ProviderName {
        ProviderName::parse("p").unwrap()
    }

    #[tokio::test]
    async fn generated_rows_follow_the_documented_mix_and_open_batches_stay_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite3");
        let ledger = Ledger::open(&path).unwrap();
        generate(&path, "p", 3, 400, Utc::now()).unwrap();
        let s = ledger
            .summary(
                &[(name(), "k".into())],
                Utc::now(),
                std::time::Duration::ZERO,
            )
            .await
            .unwrap();
        let items = &s[0].items;
        // 1200 rows: k % 200 == 7 → 6 failed; k % 50 == 3 → 24 ready; the rest mirrored.
        assert_eq!(items["failed"], 6);
        assert_eq!(items["ready"], 24);
        assert_eq!(items["mirrored"], 1200 - 30);
        // Every batch holds a ready item, so none is handled.
        assert_eq!(ledger.unhandled_batches(&name()).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn marking_all_mirrored_closes_complete_terminal_batches_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite3");
        let ledger = Ledger::open(&path).unwrap();
        let item = |id: &str| RemoteItem {
            id: ItemId::parse(id).unwrap(),
            status: RemoteStatus::Succeeded,
            deadline: None,
            error: None,
            locator: None,
        };
        for (id, status, total) in [
            ("done", BatchStatus::Completed, 2),
            ("running", BatchStatus::Running, 2),
            ("short", BatchStatus::Completed, 5),
        ] {
            let b = RemoteBatch {
                id: BatchId::parse(id).unwrap(),
                status,
                total_items: Some(total),
                created_at: None,
                expires_at: None,
            };
            let bid = b.id.clone();
            ledger
                .apply_item_page(
                    &name(),
                    &bid,
                    Some(&b),
                    &[item("a"), item("b")],
                    None,
                    Utc::now(),
                )
                .await
                .unwrap();
        }
        let n = mark_all_mirrored(&path, "p", 10, &"0".repeat(64), Utc::now()).unwrap();
        assert_eq!(n, 6);
        let open: Vec<String> = ledger
            .unhandled_batches(&name())
            .await
            .unwrap()
            .iter()
            .map(|b| b.as_str().to_owned())
            .collect();
        // Still running, or fewer rows than the batch's total: not handled.
        assert_eq!(open, ["running", "short"]);
        let row = ledger
            .item(
                &name(),
                &BatchId::parse("done").unwrap(),
                &ItemId::parse("a").unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.path.as_deref(), Some("p/done/a.json"));
    }
}
