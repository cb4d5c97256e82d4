//! The drop folder's file handling: listing the inbox, taking a file safely (regular, one link,
//! never through a symlink, never blocking on a FIFO, hashed from the very bytes that are sent),
//! and filing files away without overwriting anything (`done/`, `failed/`, `outbox/`).
//!
//! Only direct children of the inbox are ever opened, by name, with `O_NOFOLLOW`.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// An inbox entry's identity for settling: size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime: SystemTime,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: m.len(),
            mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }
}

/// A file read whole: the bytes that will be sent and their hash.
#[derive(Debug, Clone)]
pub struct Taken {
    pub bytes: Bytes,
    pub sha256: String,
    pub stamp: Stamp,
}

/// Why an entry was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not a regular file (symlink, FIFO, socket, device); left in place.
    #[error("not a regular file ({0}); it is left in place and never opened")]
    NotRegular(&'static str),
    /// Another name shares the inode: it could change after submission.
    #[error(
        "the file has {0} hard links; another name could change it after submission, so it is left in place (copy it in instead)"
    )]
    HardLinked(u64),
    /// A name that cannot be sent as a filename.
    #[error("the name is not valid UTF-8; rename the file")]
    BadName,
    /// Over `max_file_bytes`: a permanent refusal.
    #[error("the file is {size} bytes, over the {cap}-byte limit (dropfolder.max_file_bytes)")]
    TooLarge { size: u64, cap: u64 },
    /// Settled at 0 bytes: a permanent refusal, made here instead of paying for a provider's 422.
    #[error("empty file (0 bytes): nothing to extract")]
    Empty,
    /// Written to since it settled (or while it was read): settle again.
    #[error("the file changed while it was being read")]
    Changed,
    /// Gone before it could be read.
    #[error("the file disappeared")]
    Vanished,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A name `fs` reports: the file type word for logs, or None for a regular file.
fn irregular(t: std::fs::FileType) -> Option<&'static str> {
    if t.is_file() {
        None
    } else if t.is_symlink() {
        Some("a symbolic link")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_dir() {
        Some("a directory")
    } else {
        Some("a device")
    }
}

/// The inbox's entry names matching the filters (directories excluded; other irregular entries
/// kept so they can be refused with a reason).
pub fn scan(
    inbox: &Path,
    include: &[glob::Pattern],
    exclude: &[glob::Pattern],
) -> std::io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(inbox)? {
        let entry = entry?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        if wanted(&name, include, exclude) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// True when the name passes `include` and no `exclude` pattern. Non-UTF-8 names pass, so they
/// are refused with a reason instead of silently ignored.
pub fn wanted(
    name: &std::ffi::OsStr,
    include: &[glob::Pattern],
    exclude: &[glob::Pattern],
) -> bool {
    let Some(s) = name.to_str() else {
        return true;
    };
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    include.iter().any(|p| p.matches_with(s, opts))
        && !exclude.iter().any(|p| p.matches_with(s, opts))
}

/// The stamp of an inbox entry, without following a symlink. `Ok(None)` when it is gone.
pub fn stamp(inbox: &Path, name: &std::ffi::OsStr) -> Result<Option<Stamp>, Refusal> {
    match std::fs::symlink_metadata(inbox.join(name)) {
        Ok(m) => match irregular(m.file_type()) {
            Some(kind) => Err(Refusal::NotRegular(kind)),
            None => Ok(Some(Stamp::of(&m))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Refusal::Io(e)),
    }
}

/// Reads an inbox file whole, checking on the open descriptor that it is a regular file with one
/// link, no larger than `cap`, and still as `expected` (settled) before and after the read.
pub fn take(
    inbox: &Path,
    name: &std::ffi::OsStr,
    expected: Stamp,
    cap: u64,
) -> Result<(String, Taken), Refusal> {
    let utf8 = name.to_str().ok_or(Refusal::BadName)?.to_owned();
    let path = inbox.join(name);
    // O_NOFOLLOW: a symlink swapped in after the scan fails here instead of being followed.
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever.
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Refusal::Vanished),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Refusal::NotRegular("a symbolic link"));
        }
        Err(e) => return Err(Refusal::Io(e)),
    };
    let before = file.metadata()?;
    if let Some(kind) = irregular(before.file_type()) {
        return Err(Refusal::NotRegular(kind));
    }
    if before.nlink() != 1 {
        return Err(Refusal::HardLinked(before.nlink()));
    }
    if before.len() > cap {
        return Err(Refusal::TooLarge {
            size: before.len(),
            cap,
        });
    }
    if Stamp::of(&before) != expected {
        return Err(Refusal::Changed);
    }
    // After the stamp check: a file still being written is settled again, not refused.
    if before.len() == 0 {
        return Err(Refusal::Empty);
    }
    let mut buf = Vec::with_capacity(before.len() as usize);
    (&mut file).take(cap + 1).read_to_end(&mut buf)?;
    let after = file.metadata()?;
    if Stamp::of(&after) != expected || buf.len() as u64 != expected.size {
        return Err(Refusal::Changed);
    }
    let sha256 = hex::encode(Sha256::digest(&buf));
    Ok((
        utf8,
        Taken {
            bytes: Bytes::from(buf),
            sha256,
            stamp: expected,
        },
    ))
}

