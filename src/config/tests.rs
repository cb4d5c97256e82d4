//! Tests of loading and validation, with real temp files and an injected environment.

use std::time::Duration;

use super::*;

const SECRET: &str = "sk-test-0123456789abcdef";

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn provider_block(key_lines: &str) -> String {
    format!(
        "[[provider]]\nname = \"acme\"\nkind = \"extract_page\"\n\
         base_url = \"https://api.extract.page/\"\n{key_lines}\n"
    )
}

/// Writes `text` to a real temp file and loads it.
fn load_text(text: &str, env: &HashMap<String, String>) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    load_with_env(&path, env)
}

fn invalid(err: ConfigError) -> (String, String) {
    match err {
        ConfigError::Invalid { key, message } => (key, message),
        other => panic!("expected ConfigError::Invalid, got {other:?}"),
    }
}

/// The variables `config/example.toml`'s providers read their keys from.
fn example_env() -> HashMap<String, String> {
    env(&[
        ("ACME_API_KEY", SECRET),
        ("LLAMA_CLOUD_API_KEY", SECRET),
        ("TALONIC_API_KEY", SECRET),
        ("PERFECTPARSER_API_KEY", SECRET),
    ])
}

#[test]
fn the_example_has_one_block_per_kind_with_its_own_keys() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"));
    let s = load_with_env(path, &example_env()).unwrap();
    let kinds: Vec<_> = s.providers.iter().map(|p| p.kind).collect();
    for kind in [
        ProviderKind::ExtractPage,
        ProviderKind::LlamaCloud,
        ProviderKind::Talonic,
        ProviderKind::PerfectParser,
    ] {
        assert!(
            kinds.contains(&kind),
            "no {} block in example.toml",
            kind.as_str()
        );
    }
    let llama = s
        .providers
        .iter()
        .find(|p| p.kind == ProviderKind::LlamaCloud)
        .unwrap();
    assert_eq!(llama.options.result_formats, ["json"]);
    assert_eq!(llama.retention, Duration::from_secs(2 * 24 * 3600));
    let pp = s
        .providers
        .iter()
        .find(|p| p.kind == ProviderKind::PerfectParser)
        .unwrap();
    assert_eq!(pp.options.export_formats, ["csv"]);
    assert_eq!(
        pp.requests_per_minute, None,
        "150/min is its documented start, not a user cap"
    );
    assert_eq!(pp.kind.documented_requests_per_minute(), Some(150));
    // A key that belongs to another kind is refused, naming it.
    let text = std::fs::read_to_string(path).unwrap().replacen(
        "\nkind = \"extract_page\"\n",
        "\nkind = \"extract_page\"\nexport_formats = [\"csv\"]\n",
        1,
    );
    let (key, message) = invalid(load_text(&text, &example_env()).unwrap_err());
    assert_eq!(key, "provider \"acme\".export_formats");
    assert!(message.contains("perfectparser"), "{message}");
}

#[test]
fn every_file_in_config_dir_loads() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let acme = example_env();
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let settings =
                load_with_env(&path, &acme).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!settings.providers.is_empty(), "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected example.toml and demo.toml in {dir}");
}

/// `submits_per_minute` is documented beside `requests_per_minute`, and set where it has a default.
#[test]
fn example_documents_submits_per_minute() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"));
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains("\n# submits_per_minute = "),
        "extract_page's, commented"
    );
    assert!(
        text.contains("\nsubmits_per_minute = 20\n"),
        "perfectparser's default"
    );
    let s = load_with_env(path, &example_env()).unwrap();
    let by_kind = |k| s.providers.iter().find(|p| p.kind == k).unwrap();
    assert_eq!(
        by_kind(ProviderKind::PerfectParser).submits_per_minute,
        Some(20)
    );
    assert_eq!(by_kind(ProviderKind::ExtractPage).submits_per_minute, None);
}

