//! The systemd notify protocol on the real binary, with a datagram socket the test owns:
//! READY=1 after start-up, WATCHDOG=1 while the daemon progresses and none while its pass is
//! stuck, STATUS= after a pass, STOPPING=1 on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::UnixDatagram;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_batchmirror");

#[tokio::test]
async fn notify_socket_sees_ready_watchdog_only_on_progress_status_and_stopping() {
    // Every result stalls 4 s before its first byte: the pass makes no progress for that long.
    let mut s = spec(finished_batches(1, 3));
    s.result_delay = Duration::from_secs(4);
    let sandbox = start(s).await;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let config = dir.path().join("config.toml");
    let mut text = config_text(dir.path(), &sandbox.base_url(), "");
    text.push_str("[schedule]\ncron = \"0 0 0 1 1 *\"\n");
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut n = Notifications {
        sock,
        started: Instant::now(),
        log: Vec::new(),
    };
    assert!(
        n.wait_for(|l| has(l, "READY=1"), 15).await,
        "no READY=1: {:?}",
        n.log
    );
    let ready_at = n.log.iter().find(|(_, m)| m.contains("READY=1")).unwrap().0;
    // The pass is stuck on the stalled results from about now until ready + 4 s.
    assert!(
        n.wait_for(|l| has(l, "STATUS=last pass"), 30).await,
        "no pass status: {:?}",
        n.log
    );
    let stuck = (ready_at + Duration::from_millis(1500))..(ready_at + Duration::from_millis(3500));
    let pings_while_stuck = n
        .log
        .iter()
        .filter(|(t, m)| m.contains("WATCHDOG=1") && stuck.contains(t))
        .count();
    assert_eq!(
        pings_while_stuck, 0,
        "watchdog pinged while the pass was stuck: {:?}",
        n.log
    );
    let status = n
        .log
        .iter()
        .find(|(_, m)| m.contains("STATUS=last pass"))
        .unwrap();
    assert!(status.1.contains("mirrored 3"), "{status:?}");
    // Healthy again: pings resume.
    let seen = n.log.len();
    assert!(
        n.wait_for(|l| has(&l[seen..], "WATCHDOG=1"), 5).await,
        "no ping once healthy: {:?}",
        n.log
    );

    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(
        n.wait_for(|l| has(l, "STOPPING=1"), 10).await,
        "no STOPPING=1: {:?}",
        n.log
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0));
}

/// One notification as received: when (since the test started) and its text.
type Entry = (Duration, String);

fn has(log: &[Entry], needle: &str) -> bool {
    log.iter().any(|(_, m)| m.contains(needle))
}

/// The test's end of `NOTIFY_SOCKET`.
struct Notifications {
    sock: UnixDatagram,
    started: Instant,
    log: Vec<Entry>,
}

impl Notifications {
    /// Reads notifications until `done` holds, for at most `secs` more seconds.
    async fn wait_for(&mut self, done: impl Fn(&[Entry]) -> bool, secs: u64) -> bool {
        let limit = Instant::now() + Duration::from_secs(secs);
        let mut buf = vec![0u8; 4096];
        while !done(&self.log) {
            let left = limit.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.sock.recv(&mut buf)).await {
                Ok(Ok(n)) => self.log.push((
                    self.started.elapsed(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                )),
                _ => return false,
            }
        }
        true
    }
}
