//! `[webhook]` and the per-provider webhook keys: what loads, what is refused (naming the key),
//! and that no secret reaches the printed config or Debug output.

use super::*;

const SECRET: &str = "wh_sec_0123456789abcdef";

fn providers(pp_extra: &str, lc_extra: &str) -> String {
    format!(
        "[[provider]]\nname = \"pp\"\nkind = \"perfectparser\"\nbase_url = \"https://b.example\"\n\
         api_key = \"k\"\n{pp_extra}\n\
         [[provider]]\nname = \"lc\"\nkind = \"llamacloud\"\nbase_url = \"https://c.example\"\n\
         api_key = \"k\"\n{lc_extra}\n"
    )
}

fn load(text: &str) -> Result<Settings, ConfigError> {
    load_str(text, "test", &HashMap::new())
}

fn refused(text: &str) -> (String, String) {
    match load(text).unwrap_err() {
        ConfigError::Invalid { key, message } => (key, message),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn secrets_load_from_the_file_or_inline_and_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lc.secret");
    std::fs::write(&file, "bearer-token-value\n").unwrap();
    let text = format!(
        "[webhook]\nlisten = \"127.0.0.1:8787\"\n{}",
        providers(
            &format!("webhook_secret = \"{SECRET}\""),
            &format!(
                "webhook_secret_file = \"{}\"\nwebhook_header = \"X-Hook-Token\"",
                file.display()
            ),
        )
    );
    let s = load(&text).unwrap();
    assert_eq!(s.webhook.as_ref().unwrap().listen.port(), 8787);
    let pp = s.providers[0].webhook.as_ref().unwrap();
    assert_eq!(pp.secret.expose(), SECRET);
    let lc = s.providers[1].webhook.as_ref().unwrap();
    assert_eq!(lc.secret.expose(), "bearer-token-value", "trimmed");
    assert_eq!(lc.header, "x-hook-token");
    let printed = s.to_string();
    let debug = format!("{s:?}");
    for shown in [&printed, &debug] {
        assert!(!shown.contains(SECRET) && !shown.contains("bearer-token-value"));
    }
    assert!(
        printed.contains("# webhook_secret = <redacted"),
        "{printed}"
    );
    assert!(printed.contains(&format!("webhook_secret_file = \"{}\"", file.display())));
    assert!(printed.contains("[webhook]\nlisten = \"127.0.0.1:8787\""));
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    let with = |webhook: &str, pp: &str, lc: &str| format!("{webhook}\n{}", providers(pp, lc));
    let ok_secret = format!("webhook_secret = \"{SECRET}\"");
    let cases = [
        (
            with("[webhook]\nlisten = \"nowhere\"", &ok_secret, ""),
            "webhook.listen",
        ),
        (
            with("[webhook]\nlisten = \"0.0.0.0:8787\"", &ok_secret, ""),
            "webhook.listen",
        ),
        (
            with("[webhook]\nlisten = \"127.0.0.1:8787\"", "", ""),
            "webhook.listen",
        ),
        (
            with("", "webhook_secret = \"short\"", ""),
            "provider \"pp\".webhook_secret",
        ),
        (
            with(
                "",
                &format!("{ok_secret}\nwebhook_secret_file = \"/x\""),
                "",
            ),
            "provider \"pp\".webhook_secret",
        ),
        (
            with("", "webhook_secret_file = \"/nonexistent/secret\"", ""),
            "provider \"pp\".webhook_secret_file",
        ),
        (
            with("", &format!("{ok_secret}\nwebhook_header = \"X-A\""), ""),
            "provider \"pp\".webhook_header",
        ),
        (
            with(
                "",
                "",
                &format!("{ok_secret}\nwebhook_header = \"bad header\""),
            ),
            "provider \"lc\".webhook_header",
        ),
    ];
    for (text, key) in cases {
        let (got, message) = refused(&text);
        assert_eq!(got, key, "{message}");
        assert!(!message.contains(SECRET), "{message}");
    }
    let talonic = format!(
        "[[provider]]\nname = \"tl\"\nkind = \"talonic\"\nbase_url = \"https://c.example\"\n\
         api_key = \"k\"\n{ok_secret}\n"
    );
    assert_eq!(refused(&talonic).0, "provider \"tl\".webhook_secret");
    let remote = with(
        "[webhook]\nlisten = \"0.0.0.0:8787\"\nallow_remote = true",
        &ok_secret,
        "",
    );
    assert!(load(&remote).unwrap().webhook.unwrap().allow_remote);
}

#[test]
fn a_secret_without_a_receiver_or_in_a_readable_file_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        providers(&format!("webhook_secret = \"{SECRET}\""), ""),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = load_with_env(&path, &HashMap::new()).unwrap();
    let said = warnings(&s, &path).join("\n");
    assert!(
        said.contains("inline webhook_secret (provider pp)"),
        "{said}"
    );
    assert!(said.contains("no [webhook] table"), "{said}");
    assert!(!said.contains(SECRET));
}
