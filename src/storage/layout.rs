//! The mirror's names: which relative path each result, sidecar and batch record gets, and the
//! id → file-name encoding that keeps every name distinct.
//!
//! ```text
//! <provider>/<batch>/<item>.json              the result, exactly as served
//! <provider>/<batch>/<item>@<suffix>          a sidecar of that item (e.g. `@processing-results.json`)
//! <provider>/<batch>/@batch.json              batch metadata (reserved; not written yet)
//! <any of the above>.part                     being written; never a published name
//! ```
//!
//! `<provider>` is a validated config name, `<batch>` and `<item>` are [`safe_component`]s. An
//! encoded id never contains `@` (it is outside the kept set and percent-encoded otherwise), so the
//! first `@` in a name ends the item part: a sidecar can never be another item's result or sidecar,
//! whatever dots or suffix-like words the ids hold, and `@batch.json` is nobody's item file.
//! Mirrors written before this layout kept sidecars as `<item>.<suffix>`; those files are left where
//! they are (one of them may well be another item's result, so nothing guesses and deletes them).

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{PART_SUFFIX, Storage};
use crate::error::StorageError;
use crate::model::{BatchId, ItemId, ProviderName};

/// Longest encoded name we use; longer ones are shortened and made unique with a hash.
pub(super) const MAX_NAME: usize = 180;
/// Between an item's encoded id and a sidecar suffix: never part of an encoded id.
pub const SIDECAR_SEP: char = '@';
/// The batch metadata file's name: starts with [`SIDECAR_SEP`], so no item id encodes to it.
pub const BATCH_META: &str = "@batch.json";

/// Turns an id into one safe path component. Ids already safe (`[A-Za-z0-9._-]{1,128}`, not
/// starting with `.`) are kept; others are percent-encoded (dots too, so `..` cannot survive), and
/// very long ones are cut and suffixed with a hash of the whole id. Distinct ids never collide: a
/// kept id has no `%` and no `~`, an encoded one has a `%` and no `~`, an over-long safe id starts
/// with `~`, and a shortened one ends in `~<hash>`. No output ever contains `@`.
pub fn safe_component(id: &str) -> String {
    let kept = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if kept {
        return id.to_owned();
    }
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'_').remove(b'-');
    let enc = percent_encoding::utf8_percent_encode(id, SET).to_string();
    // Ids of only safe bytes that were still not kept (too long) get a `~` mark: neither a kept
    // name nor an encoding ever contains `~`, so the mark cannot collide with either.
    let enc = if enc.contains('%') {
        enc
    } else {
        format!("~{enc}")
    };
    if enc.len() <= MAX_NAME {
        return enc;
    }
    let mut cut = MAX_NAME - 18;
    // Never cut inside a %XX triplet.
    while enc.as_bytes()[..cut]
        .iter()
        .rev()
        .take(2)
        .any(|&b| b == b'%')
    {
        cut -= 1;
    }
    let hash = hex::encode(&Sha256::digest(id.as_bytes())[..8]);
    format!("{}~{hash}", &enc[..cut])
}

/// True for a sidecar suffix an adapter may declare: `[a-z0-9._-]+`, not starting with `.` and
/// not ending in `.part`.
fn valid_suffix(suffix: &str) -> bool {
    !suffix.is_empty()
        && !suffix.ends_with(PART_SUFFIX)
        && !suffix.starts_with('.')
        && suffix.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

fn batch_dir(provider: &ProviderName, batch: &BatchId) -> PathBuf {
    let mut p = PathBuf::from(provider.as_str());
    p.push(safe_component(batch.as_str()));
    p
}

/// The file name of an item's result in its batch directory: `<item>.json`.
pub fn result_file_name(item: &str) -> String {
    format!("{}.json", safe_component(item))
}

impl Storage {
    /// The item's result, relative to the root: `<provider>/<batch>/<item>.json`.
    pub fn item_path(provider: &ProviderName, batch: &BatchId, item: &ItemId) -> PathBuf {
        batch_dir(provider, batch).join(result_file_name(item.as_str()))
    }

    /// A file kept with the item's result: `<provider>/<batch>/<item>@<suffix>`. The suffix comes
    /// from the adapter, never the server (see [`valid_suffix`]).
    pub fn sidecar_path(
        provider: &ProviderName,
        batch: &BatchId,
        item: &ItemId,
        suffix: &str,
    ) -> Result<PathBuf, StorageError> {
        let name = format!("{}{SIDECAR_SEP}{suffix}", safe_component(item.as_str()));
        let p = batch_dir(provider, batch).join(name);
        if valid_suffix(suffix) {
            Ok(p)
        } else {
            Err(StorageError::OutsideRoot { path: p })
        }
    }

    /// Where a batch's own metadata goes: `<provider>/<batch>/@batch.json`.
    pub fn batch_meta_path(provider: &ProviderName, batch: &BatchId) -> PathBuf {
        batch_dir(provider, batch).join(BATCH_META)
    }
}