#[test]
fn example_documents_the_defaults() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"));
    let s = load_with_env(path, &example_env()).unwrap();
    let d = load_text(&provider_block("api_key = \"k\""), &HashMap::new()).unwrap();
    assert_eq!(s.ledger_path, d.ledger_path);
    assert_eq!(s.storage_root, d.storage_root);
    assert_eq!(s.schedule_cron, d.schedule_cron);
    assert_eq!(s.download.concurrency, 8);
    assert_eq!(s.download.alert_margin, Duration::from_secs(12 * 3600));
    assert_eq!(s.download.max_body_bytes, 1 << 30);
    assert_eq!(d.download.max_body_bytes, 1 << 30);
    assert_eq!(s.download.connect_timeout, Duration::from_secs(10));
    assert_eq!(s.download.read_timeout, Duration::from_secs(60));
    assert_eq!(s.download.drain_timeout, Duration::from_secs(30));
    assert!(s.download.validate_json && d.download.validate_json);
    assert_eq!(s.download.low_speed_limit, 1024);
    assert_eq!(d.download.low_speed_limit, 1024);
    assert_eq!(s.download.low_speed_time, Duration::from_secs(15));
    assert_eq!(d.download.low_speed_time, Duration::from_secs(15));
    assert_eq!(s.log.format, LogFormat::Text);
    assert_eq!(s.log.level, "info");
    let (p, dp) = (&s.providers[0], &d.providers[0]);
    assert_eq!(p.name.as_str(), "acme");
    assert_eq!(p.kind, ProviderKind::ExtractPage);
    assert_eq!(p.api_key.expose(), SECRET);
    assert_eq!(
        (
            p.requests_per_minute,
            p.page_size,
            p.retention,
            p.max_retries
        ),
        (
            dp.requests_per_minute,
            dp.page_size,
            dp.retention,
            dp.max_retries
        )
    );
    assert_eq!(
        (p.requests_per_minute, p.page_size, p.max_retries),
        (None, 200, 5)
    );
    assert_eq!(p.retention, Duration::from_secs(3 * 86400));
}

#[test]
fn demo_config_matches_the_demo() {
    let s = load_str(DEMO_CONFIG, "demo.toml", &HashMap::new()).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(s.ledger_path, cwd.join("demo-mirror.ledger.sqlite3"));
    assert_eq!(s.storage_root, cwd.join("demo-mirror"));
    assert_eq!(s.download.concurrency, 8);
    let p = &s.providers[0];
    assert_eq!(p.name.as_str(), "demo");
    assert_eq!(p.base_url.as_str(), "http://127.0.0.1:9/");
    assert_eq!(p.api_key.expose(), "demo-key");
    assert_eq!(p.page_size, 10);
}

