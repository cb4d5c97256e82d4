//! Unit tests of the mirror layout and the atomic, durable publish (fsync failures injected).
use super::layout::MAX_NAME;
use super::*;

#[test]
fn safe_ids_are_kept_and_others_encoded_into_one_component() {
    assert_eq!(safe_component("item_001.v2-a"), "item_001.v2-a");
    for hostile in [
        "../x", "a/b", ".hidden", "..", ".", "", "é€", "a\\b", "%41", "x~y",
    ] {
        let c = safe_component(hostile);
        assert!(!c.is_empty() && !c.starts_with('.'), "{hostile:?} -> {c:?}");
        assert!(
            !c.contains('/') && !c.contains('\\'),
            "{hostile:?} -> {c:?}"
        );
        assert!(c.len() <= MAX_NAME);
    }
    assert_ne!(safe_component("%41"), safe_component("A"));
    let long = "ü".repeat(300);
    let c = safe_component(&long);
    assert!(c.len() <= MAX_NAME, "{}", c.len());
    assert_ne!(
        c,
        safe_component(&"ü".repeat(301)),
        "hash keeps long ids apart"
    );
    assert_ne!(
        safe_component(&"a".repeat(129)),
        safe_component(&"a".repeat(130))
    );
    let dotted = format!(".{}", "x".repeat(127));
    let lookalike = format!("2E{}", "x".repeat(127));
    assert_ne!(safe_component(&dotted), safe_component(&lookalike));
}

#[test]
fn resolve_refuses_paths_leaving_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::new(dir.path()).unwrap();
    assert!(s.resolve(Path::new("../x")).is_err());
    assert!(s.resolve(Path::new("/etc/passwd")).is_err());
    assert!(s.resolve(Path::new("a/./b")).is_ok());
}

#[tokio::test]
async fn publish_is_atomic_and_failures_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::new(dir.path()).unwrap();
    let ok = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(Bytes::from_static(b"{\"a\":")),
        Ok(Bytes::from_static(b"1}")),
    ]);
    let p = s
        .write_atomic(Path::new("p/b/i.json"), ok, 100, true, Vec::new())
        .await
        .unwrap();
    assert_eq!(p.bytes, 7);
    assert_eq!(p.sha256, hex::encode(Sha256::digest(b"{\"a\":1}")));
    assert_eq!(
        std::fs::read(dir.path().join("p/b/i.json")).unwrap(),
        b"{\"a\":1}"
    );

    let broken = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"{\"a\"")),
        Err(std::io::Error::other("reset")),
    ]);
    let r = s
        .write_atomic(Path::new("p/b/j.json"), broken, 100, true, Vec::new())
        .await;
    assert!(matches!(r, Err(WriteError::Body(_))));
    let big =
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 101]))]);
    let r = s
        .write_atomic(Path::new("p/b/k.json"), big, 100, false, Vec::new())
        .await;
    assert!(matches!(r, Err(WriteError::TooLarge { cap: 100 })));
    let bad =
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"{nope"))]);
    let r = s
        .write_atomic(Path::new("p/b/l.json"), bad, 100, true, Vec::new())
        .await;
    assert!(matches!(r, Err(WriteError::InvalidJson(_))));
    let names: Vec<_> = std::fs::read_dir(dir.path().join("p/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["i.json"]);
}

fn eio(_: &std::fs::File) -> std::io::Result<()> {
    Err(std::io::Error::from_raw_os_error(5))
}

fn ok(_: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

fn json_body() -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    futures_util::stream::iter(vec![Ok(Bytes::from_static(b"{\"a\":1}"))])
}

/// The file names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_failed_file_fsync_is_a_failed_write_that_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::new(dir.path()).unwrap().with_sync(eio, ok);
    let r = s
        .write_atomic(Path::new("p/b/i.json"), json_body(), 100, true, Vec::new())
        .await;
    match r {
        Err(WriteError::Storage(StorageError::Io { action, .. })) => {
            assert_eq!(action, "fsync")
        }
        other => panic!("fsync failure reported as {other:?}"),
    }
    let names = names_in(&dir.path().join("p/b"));
    assert!(
        names.is_empty(),
        "temp dropped, nothing published: {names:?}"
    );
}

#[tokio::test]
async fn a_failed_directory_fsync_takes_the_published_file_back() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("p/b")).unwrap();
    let s = Storage::new(dir.path()).unwrap().with_sync(ok, eio);
    let r = s
        .write_atomic(Path::new("p/b/i.json"), json_body(), 100, true, Vec::new())
        .await;
    assert!(
        matches!(&r, Err(WriteError::Storage(StorageError::Io { action, .. })) if *action == "fsync directory"),
        "{r:?}"
    );
    let names = names_in(&dir.path().join("p/b"));
    assert!(
        names.is_empty(),
        "no file left without a durable name: {names:?}"
    );
}

