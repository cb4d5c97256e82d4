//! `batchmirror verify`: each finding on a mirror made by the real daemon, `--repair` and the pass
//! after it, lost items past their deadline, the JSON shape, exit codes and locks.

use std::path::Path;

use batchmirror::daemon::{self, FindingKind, VerifyOptions, VerifyReport};
use batchmirror::ledger::Ledger;
use batchmirror::model::{BatchId, ItemId, ItemState, ProviderName};
use batchmirror_sandbox::Delivery;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// A sandbox of `batches` × `items` finished items, mirrored once into `dir`.
async fn mirrored(
    dir: &Path,
    batches: usize,
    items: usize,
) -> (batchmirror_sandbox::Sandbox, batchmirror::config::Settings) {
    let sandbox = start(spec(finished_batches(batches, items))).await;
    let settings = settings(dir, &sandbox.base_url());
    let report = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    (sandbox, settings)
}

async fn verify(settings: &batchmirror::config::Settings, repair: bool) -> VerifyReport {
    daemon::verify(settings, VerifyOptions::new(None, repair))
        .await
        .unwrap()
}

fn kinds_of(report: &VerifyReport, kind: FindingKind) -> Vec<String> {
    let mut v: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == kind)
        .map(|f| f.path.clone())
        .collect();
    v.sort();
    v
}

fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[10] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_clean_mirror_passes_and_each_damage_is_reported_with_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, settings) = mirrored(dir.path(), 2, 4).await;
    let root = dir.path().join("mirror");

    let clean = verify(&settings, false).await;
    assert_eq!(clean.exit_code(), 0, "{}", clean.render_text());
    assert_eq!(clean.files_checked, 8);
    assert_eq!(clean.bytes_checked, 8 * 3000);
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);

    std::fs::remove_file(root.join("ep/b-000/it-0-0.json")).unwrap();
    flip_a_byte(&root.join("ep/b-000/it-0-1.json"));
    let truncated = std::fs::File::options()
        .write(true)
        .open(root.join("ep/b-001/it-1-0.json"))
        .unwrap();
    truncated.set_len(100).unwrap();
    std::fs::write(root.join("ep/b-000/notes.txt"), b"mine").unwrap();
    std::fs::write(root.join("ep/b-000/ghost@md"), b"# sidecar of nobody").unwrap();
    std::fs::write(root.join("ep/b-000/it-0-2@md"), b"# sidecar of it-0-2").unwrap();
    std::fs::write(root.join("ep/b-001/it-1-1.json.part"), b"{\"half").unwrap();
    std::fs::create_dir_all(root.join("ep/b-999/deep")).unwrap();
    std::fs::write(root.join("ep/b-999/deep/x.json"), b"{}").unwrap();
    std::fs::write(root.join("stray.bin"), b"?").unwrap();

    let r = verify(&settings, false).await;
    assert_eq!(r.exit_code(), 1);
    assert_eq!(kinds_of(&r, FindingKind::Missing), ["ep/b-000/it-0-0.json"]);
    assert_eq!(
        kinds_of(&r, FindingKind::Corrupt),
        ["ep/b-000/it-0-1.json", "ep/b-001/it-1-0.json"]
    );
    assert_eq!(
        kinds_of(&r, FindingKind::Unknown),
        [
            "ep/b-000/ghost@md",
            "ep/b-000/notes.txt",
            "ep/b-999/deep/x.json",
            "stray.bin"
        ],
        "the lock file and a mirrored item's sidecar are not unknown"
    );
    assert_eq!(
        kinds_of(&r, FindingKind::Part),
        ["ep/b-001/it-1-1.json.part"]
    );
    let flipped = r
        .findings
        .iter()
        .find(|f| f.path == "ep/b-000/it-0-1.json")
        .unwrap();
    assert_eq!(flipped.expected_bytes, Some(3000));
    assert_eq!(flipped.actual_bytes, Some(3000), "same size, other bytes");
    assert_ne!(flipped.actual_sha256, flipped.expected_sha256);
    let cut = r
        .findings
        .iter()
        .find(|f| f.path == "ep/b-001/it-1-0.json")
        .unwrap();
    assert_eq!(cut.actual_bytes, Some(100));
    assert_eq!(
        (cut.batch.as_deref(), cut.item.as_deref()),
        (Some("b-001"), Some("it-1-0"))
    );
    let text = r.render_text();
    assert!(
        text.contains("1 missing, 2 corrupt, 4 unknown, 1 .part"),
        "{text}"
    );
    assert!(
        text.contains("  missing ep/b-000/it-0-0.json  item ep/b-000/it-0-0"),
        "{text}"
    );
    // A read-only verify changed nothing.
    assert!(root.join("ep/b-001/it-1-1.json.part").exists());
    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let row = ledger
        .item(
            &ProviderName::parse("ep").unwrap(),
            &BatchId::parse("b-000").unwrap(),
            &ItemId::parse("it-0-0").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, ItemState::Mirrored);
}

