//! Test helpers that hold every sandbox to the contract in `providers.md`: each sandbox keeps a
//! table of the documented routes ([`DocRoute`]), [`documented`] reads the `METHOD /path`
//! entries of the doc's route tables so a test can check the table has not drifted from it, and
//! [`Probe`] checks that a router serves every route of its table (rather than answering its
//! fallback for unknown routes) and nothing outside it. [`check_list_faults`] runs one
//! sandbox's list pages through every [`ListFault`].

use std::path::Path;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

use super::ListFault;

/// A route the docs list, transcribed with the doc's own placeholders (`{id}` or `:id`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DocRoute {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    /// Why the sandbox deliberately does not serve it; None for a served route.
    pub(crate) unserved: Option<&'static str>,
}

pub(crate) const fn served(method: &'static str, path: &'static str) -> DocRoute {
    DocRoute {
        method,
        path,
        unserved: None,
    }
}

pub(crate) const fn unserved(
    method: &'static str,
    path: &'static str,
    why: &'static str,
) -> DocRoute {
    DocRoute {
        method,
        path,
        unserved: Some(why),
    }
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The `METHOD /path` entries of the tables (lines starting with `|`) in section `number`
/// (`## 1. extract.page` → "1") of `shared/providers.md` beside the workspace checkout
/// (`../../../shared` from the crate), or None when the file is absent.
pub(crate) fn documented(number: &str) -> Option<Vec<(String, String)>> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/providers.md");
    match std::fs::read_to_string(&file) {
        Ok(text) => Some(table_routes(&text, number)),
        Err(err) => {
            eprintln!(
                "skipped: cannot read {} ({err}), so the route table is not compared with it",
                file.display()
            );
            None
        }
    }
}

fn table_routes(doc: &str, number: &str) -> Vec<(String, String)> {
    let heading = format!("## {number}. ");
    let mut inside = false;
    let mut out = Vec::new();
    for line in doc.lines() {
        if line.starts_with("## ") {
            inside = line.starts_with(&heading);
            continue;
        }
        if !inside || !line.trim_start().starts_with('|') {
            continue;
        }
        // The odd pieces between backticks are the code spans.
        for span in line.split('`').skip(1).step_by(2) {
            let Some((method, rest)) = span.split_once(' ') else {
                continue;
            };
            if METHODS.contains(&method) && rest.starts_with('/') {
                let path = rest.split(['?', ' ']).next().unwrap_or(rest);
                out.push((method.to_owned(), path.to_owned()));
            }
        }
    }
    out
}

/// The path with every parameter (`{x}` or `:x`) as `{}`, so both spellings compare equal.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with(':') || (s.starts_with('{') && s.ends_with('}')) {
                "{}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every route section `number` of providers.md documents is in `table` (when the doc is there).
pub(crate) fn assert_table_covers_doc(table: &[DocRoute], number: &str) {
    let Some(doc) = documented(number) else {
        return;
    };
    // A parser that finds nothing would let any table pass.
    assert!(doc.len() >= 4, "section {number}: only {doc:?} found");
    for (method, path) in &doc {
        assert!(
            table
                .iter()
                .any(|r| r.method == method && shape(r.path) == shape(path)),
            "providers.md §{number} documents {method} {path}, missing from the route table"
        );
    }
}

/// How to reach one sandbox with valid auth and known ids.
pub(crate) struct Probe<'a> {
    pub(crate) base: String,
    /// The request with the sandbox's valid credentials.
    pub(crate) auth: &'a dyn Fn(RequestBuilder) -> RequestBuilder,
    /// The path template with known ids put in.
    pub(crate) fill: &'a dyn Fn(&str) -> String,
    /// Whether an answer is the router's own one for a route it does not have.
    pub(crate) is_fallback: &'a dyn Fn(StatusCode, &Value) -> bool,
}

