//! The names a dropped file gives rise to, made to fit the file system before anything is paid for.
//!
//! One inbox name `N` becomes `done/N`, `failed/N` and `failed/N.error.txt`, `outbox/N.json` or
//! `outbox/N.error.txt`, each possibly with a collision suffix ` (9999)` ([`files::candidate`]).
//! A 255-byte `N` fits the inbox but none of those, and the job would be paid for and never
//! delivered. So every upload gets a *base* name ([`Names::base`]): `N` itself when every derived
//! name fits, else a prefix of `N` cut on a character boundary, `~`, the first 12 hex digits of
//! the sha256 of the whole of `N` and `N`'s extension (`scan~1a2b3c4d5e6f.pdf`). The base is a pure
//! function of `N` and the limit, so a resumed upload (after a crash, on a later pass) derives the
//! same names again; the hash keeps two long names that share a prefix apart.
//!
//! [`files::candidate`]: super::files::candidate

use std::path::Path;

use sha2::{Digest, Sha256};

/// The component limit used when the file system cannot say (and the most any name is given, so
/// a result copied elsewhere later keeps its name): Linux's `NAME_MAX`.
pub const NAME_MAX: usize = 255;

/// Below this a file system is not one the drop folder can serve; a smaller `f_namemax` is taken
/// as this, and names that still do not fit fail with [`NameError`] before any submission.
const FLOOR: usize = 64;

/// What [`files::candidate`](super::files::candidate) may add: ` (9999)`.
pub const COLLISION: usize = " (9999)".len();

/// The longest suffix put after a (collision-suffixed) name in `failed/` or `outbox/`.
const LONGEST_SUFFIX: usize = ".error.txt".len();

/// What a derived name may add to the base: a collision suffix in `done/`, then `.error.txt` and
/// another collision suffix in the outbox.
pub const RESERVE: usize = COLLISION + LONGEST_SUFFIX + COLLISION;

/// Hex digits of the name's sha256 kept in a shortened name: 48 bits, enough that two long names
/// dropped with the same prefix do not meet by chance.
const HASH_HEX: usize = 12;

/// An extension longer than this is not one (`report.final-version-for-review`): it is cut with
/// the rest instead of kept.
const MAX_EXT: usize = 16;

/// A derived name that cannot be made to fit (only on a file system with tiny names).
#[derive(Debug, thiserror::Error)]
#[error("the derived name {name:?} is {len} bytes, over the {limit}-byte name limit of {dir}")]
pub struct NameError {
    pub name: String,
    pub len: usize,
    pub limit: usize,
    pub dir: String,
}

/// The per-component name limit of the folders at `dirs`: the smallest `f_namemax`, never above
/// [`NAME_MAX`] nor below the floor the shortening needs.
pub fn limit(dirs: &[&Path]) -> usize {
    dirs.iter()
        .map(|d| namemax(d).unwrap_or(NAME_MAX))
        .min()
        .unwrap_or(NAME_MAX)
        .clamp(FLOOR, NAME_MAX)
}

#[cfg(target_os = "linux")]
fn namemax(dir: &Path) -> Option<usize> {
    let v = rustix::fs::statvfs(dir).ok()?;
    usize::try_from(v.f_namemax).ok().filter(|n| *n > 0)
}

#[cfg(not(target_os = "linux"))]
fn namemax(_dir: &Path) -> Option<usize> {
    None
}