#[tokio::test]
async fn repair_requeues_missing_and_corrupt_and_the_next_pass_restores_the_served_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, settings) = mirrored(dir.path(), 2, 3).await;
    let root = dir.path().join("mirror");
    std::fs::remove_file(root.join("ep/b-000/it-0-0.json")).unwrap();
    flip_a_byte(&root.join("ep/b-001/it-1-1.json"));
    std::fs::write(root.join("ep/b-001/it-1-2.json.part"), b"{").unwrap();
    std::fs::write(root.join("ep/b-001/keep.txt"), b"not ours").unwrap();

    let r = verify(&settings, true).await;
    assert_eq!(r.exit_code(), 1, "a repaired mirror is not clean yet");
    let done = r.repaired.clone().unwrap();
    assert_eq!(
        (
            done.requeued,
            done.lost,
            done.parts_removed,
            done.quarantined
        ),
        (2, 0, 1, 1),
        "{}",
        r.render_text()
    );
    assert!(r.render_text().contains("the next `sync --once`"));
    assert!(!root.join("ep/b-001/it-1-2.json.part").exists());
    assert!(
        root.join("ep/b-001/keep.txt").exists(),
        "unknown files stay"
    );
    assert!(!root.join("ep/b-001/it-1-1.json").exists(), "moved aside");
    let quarantined = files_under(&root.join(".batchmirror-quarantine"));
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    {
        let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
        let p = ProviderName::parse("ep").unwrap();
        for (b, i) in [("b-000", "it-0-0"), ("b-001", "it-1-1")] {
            let row = ledger
                .item(&p, &BatchId::parse(b).unwrap(), &ItemId::parse(i).unwrap())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(row.state, ItemState::Ready, "{b}/{i}");
            assert_eq!(row.path, None);
        }
    }

    let pass = daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(pass.exit_code(), 0, "{pass:?}");
    assert_eq!(pass.download.mirrored, 2, "exactly the two re-queued items");
    for (b, i) in [("b-000", "it-0-0"), ("b-001", "it-1-1")] {
        let (sha, _) = sandbox.expected(b, i).unwrap();
        let file = root.join(format!("ep/{b}/{i}.json"));
        assert_eq!(sha256_file(&file), sha, "{}", file.display());
    }
    assert_eq!(mirrored_rows_match(&settings, &sandbox).await.len(), 6);

    let after = verify(&settings, false).await;
    assert_eq!(
        kinds_of(&after, FindingKind::Unknown),
        ["ep/b-001/keep.txt"]
    );
    assert_eq!(after.problems(), 1, "{}", after.render_text());
}

