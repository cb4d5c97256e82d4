//! PerfectParser webhooks as documented (`providers.md` §4.3): the `/v1/webhooks` API (create
//! with a one-time `signing_secret`, list, get with the last 10 deliveries, patch, soft delete,
//! test event) and their delivery: when a document or a whole extraction finishes on the
//! simulated clock, every active webhook subscribed to `extraction.document_completed` /
//! `extraction.job_completed` gets a POST whose body is signed in `X-PerfectParser-Signature`
//! (hex HMAC-SHA256 of the raw body with the signing secret), plus `X-Webhook-Secret` when the
//! webhook was created with a `secret`. One attempt each (the retry schedule is undocumented).
//!
//! The payload beyond `extraction_id` and `document_id` is undocumented [D P10]; this one adds
//! an event id, the event name and the document's status. Tests read every delivery, and may
//! tell the sandbox to drop them ([`PerfectSandbox::set_webhook_delivery`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::routes::{error, not_found};
use super::world::ts;
use super::{PerfectSandbox, Shared, St};

/// Event names the API accepts on a webhook created through it.
pub const EVENTS: [&str; 2] = ["extraction.document_completed", "extraction.job_completed"];
/// How often the clock is read for newly finished documents while a webhook is active.
const SCAN_EVERY: Duration = Duration::from_millis(10);

/// One delivery attempt, as the tests see it.
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    pub webhook_id: String,
    pub event: String,
    pub extraction_id: String,
    /// None for `extraction.job_completed`.
    pub document_id: Option<String>,
    /// When the document (or the extraction) finished, on the simulated clock (µs since the
    /// epoch; real time when `time_scale` is 1).
    pub completed_us: i64,
    /// The exact body and headers sent (a test may replay them).
    pub body: Bytes,
    pub headers: Vec<(String, String)>,
    /// The receiver's status; None when it could not be reached or delivery was off.
    pub status: Option<u16>,
    /// Not sent: delivery was switched off.
    pub dropped: bool,
    /// From the POST sent to the receiver's status line; None when not answered.
    pub answered_in: Option<Duration>,
}

struct Webhook {
    id: String,
    url: String,
    events: Vec<String>,
    is_active: bool,
    deleted: bool,
    created_us: i64,
    signing_secret: String,
    secret: Option<String>,
    recent: VecDeque<Value>,
}

#[derive(Default)]
struct Inner {
    hooks: Vec<Webhook>,
    /// Delivery switched off ([`PerfectSandbox::set_webhook_delivery`]).
    dropping: bool,
    log: Vec<WebhookDelivery>,
    /// The clock instant scanned up to; None until the worker starts.
    scanned_us: Option<i64>,
}

/// The webhooks of one sandbox.
#[derive(Default)]
pub(crate) struct Registry(Mutex<Inner>);

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PerfectSandbox {
    /// While false, due deliveries are recorded as dropped and never sent (a lost webhook).
    pub fn set_webhook_delivery(&self, on: bool) {
        self.shared.webhooks.lock().dropping = !on;
    }

    /// Every delivery attempted or dropped, in order.
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.shared.webhooks.lock().log.clone()
    }
}

fn public(w: &Webhook) -> Value {
    json!({
        "webhook_id": w.id, "url": w.url, "events": w.events, "is_active": w.is_active,
        "created_at": ts(w.created_us),
    })
}

fn invalid(msg: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_PAYLOAD", msg)
}

fn parse_events(v: Option<&Value>) -> Result<Option<Vec<String>>, String> {
    let Some(v) = v else { return Ok(None) };
    let list: Option<Vec<String>> = v.as_array().map(|a| {
        a.iter()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect()
    });
    match list {
        Some(l) if !l.is_empty() && l.iter().all(|e| EVENTS.contains(&e.as_str())) => Ok(Some(l)),
        _ => Err(format!(
            "events must be a non-empty list of {}",
            EVENTS.join(", ")
        )),
    }
}

