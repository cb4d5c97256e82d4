//! The drop folder end to end: files dropped into the inbox become jobs at the sandbox exactly
//! once and come back as `outbox/<name>.json`; slow writers, files dropped while stopped, a crash
//! between the job's creation and its record, refused entries, 402 and a permanent refusal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use batchmirror::config::{self, Settings};
use batchmirror::daemon;
use batchmirror::ledger::{Ledger, UploadState};
use batchmirror::model::ProviderName;
use batchmirror_sandbox::Sandbox;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_batchmirror");

/// The drop folder's four sibling folders under `dir/drop`.
struct Folders {
    inbox: PathBuf,
    done: PathBuf,
    failed: PathBuf,
    outbox: PathBuf,
}

fn folders(dir: &Path) -> Folders {
    let base = dir.join("drop");
    let f = Folders {
        inbox: base.join("inbox"),
        done: base.join("done"),
        failed: base.join("failed"),
        outbox: base.join("outbox"),
    };
    std::fs::create_dir_all(&f.inbox).unwrap();
    f
}

/// A config for provider "ep" at `base_url` with a drop folder (`extra` adds `[dropfolder]` keys).
fn config_with_drop(dir: &Path, base_url: &str, extra: &str) -> String {
    let mut text = config_text(dir, base_url, "");
    text.push_str(&format!(
        r#"
[schedule]
cron = "0 0 0 1 1 *"
[dropfolder]
path = "{inbox}"
provider = "ep"
rescan = "1s"
result_poll = "200ms"
{extra}
"#,
        inbox = dir.join("drop/inbox").display()
    ));
    if !extra.contains("settle") {
        text.push_str("settle = \"300ms\"\n");
    }
    text
}

fn settings(text: &str) -> Settings {
    config::load_str(text, "test", &HashMap::new()).expect("valid test config")
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The `input_sha256` the sandbox put in a result made from an upload.
fn input_sha(outbox_file: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outbox_file).unwrap()).expect("outbox holds JSON");
    v["input_sha256"].as_str().expect("input_sha256").to_owned()
}

fn start_daemon(settings: Settings) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let token = CancellationToken::new();
    let t = token.clone();
    let handle = tokio::spawn(async move {
        daemon::run(settings, t).await.expect("daemon runs cleanly");
    });
    (token, handle)
}

/// The uploads in `state` (none while the daemon has not created the ledger yet).
async fn uploads(dir: &Path, state: UploadState) -> Vec<batchmirror::ledger::Upload> {
    let Ok(ledger) = Ledger::open_read_only(&dir.join("ledger.sqlite3")) else {
        return Vec::new();
    };
    ledger
        .uploads_in(&ProviderName::parse("ep").unwrap(), state)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_files_dropped_at_once_are_each_submitted_once_and_come_back() {
    let sandbox = start(spec(vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let f = folders(dir.path());
    let mut expected = HashMap::new();
    // A few dropped before the start (picked up by the first scan), the rest while running.
    for i in 0..20 {
        let body = format!("early document {i}\n").repeat(50);
        std::fs::write(f.inbox.join(format!("early-{i:03}.pdf")), &body).unwrap();
        expected.insert(format!("early-{i:03}.pdf"), sha(body.as_bytes()));
    }
    let text = config_with_drop(dir.path(), &sandbox.base_url(), "mode = \"inotify\"");
    let (token, daemon) = start_daemon(settings(&text.clone()));
    for i in 0..180 {
        let body = format!("document number {i}\n").repeat(40 + i);
        std::fs::write(f.inbox.join(format!("doc-{i:03}.pdf")), &body).unwrap();
        expected.insert(format!("doc-{i:03}.pdf"), sha(body.as_bytes()));
    }
    wait_until("200 results in the outbox", 120, || {
        names(&f.outbox).len() >= 200
    })
    .await;
    token.cancel();
    daemon.await.unwrap();

    let stats = sandbox.stats();
    assert_eq!(stats.batches_created, 200, "one job per file, none twice");
    assert_eq!(stats.idempotent_replays, 0);
    assert_eq!(stats.store_requests_with_credentials, 0);
    let outbox = names(&f.outbox);
    assert_eq!(outbox.len(), 200, "{outbox:?}");
    for (name, sha) in &expected {
        let out = f.outbox.join(format!("{name}.json"));
        assert_eq!(
            &input_sha(&out),
            sha,
            "{name}: the result of that very file"
        );
    }
    assert_eq!(names(&f.done).len(), 200);
    assert!(names(&f.inbox).is_empty(), "{:?}", names(&f.inbox));
    assert!(names(&f.failed).is_empty());
    assert_eq!(uploads(dir.path(), UploadState::Delivered).await.len(), 200);
    let report = daemon::status(&settings(&text)).await.unwrap();
    let counts = report.dropfolder.expect("status shows the drop folder");
    assert_eq!(counts["delivered"], 200);
    assert_eq!(
        counts["submitting"] + counts["waiting"] + counts["accepted"],
        0
    );
}

/// Writes `chunks` of 1 KB with `pause` between them, holding the file open throughout.
fn slow_write(path: PathBuf, chunks: usize, pause: Duration) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        use std::io::Write;
        let mut file = std::fs::File::create(&path).unwrap();
        let mut all = Vec::new();
        for i in 0..chunks {
            let chunk = format!("{i:04} ").repeat(1024 / 5);
            file.write_all(chunk.as_bytes()).unwrap();
            file.flush().unwrap();
            all.extend_from_slice(chunk.as_bytes());
            std::thread::sleep(pause);
        }
        sha(&all)
    })
}

