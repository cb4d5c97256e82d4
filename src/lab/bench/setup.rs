//! What a benchmark run stands on: the sandbox accounts it serves, the config files of the
//! `batchmirror` children and the config file of `curl --parallel`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::toml_str;
use batchmirror_sandbox::{BatchSpec, Delivery, ItemSpec, Outcome, Sandbox, SandboxSpec};

use super::BenchError;

/// The key the bench sandboxes accept.
pub const KEY: &str = "bench-key";
/// Items per sandbox batch (two item pages of the largest size the client asks for).
const PER_BATCH: usize = 1000;
/// The provider name in every bench config.
pub const PROVIDER: &str = "bench";

/// An account of `items` finished results of about `bytes` each, served inline (one GET each, as
/// curl fetches them), in batches of [`PER_BATCH`].
pub fn account(items: usize, bytes: usize) -> SandboxSpec {
    account_in(items, bytes, PER_BATCH)
}

/// [`account`] in batches of `per_batch`.
pub fn account_in(items: usize, bytes: usize, per_batch: usize) -> SandboxSpec {
    let per_batch = per_batch.max(1);
    let batches = items.div_ceil(per_batch);
    let batches = (0..batches)
        .map(|b| {
            let n = per_batch.min(items - b * per_batch);
            BatchSpec {
                id: format!("batch_{b:06}"),
                created_ago: Duration::from_secs(7200 + b as u64),
                items: (0..n)
                    .map(|i| ItemSpec {
                        id: format!("item_{i:05}"),
                        finishes_at: -3600.0,
                        outcome: Outcome::Succeeded,
                        result_bytes: bytes,
                        delivery: Delivery::Inline,
                    })
                    .collect(),
            }
        })
        .collect();
    SandboxSpec {
        api_key: KEY.to_owned(),
        seed: 42,
        batches,
        time_scale: 1.0,
        retention: Duration::from_secs(3 * 24 * 3600),
        presign_ttl: Duration::from_secs(300),
        result_delay: Duration::ZERO,
    }
}

/// Every (batch, item) of a spec, in order.
pub fn ids(spec: &SandboxSpec) -> Vec<(String, String)> {
    spec.batches
        .iter()
        .flat_map(|b| b.items.iter().map(|i| (b.id.clone(), i.id.clone())))
        .collect()
}

/// Exact bytes the sandbox serves for `ids`.
pub fn expected_bytes(sandbox: &Sandbox, ids: &[(String, String)]) -> u64 {
    ids.iter()
        .filter_map(|(b, i)| sandbox.expected(b, i))
        .map(|(_, n)| n)
        .sum()
}

/// The files of one `batchmirror` under test.
pub struct Instance {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub ledger: PathBuf,
    pub mirror: PathBuf,
}

/// Writes a config for a fresh ledger and mirror under `dir`, mirroring `base_url` with
/// `concurrency` downloads (`None`: the shipped default). There is no rate key (pacing is the
/// shipped adaptive one) and logs keep to warnings; everything else is the shipped default,
/// JSON validation included.
pub fn instance(
    dir: &Path,
    base_url: &str,
    concurrency: Option<usize>,
) -> Result<Instance, BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io("create", dir, e))?;
    let inst = Instance {
        dir: dir.to_owned(),
        config: dir.join("config.toml"),
        ledger: dir.join("ledger.sqlite3"),
        mirror: dir.join("mirror"),
    };
    let mut toml = String::new();
    let _ = writeln!(
        toml,
        "[ledger]\npath = {}\n\n[storage]\nroot = {}\n",
        toml_str(&inst.ledger.to_string_lossy()),
        toml_str(&inst.mirror.to_string_lossy())
    );
    let concurrency = concurrency
        .map(|n| format!("concurrency = {n}\n"))
        .unwrap_or_default();
    let _ = writeln!(
        toml,
        "[download]\n{concurrency}max_body_bytes = \"64GiB\"\n\n[log]\nlevel = \"warn\"\n"
    );
    let _ = writeln!(
        toml,
        "[[provider]]\nname = {}\nkind = \"extract_page\"\nbase_url = {}\napi_key = {}\npage_size = 200",
        toml_str(PROVIDER),
        toml_str(base_url),
        toml_str(KEY)
    );
    std::fs::write(&inst.config, toml).map_err(|e| BenchError::io("write", &inst.config, e))?;
    Ok(inst)
}

/// A `curl --config` file fetching every result of `ids` into `out/<batch>/<item>.json`.
pub fn curl_config(
    path: &Path,
    base_url: &str,
    ids: &[(String, String)],
    out: &Path,
) -> Result<(), BenchError> {
    let mut cfg = format!("header = \"X-API-KEY: {KEY}\"\n");
    for (b, i) in ids {
        let _ = writeln!(
            cfg,
            "url = \"{base_url}/v1/batches/{b}/items/{i}/result\"\noutput = {}",
            toml_str(&out.join(b).join(format!("{i}.json")).to_string_lossy())
        );
    }
    std::fs::write(path, cfg).map_err(|e| BenchError::io("write", path, e))
}