fn parse_url(v: Option<&Value>) -> Result<Option<String>, String> {
    let Some(v) = v else { return Ok(None) };
    // HTTPS in production; the sandbox also takes http, for a receiver on loopback.
    match v.as_str().and_then(|s| url::Url::parse(s).ok()) {
        Some(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(Some(u.into())),
        _ => Err("url must be an https URL".to_owned()),
    }
}

/// `POST /v1/webhooks {url, events, secret?}` → 201 with the one-time `signing_secret`.
pub(crate) async fn create(State(sh): State<St>, raw: Bytes) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&raw) else {
        return invalid("the body must be a JSON object");
    };
    let url = match parse_url(body.get("url")) {
        Ok(Some(u)) => u,
        Ok(None) => return invalid("url is required"),
        Err(m) => return invalid(&m),
    };
    let events = match parse_events(body.get("events")) {
        Ok(Some(e)) => e,
        Ok(None) => return invalid("events is required"),
        Err(m) => return invalid(&m),
    };
    let secret = match body.get("secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() >= 8 => Some(s.clone()),
        Some(_) => return invalid("secret must be a string of at least 8 characters"),
    };
    let hook = Webhook {
        id: format!("wh_{:016x}", rand::random::<u64>()),
        url,
        events,
        is_active: true,
        deleted: false,
        created_us: sh.clock.now_us(),
        signing_secret: format!("wh_sec_{:032x}", rand::random::<u128>()),
        secret,
        recent: VecDeque::new(),
    };
    let mut view = public(&hook);
    view["signing_secret"] = json!(hook.signing_secret);
    let start = {
        let mut w = sh.webhooks.lock();
        w.hooks.push(hook);
        let first = w.scanned_us.is_none();
        w.scanned_us.get_or_insert(sh.clock.now_us());
        first
    };
    if start {
        tokio::spawn(deliver_loop(Arc::downgrade(&sh)));
    }
    (StatusCode::CREATED, axum::Json(json!({ "webhook": view }))).into_response()
}

/// `GET /v1/webhooks?limit&cursor` (limit default 20, max 100), deleted ones left out.
pub(crate) async fn list(
    State(sh): State<St>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 20,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return invalid("limit must be 1..100"),
    };
    let from = match q
        .get("cursor")
        .map(|c| c.strip_prefix("whc_").map(str::parse::<usize>))
    {
        None => 0,
        Some(Some(Ok(n))) => n,
        Some(_) => return invalid("unknown cursor"),
    };
    let w = sh.webhooks.lock();
    let live: Vec<&Webhook> = w.hooks.iter().filter(|h| !h.deleted).collect();
    let page: Vec<Value> = live
        .iter()
        .skip(from)
        .take(limit)
        .map(|h| public(h))
        .collect();
    let next = (from + limit < live.len()).then(|| format!("whc_{}", from + limit));
    axum::Json(json!({
        "webhooks": page,
        "pagination": {"limit": limit, "has_next_page": next.is_some(), "next_cursor": next},
    }))
    .into_response()
}

/// `GET /v1/webhooks/:id`, with the last 10 deliveries.
pub(crate) async fn get(State(sh): State<St>, Path(id): Path<String>) -> Response {
    let w = sh.webhooks.lock();
    match w.hooks.iter().find(|h| h.id == id && !h.deleted) {
        Some(h) => {
            let mut view = public(h);
            view["deliveries"] = json!(h.recent);
            axum::Json(json!({ "webhook": view })).into_response()
        }
        None => not_found("Webhook"),
    }
}

/// `PATCH /v1/webhooks/:id {url?, events?, is_active?}`.
pub(crate) async fn patch(State(sh): State<St>, Path(id): Path<String>, raw: Bytes) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&raw) else {
        return invalid("the body must be a JSON object");
    };
    let (url, events) = match (parse_url(body.get("url")), parse_events(body.get("events"))) {
        (Ok(u), Ok(e)) => (u, e),
        (Err(m), _) | (_, Err(m)) => return invalid(&m),
    };
    let active = match body.get("is_active") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return invalid("is_active must be a boolean"),
    };
    let mut w = sh.webhooks.lock();
    let Some(h) = w.hooks.iter_mut().find(|h| h.id == id && !h.deleted) else {
        return not_found("Webhook");
    };
    h.url = url.unwrap_or(h.url.clone());
    h.events = events.unwrap_or(h.events.clone());
    h.is_active = active.unwrap_or(h.is_active);
    axum::Json(json!({ "webhook": public(h) })).into_response()
}