#[test]
fn stray_parts_are_removed_and_results_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::new(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path().join("p/b")).unwrap();
    std::fs::write(dir.path().join("p/b/x.json.part"), b"half").unwrap();
    std::fs::write(dir.path().join("p/b/y.json"), b"{}").unwrap();
    assert_eq!(s.remove_stray_parts().unwrap(), 1);
    assert!(dir.path().join("p/b/y.json").exists());
}

/// A JSON document of `n` bytes (`["xxx…"]`) in 64 KiB chunks.
fn big_json(n: usize, valid: bool) -> (Vec<u8>, Vec<Result<Bytes, std::io::Error>>) {
    let mut doc = vec![b'x'; n];
    doc[..2].copy_from_slice(b"[\"");
    doc[n - 2..].copy_from_slice(if valid { b"\"]" } else { b"\"," });
    let chunks = doc
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    (doc, chunks)
}

/// Writes `chunks` to `rel` as a checked JSON result without sidecars.
async fn chunked(
    s: &Storage,
    rel: &str,
    chunks: Vec<Result<Bytes, std::io::Error>>,
    cap: u64,
) -> Result<Published, WriteError<std::io::Error>> {
    let body = futures_util::stream::iter(chunks);
    s.write_atomic(Path::new(rel), body, cap, true, Vec::new())
        .await
}

#[tokio::test]
async fn results_above_the_in_memory_size_stream_and_are_checked_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::new(dir.path()).unwrap();
    let n = 3 * SMALL_BODY as usize + 5;
    let (doc, chunks) = big_json(n, true);
    let p = chunked(&s, "p/b/big.json", chunks, u64::MAX).await.unwrap();
    assert_eq!(p.bytes, n as u64);
    assert_eq!(p.sha256, hex::encode(Sha256::digest(&doc)));
    assert_eq!(std::fs::read(dir.path().join("p/b/big.json")).unwrap(), doc);
    // The tail is broken only after the in-memory limit: still refused, nothing left behind.
    let (_, chunks) = big_json(n, false);
    let r = chunked(&s, "p/b/bad.json", chunks, u64::MAX).await;
    assert!(matches!(r, Err(WriteError::InvalidJson(_))), "{r:?}");
    // The cap holds past the in-memory limit too.
    let (_, chunks) = big_json(n, true);
    let r = chunked(&s, "p/b/capped.json", chunks, 2 * SMALL_BODY).await;
    assert!(matches!(r, Err(WriteError::TooLarge { .. })), "{r:?}");
    assert_eq!(names_in(&dir.path().join("p/b")), ["big.json"]);
}

#[tokio::test]
async fn a_large_body_checked_while_it_streams_is_refused_early_or_on_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::new(dir.path()).unwrap();
    let n = 3 * SMALL_BODY as usize;
    // Broken right after the in-memory limit, long before its end: refused, nothing left behind.
    let (mut doc, _) = big_json(n, true);
    doc[SMALL_BODY as usize + 10] = b'"';
    let chunks: Vec<Result<Bytes, std::io::Error>> = doc
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let r = chunked(&s, "p/b/early.json", chunks, u64::MAX).await;
    assert!(matches!(r, Err(WriteError::InvalidJson(_))), "{r:?}");
    // A body that fails half-way is a body error, not a JSON one, and publishes nothing.
    let (_, mut chunks) = big_json(n, true);
    chunks.truncate(chunks.len() / 2);
    chunks.push(Err(std::io::Error::other("connection reset")));
    let r = chunked(&s, "p/b/cut.json", chunks, u64::MAX).await;
    assert!(matches!(r, Err(WriteError::Body(_))), "{r:?}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("p/b")).unwrap().count(),
        0
    );
}

