//! `check-config` prints a config one can copy and load back, its secrets left out; config
//! errors name a provider by its name.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_batchmirror");

fn check_config(config: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn check_config_output_loads_back_with_its_secrets_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("ep.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let text = format!(
        "{}\n[[provider]]\nname = \"two\"\nkind = \"extract_page\"\nbase_url = \"http://127.0.0.1:9\"\napi_key_env = \"TWO_KEY\"\n\
         [[provider]]\nname = \"three\"\nkind = \"extract_page\"\nbase_url = \"http://127.0.0.1:9\"\napi_key = \"inline-secret\"\n",
        config_text(dir.path(), "http://127.0.0.1:9", "").replace(
            &format!("api_key = \"{KEY}\""),
            &format!("api_key_file = \"{}\"", key_file.display()),
        )
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let env = [("TWO_KEY", "two-secret")];
    let out = check_config(&path, &env);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    for secret in [KEY, "two-secret", "inline-secret", "[redacted]"] {
        assert!(!printed.contains(secret), "{secret}: {printed}");
    }
    assert!(
        printed.contains(&format!("\napi_key_file = \"{}\"\n", key_file.display())),
        "{printed}"
    );
    assert!(
        printed.contains("\napi_key_env = \"TWO_KEY\"\n"),
        "{printed}"
    );
    assert!(printed.contains("\n# api_key = <redacted"), "{printed}");

    // Copied as is, it loads back but asks for the inline key by the provider's name ...
    let copy = dir.path().join("copy.toml");
    std::fs::write(&copy, &printed).unwrap();
    let out = check_config(&copy, &env);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config key `provider \"three\"`: no API key"),
        "{err}"
    );
    // ... and with that key supplied, prints the same config again.
    let completed = printed.replace(
        "# api_key = <redacted: inline in the config; set api_key_file or api_key_env>",
        "api_key_env = \"THREE_KEY\"",
    );
    std::fs::write(&copy, &completed).unwrap();
    let out = check_config(&copy, &[("TWO_KEY", "x"), ("THREE_KEY", "y")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), completed);
}

#[test]
fn config_errors_name_the_provider_by_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let base = config_text(dir.path(), "http://127.0.0.1:9", "");
    for (text, want) in [
        (
            base.replace("page_size = 5", "page_size = 500"),
            "config key `provider \"ep\".page_size`",
        ),
        (
            base.replace("page_size = 5", "page_sise = 5"),
            "config key `provider \"ep\".page_sise`",
        ),
        (
            base.replace("name = \"ep\"", "name = \"e p\""),
            "config key `provider[0].name`",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = check_config(&path, &[]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{want}: {err}");
    }
}
