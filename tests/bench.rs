//! `batchmirror bench` on the real binary, at a small size: every run it reports must have done its
//! whole job (the bench refuses figures for a run that did not write every byte).

const BIN: &str = env!("CARGO_BIN_EXE_batchmirror");

#[test]
fn a_small_bench_mirrors_everything_and_reports_each_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "bench",
            "--items",
            "40",
            "--size",
            "3000",
            "--large",
            "1500000",
            "--concurrency",
            "4",
            "--first-items",
            "400",
            "--idle-items",
            "1200",
            "--status-items",
            "3000",
            "--verify-items",
            "2000",
            "--webhook-items",
            "5",
            "--dir",
        ])
        .arg(dir.path().join("work"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |start: &str, tool: &str| {
        stdout
            .lines()
            .any(|l| l.starts_with(start) && l.contains(tool))
    };
    assert!(row("40 x 3.0 kB, conc 4", "batchmirror"), "{stdout}");
    assert!(row("1 x 1.5 MB", "batchmirror"), "{stdout}");
    assert!(row("verify warm, 2000 files", "files/s"), "{stdout}");
    // Requests are counted at the sandbox: every one of the 40 results needs at least one.
    let api: Vec<u64> = stdout
        .lines()
        .filter_map(|l| {
            l.split(" API requests (")
                .next()
                .filter(|_| l.contains(" API requests ("))
        })
        .map(|n| n.trim().parse().unwrap())
        .collect();
    assert_eq!(
        api.len(),
        2 + 1,
        "two small rounds and the large run: {stdout}"
    );
    assert!(api[0] >= 40 && api[0] < 80, "{stdout}");
    assert!(
        row("", "curl+sync -f") || !stdout.contains("curl"),
        "{stdout}"
    );
    // 1,200 mirrored items in 200-batch listing pages: the idle pass stops after the first page.
    assert!(
        stdout.contains("pass 3: 1 list + 0 batch request(s)"),
        "{stdout}"
    );
    assert!(row("status, 3000 items", "status"), "{stdout}");
    assert!(row("first pass, 400 items", "2 batches"), "{stdout}");
    assert!(row("webhook latency, 5 items", "p95"), "{stdout}");
    assert!(row("webhook answer", "p95"), "{stdout}");
    // The working directory goes unless --keep.
    assert!(!dir.path().join("work").exists());
}