#[test]
fn no_item_file_ever_shares_a_name_with_another_items_file_or_the_batch_record() {
    use crate::model::{BatchId, ItemId, ProviderName};
    use std::collections::HashMap;
    let suffixes = ["processing-results.json", "md", "txt", "export.csv", "json"];
    let mut ids: Vec<String> = [
        "a",
        "a.json",
        "a.processing-results",
        "a.processing-results.json",
        "a.md",
        "a@md",
        "a@processing-results.json",
        "a%40md",
        "a%2Emd",
        "%41",
        "A",
        "batch",
        "@batch",
        "batch.json",
        "x.part",
        "a.json.part",
        "..",
        ".a",
        "a b",
        "a~b",
        "é",
    ]
    .map(String::from)
    .to_vec();
    ids.push("a".repeat(129));
    ids.push(format!("{}.md", "a".repeat(200)));
    let (p, b) = (
        ProviderName::parse("p").unwrap(),
        BatchId::parse("b").unwrap(),
    );
    let mut owner: HashMap<PathBuf, String> = HashMap::new();
    let mut claim = |path: PathBuf, who: String| {
        assert!(!path.to_string_lossy().ends_with(PART_SUFFIX), "{path:?}");
        if let Some(other) = owner.insert(path.clone(), who.clone()) {
            panic!("{path:?} belongs to both {other} and {who}");
        }
    };
    claim(Storage::batch_meta_path(&p, &b), "the batch record".into());
    for id in &ids {
        let item = ItemId::parse(id).unwrap();
        claim(
            Storage::item_path(&p, &b, &item),
            format!("{id:?}'s result"),
        );
        for s in suffixes {
            let path = Storage::sidecar_path(&p, &b, &item, s).unwrap();
            claim(path, format!("{id:?}'s sidecar {s}"));
        }
    }
    // The `.part` of any of them is none of the published names either.
    let published: Vec<PathBuf> = owner.keys().cloned().collect();
    for path in published {
        let mut part = path.into_os_string();
        part.push(PART_SUFFIX);
        assert!(!owner.contains_key(&PathBuf::from(part)));
    }
    for bad in ["", ".md", "x.part", "MD", "a/b", "a@b"] {
        let item = ItemId::parse("a").unwrap();
        assert!(
            Storage::sidecar_path(&p, &b, &item, bad).is_err(),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn sidecars_are_published_only_with_their_result_and_dropped_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::new(dir.path()).unwrap();
    let body = |b: &'static [u8]| {
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b))])
    };
    let side = s
        .stage(Path::new("p/b/i@md"), body(b"# md"), 100, false)
        .await
        .unwrap();
    assert_eq!(side.published().bytes, 4);
    let listed = || names_in(&dir.path().join("p/b"));
    assert_eq!(listed(), ["i@md.part"], "staged, not published");
    // The result fails: its staged sidecar goes with it.
    let broken = s
        .write_atomic(
            Path::new("p/b/i.json"),
            body(b"{\"a\":"),
            100,
            true,
            vec![side],
        )
        .await;
    assert!(
        matches!(broken, Err(WriteError::InvalidJson(_))),
        "{broken:?}"
    );
    assert!(listed().is_empty(), "{:?}", listed());
    // Dropping a staged sidecar (an aborted item) removes it too.
    drop(
        s.stage(Path::new("p/b/i@md"), body(b"# md"), 100, false)
            .await
            .unwrap(),
    );
    assert!(listed().is_empty());
    // Published together: both names, no `.part`.
    let side = s
        .stage(Path::new("p/b/i@md"), body(b"# md"), 100, false)
        .await
        .unwrap();
    s.write_atomic(Path::new("p/b/i.json"), body(b"{}"), 100, true, vec![side])
        .await
        .unwrap();
    assert_eq!(listed(), ["i.json", "i@md"]);
    assert_eq!(
        s.remove_published(&[PathBuf::from("p/b/i@md"), PathBuf::from("p/b/gone@md")])
            .unwrap(),
        1
    );
    assert_eq!(listed(), ["i.json"]);
}