impl Probe<'_> {
    /// (status, JSON body or Null) of `method path`, POSTs with an empty JSON object.
    pub(crate) async fn send(&self, method: &str, path: &str) -> (StatusCode, Value) {
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let mut req =
            reqwest::Client::new().request(method.clone(), format!("{}{path}", self.base));
        if method != Method::GET {
            req = req.header("content-type", "application/json").body("{}");
        }
        let resp = (self.auth)(req).send().await.expect("request");
        let status = resp.status();
        let body = resp.bytes().await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Whether `method path` gets the fallback.
    pub(crate) async fn falls_back(&self, method: &str, path: &str) -> bool {
        let (status, body) = self.send(method, path).await;
        (self.is_fallback)(status, &body)
    }

    /// Every served route of `table` is routed, every unserved one and each of `unlisted` gets
    /// the fallback, and `unknown_id` (a documented 404 for an unknown resource) does not.
    pub(crate) async fn assert_routes(
        &self,
        table: &[DocRoute],
        unlisted: &[(&str, &str)],
        unknown_id: (&str, &str),
    ) {
        for r in table {
            let path = (self.fill)(r.path);
            let (status, body) = self.send(r.method, &path).await;
            let fell_back = (self.is_fallback)(status, &body);
            match r.unserved {
                None => assert!(!fell_back, "{} {path}: {status} {body}", r.method),
                Some(why) => assert!(fell_back, "{} {path} is marked unserved ({why})", r.method),
            }
        }
        for (method, path) in unlisted {
            assert!(
                self.falls_back(method, path).await,
                "{method} {path} is routed"
            );
        }
        let (method, path) = unknown_id;
        let (status, body) = self.send(method, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert!(
            !(self.is_fallback)(status, &body),
            "{method} {path}: {body}"
        );
    }
}

/// How a sandbox answers the two error faults of its list pages.
pub(crate) struct ListForms<'a> {
    /// `ListFault::Status(503)` in the provider's own error form.
    pub(crate) unavailable: &'a dyn Fn(&Value) -> bool,
    /// The status and form of its refusal of the cursor.
    pub(crate) reject: (u16, &'a dyn Fn(&Value) -> bool),
}

/// With the world frozen (time scale 0): `first` and `later` (a page past the first) are served
/// normally, then under each fault `first` still is and `later` fails the named way, then
/// clearing restores `later`. Returns how many list requests it made.
pub(crate) async fn check_list_faults(
    set: &dyn Fn(Option<ListFault>),
    get: &dyn Fn(&str) -> RequestBuilder,
    first: &str,
    later: &str,
    forms: ListForms<'_>,
) -> u64 {
    let fetch = |url: &str| {
        let req = get(url);
        async move {
            let resp = req.send().await.expect("request");
            let status = resp.status();
            let json = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            (status, json, resp.bytes().await.map(|b| b.to_vec()))
        }
    };
    let (s, _, real_first) = fetch(first).await;
    assert_eq!(s, StatusCode::OK);
    let real_first = real_first.expect("first page");
    let (s, _, real_later) = fetch(later).await;
    assert_eq!(s, StatusCode::OK);
    let real_later = real_later.expect("later page");
    let faults = [
        ListFault::TruncatedJson,
        ListFault::Status(503),
        ListFault::Reset,
        ListFault::RejectCursor,
    ];
    for fault in &faults {
        set(Some(fault.clone()));
        let (s, _, body) = fetch(first).await;
        assert_eq!(
            (s, body.ok().as_ref()),
            (StatusCode::OK, Some(&real_first)),
            "{fault:?} hit the first page"
        );
        let (s, json, body) = fetch(later).await;
        match fault {
            ListFault::TruncatedJson => {
                let body = body.expect("a complete message");
                assert_eq!((s, json), (StatusCode::OK, true));
                assert_eq!(body, real_later[..real_later.len() / 2]);
                assert!(serde_json::from_slice::<Value>(&body).is_err());
            }
            ListFault::Reset => {
                assert_eq!((s, json), (StatusCode::OK, true));
                assert!(body.is_err(), "the body should break off");
            }
            ListFault::Status(_) => {
                let v: Value = serde_json::from_slice(&body.expect("body")).expect("JSON");
                assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
                assert!((forms.unavailable)(&v), "503 form: {v}");
            }
            ListFault::RejectCursor => {
                let v: Value = serde_json::from_slice(&body.expect("body")).expect("JSON");
                assert_eq!(s.as_u16(), forms.reject.0, "{v}");
                assert!((forms.reject.1)(&v), "refusal form: {v}");
            }
        }
    }
    set(None);
    let (s, _, body) = fetch(later).await;
    assert_eq!((s, body.ok()), (StatusCode::OK, Some(real_later)));
    2 + 2 * faults.len() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
## 1. One
Prose mentions `GET /v1/prose` outside a table.
| Method and path | Notes |
|---|---|
| `POST /v1/things` [D] | JSON `{a}` |
| `GET /v1/things/{thing_id}?expand=x` | then `DELETE /v1/things/:id` too; `PUT <upload.url>` |

## 2. Two
| `GET /v1/other` | |
";

    #[test]
    fn table_routes_are_read_from_the_section_tables_only() {
        let found = table_routes(DOC, "1");
        let want = [
            ("POST", "/v1/things"),
            ("GET", "/v1/things/{thing_id}"),
            ("DELETE", "/v1/things/:id"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(found, want);
        assert_eq!(table_routes(DOC, "2"), [("GET".into(), "/v1/other".into())]);
        assert_eq!(shape("/v1/things/:id"), shape("/v1/things/{thing_id}"));
        assert_ne!(shape("/v1/things/:id"), shape("/v1/things/:id/x"));
    }
}
