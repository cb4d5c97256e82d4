//! What a delivery proves and what it says: the provider's proof checked in constant time over
//! the raw body ([`verified`]), then the few fields the receiver reads from a verified body
//! ([`Event`]). Nothing here trusts the payload as a result: it only decides whether to pass.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::{ProviderKind, WebhookAuth};

/// PerfectParser's HMAC header: hex HMAC-SHA256 of the raw body, keyed with the signing secret.
pub const SIGNATURE_HEADER: &str = "x-perfectparser-signature";
/// PerfectParser's static secret header, sent when the webhook was created with a `secret`.
pub const STATIC_SECRET_HEADER: &str = "x-webhook-secret";

/// True when the delivery carries a proof that matches the provider's configured secret.
/// PerfectParser: a matching `X-PerfectParser-Signature` or `X-Webhook-Secret` (the user
/// configures one secret, the signing one or the static one, and either proof of it is enough).
/// LlamaCloud: the configured header (`webhook_headers` on the job) equal to the secret, with or
/// without a `Bearer ` prefix. Other kinds push nothing, so nothing of theirs verifies.
pub fn verified(
    kind: ProviderKind,
    auth: &WebhookAuth,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> bool {
    let secret = auth.secret.expose().as_bytes();
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
    match kind {
        ProviderKind::PerfectParser => {
            let signed =
                header(SIGNATURE_HEADER).is_some_and(|sig| signature_ok(secret, sig, body));
            let shared = header(STATIC_SECRET_HEADER).is_some_and(|v| same(v, secret));
            signed || shared
        }
        ProviderKind::LlamaCloud => header(&auth.header).is_some_and(|v| {
            let bearer = v.strip_prefix(b"Bearer ").unwrap_or(v);
            same(v, secret) || same(bearer, secret)
        }),
        _ => false,
    }
}

/// `sig` (hex, an optional `sha256=` tolerated) is the HMAC-SHA256 of `body` under `secret`;
/// `verify_slice` compares in constant time.
fn signature_ok(secret: &[u8], sig: &[u8], body: &[u8]) -> bool {
    let sig = sig.strip_prefix(b"sha256=").unwrap_or(sig);
    let Ok(sig) = hex::decode(sig.trim_ascii()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Constant-time equality (only the length may show).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// What a verified delivery says, read leniently: the payloads are undocumented beyond the ids
/// they carry (providers.md §2.5, §4.3), so every field is optional.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The delivery's own id (`id`, `event_id` or `delivery_id`), for deduplication.
    pub id: Option<String>,
    /// `event`, `event_type` or `type`, e.g. `extraction.document_completed`, `parse.success`.
    pub name: Option<String>,
    /// PerfectParser's synthetic `"test": true` event (`POST /v1/webhooks/:id/test`).
    pub test: bool,
    /// What it names: extraction and document (PerfectParser) or the job (LlamaCloud).
    pub batch: Option<String>,
    pub item: Option<String>,
}

impl Event {
    /// The fields of `body` at the top level or under `data`; a body that is no JSON object
    /// names nothing (and still asks for a pass: the provider said something changed).
    pub fn parse(kind: ProviderKind, body: &[u8]) -> Event {
        let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(body) else {
            return Event::default();
        };
        let data = top.get("data").and_then(Value::as_object);
        let field = |names: &[&str]| {
            names.iter().find_map(|n| {
                let v = top.get(*n).or_else(|| data.and_then(|d| d.get(*n)))?;
                match v {
                    Value::String(s) if !s.is_empty() && s.len() <= 256 => Some(s.clone()),
                    _ => None,
                }
            })
        };
        let test = [Some(&top), data]
            .into_iter()
            .flatten()
            .any(|o| o.get("test") == Some(&Value::Bool(true)));
        let (batch, item) = match kind {
            ProviderKind::PerfectParser => (field(&["extraction_id"]), field(&["document_id"])),
            _ => (field(&["job_id"]), None),
        };
        Event {
            id: field(&["event_id", "delivery_id", "id"]),
            name: field(&["event", "event_type", "type"]),
            test,
            batch,
            item,
        }
    }

    /// An event that says work started, not that a result exists (LlamaCloud `*.pending`,
    /// `parse.running`): nothing to mirror yet, so no pass.
    pub fn is_progress(&self) -> bool {
        self.name
            .as_deref()
            .is_some_and(|n| n.ends_with(".pending") || n.ends_with(".running"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyFrom, Secret};
    use axum::http::{HeaderMap, HeaderValue};

    fn auth(secret: &str, header: &str) -> WebhookAuth {
        WebhookAuth {
            secret: Secret::new(secret),
            from: KeyFrom::Inline,
            header: header.to_owned(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn perfectparser_signature_must_be_over_these_exact_bytes_with_this_secret() {
        let a = auth("wh_sec_0123456789", "");
        let body = br#"{"event":"extraction.document_completed","extraction_id":"ext_1"}"#;
        let pp = ProviderKind::PerfectParser;
        let good = headers(&[(SIGNATURE_HEADER, &sign("wh_sec_0123456789", body))]);
        assert!(verified(pp, &a, &good, body));
        let mut tampered = body.to_vec();
        tampered[10] ^= 1;
        assert!(!verified(pp, &a, &good, &tampered), "a changed body");
        let other_key = headers(&[(SIGNATURE_HEADER, &sign("wh_sec_other_key", body))]);
        assert!(!verified(pp, &a, &other_key, body), "another secret");
        assert!(!verified(
            pp,
            &a,
            &headers(&[(SIGNATURE_HEADER, "zz")]),
            body
        ));
        assert!(
            !verified(pp, &a, &HeaderMap::new(), body),
            "no proof at all"
        );
        let static_ok = headers(&[(STATIC_SECRET_HEADER, "wh_sec_0123456789")]);
        assert!(
            verified(pp, &a, &static_ok, body),
            "the static secret header"
        );
        let static_bad = headers(&[(STATIC_SECRET_HEADER, "wh_sec_012345678")]);
        assert!(
            !verified(pp, &a, &static_bad, body),
            "a prefix of the secret"
        );
    }

    #[test]
    fn llamacloud_needs_the_configured_header_and_other_kinds_never_verify() {
        let a = auth("s3cret-token-value", "authorization");
        let lc = ProviderKind::LlamaCloud;
        let bearer = headers(&[("authorization", "Bearer s3cret-token-value")]);
        assert!(verified(lc, &a, &bearer, b"{}"));
        assert!(verified(
            lc,
            &a,
            &headers(&[("authorization", "s3cret-token-value")]),
            b"{}"
        ));
        assert!(!verified(
            lc,
            &a,
            &headers(&[("authorization", "Bearer s3cret-token-valuE")]),
            b"{}"
        ));
        assert!(!verified(
            lc,
            &a,
            &headers(&[("x-other", "Bearer s3cret-token-value")]),
            b"{}"
        ));
        assert!(!verified(ProviderKind::Talonic, &a, &bearer, b"{}"));
    }

    #[test]
    fn events_are_read_at_the_top_or_under_data() {
        let pp = Event::parse(
            ProviderKind::PerfectParser,
            br#"{"id":"evt_1","event":"extraction.document_completed","data":{"extraction_id":"ext_1","document_id":"doc_2"}}"#,
        );
        assert_eq!(pp.id.as_deref(), Some("evt_1"));
        assert_eq!(pp.batch.as_deref(), Some("ext_1"));
        assert_eq!(pp.item.as_deref(), Some("doc_2"));
        assert!(!pp.test && !pp.is_progress());
        let test = Event::parse(
            ProviderKind::PerfectParser,
            br#"{"event":"extraction.job_completed","test":true}"#,
        );
        assert!(test.test);
        let lc = Event::parse(
            ProviderKind::LlamaCloud,
            br#"{"event_id":"e9","event_type":"parse.running","data":{"job_id":"job-1"}}"#,
        );
        assert_eq!(lc.batch.as_deref(), Some("job-1"));
        assert!(lc.is_progress());
        assert_eq!(
            Event::parse(ProviderKind::LlamaCloud, b"not json"),
            Event::default()
        );
    }
}
