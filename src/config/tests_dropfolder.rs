//! `[dropfolder]` validation: defaults, the provider it names, kind-specific submit options.

use std::time::Duration;

use super::*;

fn two_providers(drop: &str) -> String {
    format!(
        "[[provider]]\nname = \"ep\"\nkind = \"extract_page\"\nbase_url = \"https://a.example\"\n\
         api_key = \"k\"\n\
         [[provider]]\nname = \"pp\"\nkind = \"perfectparser\"\nbase_url = \"https://b.example\"\n\
         api_key = \"k\"\n\
         [[provider]]\nname = \"tl\"\nkind = \"talonic\"\nbase_url = \"https://c.example\"\n\
         api_key = \"k\"\n\
         [dropfolder]\npath = \"/srv/scans/inbox\"\n{drop}\n"
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
fn defaults_and_sibling_folders() {
    let s = load(&two_providers("provider = \"ep\"")).unwrap();
    let d = s.dropfolder.expect("configured");
    assert_eq!(d.inbox, Path::new("/srv/scans/inbox"));
    assert_eq!(d.done, Path::new("/srv/scans/done"));
    assert_eq!(d.failed, Path::new("/srv/scans/failed"));
    assert_eq!(d.outbox, Path::new("/srv/scans/outbox"));
    assert_eq!(d.settle, Duration::from_secs(2));
    assert_eq!(d.rescan, Duration::from_secs(300));
    assert_eq!(d.mode, WatchMode::Auto);
    assert!(d.dedupe);
    let excluded: Vec<_> = d.exclude.iter().map(|p| p.as_str()).collect();
    assert_eq!(excluded, DEFAULT_EXCLUDE);
    // And the printed effective config loads back to the same.
    let printed = load(&s_without_dropfolder_secrets(
        &load(&two_providers("provider = \"ep\"")).unwrap(),
    ))
    .unwrap();
    assert_eq!(printed.dropfolder.unwrap().settle, d.settle);
}

fn s_without_dropfolder_secrets(s: &Settings) -> String {
    s.to_string().replace(
        "# api_key = <redacted: inline in the config; set api_key_file or api_key_env>",
        "api_key = \"k\"",
    )
}

#[test]
fn the_provider_must_exist_and_take_submissions() {
    let (key, msg) = refused(&two_providers("provider = \"nope\""));
    assert_eq!(key, "dropfolder.provider");
    assert!(msg.contains("ep, pp, tl"), "{msg}");
    let (key, msg) = refused(&two_providers("provider = \"tl\""));
    assert_eq!(key, "dropfolder.provider");
    assert!(
        msg.contains("talonic") && msg.contains("extract_page, perfectparser"),
        "{msg}"
    );
}

#[test]
fn submit_options_belong_to_their_kind() {
    let (key, _) = refused(&two_providers("provider = \"pp\""));
    assert_eq!(key, "dropfolder.parser_id", "perfectparser needs a parser");
    let s = load(&two_providers("provider = \"pp\"\nparser_id = \"prs_1\"")).unwrap();
    assert_eq!(
        s.dropfolder.unwrap().submit.parser_id.as_deref(),
        Some("prs_1")
    );
    let (key, _) = refused(&two_providers(
        "provider = \"pp\"\nparser_id = \"prs_1\"\nengine = \"fast\"",
    ));
    assert_eq!(key, "dropfolder.engine");
    let (key, _) = refused(&two_providers("provider = \"ep\"\nparser_id = \"prs_1\""));
    assert_eq!(key, "dropfolder.parser_id");
    let s = load(&two_providers(
        "provider = \"ep\"\nengine = \"fast\"\noptions = { ocr = true }",
    ))
    .unwrap();
    let d = s.dropfolder.unwrap();
    assert_eq!(d.submit.engine.as_deref(), Some("fast"));
    assert_eq!(d.submit.options_json.as_deref(), Some("{\"ocr\":true}"));
}

#[test]
fn bad_values_name_their_key() {
    for (extra, key) in [
        ("mode = \"fanotify\"", "dropfolder.mode"),
        ("settle = \"soon\"", "dropfolder.settle"),
        ("rescan = \"0s\"", "dropfolder.rescan"),
        ("include = [\"[\"]", "dropfolder.include"),
        ("max_file_bytes = 0", "dropfolder.max_file_bytes"),
    ] {
        let (k, _) = refused(&two_providers(&format!("provider = \"ep\"\n{extra}")));
        assert_eq!(k, key, "{extra}");
    }
    let err = load(&two_providers("provider = \"ep\"\nwatch = \"x\"")).unwrap_err();
    assert!(err.to_string().contains("watch"), "{err}");
}