/// The first [`HASH_HEX`] hex digits of the sha256 of `name`.
pub fn name_hash(name: &str) -> String {
    let mut h = hex::encode(Sha256::digest(name.as_bytes()));
    h.truncate(HASH_HEX);
    h
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `name` if it is at most `max` bytes, else `<prefix>~<hash>.<ext>` in exactly that budget or
/// less: the prefix cut on a character boundary, the hash of the whole `name`, its extension kept
/// when it looks like one. Same `name` and `max`, same answer.
pub fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let hash = name_hash(name);
    let ext = match name.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty() && !ext.is_empty() && ext.len() < MAX_EXT && !ext.contains('~') =>
        {
            &name[stem.len()..]
        }
        _ => "",
    };
    let tail = format!("~{hash}{ext}");
    // A budget too small for even the hash: the hash alone, which is all that is left to say.
    if tail.len() >= max {
        return prefix(&tail, max).to_owned();
    }
    let stem = &name[..name.len() - ext.len()];
    format!("{}{tail}", prefix(stem, max - tail.len()))
}

/// `name` + `suffix` within `max` bytes: `name` shortened (see [`shorten`]) so that the suffix is
/// kept whole.
pub fn fit(name: &str, suffix: &str, max: usize) -> String {
    format!(
        "{}{suffix}",
        shorten(name, max.saturating_sub(suffix.len()))
    )
}

/// What `original` is filed as in `done/` or `failed/` (before a collision suffix), so that every
/// name derived from it fits `limit`.
pub fn base(original: &str, limit: usize) -> String {
    shorten(original, limit.saturating_sub(RESERVE))
}

/// Every name derived from one inbox name, for the folders' name `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The inbox name, as dropped (and as sent to the provider).
    pub original: String,
    /// What the file is filed as in `done/` or `failed/` (before a collision suffix).
    pub base: String,
    limit: usize,
}

impl Names {
    /// The names of `original`, checked: every derived name, in its longest collision-suffixed
    /// form, fits `limit`.
    pub fn new(original: &str, limit: usize) -> Result<Names, NameError> {
        let names = Names {
            original: original.to_owned(),
            base: base(original, limit),
            limit,
        };
        names.check()?;
        Ok(names)
    }

    /// True when the base differs from the inbox name (worth one log line saying so).
    pub fn shortened(&self) -> bool {
        self.base != self.original
    }

