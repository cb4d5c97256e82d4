//! The LlamaCloud (v1 beta batch-processing) adapter against its sandbox, in-process over loopback
//! with a real SQLite ledger; and the official `llama-cloud` Python SDK 2.10.0 against the sandbox
//! (wire compatibility).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use batchmirror::config::{ProviderKind, Settings};
use batchmirror::daemon;
use batchmirror_sandbox::llamacloud::{Fault, ItemSpec, JobSpec, LlamaSandbox, LlamaSpec, Outcome};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::common::{KEY, config_text, sha256_file, total};

pub(crate) const RETENTION: Duration = Duration::from_secs(48 * 3600);

pub(crate) fn item(job: &str, n: usize, ago: f64, outcome: Outcome) -> ItemSpec {
    ItemSpec {
        id: format!("itm-{job}-{n}"),
        name: format!("doc_{n}.pdf"),
        parse_job_id: format!("pj-{job}-{n}"),
        finishes_at: -ago,
        outcome,
        result_bytes: 3000,
    }
}

pub(crate) fn job(id: &str, created_ago_secs: u64, items: Vec<ItemSpec>) -> JobSpec {
    JobSpec {
        id: id.to_owned(),
        created_ago: Duration::from_secs(created_ago_secs),
        items,
    }
}

/// `n` completed jobs of `items` completed items each.
fn done_jobs(n: usize, items: usize) -> Vec<JobSpec> {
    (0..n)
        .map(|j| {
            let id = format!("bjb-{j:03}");
            let its = (0..items)
                .map(|i| item(&id, i, 600.0, Outcome::Completed))
                .collect();
            job(&id, 3600 + j as u64 * 60, its)
        })
        .collect()
}

pub(crate) fn spec(jobs: Vec<JobSpec>) -> LlamaSpec {
    LlamaSpec {
        api_key: KEY.to_owned(),
        seed: 5,
        jobs,
        time_scale: 1.0,
        retention: RETENTION,
        result_delay: Duration::ZERO,
    }
}

pub(crate) async fn start(spec: LlamaSpec) -> LlamaSandbox {
    LlamaSandbox::start(spec, ([127, 0, 0, 1], 0).into())
        .await
        .expect("sandbox starts")
}

/// An extract_page config turned into a LlamaCloud one (validation still gates other kinds).
pub(crate) fn settings(dir: &Path, base_url: &str, page_size: u32) -> Settings {
    let text = config_text(dir, base_url, "");
    let mut s = batchmirror::config::load_str(&text, "test", &HashMap::new()).expect("config");
    let p = &mut s.providers[0];
    p.kind = ProviderKind::LlamaCloud;
    p.page_size = page_size;
    p.retention = RETENTION;
    p.options.project_id = Some("proj-1".into());
    p.options.result_formats = vec!["json".into(), "markdown".into()];
    s
}

/// The item's result (`suffix` "json") or one of its sidecars (`<item>@<suffix>`).
pub(crate) fn item_file(dir: &Path, job: &str, item: &str, suffix: &str) -> std::path::PathBuf {
    let name = match suffix {
        "json" => format!("{item}.json"),
        sidecar => format!("{item}@{sidecar}"),
    };
    dir.join("mirror").join("ep").join(job).join(name)
}

async fn pass(settings: &Settings) -> daemon::PassReport {
    daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .expect("pass runs")
}

#[tokio::test]
async fn mirrors_every_completed_item_with_sidecars_and_never_twice() {
    let mut jobs = done_jobs(2, 3);
    jobs[0]
        .items
        .push(item("bjb-000", 7, 500.0, Outcome::Failed));
    jobs[0]
        .items
        .push(item("bjb-000", 8, 500.0, Outcome::Skipped));
    let sandbox = start(spec(jobs)).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url(), 100);

    let first = pass(&settings).await;
    assert_eq!(first.download.mirrored, 6, "{first:?}");
    assert_eq!(first.exit_code(), 0, "{first:?}");
    for j in ["bjb-000", "bjb-001"] {
        for i in 0..3 {
            let id = format!("itm-{j}-{i}");
            let (sha, _) = sandbox.expected(j, &id).expect("has a result");
            assert_eq!(sha256_file(&item_file(dir.path(), j, &id, "json")), sha);
            let rec = std::fs::read(item_file(dir.path(), j, &id, "processing-results.json"))
                .expect("processing-results sidecar");
            let rec: Value = serde_json::from_slice(&rec).unwrap();
            assert_eq!(rec["item_id"], id.as_str());
            let md = std::fs::read_to_string(item_file(dir.path(), j, &id, "md")).unwrap();
            assert!(!md.is_empty() && !md.starts_with('{'), "plain markdown");
        }
    }
    let status = daemon::status(&settings).await.unwrap();
    assert_eq!(status.providers[0].items["skipped"], 2);
    let results = total(&sandbox.stats().result_requests);
    assert_eq!(results, 6);

    let second = pass(&settings).await;
    assert_eq!(second.download.mirrored, 0, "{second:?}");
    assert_eq!(total(&sandbox.stats().result_requests), results);
    assert_eq!(sandbox.stats().unauthorized, 0);
    let scoped = sandbox.request_log().iter().all(|r| r.status == 200);
    assert!(scoped, "every request succeeded");
    sandbox.stop().await;
}