#[test]
fn env_override_wins_over_the_file() {
    let text = format!(
        "[download]\nconcurrency = 12\n{}",
        provider_block("api_key = \"k\"")
    );
    let overrides = env(&[
        ("BATCHMIRROR__DOWNLOAD__CONCURRENCY", "3"),
        ("BATCHMIRROR__DOWNLOAD__ALERT_MARGIN", "2h"),
        ("BATCHMIRROR__DOWNLOAD__MAX_BODY_BYTES", "64KiB"),
        ("BATCHMIRROR__LOG__FORMAT", "json"),
        ("BATCHMIRROR_UNRELATED", "x"),
        ("PATH", "/usr/bin"),
    ]);
    let s = load_text(&text, &overrides).unwrap();
    assert_eq!(s.download.concurrency, 3);
    assert_eq!(s.download.alert_margin, Duration::from_secs(7200));
    assert_eq!(s.download.max_body_bytes, 64 << 10);
    assert_eq!(s.log.format, LogFormat::Json);
    // Without the override the file's value holds.
    let s = load_text(&text, &HashMap::new()).unwrap();
    assert_eq!(s.download.concurrency, 12);
    // A bad value from the environment names the variable.
    let bad = env(&[("BATCHMIRROR__DOWNLOAD__CONCURRENCY", "0")]);
    let (key, message) = invalid(load_text(&text, &bad).unwrap_err());
    assert_eq!(key, "download.concurrency");
    assert!(
        message.contains("BATCHMIRROR__DOWNLOAD__CONCURRENCY"),
        "{message}"
    );
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let text = format!(
        "[download]\nconcurency = 3\n{}",
        provider_block("api_key = \"k\"")
    );
    let (key, message) = invalid(load_text(&text, &HashMap::new()).unwrap_err());
    assert_eq!(key, "download.concurency");
    assert!(message.contains("concurency"), "{message}");

    let text = provider_block("api_key = \"k\"\nparser_idd = \"x\"");
    let (key, _) = invalid(load_text(&text, &HashMap::new()).unwrap_err());
    assert_eq!(key, "provider \"acme\".parser_idd");

    let typo = env(&[("BATCHMIRROR__DOWNLOAD__CONCURENCY", "3")]);
    let (key, _) = invalid(load_text(&provider_block("api_key = \"k\""), &typo).unwrap_err());
    assert_eq!(key, "download.concurency");

    let provider_env = env(&[("BATCHMIRROR__PROVIDER__NAME", "x")]);
    let (key, message) =
        invalid(load_text(&provider_block("api_key = \"k\""), &provider_env).unwrap_err());
    assert_eq!(key, "provider");
    assert!(message.contains("BATCHMIRROR__PROVIDER__NAME"), "{message}");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        (
            "[download]\nalert_margin = \"12 parsecs\"",
            "download.alert_margin",
        ),
        ("[download]\nconcurrency = 0", "download.concurrency"),
        ("[download]\nconcurrency = 257", "download.concurrency"),
        ("[download]\nconcurrency = \"many\"", "download.concurrency"),
        (
            "[download]\nmax_body_bytes = \"1GB\"",
            "download.max_body_bytes",
        ),
        (
            "[download]\nconnect_timeout = \"0s\"",
            "download.connect_timeout",
        ),
        (
            "[download]\nlow_speed_limit = -1",
            "download.low_speed_limit",
        ),
        (
            "[download]\nlow_speed_limit = \"fast\"",
            "download.low_speed_limit",
        ),
        (
            "[download]\nlow_speed_time = \"0s\"",
            "download.low_speed_time",
        ),
        ("[schedule]\ncron = \"every five minutes\"", "schedule.cron"),
        ("[schedule]\ncron = \"*/5 * * * *\"", "schedule.cron"),
        ("[log]\nformat = \"xml\"", "log.format"),
    ];
    for (section, want) in cases {
        let text = format!("{section}\n{}", provider_block("api_key = \"k\""));
        let (key, message) = invalid(load_text(&text, &HashMap::new()).unwrap_err());
        assert_eq!(key, want, "{section}: {message}");
    }
}

#[test]
fn bad_provider_entries_name_their_key() {
    let p = |extra: &str| {
        format!(
            "[[provider]]\nname = \"acme\"\nkind = \"extract_page\"\n\
             base_url = \"https://x.test\"\napi_key = \"k\"\n{extra}\n"
        )
    };
    let cases = [
        (p("page_size = 201"), "provider \"acme\".page_size"),
        (
            p("requests_per_minute = 0"),
            "provider \"acme\".requests_per_minute",
        ),
        (p("max_retries = 21"), "provider \"acme\".max_retries"),
        (p("retention = \"soon\""), "provider \"acme\".retention"),
        (
            p("").replace("extract_page", "Talonic"),
            "provider \"acme\".kind",
        ),
        (
            p("").replace("https://x.test", "ftp://x.test"),
            "provider \"acme\".base_url",
        ),
        (p("").replace("acme", "ac me"), "provider[0].name"),
        (
            p("").replace("api_key = \"k\"", "api_key = \"  \""),
            "provider \"acme\".api_key",
        ),
        (format!("{}{}", p(""), p("")), "provider[1].name"),
        ("[log]\nlevel = \"info\"\n".to_owned(), "provider"),
        (p("").replace("name = \"acme\"\n", ""), "provider[0].name"),
    ];
    for (text, want) in cases {
        let (key, message) = invalid(load_text(&text, &HashMap::new()).unwrap_err());
        assert_eq!(key, want, "{text}: {message}");
    }
    let text = p("").replace("extract_page", "docsy");
    let (key, message) = invalid(load_text(&text, &HashMap::new()).unwrap_err());
    assert_eq!(key, "provider \"acme\".kind");
    assert_eq!(
        message,
        "unsupported kind \"docsy\": supported kinds are extract_page, llamacloud, talonic, perfectparser"
    );
}

