//! The house rules of issue 12, checked on the source tree: imports point down the layers, no
//! circle of imports among the sibling files of a folder, no source file of 500 lines or more
//! outside tests, and the sandbox crate never imports the daemon.
//!
//! The checks read the source text, not the compiler's view: they see `crate::` paths and
//! `super::` use trees, which is how this code base writes every import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The daemon's top-level modules, lowest layer first. A module may use only modules of a lower
/// layer (or its own). `config` sits beside `model` and `error`: it uses nothing else, and the
/// adapters and the ledger take their settings from it.
const LAYERS: &[&[&str]] = &[
    &["model", "error", "jsoncheck"],
    &["config", "scheduler", "metrics"],
    &["telemetry", "ledger", "provider", "storage"],
    &["sync", "alerts"],
    &["download", "dropfolder", "webhook"],
    &["daemon"],
    &["lab"],
    &["cli"],
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A test file by name (`tests.rs`, `foo_tests.rs`); its imports and length are not the house's.
fn is_test_file(path: &Path) -> bool {
    let stem = path.file_stem().unwrap().to_string_lossy();
    stem == "tests" || stem.ends_with("_tests")
}

/// The file's code before its `#[cfg(test)]` module, with line comments dropped.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        out.push_str(line.split(" // ").next().unwrap());
        out.push('\n');
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segment of every path that follows `prefix` (`crate::`, `super::`), including each
/// branch of a `prefix{a, b::c}` use tree.
fn first_segments(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(tree) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = true;
            for (i, c) in tree.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        start = false;
                        let id = ident_at(&tree[i..]);
                        if !id.is_empty() {
                            out.insert(id.to_string());
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let id = ident_at(rest);
            if !id.is_empty() {
                out.insert(id.to_string());
            }
        }
    }
    out
}

/// The top-level module a file of `src/` belongs to (`src/ledger/queries.rs` → `ledger`).
fn top_module(src: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn imports_point_down_the_layers() {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    for path in files.iter().filter(|p| !is_test_file(p)) {
        let from = top_module(&src, path);
        if from == "lib" || from == "main" {
            continue;
        }
        let Some(own) = layer_of(&from) else {
            panic!("{}: module `{from}` has no layer in LAYERS", path.display());
        };
        for to in first_segments(&code(path), "crate::") {
            if to == from {
                continue;
            }
            let theirs = layer_of(&to)
                .unwrap_or_else(|| panic!("{}: `crate::{to}` has no layer", path.display()));
            if theirs >= own {
                upward.push(format!("{} uses crate::{to}", path.display()));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports running up or across layers:\n{}",
        upward.join("\n")
    );
}

/// A folder's sibling modules (files and sub-folders, not `mod.rs`, which is the folder's face)
/// and the siblings each one imports through `super::`.
fn sibling_graph(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut nodes: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            let mut inner = Vec::new();
            rust_files(&path, &mut inner);
            // Only the sub-folder's face (its mod.rs) speaks to the parent's siblings via super::.
            let face: Vec<_> = inner
                .into_iter()
                .filter(|p| p.parent() == Some(&path))
                .collect();
            nodes.entry(name).or_default().extend(face);
        } else if path.extension().is_some_and(|e| e == "rs")
            && name != "mod"
            && name != "lib"
            && name != "main"
            && !is_test_file(&path)
        {
            nodes.entry(name).or_default().push(path);
        }
    }
    let names: BTreeSet<String> = nodes.keys().cloned().collect();
    nodes
        .iter()
        .map(|(name, paths)| {
            let uses = paths
                .iter()
                .flat_map(|p| {
                    let prefix = if p.parent() == Some(dir) {
                        "super::"
                    } else {
                        "super::super::"
                    };
                    first_segments(&code(p), prefix)
                })
                .filter(|s| s != name && names.contains(s))
                .collect();
            (name.clone(), uses)
        })
        .collect()
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_folder_has_a_circle_of_imports_among_its_files() {
    let mut dirs = vec![root().join("src"), root().join("crates/sandbox/src")];
    let mut cycles = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            }
        }
        if let Some(cycle) = find_cycle(&sibling_graph(&dir)) {
            cycles.push(format!("{}: {}", dir.display(), cycle.join(" → ")));
        }
    }
    assert!(
        cycles.is_empty(),
        "circles of imports:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn no_source_file_reaches_500_lines_outside_tests() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    rust_files(&root().join("crates/sandbox/src"), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter(|p| !is_test_file(p))
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            // A unit-test module at the end of a file is test code too.
            let lines = text
                .lines()
                .take_while(|l| !l.starts_with("#[cfg(test)]"))
                .count();
            (lines >= 500).then(|| format!("{}: {lines} lines", p.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these files:\n{}", long.join("\n"));
}

#[test]
fn the_sandbox_crate_never_imports_the_daemon() {
    let sandbox = root().join("crates/sandbox");
    let manifest = std::fs::read_to_string(sandbox.join("Cargo.toml")).unwrap();
    assert!(
        !manifest
            .lines()
            .any(|l| l.trim_start().starts_with("batchmirror ")
                || l.trim_start().starts_with("batchmirror=")),
        "crates/sandbox/Cargo.toml depends on the daemon"
    );
    let mut files = Vec::new();
    rust_files(&sandbox.join("src"), &mut files);
    for path in files {
        let code = code(&path);
        assert!(
            !code.contains("batchmirror::"),
            "{} imports the daemon crate",
            path.display()
        );
    }
}

#[test]
fn the_checks_see_use_trees_and_cycles() {
    let seen = first_segments(
        "use super::{http::{self, X}, wire, Provider};\nsuper::retry::f()",
        "super::",
    );
    assert_eq!(
        seen,
        ["http", "wire", "Provider", "retry"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(f, t)| (f.to_string(), BTreeSet::from([t.to_string()])))
        .collect();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert!(find_cycle(&acyclic).is_none());
}
