//! Differential tests of the streaming JSON check against serde_json: hand-picked documents cut
//! at every byte, random and mutated documents, deep nesting, and the fast string scan.

use rand::{Rng, SeedableRng};
use serde::de::IgnoredAny;

use super::{JsonCheck, string_stop};

/// The check over `doc` cut into pieces at `cuts` (sorted offsets).
fn check(doc: &[u8], cuts: &[usize]) -> bool {
    let mut c = JsonCheck::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&doc.len())) {
        if c.feed(&doc[start..end]).is_err() {
            return false;
        }
        start = end;
    }
    c.finish().is_ok()
}

fn serde_ok(doc: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(doc).is_ok()
}

#[test]
fn agrees_with_serde_json_on_hand_picked_documents() {
    let docs: &[&str] = &[
        "",
        " ",
        "null",
        " true ",
        "false",
        "nul",
        "truex",
        "0",
        "-0",
        "01",
        "-",
        "1.",
        "1.5",
        "1e5",
        "1E+5",
        "1e-",
        "1.5e3x",
        "-1.25e-10",
        "[]",
        "[ ]",
        "[1,]",
        "[,1]",
        "[1 2]",
        "{}",
        "{ }",
        "{\"a\":1}",
        "{\"a\" : [1, {\"b\": null}] }",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\":1,}",
        "{1:2}",
        "[}",
        "{]",
        "[[]",
        "[]]",
        "\"abc\"",
        "\"a\\\"b\"",
        "\"\\u00e9\\n\"",
        "\"\\u00g0\"",
        "\"\\x\"",
        "\"a\nb\"",
        "\"a\tb\"",
        "\"\u{e9}\"",
        "\"open",
        "[1] [2]",
        "{} x",
        "\"a\" \"b\"",
        "[1.0e+2, -0.5, 0e0]",
        "[-01]",
        "[.5]",
        "[+1]",
        "[1e+]",
        "[1]\r\n\t ",
    ];
    for doc in docs {
        let d = doc.as_bytes();
        for cut in 0..=d.len() {
            assert_eq!(
                check(d, &[cut]),
                serde_ok(d),
                "{doc:?} cut at {cut} disagrees with serde_json"
            );
        }
    }
}

#[test]
fn deep_nesting_is_accepted_like_serde_json_and_brackets_must_match() {
    // serde_json skips values without a recursion limit; the bit stack crosses word boundaries.
    for depth in [63, 64, 65, 128, 129, 300] {
        let doc = format!("{}1{}", "[{\"a\":".repeat(depth), "}]".repeat(depth));
        assert!(
            serde_ok(doc.as_bytes()) && check(doc.as_bytes(), &[]),
            "{depth}"
        );
        let bad = format!("{}1{}", "[{\"a\":".repeat(depth), "]}".repeat(depth));
        assert!(
            !serde_ok(bad.as_bytes()) && !check(bad.as_bytes(), &[]),
            "{depth}"
        );
        let open = format!("{}{}", "[".repeat(depth), "]".repeat(depth - 1));
        assert!(
            !serde_ok(open.as_bytes()) && !check(open.as_bytes(), &[]),
            "{depth}"
        );
    }
}

/// A random, mostly valid document of grammar pieces.
fn random_doc(rng: &mut impl Rng, depth: u32, out: &mut Vec<u8>) {
    const SCALARS: &[&str] = &[
        "null",
        "true",
        "false",
        "0",
        "-12",
        "3.25",
        "1e9",
        "-0.5E-3",
        "\"\"",
        "\"text\"",
        "\"q\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
        "\"\\u0041\\uD83D\"",
        "\"a longer run of text, past a word or two: {[1, 2]} \\\" and \\n still text\"",
    ];
    match rng.random_range(0..if depth > 4 { 1 } else { 3 }) {
        0 => out.extend_from_slice(SCALARS[rng.random_range(0..SCALARS.len())].as_bytes()),
        1 => {
            out.push(b'[');
            for k in 0..rng.random_range(0..4) {
                if k > 0 {
                    out.push(b',');
                }
                random_doc(rng, depth + 1, out);
            }
            out.push(b']');
        }
        _ => {
            out.extend_from_slice(b"{ ");
            for k in 0..rng.random_range(0..4) {
                if k > 0 {
                    out.extend_from_slice(b" ,");
                }
                out.extend_from_slice(format!("\"k{k}\" :").as_bytes());
                random_doc(rng, depth + 1, out);
            }
            out.push(b'}');
        }
    }
}

#[test]
fn agrees_with_serde_json_on_random_and_mutated_documents() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    const NOISE: &[u8] = b" \n[]{}:,\"\\-+.eE0123456789tfnulx\x01";
    let (mut valid, mut invalid) = (0, 0);
    for _ in 0..20_000 {
        let mut doc = Vec::new();
        random_doc(&mut rng, 0, &mut doc);
        // Most documents get a few random edits: inserted, replaced or removed bytes.
        for _ in 0..rng.random_range(0..3) {
            if doc.is_empty() {
                break;
            }
            let at = rng.random_range(0..doc.len());
            let b = NOISE[rng.random_range(0..NOISE.len())];
            match rng.random_range(0..3) {
                0 => doc.insert(at, b),
                1 => doc[at] = b,
                _ => {
                    doc.remove(at);
                }
            }
        }
        let mut cuts: Vec<usize> = (0..rng.random_range(0..4))
            .map(|_| rng.random_range(0..=doc.len()))
            .collect();
        cuts.sort_unstable();
        let expected = serde_ok(&doc);
        assert_eq!(
            check(&doc, &cuts),
            expected,
            "{:?} cut at {cuts:?}",
            String::from_utf8_lossy(&doc)
        );
        if expected {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    // Both sides of the comparison were exercised.
    assert!(
        valid > 1000 && invalid > 1000,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn string_stop_finds_the_first_quote_backslash_or_control_byte() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    const BYTES: &[u8] = b"ab \x7f\xff\xc3\x1f\x00\"\\!#]";
    for _ in 0..20_000 {
        let s: Vec<u8> = (0..rng.random_range(0..40))
            .map(|_| {
                if rng.random_range(0..4) == 0 {
                    BYTES[rng.random_range(0..BYTES.len())]
                } else {
                    b'a' + rng.random_range(0..26u8)
                }
            })
            .collect();
        let naive = s.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        assert_eq!(string_stop(&s), naive, "{s:?}");
    }
}