#[test]
fn api_key_sources() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.key");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let text = provider_block(&format!(
        "api_key_file = {}",
        toml_str(&file.to_string_lossy())
    ));
    let s = load_text(&text, &HashMap::new()).unwrap();
    assert_eq!(s.providers[0].api_key.expose(), SECRET);
    assert_eq!(
        s.providers[0].base_url.as_str(),
        "https://api.extract.page/"
    );

    let missing = dir.path().join("missing.key");
    let text = provider_block(&format!(
        "api_key_file = {}",
        toml_str(&missing.to_string_lossy())
    ));
    let (key, message) = invalid(load_text(&text, &HashMap::new()).unwrap_err());
    assert_eq!(key, "provider \"acme\".api_key_file");
    assert!(message.contains(&*missing.to_string_lossy()), "{message}");
    assert!(message.contains("os error"), "{message}");

    std::fs::write(&file, "\n").unwrap();
    let text = provider_block(&format!(
        "api_key_file = {}",
        toml_str(&file.to_string_lossy())
    ));
    let (key, _) = invalid(load_text(&text, &HashMap::new()).unwrap_err());
    assert_eq!(key, "provider \"acme\".api_key_file");

    let text = provider_block("api_key_env = \"ACME_API_KEY\"");
    let s = load_text(&text, &env(&[("ACME_API_KEY", SECRET)])).unwrap();
    assert_eq!(s.providers[0].api_key.expose(), SECRET);
    let (key, message) = invalid(load_text(&text, &HashMap::new()).unwrap_err());
    assert_eq!(key, "provider \"acme\".api_key_env");
    assert!(message.contains("ACME_API_KEY"), "{message}");

    let text = provider_block("api_key = \"a\"\napi_key_env = \"ACME_API_KEY\"");
    let (key, message) = invalid(load_text(&text, &HashMap::new()).unwrap_err());
    assert_eq!(key, "provider \"acme\"");
    assert!(message.contains("api_key_env and api_key"), "{message}");

    let (key, message) = invalid(load_text(&provider_block(""), &HashMap::new()).unwrap_err());
    assert_eq!(key, "provider \"acme\"");
    assert!(message.contains("api_key_file"), "{message}");
}

#[test]
fn the_secret_never_shows() {
    let text = provider_block(&format!("api_key = \"{SECRET}\""));
    let s = load_text(&text, &HashMap::new()).unwrap();
    assert_eq!(s.providers[0].api_key.expose(), SECRET);
    let debug = format!("{s:?}");
    let display = s.to_string();
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(!display.contains(SECRET), "{display}");
    // A comment, so that neither a copy nor a reload takes a placeholder for the key.
    assert!(
        display.contains("\n# api_key = <redacted: inline in the config;"),
        "{display}"
    );
    assert!(!display.contains("\napi_key"), "{display}");
}