/// `name`, then `stem (1).ext`, `stem (2).ext`, …: the candidates for a free name in a folder.
pub fn candidate(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({n}).{ext}"),
        _ => format!("{name} ({n})"),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Moves `inbox/name` into `to_dir` under the first free candidate of `as_name` (the name's
/// [`Names::base`](super::names::Names::base)); returns that name. Both folders are fsynced so
/// the move survives a crash.
pub fn file_away(
    inbox: &Path,
    name: &str,
    to_dir: &Path,
    as_name: &str,
) -> std::io::Result<String> {
    std::fs::create_dir_all(to_dir)?;
    for n in 0..10_000 {
        let target = candidate(as_name, n);
        let dest = to_dir.join(&target);
        if std::fs::symlink_metadata(&dest).is_ok() {
            continue;
        }
        std::fs::rename(inbox.join(name), &dest)?;
        sync_dir(to_dir)?;
        sync_dir(inbox)?;
        return Ok(target);
    }
    Err(std::io::Error::other(format!(
        "no free name for {name:?} in {}",
        to_dir.display()
    )))
}

/// Publishes `contents` (read to the end) as `dir/<name>` atomically: a temp file in `dir`,
/// fsynced, linked in without replacing anything (collisions get the next candidate name), then
/// the folder fsynced. Returns the name used.
pub fn publish(dir: &Path, name: &str, mut contents: impl Read) -> std::io::Result<String> {
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".batchmirror-")
        .suffix(".part")
        .tempfile_in(dir)?;
    std::io::copy(&mut contents, tmp.as_file_mut())?;
    tmp.as_file_mut().flush()?;
    tmp.as_file().sync_all()?;
    let mut tmp = Some(tmp);
    for n in 0..10_000 {
        let target = candidate(name, n);
        let Some(t) = tmp.take() else { break };
        match t.persist_noclobber(dir.join(&target)) {
            Ok(_) => {
                sync_dir(dir)?;
                return Ok(target);
            }
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => tmp = Some(e.file),
            Err(e) => return Err(e.error),
        }
    }
    Err(std::io::Error::other(format!(
        "no free name for {name:?} in {}",
        dir.display()
    )))
}

/// A MIME type for the name's extension (what the providers accept), else octet-stream.
pub fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "tif" | "tiff" => "image/tiff",
        "txt" => "text/plain",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filing_never_overwrites_and_suffixes_collisions() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, done) = (dir.path().join("inbox"), dir.path().join("done"));
        std::fs::create_dir_all(&inbox).unwrap();
        for (i, body) in ["first", "second", "third"].iter().enumerate() {
            std::fs::write(inbox.join("scan.pdf"), body).unwrap();
            let filed = file_away(&inbox, "scan.pdf", &done, "scan.pdf").unwrap();
            assert_eq!(filed, candidate("scan.pdf", i as u32));
        }
        assert_eq!(candidate("scan.pdf", 2), "scan (2).pdf");
        assert_eq!(candidate("README", 1), "README (1)");
        assert_eq!(
            std::fs::read_to_string(done.join("scan.pdf")).unwrap(),
            "first"
        );
        assert_eq!(
            std::fs::read_to_string(done.join("scan (2).pdf")).unwrap(),
            "third"
        );
        assert!(!inbox.join("scan.pdf").exists());
    }

    #[test]
    fn publish_is_atomic_and_no_clobber() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            publish(dir.path(), "a.json", &b"one"[..]).unwrap(),
            "a.json"
        );
        assert_eq!(
            publish(dir.path(), "a.json", &b"two"[..]).unwrap(),
            "a (1).json"
        );
        assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), b"one");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temp file left: {names:?}");
    }

    #[test]
    fn take_refuses_links_and_changes_and_reads_what_it_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path();
        std::fs::write(inbox.join("ok.pdf"), b"content").unwrap();
        let st = stamp(inbox, "ok.pdf".as_ref()).unwrap().unwrap();
        let (name, t) = take(inbox, "ok.pdf".as_ref(), st, 100).unwrap();
        assert_eq!(name, "ok.pdf");
        assert_eq!(t.sha256, hex::encode(Sha256::digest(b"content")));
        assert!(matches!(
            take(inbox, "ok.pdf".as_ref(), st, 3),
            Err(Refusal::TooLarge { size: 7, cap: 3 })
        ));
        std::fs::write(inbox.join("ok.pdf"), b"content, longer").unwrap();
        assert!(matches!(
            take(inbox, "ok.pdf".as_ref(), st, 100),
            Err(Refusal::Changed)
        ));
        std::os::unix::fs::symlink(inbox.join("ok.pdf"), inbox.join("link.pdf")).unwrap();
        assert!(matches!(
            stamp(inbox, "link.pdf".as_ref()),
            Err(Refusal::NotRegular("a symbolic link"))
        ));
        // Even when the scan saw a regular file, a symlink swapped in is never followed.
        assert!(matches!(
            take(inbox, "link.pdf".as_ref(), st, 100),
            Err(Refusal::NotRegular("a symbolic link"))
        ));
        std::fs::hard_link(inbox.join("ok.pdf"), inbox.join("twin.pdf")).unwrap();
        let st = stamp(inbox, "twin.pdf".as_ref()).unwrap().unwrap();
        assert!(matches!(
            take(inbox, "twin.pdf".as_ref(), st, 100),
            Err(Refusal::HardLinked(2))
        ));
        assert!(matches!(
            take(inbox, "gone.pdf".as_ref(), st, 100),
            Err(Refusal::Vanished)
        ));
        std::fs::write(inbox.join("empty.pdf"), b"").unwrap();
        let st = stamp(inbox, "empty.pdf".as_ref()).unwrap().unwrap();
        let empty = take(inbox, "empty.pdf".as_ref(), st, 100).unwrap_err();
        assert!(matches!(empty, Refusal::Empty));
        assert_eq!(
            empty.to_string(),
            "empty file (0 bytes): nothing to extract"
        );
    }

    #[test]
    fn filters_skip_partial_hidden_and_temp_files() {
        let pats = |v: &[&str]| -> Vec<glob::Pattern> {
            v.iter().map(|p| glob::Pattern::new(p).unwrap()).collect()
        };
        let (inc, exc) = (pats(&["*"]), pats(&["*.part", ".*", "~*", "*.tmp"]));
        for skipped in ["a.pdf.part", ".hidden.pdf", "~lock.pdf", "x.tmp"] {
            assert!(!wanted(skipped.as_ref(), &inc, &exc), "{skipped}");
        }
        assert!(wanted("invoice.pdf".as_ref(), &inc, &exc));
        assert!(!wanted("a.pdf".as_ref(), &pats(&["*.png"]), &exc));
    }
}
