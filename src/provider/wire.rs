//! Small pieces every adapter needs to read a vendor's wire format: request paths built from
//! untrusted ids, timestamps, and pages parsed entry by entry so one bad entry does not sink a page.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::error::ProviderError;

/// `<base>/<prefix>/<segments…>`, every segment percent-encoded so an id stays one segment.
/// `.` and `..` (even percent-encoded) are resolved away by URL parsers, so an id equal to one
/// would address another resource: it is refused instead.
pub fn path_url(
    base: &url::Url,
    prefix: &str,
    segments: &[&str],
) -> Result<url::Url, ProviderError> {
    if let Some(bad) = segments.iter().find(|s| matches!(**s, "." | "..")) {
        return Err(ProviderError::UnaddressableId {
            id: (*bad).to_owned(),
        });
    }
    let mut u = base.clone();
    if let Ok(mut path) = u.path_segments_mut() {
        path.pop_if_empty();
        for p in prefix.split('/').filter(|p| !p.is_empty()) {
            path.push(p);
        }
        path.extend(segments);
    }
    Ok(u)
}

/// The error an item with an unknown status word carries (its status is `Unrecognized`): it stays
/// pending, is polled again, and shows in the ledger and the pass report instead of vanishing.
pub fn unrecognized(status: &str) -> String {
    format!("unknown item status {status:?}; kept pending and polled again")
}

/// An RFC 3339 timestamp, or one without an offset (Pydantic's, taken as UTC); `None` for
/// anything else (timestamps are informative, never fatal).
pub fn timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// Parses each entry on its own: a bad entry is reported with its id (the field `id_key`), not
/// fatal to the page.
pub fn entries<T: for<'de> Deserialize<'de>>(
    values: Vec<serde_json::Value>,
    id_key: &str,
) -> (Vec<T>, Vec<String>) {
    let mut ok = Vec::with_capacity(values.len());
    let mut bad = Vec::new();
    for v in values {
        let id = v.get(id_key).map(|i| i.to_string()).unwrap_or_default();
        match serde_json::from_value::<T>(v) {
            Ok(t) => ok.push(t),
            Err(e) => bad.push(format!("entry {id}: {e}")),
        }
    }
    (ok, bad)
}

/// [`entries`], then `convert` on each parsed entry: what converts is kept, what does not joins
/// the rejected with its reason, so one hostile entry never costs the page.
pub fn convert_entries<T: for<'de> Deserialize<'de>, U>(
    values: Vec<serde_json::Value>,
    id_key: &str,
    mut convert: impl FnMut(T) -> Result<U, String>,
) -> (Vec<U>, Vec<String>) {
    let (raw, mut rejected) = entries::<T>(values, id_key);
    let mut kept = Vec::with_capacity(raw.len());
    for w in raw {
        match convert(w) {
            Ok(u) => kept.push(u),
            Err(e) => rejected.push(e),
        }
    }
    (kept, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_one_segment_and_dot_segments_are_refused() {
        let base = url::Url::parse("http://h/api/").unwrap();
        let u = path_url(&base, "v1/x", &["a/b", "%2e", "é"]).unwrap();
        assert_eq!(u.path(), "/api/v1/x/a%2Fb/%252e/%C3%A9");
        assert!(path_url(&base, "v1", &[".."]).is_err());
        assert!(path_url(&base, "v1", &["."]).is_err());
    }

    #[test]
    fn one_bad_entry_does_not_sink_the_page() {
        #[derive(Deserialize)]
        struct E {
            #[allow(dead_code)]
            n: u32,
        }
        let (ok, bad) = entries::<E>(
            vec![
                serde_json::json!({"id": "a", "n": 1}),
                serde_json::json!({"id": "b", "n": "x"}),
            ],
            "id",
        );
        assert_eq!(ok.len(), 1);
        assert!(bad[0].contains("\"b\""));
    }
}