/// The printed config loads back to the same settings, its secrets supplied as they were: a
/// key file or variable is named again, a webhook URL comes from the environment.
#[test]
fn display_is_toml_that_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.key");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let webhook = "https://hooks.test/x?token=t";
    let text = format!(
        "[download]\nmax_body_bytes = 1000\nalert_margin = \"90m\"\n\
         low_speed_limit = \"16KiB\"\nlow_speed_time = \"45s\"\n\
         [log]\nlevel = \"info,batchmirror=debug\"\n\
         [alerts]\nwebhook_url = {}\n{}\
         [[provider]]\nname = \"two\"\nkind = \"extract_page\"\n\
         base_url = \"https://b.test\"\napi_key_env = \"TWO_KEY\"\n",
        toml_str(webhook),
        provider_block(&format!(
            "api_key_file = {}\nretention = \"36h\"",
            toml_str(&file.to_string_lossy())
        )),
    );
    let keys = env(&[("TWO_KEY", SECRET)]);
    let s = load_text(&text, &keys).unwrap();
    let printed = s.to_string();
    assert!(
        !printed.contains(SECRET) && !printed.contains("token=t"),
        "{printed}"
    );
    let mut again_env = keys.clone();
    again_env.insert("BATCHMIRROR__ALERTS__WEBHOOK_URL".into(), webhook.into());
    let again = load_str(&printed, "printed", &again_env).unwrap();
    assert_eq!(again.to_string(), printed);
    assert_eq!(again.download.max_body_bytes, 1000);
    assert_eq!(again.download.alert_margin, Duration::from_secs(5400));
    assert_eq!(again.download.low_speed_limit, 16 << 10);
    assert_eq!(again.download.low_speed_time, Duration::from_secs(45));
    assert_eq!(again.providers[0].retention, Duration::from_secs(36 * 3600));
    assert_eq!(again.providers[0].api_key.expose(), SECRET);
    assert_eq!(again.providers[1].api_key.expose(), SECRET);
    assert_eq!(again.alerts.unwrap().webhook_url.unwrap().expose(), webhook);
    assert_eq!(toml_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");

    // An inline key is left out: the printed config parses, and asks for a key by name.
    let s = load_text(&provider_block("api_key = \"k\""), &HashMap::new()).unwrap();
    let (key, message) = invalid(load_str(&s.to_string(), "printed", &HashMap::new()).unwrap_err());
    assert_eq!(key, "provider \"acme\"");
    assert!(message.contains("no API key"), "{message}");
}

#[test]
fn relative_paths_become_absolute() {
    let text = format!(
        "[ledger]\npath = \"state/ledger.sqlite3\"\n[storage]\nroot = \"mirror\"\n{}",
        provider_block("api_key = \"k\"")
    );
    let s = load_text(&text, &HashMap::new()).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert!(s.ledger_path.is_absolute());
    assert_eq!(s.ledger_path, cwd.join("state/ledger.sqlite3"));
    assert_eq!(s.storage_root, cwd.join("mirror"));
}

