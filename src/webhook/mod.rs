//! The webhook receiver: `POST /hooks/<provider name>` on the `[webhook]` address. It owns the
//! order a delivery goes through: the provider must be configured with a secret (else 404), the
//! body at most [`MAX_BODY`] (else 413), the proof valid (else 401, and nothing else happens),
//! then a delivery seen within [`DEDUPE_WINDOW`] is acknowledged and dropped, and any other is
//! acknowledged at once (202) and turned into a follow-up pass: one that reads the batch the
//! event names by id ([`PassTrigger::refresh`]; the id goes through [`BatchId::parse`] and is
//! only sent back to the API), or, when it names none, one listing that provider
//! ([`PassTrigger::follow_up`]).
//!
//! A webhook is a hint, never the result: the pass asks the API for the batch (or re-lists the
//! provider) and fetches what is due through the ledger and the downloader, as a scheduled pass
//! does, so a forged, replayed or lost
//! delivery can neither plant data nor lose any (the cron schedule stays the backstop). Each
//! outcome is counted in `/metrics` and logged, never with the body.

mod verify;

pub use verify::{Event, SIGNATURE_HEADER, STATIC_SECRET_HEADER, verified};

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ProviderKind, ProviderSettings, WebhookAuth};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::model::BatchId;
use crate::scheduler::PassTrigger;

/// Largest delivery accepted; events are small JSON documents, never results.
pub const MAX_BODY: usize = 1 << 20;
/// A delivery with the same event id (or, without one, the same body) within this long after
/// the first is a replay or a provider retry: acknowledged, not acted on.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Deliveries remembered for deduplication at most (the oldest are forgotten first).
const DEDUPE_CAP: usize = 10_000;

/// One provider that takes deliveries.
struct Hook {
    name: String,
    kind: ProviderKind,
    auth: WebhookAuth,
}

/// What the handler shares.
struct Hooks {
    hooks: Vec<Hook>,
    trigger: Arc<PassTrigger>,
    metrics: Option<Arc<Metrics>>,
    seen: Mutex<Seen>,
}

/// Deliveries acted on within [`DEDUPE_WINDOW`], oldest first.
#[derive(Default)]
struct Seen {
    order: VecDeque<(Instant, String)>,
    keys: HashSet<String>,
}

impl Seen {
    /// True when `key` is new (and remembers it); false for a repeat within the window.
    fn first(&mut self, key: String, now: Instant) -> bool {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < DEDUPE_WINDOW && self.order.len() < DEDUPE_CAP {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        if !self.keys.insert(key.clone()) {
            return false;
        }
        self.order.push_back((now, key));
        true
    }
}

/// Binds `listen` and serves the receiver for the providers that have a webhook secret, in a
/// task of `tasks` that stops on `cancel`. Verified deliveries ask `trigger` for a pass.
pub async fn serve(
    tasks: &TaskTracker,
    listen: SocketAddr,
    providers: &[ProviderSettings],
    trigger: Arc<PassTrigger>,
    metrics: Option<Arc<Metrics>>,
    cancel: CancellationToken,
) -> Result<SocketAddr, Error> {
    let bind_err = |source| Error::Listen {
        what: "the webhook receiver",
        addr: listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    let hooks: Vec<Hook> = providers
        .iter()
        .filter_map(|p| {
            Some(Hook {
                name: p.name.to_string(),
                kind: p.kind,
                auth: p.webhook.clone()?,
            })
        })
        .collect();
    let names: Vec<_> = hooks.iter().map(|h| h.name.as_str()).collect();
    tracing::info!(address = %local, providers = ?names, "receiving webhooks on /hooks/<provider>");
    let state = Arc::new(Hooks {
        hooks,
        trigger,
        metrics,
        seen: Mutex::default(),
    });
    let app = axum::Router::new()
        .route("/hooks/{provider}", axum::routing::post(receive))
        .with_state(state);
    tasks.spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await
        {
            tracing::error!("webhook receiver failed: {e}");
        }
    });
    Ok(local)
}

/// One delivery, in the order the module doc gives.
async fn receive(
    State(st): State<Arc<Hooks>>,
    Path(provider): Path<String>,
    req: Request,
) -> Response {
    let count = |name: &str, outcome: &str| {
        if let Some(m) = &st.metrics {
            m.webhook(name, outcome);
        }
    };
    let Some(hook) = st.hooks.iter().find(|h| h.name == provider) else {
        count("", "unknown_provider");
        // The name is the caller's choice: shown escaped and cut.
        let shown: String = provider.chars().take(64).collect();
        tracing::warn!(provider = ?shown, "webhook refused: no provider of that name takes webhooks");
        return answer(
            StatusCode::NOT_FOUND,
            "no webhook receiver for this provider",
        );
    };
    let name = hook.name.as_str();
    let too_large = || {
        count(name, "too_large");
        tracing::warn!(
            provider = name,
            limit = MAX_BODY,
            "webhook refused: body too large"
        );
        answer(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MiB")
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(Body::new(body), MAX_BODY).await else {
        // Over the limit without a Content-Length, or cut off: either way nothing to act on.
        return too_large();
    };
    if !verified(hook.kind, &hook.auth, &parts.headers, &body) {
        count(name, "unauthorized");
        tracing::warn!(
            provider = name,
            bytes = body.len(),
            "webhook refused: signature or secret missing or wrong"
        );
        return answer(StatusCode::UNAUTHORIZED, "unverified");
    }
    let event = Event::parse(hook.kind, &body);
    let key = match &event.id {
        Some(id) => format!("{name}\0id\0{id}"),
        None => format!("{name}\0sha256\0{}", hex::encode(Sha256::digest(&body))),
    };
    let first = st
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .first(key, Instant::now());
    // Provider-supplied text: logged escaped (`?`), so it cannot forge log lines.
    let fields = (
        event.name.as_deref().unwrap_or("-"),
        event.batch.as_deref().unwrap_or("-"),
        event.item.as_deref().unwrap_or("-"),
    );
    if !first {
        count(name, "duplicate");
        tracing::info!(
            provider = name,
            event = ?fields.0,
            batch = ?fields.1,
            item = ?fields.2,
            "webhook repeated: already acted on"
        );
        return answer(StatusCode::OK, "duplicate");
    }
    if event.test || event.is_progress() {
        count(name, "ignored");
        tracing::info!(
            provider = name,
            event = ?fields.0,
            test = event.test,
            "webhook verified; nothing to mirror in it"
        );
        return answer(StatusCode::OK, "verified");
    }
    count(name, "accepted");
    tracing::info!(
        provider = name,
        event = ?fields.0,
        batch = ?fields.1,
        item = ?fields.2,
        "webhook verified: a pass follows"
    );
    match event.batch.as_deref().map(BatchId::parse) {
        Some(Ok(batch)) => st.trigger.refresh(name, batch),
        // Names nothing usable: the provider said something changed, so list it.
        _ => st.trigger.follow_up(name),
    }
    answer(StatusCode::ACCEPTED, "queued")
}

fn answer(status: StatusCode, what: &'static str) -> Response {
    (status, format!("{what}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_dropped_and_later_forgotten() {
        let mut seen = Seen::default();
        let t0 = Instant::now();
        assert!(seen.first("a".into(), t0));
        assert!(!seen.first("a".into(), t0 + Duration::from_secs(60)));
        assert!(seen.first("b".into(), t0 + Duration::from_secs(60)));
        assert!(
            seen.first("a".into(), t0 + DEDUPE_WINDOW + Duration::from_secs(1)),
            "past the window the same key is news again"
        );
    }
}