#[tokio::test]
async fn past_its_deadline_a_damaged_item_is_lost_not_requeued() {
    const DAY: f64 = 24.0 * 3600.0;
    // Retention is 3 days from a batch's completion: "old" expires 2 h from now, "new" in
    // almost 3 days.
    let sandbox = start(spec(vec![
        batchmirror_sandbox::BatchSpec {
            id: "b-1".into(),
            created_ago: std::time::Duration::from_secs(3 * 24 * 3600),
            items: vec![done_item("old", 3.0 * DAY - 7200.0, Delivery::Inline)],
        },
        batch("b-2", vec![done_item("new", 60.0, Delivery::Inline)]),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &sandbox.base_url());
    daemon::sync_once(settings.clone(), CancellationToken::new())
        .await
        .unwrap();
    let root = dir.path().join("mirror");
    std::fs::remove_file(root.join("ep/b-1/old.json")).unwrap();
    std::fs::write(root.join("ep/b-1/old@md"), b"# old").unwrap();
    flip_a_byte(&root.join("ep/b-2/new.json"));

    let opts = VerifyOptions {
        // A day on: "old" is past its deadline, "new" is still retained.
        now: chrono::Utc::now() + chrono::Duration::days(1),
        ..VerifyOptions::new(None, true)
    };
    let r = daemon::verify(&settings, opts).await.unwrap();
    let done = r.repaired.clone().unwrap();
    assert_eq!((done.requeued, done.lost), (1, 1), "{}", r.render_text());
    assert!(
        !root.join("ep/b-1/old@md").exists(),
        "a lost item keeps no file: its sidecar is moved aside"
    );
    assert_eq!(done.quarantined, 2, "new.json (corrupt) and old@md");
    let old = r.findings.iter().find(|f| f.path == "ep/b-1/old.json");
    assert_eq!(old.unwrap().repair.as_deref(), Some("lost"));
    assert!(r.render_text().contains("1 lost"), "{}", r.render_text());

    let ledger = Ledger::open_read_only(&settings.ledger_path).unwrap();
    let p = ProviderName::parse("ep").unwrap();
    let state = |b: &'static str, i: &'static str| {
        let ledger = ledger.clone();
        let p = p.clone();
        async move {
            ledger
                .item(&p, &BatchId::parse(b).unwrap(), &ItemId::parse(i).unwrap())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let old = state("b-1", "old").await;
    assert_eq!(old.state, ItemState::Lost);
    assert!(old.last_error.unwrap().contains("deadline"));
    assert_eq!(state("b-2", "new").await.state, ItemState::Ready);
    let status = daemon::status(&settings).await.unwrap();
    assert_eq!(status.providers[0].items["lost"], 1, "status counts it");
}

#[tokio::test]
async fn the_binary_exits_0_clean_1_damaged_2_unknown_provider_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, _settings) = mirrored(dir.path(), 1, 3).await;
    let config = dir.path().join("c.toml");
    std::fs::write(&config, config_text(dir.path(), &sandbox.base_url(), "")).unwrap();

    let clean = run_cli(&["verify"], &config);
    assert_eq!(clean.status.code(), Some(0), "{clean:?}");
    assert!(String::from_utf8_lossy(&clean.stdout).contains("clean"));

    let bad = run_cli(&["verify", "--provider", "nope"], &config);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--provider"));

    flip_a_byte(&dir.path().join("mirror/ep/b-000/it-0-2.json"));
    // Outside the provider's directory: not looked at with --provider.
    std::fs::write(dir.path().join("mirror/stray.bin"), b"?").unwrap();
    let out = run_cli(&["verify", "--json", "--provider", "ep"], &config);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files_checked"], 3);
    assert_eq!(v["counts"]["corrupt"], 1);
    assert_eq!(v["counts"]["missing"], 0);
    assert_eq!(v["counts"]["unknown"], 0, "--provider ep walks ep/ only");
    assert_eq!(v["provider"], "ep");
    let f = &v["findings"][0];
    assert_eq!(f["kind"], "corrupt");
    assert_eq!(f["provider"], "ep");
    assert_eq!(f["batch"], "b-000");
    assert_eq!(f["item"], "it-0-2");
    assert_eq!(f["path"], "ep/b-000/it-0-2.json");
    let (sha, len) = sandbox.expected("b-000", "it-0-2").unwrap();
    assert_eq!(f["expected_sha256"], sha.as_str());
    assert_eq!(f["expected_bytes"], len);
    assert_eq!(f["actual_bytes"], len);
    assert!(f["actual_sha256"].as_str().unwrap().len() == 64);
}

#[tokio::test]
async fn beside_a_writer_parts_are_in_flight_and_repair_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, settings) = mirrored(dir.path(), 1, 2).await;
    let root = dir.path().join("mirror");
    std::fs::write(root.join("ep/b-000/it-0-9.json.part"), b"{").unwrap();
    // What a running daemon holds.
    let writer = batchmirror::storage::Storage::new(&root)
        .unwrap()
        .lock_root()
        .unwrap();

    let r = verify(&settings, false).await;
    assert!(r.writer_running);
    assert_eq!(r.counts.part, 0, "a writer's .part is in flight");
    assert_eq!(r.in_flight, 1);
    assert_eq!(r.exit_code(), 0);
    let refused = daemon::verify(&settings, VerifyOptions::new(None, true)).await;
    assert!(
        refused.unwrap_err().to_string().contains("in use"),
        "--repair takes the writer's locks"
    );
    drop(writer);
    assert_eq!(verify(&settings, false).await.counts.part, 1);
}

#[tokio::test]
async fn a_drop_folder_under_the_root_is_not_unknown_but_its_neighbours_are() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, _) = mirrored(dir.path(), 1, 2).await;
    let root = dir.path().join("mirror");
    let mut text = config_text(dir.path(), &sandbox.base_url(), "");
    text.push_str(&format!(
        "[dropfolder]\npath = \"{}/drop/inbox\"\nprovider = \"ep\"\n",
        root.display()
    ));
    let settings = batchmirror::config::load_str(&text, "test", &Default::default()).unwrap();
    for (sub, name) in [
        ("inbox", "a.pdf"),
        ("done", "b.pdf"),
        ("failed", "c.pdf"),
        ("outbox", "b.pdf.json"),
    ] {
        std::fs::create_dir_all(root.join("drop").join(sub)).unwrap();
        std::fs::write(root.join("drop").join(sub).join(name), b"%PDF").unwrap();
    }
    std::fs::write(root.join("drop/elsewhere.txt"), b"?").unwrap();

    let r = verify(&settings, false).await;
    assert_eq!(
        kinds_of(&r, FindingKind::Unknown),
        ["drop/elsewhere.txt"],
        "{}",
        r.render_text()
    );
}
