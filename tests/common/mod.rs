//! Shared helpers: sandbox specs, settings for a temp dir, file checks.

#![allow(dead_code)]

pub mod services;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use batchmirror::config::{self, Settings};
use batchmirror_sandbox::{BatchSpec, Delivery, ItemSpec, Outcome, Sandbox, SandboxSpec};
use sha2::{Digest, Sha256};

pub const KEY: &str = "test-key";

/// An item that finished `ago_secs` seconds ago.
pub fn done_item(id: &str, ago_secs: f64, delivery: Delivery) -> ItemSpec {
    ItemSpec {
        id: id.to_owned(),
        finishes_at: -ago_secs,
        outcome: Outcome::Succeeded,
        result_bytes: 3000,
        delivery,
    }
}

pub fn batch(id: &str, items: Vec<ItemSpec>) -> BatchSpec {
    BatchSpec {
        id: id.to_owned(),
        created_ago: Duration::from_secs(2 * 3600),
        items,
    }
}

/// `batches` batches of `items` finished items each, half served inline and half redirected.
pub fn finished_batches(batches: usize, items: usize) -> Vec<BatchSpec> {
    (0..batches)
        .map(|b| {
            let items = (0..items)
                .map(|i| {
                    let d = if i % 2 == 0 {
                        Delivery::Inline
                    } else {
                        Delivery::Redirect
                    };
                    done_item(&format!("it-{b}-{i}"), 3600.0 - b as f64, d)
                })
                .collect();
            BatchSpec {
                id: format!("b-{b:03}"),
                created_ago: Duration::from_secs(7200 + b as u64 * 60),
                items,
            }
        })
        .collect()
}

pub fn spec(batches: Vec<BatchSpec>) -> SandboxSpec {
    SandboxSpec {
        api_key: KEY.to_owned(),
        seed: 11,
        batches,
        time_scale: 1.0,
        retention: Duration::from_secs(3 * 24 * 3600),
        presign_ttl: Duration::from_secs(300),
        result_delay: Duration::ZERO,
    }
}

pub async fn start(spec: SandboxSpec) -> Sandbox {
    Sandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .expect("sandbox starts")
}

/// A config file's text for a mirror in `dir` against `base_url`.
pub fn config_text(dir: &Path, base_url: &str, extra_download: &str) -> String {
    format!(
        r#"
[ledger]
path = "{dir}/ledger.sqlite3"
[storage]
root = "{dir}/mirror"
[download]
concurrency = 4
{extra_download}
[[provider]]
name = "ep"
kind = "extract_page"
base_url = "{base_url}"
api_key = "{KEY}"
page_size = 5
max_retries = 3
"#,
        dir = dir.display()
    )
}

pub fn settings(dir: &Path, base_url: &str) -> Settings {
    config::load_str(&config_text(dir, base_url, ""), "test", &HashMap::new())
        .expect("valid test config")
}

pub fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(
        std::fs::read(path).expect("read mirrored file"),
    ))
}

/// Every file under `root`, recursively, but the root's own lock file (which is no result).
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    let lock = root.join(batchmirror::storage::ROOT_LOCK);
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p != lock {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every file under `root`, after asserting none is a `.part` (nothing half-written left).
pub fn whole_files_under(root: &Path) -> Vec<PathBuf> {
    let files = files_under(root);
    assert!(
        files
            .iter()
            .all(|f| !f.to_string_lossy().ends_with(".part")),
        "a .part file was left: {files:?}"
    );
    files
}

/// `daemon::run` in-process on the config of `dir` against `base_url`, never ticking on its own
/// and serving `/metrics` and `/healthz`; returns their base URL, the task and its stop token.
pub fn run_serving_metrics(
    dir: &Path,
    base_url: &str,
) -> (
    String,
    tokio::task::JoinHandle<Result<(), batchmirror::error::Error>>,
    tokio_util::sync::CancellationToken,
) {
    let port = free_port();
    let mut text = config_text(dir, base_url, "");
    text.push_str(&format!(
        "[schedule]\ncron = \"0 0 0 1 1 *\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let settings = config::load_str(&text, "test", &HashMap::new()).unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let daemon = tokio::spawn(batchmirror::daemon::run(settings, token.clone()));
    (format!("http://127.0.0.1:{port}"), daemon, token)
}

/// A loopback port free a moment ago, for a server the test configures.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn total(map: &HashMap<(String, String), u64>) -> u64 {
    map.values().sum()
}

/// Provider "ep"'s rows that are mirrored, each checked against the sandbox's bytes: the ledger's
/// sha256 and the file's both equal what was served.
pub async fn mirrored_rows_match(
    settings: &Settings,
    sandbox: &Sandbox,
) -> Vec<batchmirror::ledger::ItemRow> {
    let ledger = batchmirror::ledger::Ledger::open_read_only(&settings.ledger_path).unwrap();
    let rows = ledger
        .items_in_state(
            &batchmirror::model::ProviderName::parse("ep").unwrap(),
            batchmirror::model::ItemState::Mirrored,
            100_000,
        )
        .await
        .unwrap();
    for row in &rows {
        let (sha, _) = sandbox.expected(&row.batch, &row.item).unwrap();
        assert_eq!(row.sha256.as_deref(), Some(sha.as_str()), "{}", row.item);
        let file = settings.storage_root.join(row.path.as_deref().unwrap());
        assert_eq!(sha256_file(&file), sha, "{}", file.display());
    }
    rows
}

/// Polls `ok` every 25 ms until it holds; fails naming `what` after `secs` seconds.
pub async fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Runs the real binary with `args` then `--config config`, without the caller's `RUST_LOG`.
pub fn run_cli(args: &[&str], config: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_batchmirror"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}
