//! The logging flags on the real binary: `-q`/`-v` over `RUST_LOG` and the config,
//! `--log-format json` (every stderr line a JSON object), `NO_COLOR` at a real terminal; and the
//! man pages generated from the same definitions.

use std::path::Path;
use std::process::Output;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_batchmirror");

/// `batchmirror <args> --config <config>` with `env` set, off the async runtime.
async fn run(args: &[&str], config: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn quiet_and_verbose_set_the_level_over_rust_log_and_the_config() {
    let sandbox = start(spec(finished_batches(1, 2))).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config_text(dir.path(), &sandbox.base_url(), "")).unwrap();

    let out = run(&["sync", "--once"], &path, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(" INFO ") && err.contains("pass finished"),
        "{err}"
    );
    assert!(!err.contains("DEBUG"), "{err}");

    let out = run(&["sync", "--once", "-q"], &path, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains("INFO") && !err.contains("pass finished"),
        "{err}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("mirrored"),
        "the summary on stdout stays: {out:?}"
    );

    // -v before the subcommand, and over RUST_LOG=error.
    let out = run(&["-v", "sync", "--once"], &path, &[("RUST_LOG", "error")]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("DEBUG") && err.contains("loaded: 1 provider(s)"),
        "{err}"
    );
    assert!(err.contains("pass finished"), "{err}");

    let out = run(&["sync", "--once", "-q", "-v"], &path, &[]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "-q and -v conflict: {}",
        stderr(&out)
    );
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_and_the_flag_beats_the_environment() {
    let sandbox = start(spec(finished_batches(1, 2))).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config_text(dir.path(), &sandbox.base_url(), "")).unwrap();

    let out = run(
        &["sync", "--once", "--log-format", "json", "-v"],
        &path,
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let mut levels = Vec::new();
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?} in {err}"));
        levels.push(v["level"].as_str().unwrap().to_owned());
    }
    assert!(levels.iter().any(|l| l == "INFO"), "{err}");
    assert!(levels.iter().any(|l| l == "DEBUG"), "{err}");

    let env = [("BATCHMIRROR__LOG__FORMAT", "json")];
    let out = run(&["sync", "--once", "--log-format", "text"], &path, &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(" INFO ") && !err.contains("{\""), "{err}");
    let out = run(&["sync", "--once"], &path, &env).await;
    assert!(stderr(&out).starts_with("{\""), "{}", stderr(&out));
}

/// Under a pseudo-terminal (`script`), warnings are coloured unless `NO_COLOR` is set.
#[tokio::test]
async fn no_color_turns_colours_off_at_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    // Plain http to another host: check-config warns, and a warning has a coloured level.
    let text = config_text(dir.path(), "http://mirror.example.com", "");
    std::fs::write(&path, text).unwrap();
    let line = format!("{BIN} check-config --config {}", path.display());
    let at_terminal = move |no_color: Option<&str>| {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"])
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        cmd.stdin(std::process::Stdio::null());
        let out = cmd.output().expect("script(1) from util-linux");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("WARN"), "{text}");
        text
    };
    let (coloured, plain, empty) = tokio::task::spawn_blocking(move || {
        (
            at_terminal(None),
            at_terminal(Some("1")),
            at_terminal(Some("")),
        )
    })
    .await
    .unwrap();
    assert!(
        coloured.contains('\x1b'),
        "a terminal gets colours: {coloured:?}"
    );
    assert!(!plain.contains('\x1b'), "NO_COLOR=1: {plain:?}");
    assert!(
        empty.contains('\x1b'),
        "an empty NO_COLOR does not count: {empty:?}"
    );
}

#[test]
fn the_man_page_is_roff_naming_every_command_and_each_gets_a_page() {
    let out = std::process::Command::new(BIN).arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let page = String::from_utf8(out.stdout).unwrap();
    let title = page
        .lines()
        .position(|l| l.starts_with(".TH batchmirror 1"));
    let name = page.lines().position(|l| l == ".SH NAME");
    assert!(title.is_some() && title < name, "{page}");
    for command in [
        "run",
        "sync",
        "status",
        "check\\-config",
        "completions",
        "man",
    ] {
        assert!(
            page.contains(&format!("batchmirror\\-{command}(1)")),
            "{command}: {page}"
        );
    }
    assert!(page.contains("\\-\\-log\\-format"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let status = std::fs::read_to_string(dir.path().join("batchmirror-status.1")).unwrap();
    assert!(
        status.contains("\\-\\-items") && status.contains("skipped"),
        "{status}"
    );
    assert!(dir.path().join("batchmirror.1").exists());
}