async fn slow_writer_case(mode: &str, pause: Duration) {
    let sandbox = start(spec(vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let f = folders(dir.path());
    let text = config_with_drop(
        dir.path(),
        &sandbox.base_url(),
        &format!("mode = \"{mode}\"\nsettle = \"1s\""),
    );
    let (token, daemon) = start_daemon(settings(&text));
    // A first file through proves the watch is up: a file already being written when the daemon
    // starts has no write events to go by, only the settle time.
    std::fs::write(f.inbox.join("first.pdf"), "first").unwrap();
    wait_until("the first file taken", 60, || {
        f.done.join("first.pdf").exists()
    })
    .await;
    let writer = slow_write(f.inbox.join("scan.pdf"), 8, pause);
    let full = tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    wait_until("the result", 60, || f.outbox.join("scan.pdf.json").exists()).await;
    token.cancel();
    daemon.await.unwrap();
    assert_eq!(
        sandbox.stats().batches_created,
        2,
        "each file submitted once"
    );
    assert_eq!(
        input_sha(&f.outbox.join("scan.pdf.json")),
        full,
        "the whole file was submitted, not a prefix"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_writer_is_never_submitted_early_when_polling() {
    // 1 KB every 500 ms: size changes faster than the 1 s settle.
    slow_writer_case("poll", Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_inotify_a_writer_pausing_longer_than_settle_is_waited_for() {
    // Pauses of 1.3 s outlast the 1 s settle: only the close-after-write says it is done.
    slow_writer_case("inotify", Duration::from_millis(1300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_fifos_and_hardlinks_are_refused_and_left_in_place() {
    let sandbox = start(spec(vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let f = folders(dir.path());
    let secret = dir.path().join("secret.pdf");
    std::fs::write(&secret, "outside the inbox").unwrap();
    std::os::unix::fs::symlink(&secret, f.inbox.join("link.pdf")).unwrap();
    std::fs::hard_link(&secret, f.inbox.join("hard.pdf")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(f.inbox.join("pipe.pdf"))
        .status()
        .expect("mkfifo runs");
    assert!(fifo.success());
    std::fs::write(f.inbox.join("fine.pdf"), "a plain document").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_with_drop(dir.path(), &sandbox.base_url(), ""),
    )
    .unwrap();
    // The real binary, so its log can be checked for the reasons.
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the plain file's result", 60, || {
        f.outbox.join("fine.pdf.json").exists()
    })
    .await;
    // A few more settle periods and a rescan: the refused entries must stay refused.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);

    assert_eq!(sandbox.stats().batches_created, 1, "only the plain file");
    assert_eq!(sandbox.stats().uploads, 1);
    for (name, reason) in [
        ("link.pdf", "symbolic link"),
        ("pipe.pdf", "FIFO"),
        ("hard.pdf", "hard links"),
    ] {
        assert!(
            names(&f.inbox).contains(&name.to_owned()),
            "{name} left in place"
        );
        assert!(
            log.lines()
                .any(|l| l.contains("refused") && l.contains(name) && l.contains(reason)),
            "{name}: no logged reason mentioning {reason:?} in:\n{log}"
        );
    }
    assert!(names(&f.failed).is_empty() && names(&f.done) == ["fine.pdf"]);
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "outside the inbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_job_and_its_record_makes_no_second_job() {
    let sandbox = start(spec(vec![])).await;
    // The batch is created at once, but the answer is held: the kill lands in between.
    sandbox.set_create_answer_delay(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let f = folders(dir.path());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_with_drop(dir.path(), &sandbox.base_url(), ""),
    )
    .unwrap();
    let body = "one invoice, paid for once\n".repeat(30);
    std::fs::write(f.inbox.join("invoice.pdf"), &body).unwrap();
    let spawn = || {
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    wait_until("the job's creation", 60, || {
        sandbox.stats().batches_created == 1
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let pending = uploads(dir.path(), UploadState::Submitting).await;
    assert_eq!(pending.len(), 1, "the row was committed before the request");
    assert!(names(&f.inbox).contains(&"invoice.pdf".to_owned()));

    sandbox.set_create_answer_delay(Duration::ZERO);
    let mut child = spawn();
    wait_until("the result after the restart", 60, || {
        f.outbox.join("invoice.pdf.json").exists()
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let stats = sandbox.stats();
    assert_eq!(stats.batches_created, 1, "no second job");
    assert_eq!(
        stats.idempotent_replays, 1,
        "the restart asked with the same key"
    );
    assert_eq!(
        input_sha(&f.outbox.join("invoice.pdf.json")),
        sha(body.as_bytes())
    );
    assert_eq!(names(&f.done), ["invoice.pdf"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_required_keeps_the_file_until_the_quota_allows_it() {
    let sandbox = start(spec(vec![])).await;
    sandbox.set_quota(0);
    let dir = tempfile::tempdir().unwrap();
    let f = folders(dir.path());
    std::fs::write(f.inbox.join("waiting.pdf"), "no quota left").unwrap();
    let text = config_with_drop(dir.path(), &sandbox.base_url(), "");
    let (token, daemon) = start_daemon(settings(&text));
    let db = dir.path().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if !uploads(&db, UploadState::Waiting).await.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "never marked waiting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waiting = uploads(&db, UploadState::Waiting).await;
    assert!(
        waiting[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("402")
    );
    assert_eq!(names(&f.inbox), ["waiting.pdf"], "kept in the inbox");
    assert!(names(&f.failed).is_empty(), "never moved to failed/");

    sandbox.set_quota(5);
    wait_until("the result once the quota allows", 60, || {
        f.outbox.join("waiting.pdf.json").exists()
    })
    .await;
    token.cancel();
    daemon.await.unwrap();
    assert_eq!(sandbox.stats().batches_created, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_file_goes_to_failed_with_the_reason_and_same_content_is_not_paid_twice() {
    let sandbox: Sandbox = start(spec(vec![])).await;
    sandbox.set_max_upload_bytes(1000);
    let dir = tempfile::tempdir().unwrap();
    let f = folders(dir.path());
    std::fs::write(f.inbox.join("huge.pdf"), "x".repeat(5000)).unwrap();
    std::fs::write(f.inbox.join("a.pdf"), "same bytes").unwrap();
    std::fs::write(f.inbox.join("b.pdf"), "same bytes").unwrap();
    let text = config_with_drop(dir.path(), &sandbox.base_url(), "");
    let (token, daemon) = start_daemon(settings(&text));
    wait_until("both results and the refusal", 60, || {
        f.outbox.join("a.pdf.json").exists()
            && f.outbox.join("b.pdf.json").exists()
            && f.failed.join("huge.pdf.error.txt").exists()
    })
    .await;
    token.cancel();
    daemon.await.unwrap();
    let why = std::fs::read_to_string(f.failed.join("huge.pdf.error.txt")).unwrap();
    assert!(why.contains("413"), "{why}");
    assert_eq!(why.lines().count(), 1);
    assert_eq!(names(&f.failed), ["huge.pdf", "huge.pdf.error.txt"]);
    assert_eq!(sandbox.stats().batches_created, 1, "same content, one job");
    assert_eq!(
        std::fs::read(f.outbox.join("a.pdf.json")).unwrap(),
        std::fs::read(f.outbox.join("b.pdf.json")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_dropped_while_the_daemon_is_stopped_are_picked_up_at_start() {
    let sandbox = start(spec(vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let f = folders(dir.path());
    let text = config_with_drop(dir.path(), &sandbox.base_url(), "mode = \"inotify\"");
    // A first run, then a stop: nothing watches the inbox any more.
    std::fs::write(f.inbox.join("before.pdf"), "seen while running").unwrap();
    let (token, daemon) = start_daemon(settings(&text));
    wait_until("the first result", 60, || {
        f.outbox.join("before.pdf.json").exists()
    })
    .await;
    token.cancel();
    daemon.await.unwrap();
    for i in 0..3 {
        std::fs::write(
            f.inbox.join(format!("offline-{i}.pdf")),
            format!("dropped offline {i}"),
        )
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sandbox.stats().batches_created,
        1,
        "nothing runs while stopped"
    );
    let (token, daemon) = start_daemon(settings(&text));
    wait_until("the offline drops' results", 60, || {
        (0..3).all(|i| f.outbox.join(format!("offline-{i}.pdf.json")).exists())
    })
    .await;
    token.cancel();
    daemon.await.unwrap();
    assert_eq!(sandbox.stats().batches_created, 4);
    assert!(names(&f.inbox).is_empty());
}

/// The first 12 hex digits of the sha256 of a file name: what a shortened name carries.
fn name_hash(name: &str) -> String {
    sha(name.as_bytes())[..12].to_owned()
}

/// The names in `dir`, each checked to be valid UTF-8 and within Linux's 255-byte limit.
fn utf8_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().into_string().expect("a UTF-8 name");
            assert!(name.len() <= 255, "{name}: {} bytes", name.len());
            name
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_255_byte_name_is_paid_for_once_and_delivered_under_a_name_with_its_hash() {
    let sandbox = start(spec(vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let f = folders(dir.path());
    let name = format!("{}.pdf", "a".repeat(251));
    assert_eq!(name.len(), 255, "the longest name the inbox takes");
    let body = "a document with a very long name\n".repeat(20);
    std::fs::write(f.inbox.join(&name), &body).unwrap();
    let text = config_with_drop(dir.path(), &sandbox.base_url(), "");
    let (token, daemon) = start_daemon(settings(&text));
    let hash = name_hash(&name);
    wait_until("the result under a shortened name", 30, || {
        names(&f.outbox).iter().any(|n| n.contains(&hash))
    })
    .await;
    token.cancel();
    daemon.await.unwrap();

    assert_eq!(sandbox.stats().batches_created, 1, "paid for once");
    let done = utf8_names(&f.done);
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].ends_with(&format!("~{hash}.pdf")), "{done:?}");
    assert!(name.starts_with(done[0].split('~').next().unwrap()));
    let outbox = utf8_names(&f.outbox);
    assert_eq!(outbox, [format!("{}.json", done[0])]);
    assert_eq!(input_sha(&f.outbox.join(&outbox[0])), sha(body.as_bytes()));
    assert!(names(&f.inbox).is_empty() && names(&f.failed).is_empty());
    let delivered = uploads(dir.path(), UploadState::Delivered).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].name, name,
        "the ledger keeps the name as dropped"
    );
    assert_eq!(delivered[0].filed_as.as_deref(), Some(done[0].as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_250_byte_multibyte_name_dropped_twice_is_cut_on_a_character_boundary_and_delivered_twice()
 {
    let sandbox = start(spec(vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let f = folders(dir.path());
    // Two- and three-byte characters: a cut by bytes would land inside one.
    let name = format!("x{}.pdf", "é日".repeat(49));
    assert_eq!(name.len(), 250);
    let text = config_with_drop(dir.path(), &sandbox.base_url(), "");
    let (token, daemon) = start_daemon(settings(&text));
    let hash = name_hash(&name);
    let mut shas = Vec::new();
    // The second drop of the name collides in done/ and outbox/: ` (1)` is added to the
    // shortened name, and that too must fit.
    for round in 1..=2 {
        let body = format!("version {round} of the multibyte document\n").repeat(30);
        std::fs::write(f.inbox.join(&name), &body).unwrap();
        shas.push(sha(body.as_bytes()));
        wait_until(&format!("result {round}"), 30, || {
            names(&f.outbox)
                .iter()
                .filter(|n| n.contains(&hash))
                .count()
                == round
        })
        .await;
    }
    token.cancel();
    daemon.await.unwrap();

    assert_eq!(sandbox.stats().batches_created, 2);
    let outbox = utf8_names(&f.outbox);
    assert_eq!(outbox.len(), 2, "{outbox:?}");
    let mut got: Vec<String> = outbox
        .iter()
        .map(|n| input_sha(&f.outbox.join(n)))
        .collect();
    got.sort();
    shas.sort();
    assert_eq!(got, shas, "each drop's own result");
    let done = utf8_names(&f.done);
    assert_eq!(done.len(), 2, "{done:?}");
    for n in done.iter().chain(&outbox) {
        let kept = n.split('~').next().unwrap();
        assert!(name.starts_with(kept) && kept.len() > 150, "{n}");
        assert!(n.contains(&format!("~{hash}")), "{n}");
    }
    assert!(done.iter().all(|n| n.ends_with(".pdf")), "{done:?}");
    assert!(
        outbox.iter().all(|n| n.ends_with(".pdf.json")),
        "{outbox:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_is_refused_with_a_reason_and_no_request() {
    let sandbox = start(spec(vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let f = folders(dir.path());
    std::fs::write(f.inbox.join("empty.pdf"), b"").unwrap();
    std::fs::write(f.inbox.join("fine.pdf"), "a plain document").unwrap();
    let text = config_with_drop(dir.path(), &sandbox.base_url(), "");
    let (token, daemon) = start_daemon(settings(&text));
    wait_until("the refusal and the plain file's result", 30, || {
        f.failed.join("empty.pdf.error.txt").exists() && f.outbox.join("fine.pdf.json").exists()
    })
    .await;
    token.cancel();
    daemon.await.unwrap();

    let stats = sandbox.stats();
    assert_eq!(
        (stats.files_created, stats.uploads, stats.batches_created),
        (1, 1, 1),
        "only the plain file reached the provider"
    );
    let why = std::fs::read_to_string(f.failed.join("empty.pdf.error.txt")).unwrap();
    assert_eq!(why, "empty file (0 bytes): nothing to extract\n");
    assert_eq!(names(&f.failed), ["empty.pdf", "empty.pdf.error.txt"]);
    let rejected = uploads(dir.path(), UploadState::Rejected).await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].size, 0);
    let counts = daemon::status(&settings(&text))
        .await
        .unwrap()
        .dropfolder
        .unwrap();
    assert_eq!((counts["rejected"], counts["delivered"]), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_that_will_not_take_a_result_is_logged_once_and_retried_less_often() {
    let sandbox = start(spec(vec![])).await;
    let dir = tempfile::tempdir().unwrap();
    let f = folders(dir.path());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_with_drop(dir.path(), &sandbox.base_url(), ""),
    )
    .unwrap();
    let log_path = dir.path().join("stderr.log");
    // The real binary, its log in a file read while it runs.
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        // The drop folder at debug level: the quiet retries are counted too.
        .env("RUST_LOG", "info,batchmirror::dropfolder=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    std::fs::write(f.inbox.join("first.pdf"), "first").unwrap();
    wait_until("the first result", 30, || {
        f.outbox.join("first.pdf.json").exists()
    })
    .await;
    // The outbox becomes a plain file: nothing can be written into it until it is a folder again.
    std::fs::remove_dir_all(&f.outbox).unwrap();
    std::fs::write(&f.outbox, "not a folder").unwrap();
    std::fs::write(f.inbox.join("second.pdf"), "second").unwrap();
    let failing = |l: &str| l.contains("cannot write to the outbox") && l.contains("second.pdf");
    wait_until("the failed delivery", 30, || log().lines().any(failing)).await;
    // 4 s is 20 result polls of 200 ms: each used to log the same error again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let errors = log()
        .lines()
        .filter(|l| failing(l) && l.contains("ERROR"))
        .count();
    assert_eq!(errors, 1, "logged once:\n{}", log());
    // Waits of 1, 2, 4 s: at most three quiet retries in those 4 s, not one per poll.
    let retries = log()
        .lines()
        .filter(|l| l.contains("still cannot write to the outbox"))
        .count();
    assert!(retries <= 3, "{retries} retries:\n{}", log());
    let still = uploads(dir.path(), UploadState::Accepted).await;
    assert_eq!(still.len(), 1, "still to be delivered");

    std::fs::remove_file(&f.outbox).unwrap();
    std::fs::create_dir(&f.outbox).unwrap();
    wait_until("the delivery once the outbox is back", 30, || {
        f.outbox.join("second.pdf.json").exists()
    })
    .await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    let log = log();
    let errors = log.lines().filter(|l| failing(l) && l.contains("ERROR"));
    assert_eq!(errors.count(), 1, "{log}");
    assert!(
        log.lines().any(|l| l.contains("result delivered")
            && l.contains("second.pdf")
            && !l.contains("failed_attempts=0")),
        "the late delivery is logged with its failed attempts:\n{log}"
    );
    assert_eq!(sandbox.stats().batches_created, 2);
}