#[tokio::test]
async fn pages_through_jobs_and_items_by_offset() {
    let sandbox = start(spec(done_jobs(5, 5))).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url(), 2);
    let report = pass(&settings).await;
    assert_eq!(report.download.mirrored, 25, "{report:?}");
    let stats = sandbox.stats();
    assert_eq!(stats.list_requests, 3, "offsets 0, 2, 4 of 5 jobs");
    assert_eq!(
        stats.items_requests,
        5 * 3,
        "offsets 0, 2, 4 of 5 items per job"
    );
    assert_eq!(stats.detail_requests, 5, "job status once per job");
    sandbox.stop().await;
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let sandbox = start(spec(done_jobs(1, 1))).await;
    sandbox.push_fault(Fault::Status {
        path_prefix: "/api/v1/parsing/job/pj-bjb-000-0/result/json".into(),
        status: 429,
        retry_after: Some("1".into()),
    });
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url(), 100);
    let report = pass(&settings).await;
    assert_eq!(report.download.mirrored, 1, "{report:?}");
    let log: Vec<_> = sandbox
        .request_log()
        .into_iter()
        .filter(|r| r.path.ends_with("/result/json"))
        .collect();
    assert_eq!(log[0].status, 429);
    let waited = log[1].at.duration_since(log[0].at);
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    sandbox.stop().await;
}

#[tokio::test]
async fn results_past_retention_are_lost_and_not_requested_again() {
    let old_secs = RETENTION.as_secs() + 7200;
    let old = job(
        "bjb-old",
        old_secs,
        vec![item(
            "bjb-old",
            0,
            (old_secs - 60) as f64,
            Outcome::Completed,
        )],
    );
    let sandbox = start(spec(vec![old, done_jobs(1, 1).remove(0)])).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url(), 100);
    let first = pass(&settings).await;
    assert_eq!(
        (first.download.lost, first.download.mirrored),
        (1, 1),
        "{first:?}"
    );
    let status = daemon::status(&settings).await.unwrap();
    assert_eq!(status.providers[0].items["lost"], 1);
    let before = total(&sandbox.stats().result_requests);
    let second = pass(&settings).await;
    assert_eq!(total(&sandbox.stats().result_requests), before);
    assert_eq!(second.download.lost, 0);
    sandbox.stop().await;
}

#[tokio::test]
async fn an_unknown_job_status_is_rejected_clearly_and_the_rest_mirrored() {
    let sandbox = start(spec(done_jobs(3, 2))).await;
    sandbox.push_fault(Fault::JobStatus {
        job: "bjb-001".into(),
        status: "archived".into(),
    });
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url(), 100);
    let report = pass(&settings).await;
    assert_eq!(report.download.mirrored, 4, "{report:?}");
    let listing = report.providers[0].listing.as_ref().expect("listing ok");
    assert!(
        listing
            .rejected
            .iter()
            .any(|r| r.contains("bjb-001") && r.contains("unknown status \"archived\"")),
        "{:?}",
        listing.rejected
    );
    sandbox.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The official Python SDK against the sandbox.

const SDK_VERSION: &str = "2.10.0";

const SDK_SCRIPT: &str = r#"
import json, sys
import llama_cloud
from llama_cloud import LlamaCloud
client = LlamaCloud(base_url=sys.argv[1], max_retries=0, _strict_response_validation=True)
jobs = [j for j in client.beta.batch.list(limit=2, project_id="proj-1")]
job_id = sys.argv[2]
status = client.beta.batch.get_status(job_id)
items = [i for i in client.beta.batch.job_items.list(job_id, limit=2)]
done = [i for i in items if i.status == "completed"]
rec = client.beta.batch.job_items.get_processing_results(done[0].item_id)
errors = {}
try:
    LlamaCloud(api_key="wrong", base_url=sys.argv[1], max_retries=0).beta.batch.list()
except llama_cloud.AuthenticationError as e:
    errors["401"] = e.body
try:
    client.beta.batch.get_status("bjb-missing")