/// `DELETE /v1/webhooks/:id` → 204 (soft delete: it stops delivering and leaves the listing).
pub(crate) async fn delete(State(sh): State<St>, Path(id): Path<String>) -> Response {
    let mut w = sh.webhooks.lock();
    match w.hooks.iter_mut().find(|h| h.id == id && !h.deleted) {
        Some(h) => {
            h.deleted = true;
            h.is_active = false;
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found("Webhook"),
    }
}

/// `POST /v1/webhooks/:id/test`: a synthetic `extraction.job_completed` with `"test": true`,
/// delivered now; the answer says how the receiver took it.
pub(crate) async fn test(State(sh): State<St>, Path(id): Path<String>) -> Response {
    let target = {
        let w = sh.webhooks.lock();
        w.hooks
            .iter()
            .find(|h| h.id == id && !h.deleted)
            .map(Target::of)
    };
    let Some(target) = target else {
        return not_found("Webhook");
    };
    let now = sh.clock.now_us();
    let due = Due {
        event: EVENTS[1],
        extraction_id: "ext_test".to_owned(),
        document_id: None,
        status: "completed",
        completed_us: now,
        test: true,
    };
    let d = send(&sh, &reqwest::Client::new(), &target, &due).await;
    axum::Json(json!({"delivery": {
        "webhook_id": id, "event": due.event, "test": true,
        "status_code": d.status, "success": d.status.is_some_and(|s| (200..300).contains(&s)),
    }}))
    .into_response()
}

/// Where and how one webhook is delivered, copied out of the lock.
#[derive(Clone)]
struct Target {
    id: String,
    url: String,
    events: Vec<String>,
    signing_secret: String,
    secret: Option<String>,
}

impl Target {
    fn of(h: &Webhook) -> Target {
        Target {
            id: h.id.clone(),
            url: h.url.clone(),
            events: h.events.clone(),
            signing_secret: h.signing_secret.clone(),
            secret: h.secret.clone(),
        }
    }
}

/// One event due.
#[derive(Clone)]
struct Due {
    event: &'static str,
    extraction_id: String,
    document_id: Option<String>,
    status: &'static str,
    completed_us: i64,
    test: bool,
}

/// Scans the clock for documents and extractions that finished since the last scan, and
/// delivers them, until the sandbox is gone.
async fn deliver_loop(shared: Weak<Shared>) {
    let client = reqwest::Client::new();
    loop {
        tokio::time::sleep(SCAN_EVERY).await;
        let Some(sh) = shared.upgrade() else { return };
        let now = sh.clock.now_us();
        let (targets, from) = {
            let mut w = sh.webhooks.lock();
            let from = w.scanned_us.replace(now).unwrap_or(now);
            let targets: Vec<Target> = w
                .hooks
                .iter()
                .filter(|h| h.is_active && !h.deleted)
                .map(Target::of)
                .collect();
            (targets, from)
        };
        if targets.is_empty() {
            continue;
        }
        let due = finished_between(&sh, from, now);
        for d in due {
            for t in targets
                .iter()
                .filter(|t| t.events.iter().any(|e| e == d.event))
            {
                let (sh, client, t, d) = (sh.clone(), client.clone(), t.clone(), d.clone());
                tokio::spawn(async move { send(&sh, &client, &t, &d).await });
            }
        }
    }
}

/// Documents (and whole extractions) whose finish lies in `(from, to]`.
fn finished_between(sh: &Shared, from: i64, to: i64) -> Vec<Due> {
    let world = sh.world();
    let mut out = Vec::new();
    for e in &world.extractions {
        let mut last = i64::MIN;
        for d in &e.documents {
            last = last.max(d.done_us);
            if d.done_us > from && d.done_us <= to {
                let status = d.status(to);
                out.push(Due {
                    event: EVENTS[0],
                    extraction_id: e.id.clone(),
                    document_id: Some(d.id.clone()),
                    status: status.as_str(),
                    completed_us: d.done_us,
                    test: false,
                });
            }
        }
        if last > from && last <= to {
            out.push(Due {
                event: EVENTS[1],
                extraction_id: e.id.clone(),
                document_id: None,
                status: "completed",
                completed_us: last,
                test: false,
            });
        }
    }
    out
}

/// Signs and POSTs one event to one webhook (or records it dropped), and logs it.
async fn send(sh: &Shared, client: &reqwest::Client, t: &Target, d: &Due) -> WebhookDelivery {
    let event_id = format!("evt_{:016x}", rand::random::<u64>());
    let mut body = json!({
        "event_id": event_id, "event": d.event, "webhook_id": t.id,
        "created_at": ts(sh.clock.now_us()),
        "extraction_id": d.extraction_id, "document_id": d.document_id, "status": d.status,
    });
    if d.test {
        body["test"] = json!(true);
    }
    let body = Bytes::from(body.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(t.signing_secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(&body);
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "x-perfectparser-signature".to_owned(),
            hex::encode(mac.finalize().into_bytes()),
        ),
    ];
    if let Some(s) = &t.secret {
        headers.push(("x-webhook-secret".to_owned(), s.clone()));
    }
    let dropped = sh.webhooks.lock().dropping;
    let sent = std::time::Instant::now();
    let status = if dropped {
        None
    } else {
        let mut req = client
            .post(&t.url)
            .timeout(Duration::from_secs(10))
            .body(body.clone());
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        req.send().await.ok().map(|r| r.status().as_u16())
    };
    let answered_in = status.map(|_| sent.elapsed());
    let delivery = WebhookDelivery {
        webhook_id: t.id.clone(),
        event: d.event.to_owned(),
        extraction_id: d.extraction_id.clone(),
        document_id: d.document_id.clone(),
        completed_us: d.completed_us,
        body,
        headers,
        status,
        dropped,
        answered_in,
    };
    let mut w = sh.webhooks.lock();
    if let Some(h) = w.hooks.iter_mut().find(|h| h.id == t.id) {
        h.recent.push_front(json!({
            "event_id": event_id, "event": d.event, "status_code": status,
            "delivered_at": ts(sh.clock.now_us()),
        }));
        h.recent.truncate(10);
    }
    w.log.push(delivery.clone());
    delivery
}