    /// The longest name that can be derived in each folder, checked against the limit.
    fn check(&self) -> Result<(), NameError> {
        let worst = |suffix: &str| format!("{}{}{suffix} (9999)", self.base, " (9999)");
        for (dir, name) in [
            ("done/", format!("{} (9999)", self.base)),
            ("failed/", worst(".error.txt")),
            ("outbox/", worst(".json")),
            ("outbox/", worst(".error.txt")),
        ] {
            if name.len() > self.limit {
                return Err(NameError {
                    len: name.len(),
                    name,
                    limit: self.limit,
                    dir: dir.to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// The outbox (or `failed/`) name for a file filed as `filed`: `filed` + `suffix`, shortened when
/// it would not fit with a collision suffix. Uploads filed under this module's base names always
/// fit as they are; a ledger row filed before it may hold a name too long to be delivered whole.
pub fn derived(filed: &str, suffix: &str, limit: usize) -> String {
    fit(filed, suffix, limit.saturating_sub(COLLISION))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_as_they_are() {
        let n = Names::new("invoice.pdf", NAME_MAX).unwrap();
        assert_eq!(n.base, "invoice.pdf");
        assert!(!n.shortened());
        assert_eq!(
            derived("invoice.pdf", ".json", NAME_MAX),
            "invoice.pdf.json"
        );
        // The longest name that needs no shortening: every derived form still fits.
        let edge = format!("{}.pdf", "a".repeat(NAME_MAX - RESERVE - 4));
        assert_eq!(Names::new(&edge, NAME_MAX).unwrap().base, edge);
    }

    #[test]
    fn a_long_name_keeps_a_prefix_the_hash_and_its_extension() {
        let name = format!("{}.pdf", "a".repeat(251));
        assert_eq!(name.len(), 255);
        let n = Names::new(&name, NAME_MAX).unwrap();
        let hash = name_hash(&name);
        assert_eq!(hash.len(), 12);
        assert!(n.shortened());
        assert!(n.base.ends_with(&format!("~{hash}.pdf")), "{}", n.base);
        assert!(n.base.starts_with("aaaa"));
        assert_eq!(n.base.len(), NAME_MAX - RESERVE, "the whole budget is used");
        assert_eq!(hash, hex::encode(Sha256::digest(name.as_bytes()))[..12]);
    }

    #[test]
    fn shortening_cuts_on_character_boundaries_at_every_length() {
        // Two- and three-byte characters, so every cut position is tried against both widths.
        let stem: String = "é日".repeat(60);
        for max in 20..stem.len() {
            for name in [
                format!("{stem}.pdf"),
                stem.clone(),
                format!("x{stem}.tar.gz"),
            ] {
                let s = shorten(&name, max);
                assert!(s.len() <= max, "{max}: {s} is {} bytes", s.len());
                assert!(
                    s.len() + 2 >= max,
                    "{max}: at most a partial char is lost: {s}"
                );
                assert!(s.contains(&name_hash(&name)), "{s}");
                let ext = name.rsplit_once('.').map(|(_, e)| e);
                if let Some(ext) = ext.filter(|_| name.contains('.')) {
                    assert!(s.ends_with(&format!(".{ext}")), "{s}");
                }
                // A String is UTF-8 by construction; the prefix is the name's own start.
                let cut = s.split('~').next().unwrap();
                assert!(name.starts_with(cut), "{s}");
            }
        }
    }

    #[test]
    fn the_same_name_always_gives_the_same_base_and_different_ones_differ() {
        let a = format!("{}-a.pdf", "quarterly report ".repeat(20));
        let b = format!("{}-b.pdf", "quarterly report ".repeat(20));
        let first = Names::new(&a, NAME_MAX).unwrap();
        assert_eq!(first, Names::new(&a, NAME_MAX).unwrap());
        let other = Names::new(&b, NAME_MAX).unwrap();
        assert_ne!(first.base, other.base, "same prefix, different hash");
        // Shortening a base again changes nothing: a resumed upload derives the same names.
        assert_eq!(Names::new(&first.base, NAME_MAX).unwrap().base, first.base);
    }

    #[test]
    fn suffixes_are_kept_whole_and_every_derived_name_fits() {
        let name = format!("{}.pdf", "日".repeat(83));
        let n = Names::new(&name, NAME_MAX).unwrap();
        for suffix in [".json", ".error.txt"] {
            let filed = crate::dropfolder::files::candidate(&n.base, 9999);
            let out = derived(&filed, suffix, NAME_MAX);
            assert_eq!(out, format!("{filed}{suffix}"), "a base fits as it is");
            let last = crate::dropfolder::files::candidate(&out, 9999);
            assert!(last.len() <= NAME_MAX, "{last}: {}", last.len());
        }
        // A row filed (before this module) under a name too long for the outbox.
        let out = derived(&name, ".error.txt", NAME_MAX);
        assert!(out.ends_with(".pdf.error.txt") && out.len() <= NAME_MAX - COLLISION);
        assert!(out.contains(&name_hash(&name)));
    }

    #[test]
    fn odd_extensions_are_cut_with_the_rest() {
        let long_ext = format!("report.{}", "x".repeat(300));
        let s = shorten(&long_ext, 100);
        assert!(
            s.len() <= 100 && s.starts_with("report.xxx") && s.ends_with(&name_hash(&long_ext))
        );
        let dotfile = format!(".{}", "y".repeat(300));
        assert!(shorten(&dotfile, 50).ends_with(&name_hash(&dotfile)));
    }

    #[test]
    fn a_tiny_limit_is_an_error_naming_the_name() {
        let e = Names {
            original: "a.pdf".into(),
            base: "a".repeat(40),
            limit: 50,
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("aaaa") && e.limit == 50, "{e}");
        assert_eq!(limit(&[Path::new("/nonexistent/dir")]), NAME_MAX);
        assert!(limit(&[Path::new("/tmp")]) <= NAME_MAX);
    }
}