except llama_cloud.NotFoundError as e:
    errors["404"] = e.body
try:
    client.beta.batch.list(limit=5000)
except llama_cloud.UnprocessableEntityError as e:
    errors["422"] = e.body
print(json.dumps({
    "errors": errors,
    "jobs": [j.id for j in jobs],
    "job_status": status.job.status,
    "progress": status.progress_percentage,
    "items": [i.item_id for i in items],
    "parse_job": done[0].job_id,
    "record_item": rec.item_id,
    "record_results": [r.result_id for r in rec.processing_results or []],
}))
"#;

/// The venv's python with the SDK installed, or why not (installs once per target dir).
fn sdk_python() -> Result<std::path::PathBuf, String> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let venv = target.join("llama-sdk-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join(format!(".llama-cloud-{SDK_VERSION}"));
    if marker.exists() && python.exists() {
        return Ok(python);
    }
    let run = |cmd: &mut std::process::Command, what: &str| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    run(
        std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv),
        "python3 -m venv",
    )?;
    run(
        std::process::Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            &format!("llama-cloud=={SDK_VERSION}"),
        ]),
        "pip install llama-cloud",
    )?;
    std::fs::write(&marker, b"").map_err(|e| format!("marker: {e}"))?;
    Ok(python)
}

#[tokio::test]
async fn the_official_python_sdk_reads_the_sandbox() {
    let python = match tokio::task::spawn_blocking(sdk_python).await.unwrap() {
        Ok(p) => p,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping the llama-cloud SDK test: {why}");
            return;
        }
        Err(why) => panic!("the llama-cloud SDK is required in CI: {why}"),
    };
    let spec = LlamaSpec::generated(3, 3, 1500, 21);
    let job = spec.jobs[1].clone();
    let mut ids: Vec<String> = spec.jobs.iter().map(|j| j.id.clone()).collect();
    ids.sort();
    let key = spec.api_key.clone();
    let sandbox = start(spec).await;
    let out = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(SDK_SCRIPT)
        .arg(sandbox.base_url())
        .arg(&job.id)
        .env("LLAMA_CLOUD_API_KEY", &key)
        .env_remove("LLAMA_CLOUD_BASE_URL")
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("script prints JSON");
    let mut listed: Vec<String> = serde_json::from_value(v["jobs"].clone()).unwrap();
    listed.sort();
    assert_eq!(listed, ids, "the SDK's offset paging saw every job once");
    assert_eq!(v["job_status"], "completed");
    let items: Vec<String> = serde_json::from_value(v["items"].clone()).unwrap();
    let expected: Vec<String> = job.items.iter().map(|i| i.id.clone()).collect();
    assert_eq!(items, expected);
    let done = job
        .items
        .iter()
        .find(|i| i.outcome == Outcome::Completed)
        .unwrap();
    assert_eq!(v["parse_job"], done.parse_job_id.as_str());
    assert_eq!(v["record_item"], done.id.as_str());
    assert_eq!(v["record_results"][0], done.parse_job_id.as_str());
    let errors = &v["errors"];
    assert_eq!(errors["401"]["detail"], "Invalid API key", "{errors}");
    assert!(errors["404"]["detail"].is_string(), "{errors}");
    assert_eq!(errors["422"]["detail"][0]["loc"][1], "limit", "{errors}");
    let stats = sandbox.stats();
    assert_eq!(
        stats.list_requests, 4,
        "3 jobs at limit=2, one 401, one 422"
    );
    assert_eq!(stats.items_requests, 2, "3 items at limit=2");
    assert_eq!(stats.unauthorized, 1);
    sandbox.stop().await;
}

#[tokio::test]
async fn an_open_job_whose_status_turns_unknown_still_gets_its_items_mirrored() {
    let mut late = item("bjb-run", 1, 0.0, Outcome::Completed);
    late.finishes_at = 1.2;
    let running = job(
        "bjb-run",
        60,
        vec![item("bjb-run", 0, 30.0, Outcome::Completed), late],
    );
    let sandbox = start(spec(vec![running])).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url(), 100);
    assert_eq!(pass(&settings).await.download.mirrored, 1);
    sandbox.push_fault(Fault::JobStatus {
        job: "bjb-run".into(),
        status: "paused".into(),
    });
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let report = pass(&settings).await;
    assert_eq!(report.download.mirrored, 1, "{report:?}");
    let listing = report.providers[0].listing.as_ref().expect("listing ok");
    assert!(
        listing.rejected.iter().all(|r| r.contains("\"paused\"")) && listing.rejected.len() == 2,
        "rejected in the list and in the job status: {:?}",
        listing.rejected
    );
    sandbox.stop().await;
}