#[tokio::test]
async fn a_streamed_write_abandoned_half_way_leaves_no_part() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::new(dir.path()).unwrap();
    let (_, chunks) = big_json(2 * SMALL_BODY as usize, true);
    // Past the in-memory limit, then silence: the write is streaming into its `.part` when the
    // caller gives up (an aborted download task).
    let body = futures_util::stream::iter(chunks).chain(futures_util::stream::pending());
    let write = s.write_atomic(Path::new("p/b/big.json"), body, u64::MAX, true, Vec::new());
    let r = tokio::time::timeout(std::time::Duration::from_millis(300), write).await;
    assert!(r.is_err(), "still waiting on the body");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_dir(dir.path().join("p/b")).unwrap().count() > 0 {
        assert!(std::time::Instant::now() < deadline, "the .part stayed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A body of its own for result `i`: distinct bytes, so a mix-up between results shows.
fn numbered(i: usize) -> Vec<u8> {
    format!("{{\"result\":{i},\"pad\":\"{}\"}}", "x".repeat(i * 7)).into_bytes()
}

/// Writes result `i` of `dir` through the shared storage, as a download task does.
fn spawn_numbered(
    s: &Storage,
    dir: &'static str,
    i: usize,
) -> tokio::task::JoinHandle<Result<Published, WriteError<std::io::Error>>> {
    let s = s.clone();
    tokio::spawn(async move {
        let body = futures_util::stream::iter(vec![Ok(Bytes::from(numbered(i)))]);
        let rel = format!("p/{dir}/{i}.json");
        s.write_atomic(Path::new(&rel), body, 1 << 20, true, Vec::new())
            .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_small_writes_are_each_published_whole_with_their_own_digest() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::new(dir.path()).unwrap();
    let tasks: Vec<_> = (0..64).map(|i| spawn_numbered(&s, "b", i)).collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let published = t.await.unwrap().unwrap();
        let on_disk = std::fs::read(dir.path().join(&published.rel_path)).unwrap();
        assert_eq!(on_disk, numbered(i), "result {i}");
        assert_eq!(published.bytes, on_disk.len() as u64);
        assert_eq!(published.sha256, hex::encode(Sha256::digest(&on_disk)));
    }
    let names = names_in(&dir.path().join("p/b"));
    assert_eq!(names.len(), 64, "{names:?}");
    assert!(names.iter().all(|n| !n.ends_with(PART_SUFFIX)), "{names:?}");
}

/// Fails the fsync of result 3's file (recognised by its size) and of no other.
fn eio_for_result_3(f: &std::fs::File) -> std::io::Result<()> {
    if f.metadata()?.len() == numbered(3).len() as u64 {
        return Err(std::io::Error::from_raw_os_error(5));
    }
    Ok(())
}

/// Fails the fsync of the directory named `bad`, found through the descriptor's path.
fn eio_for_dir_bad(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let path = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
    if path.ends_with("bad") {
        return Err(std::io::Error::from_raw_os_error(5));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_data_may_not_be_durable_fails_alone_in_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::new(dir.path())
        .unwrap()
        .with_sync(eio_for_result_3, ok);
    let tasks: Vec<_> = (0..16).map(|i| spawn_numbered(&s, "b", i)).collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        if i == 3 {
            assert!(
                matches!(
                    &r,
                    Err(WriteError::Storage(StorageError::Io {
                        action: "fsync",
                        ..
                    }))
                ),
                "{r:?}"
            );
        } else {
            assert_eq!(r.unwrap().bytes, numbered(i).len() as u64, "result {i}");
        }
    }
    let names = names_in(&dir.path().join("p/b"));
    assert_eq!(
        names.len(),
        15,
        "result 3 left nothing, not even its .part: {names:?}"
    );
    assert!(!names.contains(&"3.json".to_string()));
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_cannot_be_made_durable_fails_only_the_results_in_it() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["p/good", "p/bad"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let s = Storage::new(dir.path())
        .unwrap()
        .with_sync(ok, eio_for_dir_bad);
    let tasks: Vec<_> = (0..24)
        .map(|i| spawn_numbered(&s, if i % 3 == 0 { "bad" } else { "good" }, i))
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        if i % 3 == 0 {
            assert!(
                matches!(
                    &r,
                    Err(WriteError::Storage(StorageError::Io {
                        action: "fsync directory",
                        ..
                    }))
                ),
                "result {i}: {r:?}"
            );
        } else {
            r.unwrap();
        }
    }
    assert_eq!(names_in(&dir.path().join("p/bad")), Vec::<String>::new());
    assert_eq!(names_in(&dir.path().join("p/good")).len(), 16);
}

/// A fsync slow enough that a test sees the group's `.part` files on disk while it runs.
fn slow_ok(_: &std::fs::File) -> std::io::Result<()> {
    std::thread::sleep(std::time::Duration::from_millis(100));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesce_waits_for_a_group_whose_callers_were_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("p/b");
    std::fs::create_dir_all(&b).unwrap();
    let s = Storage::new(dir.path()).unwrap().with_sync(slow_ok, ok);
    let tasks: Vec<_> = (0..8).map(|i| spawn_numbered(&s, "b", i)).collect();
    let started = std::time::Instant::now();
    while !names_in(&b).iter().any(|n| n.ends_with(PART_SUFFIX)) {
        assert!(started.elapsed().as_secs() < 10, "no group ever started");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    for t in &tasks {
        t.abort();
    }
    s.quiesce().await;
    let names = names_in(&b);
    assert!(!names.is_empty());
    // Every result of the group was carried through: published whole, no .part left behind.
    for name in names {
        assert!(!name.ends_with(PART_SUFFIX), "{name}");
        let i: usize = name.trim_end_matches(".json").parse().unwrap();
        assert_eq!(std::fs::read(b.join(&name)).unwrap(), numbered(i));
    }
}