#[test]
fn unreadable_or_invalid_files_are_load_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    match load_with_env(&missing, &HashMap::new()).unwrap_err() {
        ConfigError::Load { path, message } => {
            assert_eq!(path, missing);
            assert!(message.contains("os error"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match load_text("[download\nconcurrency = 3", &HashMap::new()).unwrap_err() {
        ConfigError::Load { path, .. } => assert!(path.ends_with("config.toml")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn metrics_stay_on_loopback_unless_allowed() {
    let base = provider_block("api_key = \"k\"");
    let s = load_text(
        &format!("{base}\n[metrics]\nlisten = \"127.0.0.1:9464\"\n"),
        &HashMap::new(),
    )
    .unwrap();
    assert_eq!(s.metrics.unwrap().listen.port(), 9464);
    let (key, message) = invalid(
        load_text(
            &format!("{base}\n[metrics]\nlisten = \"0.0.0.0:9464\"\n"),
            &HashMap::new(),
        )
        .unwrap_err(),
    );
    assert_eq!(key, "metrics.listen");
    assert!(message.contains("allow_remote"), "{message}");
    let s = load_text(
        &format!("{base}\n[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true\n"),
        &HashMap::new(),
    )
    .unwrap();
    assert!(s.metrics.unwrap().allow_remote);
    assert!(load_text(&base, &HashMap::new()).unwrap().metrics.is_none());
}

/// Every section and optional key at once: the printed form is pinned byte for byte, so a
/// refactor of where each section renders itself cannot change what `check-config` prints.
#[test]
fn display_prints_every_section_in_a_fixed_order() {
    let text = "[ledger]\npath = \"/l/ledger.sqlite3\"\n[storage]\nroot = \"/m\"\n\
        [schedule]\ncron = \"0 */7 * * * *\"\n\
        [download]\nmax_body_bytes = 1000\nlow_speed_limit = \"16KiB\"\n\
        [log]\nformat = \"json\"\nlevel = \"info,batchmirror=debug\"\n\
        [alerts]\ncommand = [\"/bin/page\", \"-x\"]\nwebhook_url = \"https://h.test/x?token=t\"\n\
        [metrics]\nlisten = \"127.0.0.1:9464\"\n\
        [dropfolder]\npath = \"/srv/in\"\nprovider = \"acme\"\nengine = \"fast\"\n\
        options = { ocr = true }\ninclude = [\"*.pdf\"]\n\
        [[provider]]\nname = \"acme\"\nkind = \"extract_page\"\nbase_url = \"https://a.test/v1/\"\n\
        api_key = \"k\"\nrequests_per_minute = 90\n\
        [[provider]]\nname = \"llama\"\nkind = \"llamacloud\"\nbase_url = \"https://b.test\"\n\
        api_key = \"k\"\nproject_id = \"p\"\norganization_id = \"o\"\n\
        result_formats = [\"json\", \"markdown\"]\n\
        [[provider]]\nname = \"pp\"\nkind = \"perfectparser\"\nbase_url = \"https://c.test\"\n\
        api_key = \"k\"\nexport_formats = [\"csv\", \"xlsx\"]\n";
    let s = load_str(text, "test", &HashMap::new()).unwrap();
    assert_eq!(s.to_string(), EVERY_SECTION_PRINTED);
}

const EVERY_SECTION_PRINTED: &str = r#"[ledger]
path = "/l/ledger.sqlite3"

[storage]
root = "/m"

[schedule]
cron = "0 */7 * * * *"

[download]
concurrency = 8
alert_margin = "12h"
max_body_bytes = 1000
connect_timeout = "10s"
read_timeout = "1m"
drain_timeout = "30s"
validate_json = true
low_speed_limit = 16384
low_speed_time = "15s"

[log]
format = "json"
level = "info,batchmirror=debug"

[alerts]
command = ["/bin/page", "-x"]
# webhook_url = <redacted: it may carry a token; set it here or in BATCHMIRROR__ALERTS__WEBHOOK_URL>
provider_failing_after = "30m"

[dropfolder]
path = "/srv/in"
provider = "acme"
settle = "2s"
rescan = "5m"
mode = "auto"
include = ["*.pdf"]
exclude = ["*.part", ".*", "~*", "*.tmp"]
max_file_bytes = 104857600
dedupe = true
result_poll = "5s"
engine = "fast"
# options (as JSON): {"ocr":true}

[metrics]
listen = "127.0.0.1:9464"
allow_remote = false

[[provider]]
name = "acme"
kind = "extract_page"
base_url = "https://a.test/v1"
# api_key = <redacted: inline in the config; set api_key_file or api_key_env>
requests_per_minute = 90
page_size = 200
retention = "3days"
max_retries = 5

[[provider]]
name = "llama"
kind = "llamacloud"
base_url = "https://b.test/"
# api_key = <redacted: inline in the config; set api_key_file or api_key_env>
# requests_per_minute: adaptive, no cap until the provider throttles
page_size = 200
retention = "3days"
max_retries = 5
project_id = "p"
organization_id = "o"
result_formats = ["json", "markdown"]

[[provider]]
name = "pp"
kind = "perfectparser"
base_url = "https://c.test/"
# api_key = <redacted: inline in the config; set api_key_file or api_key_env>
# requests_per_minute: adaptive, starting at the documented 150/min
submits_per_minute = 20
page_size = 100
retention = "3days"
max_retries = 5
export_formats = ["csv", "xlsx"]
"#;
