//! Unit tests of the mirror layout and the atomic, durable publish (fsync failures injected).
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
        .write_atomic(Path::new("p/b/i.json"), ok, 100, true)
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
        .write_atomic(Path::new("p/b/j.json"), broken, 100, true)
        .await;
    assert!(matches!(r, Err(WriteError::Body(_))));
    let big =
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 101]))]);
    let r = s
        .write_atomic(Path::new("p/b/k.json"), big, 100, false)
        .await;
    assert!(matches!(r, Err(WriteError::TooLarge { cap: 100 })));
    let bad =
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"{nope"))]);
    let r = s
        .write_atomic(Path::new("p/b/l.json"), bad, 100, true)
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

#[tokio::test]
async fn a_failed_file_fsync_is_a_failed_write_that_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::new(dir.path()).unwrap().with_sync(eio, ok);
    let r = s
        .write_atomic(Path::new("p/b/i.json"), json_body(), 100, true)
        .await;
    match r {
        Err(WriteError::Storage(StorageError::Io { action, .. })) => {
            assert_eq!(action, "fsync")
        }
        other => panic!("fsync failure reported as {other:?}"),
    }
    let names: Vec<_> = std::fs::read_dir(dir.path().join("p/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
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
        .write_atomic(Path::new("p/b/i.json"), json_body(), 100, true)
        .await;
    assert!(
        matches!(&r, Err(WriteError::Storage(StorageError::Io { action, .. })) if *action == "fsync directory"),
        "{r:?}"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path().join("p/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
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

#[tokio::test]
async fn results_above_the_in_memory_size_stream_and_are_checked_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::new(dir.path()).unwrap();
    let n = 3 * SMALL_BODY as usize + 5;
    let (doc, chunks) = big_json(n, true);
    let p = s
        .write_atomic(
            Path::new("p/b/big.json"),
            futures_util::stream::iter(chunks),
            u64::MAX,
            true,
        )
        .await
        .unwrap();
    assert_eq!(p.bytes, n as u64);
    assert_eq!(p.sha256, hex::encode(Sha256::digest(&doc)));
    assert_eq!(std::fs::read(dir.path().join("p/b/big.json")).unwrap(), doc);
    // The tail is broken only after the in-memory limit: still refused, nothing left behind.
    let (_, chunks) = big_json(n, false);
    let r = s
        .write_atomic(
            Path::new("p/b/bad.json"),
            futures_util::stream::iter(chunks),
            u64::MAX,
            true,
        )
        .await;
    assert!(matches!(r, Err(WriteError::InvalidJson(_))), "{r:?}");
    // The cap holds past the in-memory limit too.
    let (_, chunks) = big_json(n, true);
    let r = s
        .write_atomic(
            Path::new("p/b/capped.json"),
            futures_util::stream::iter(chunks),
            2 * SMALL_BODY,
            true,
        )
        .await;
    assert!(matches!(r, Err(WriteError::TooLarge { .. })), "{r:?}");
    let mut names: Vec<_> = std::fs::read_dir(dir.path().join("p/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["big.json"]);
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
    let r = s
        .write_atomic(
            Path::new("p/b/early.json"),
            futures_util::stream::iter(chunks),
            u64::MAX,
            true,
        )
        .await;
    assert!(matches!(r, Err(WriteError::InvalidJson(_))), "{r:?}");
    // A body that fails half-way is a body error, not a JSON one, and publishes nothing.
    let (_, mut chunks) = big_json(n, true);
    chunks.truncate(chunks.len() / 2);
    chunks.push(Err(std::io::Error::other("connection reset")));
    let r = s
        .write_atomic(
            Path::new("p/b/cut.json"),
            futures_util::stream::iter(chunks),
            u64::MAX,
            true,
        )
        .await;
    assert!(matches!(r, Err(WriteError::Body(_))), "{r:?}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("p/b")).unwrap().count(),
        0
    );
}
