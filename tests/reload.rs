//! SIGHUP to the real `batchmirror run` (issue 16, defect 4): it reads its config again instead
//! of dying, applies the schedule and the log level live, names what needs a restart, and keeps
//! running on the config it has when the new one is invalid.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_batchmirror");

/// Never within a test's run.
const YEARLY: &str = "0 0 0 1 1 *";

fn write_config(path: &Path, dir: &Path, base_url: &str, cron: &str, level: &str, root: &str) {
    let text = config_text(dir, base_url, "")
        .replace(
            &format!("root = \"{}/mirror\"", dir.display()),
            &format!("root = \"{}/{root}\"", dir.display()),
        )
        .replace(
            "[download]",
            &format!("[schedule]\ncron = \"{cron}\"\n[log]\nlevel = \"{level}\"\n[download]"),
        );
    std::fs::write(path, text).unwrap();
}

fn signal(child: &Child, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{name}");
}

/// Kills the daemon when a failed assertion unwinds past it, so no test leaves one running.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// stderr's lines as they arrive.
fn collect_stderr(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

fn count(lines: &Mutex<Vec<String>>, needle: &str) -> usize {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_live_and_a_bad_one_changes_nothing() {
    let sandbox = start(spec(finished_batches(2, 3))).await;
    let dir = tempfile::tempdir().unwrap();
    let (d, url) = (dir.path(), sandbox.base_url());
    let config = d.join("config.toml");
    write_config(&config, d, &url, YEARLY, "info", "mirror");
    let mut daemon = Daemon(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = collect_stderr(&mut daemon.0);
    let child = &mut daemon.0;
    wait_until("the first pass mirrors 6 items", 30, || {
        let files = files_under(&d.join("mirror"));
        files
            .iter()
            .filter(|f| !f.to_string_lossy().ends_with(".part"))
            .count()
            >= 6
    })
    .await;
    let listed = sandbox.stats().list_requests;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sandbox.stats().list_requests, listed, "yearly: no pass yet");

    // A schedule of every second is applied live: passes follow.
    write_config(&config, d, &url, "* * * * * *", "info", "mirror");
    signal(child, "HUP");
    wait_until("passes on the new schedule", 15, || {
        sandbox.stats().list_requests >= listed + 2
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the daemon"
    );
    assert_eq!(count(&lines, "config reloaded: schedule.cron"), 1);

    // A key that needs a restart is named, and the running value stays; the level goes to warn.
    write_config(&config, d, &url, "* * * * * *", "warn", "elsewhere");
    signal(child, "HUP");
    wait_until("the restart warning", 15, || {
        count(&lines, "storage.root changed") == 1
    })
    .await;
    let infos = count(&lines, "INFO");
    // At warn, the next reload's info lines are not written.
    signal(child, "HUP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&lines, "INFO"),
        infos,
        "log.level warn was applied live"
    );

    // A config that no longer loads: an error, and the daemon runs on with what it has.
    std::fs::write(&config, "this is = = not toml").unwrap();
    let passes = sandbox.stats().list_requests;
    signal(child, "HUP");
    wait_until("the reload error", 15, || {
        count(
            &lines,
            "not reloaded, still running on the config loaded before",
        ) == 1
    })
    .await;
    wait_until("passes go on after a bad reload", 15, || {
        sandbox.stats().list_requests >= passes + 2
    })
    .await;
    assert!(
        !d.join("elsewhere").exists(),
        "storage.root is not switched live"
    );

    signal(child, "TERM");
    wait_until("the daemon stops on SIGTERM", 30, || {
        child.try_wait().unwrap().is_some()
    })
    .await;
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "stderr: {:?}", lines.lock().unwrap());
}
