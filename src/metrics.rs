//! Prometheus metrics and the endpoint that serves them (`/metrics`, `/healthz`).
//!
//! Counters move as work happens (through [`Observer`]); gauges are refreshed from the ledger after
//! each pass, so they say what the ledger says. The endpoint binds loopback unless the config
//! explicitly allows otherwise (checked in `config`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::model::{Observer, ProviderName, ProviderSummary};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    provider: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    provider: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    /// A configured provider's name; empty for a path naming none (attackers choose it).
    provider: String,
    outcome: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric batchmirror exports.
pub struct Metrics {
    registry: Registry,
    items: Family<StateLabels, Gauge>,
    bytes: Family<ProviderLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    retries: Family<ProviderLabel, Counter>,
    throttled: Family<ProviderLabel, Counter>,
    pace: Family<ProviderLabel, FloatGauge>,
    pace_throttles: Family<ProviderLabel, Gauge>,
    pace_waited: Family<ProviderLabel, FloatGauge>,
    lost: Family<ProviderLabel, Gauge>,
    deadline: Family<ProviderLabel, Gauge>,
    pass_seconds: FloatGauge,
    pass_unmirrored: Gauge,
    passes: Counter,
    dropfolder_queue: Gauge,
    webhooks: Family<WebhookLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("batchmirror");
        let m = Self {
            items: Family::default(),
            bytes: Family::default(),
            requests: Family::default(),
            retries: Family::default(),
            throttled: Family::default(),
            pace: Family::default(),
            pace_throttles: Family::default(),
            pace_waited: Family::default(),
            lost: Family::default(),
            deadline: Family::default(),
            pass_seconds: FloatGauge::default(),
            pass_unmirrored: Gauge::default(),
            passes: Counter::default(),
            dropfolder_queue: Gauge::default(),
            webhooks: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "items",
            "Items in the ledger by provider and state",
            m.items.clone(),
        );
        registry.register(
            "mirrored_bytes",
            "Result bytes made durable",
            m.bytes.clone(),
        );
        registry.register(
            "requests",
            "Requests to providers by outcome (HTTP status of a refusal, ok, transport)",
            m.requests.clone(),
        );
        registry.register(
            "retries",
            "Requests retried after a transient failure",
            m.retries.clone(),
        );
        registry.register(
            "throttled",
            "HTTP 429 answers received",
            m.throttled.clone(),
        );
        registry.register(
            "pace_requests_per_minute",
            "The adaptive cap on API requests per minute (absent while uncapped)",
            m.pace.clone(),
        );
        registry.register(
            "pace_throttles",
            "Throttles (429, 503, spent rate budget) the pacer has seen since start",
            m.pace_throttles.clone(),
        );
        registry.register(
            "pace_waited_seconds",
            "Seconds requests have waited for the cap or a server-named pause since start",
            m.pace_waited.clone(),
        );
        registry.register(
            "lost_items",
            "Items whose result the provider no longer has",
            m.lost.clone(),
        );
        registry.register(
            "oldest_unmirrored_deadline_seconds",
            "Seconds left before the earliest deadline of an item not yet mirrored (negative: passed)",
            m.deadline.clone(),
        );
        registry.register(
            "last_pass_duration_seconds",
            "Duration of the last pass",
            m.pass_seconds.clone(),
        );
        registry.register(
            "last_pass_unmirrored_items",
            "Items the last pass left due but not mirrored (deferred, at risk, failed or lost in it)",
            m.pass_unmirrored.clone(),
        );
        registry.register("passes", "Passes run", m.passes.clone());
        registry.register(
            "dropfolder_queue",
            "Files waiting in the drop folder (0 while no drop folder is configured)",
            m.dropfolder_queue.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by provider and outcome (accepted, duplicate, ignored, \
             unauthorized, too_large, unknown_provider, bad_request)",
            m.webhooks.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The text exposition format Prometheus scrapes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// One webhook delivery to `provider` ("" when the path named none) ended as `outcome`.
    pub fn webhook(&self, provider: &str, outcome: &str) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                provider: provider.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Files the drop folder holds back for a later attempt.
    pub fn dropfolder_queue(&self, files: u64) {
        self.dropfolder_queue
            .set(i64::try_from(files).unwrap_or(i64::MAX));
    }

    /// Refreshes the gauges from the ledger's summary after a pass.
    pub fn observe_pass(&self, seconds: f64, unmirrored: u64, summaries: &[ProviderSummary]) {
        self.passes.inc();
        self.pass_seconds.set(seconds);
        self.pass_unmirrored
            .set(i64::try_from(unmirrored).unwrap_or(i64::MAX));
        for s in summaries {
            for (state, n) in &s.items {
                let labels = StateLabels {
                    provider: s.name.clone(),
                    state: state.clone(),
                };
                self.items.get_or_create(&labels).set(*n as i64);
            }
            let p = ProviderLabel {
                provider: s.name.clone(),
            };
            self.lost
                .get_or_create(&p)
                .set(s.items.get("lost").copied().unwrap_or(0) as i64);
            match s.pace.and_then(|x| x.per_minute) {
                Some(r) => {
                    self.pace.get_or_create(&p).set(r);
                }
                None => {
                    self.pace.remove(&p);
                }
            }
            if let Some(x) = s.pace {
                self.pace_throttles
                    .get_or_create(&p)
                    .set(i64::try_from(x.throttles).unwrap_or(i64::MAX));
                self.pace_waited.get_or_create(&p).set(x.waited_secs);
            }
            match s.oldest_unmirrored_deadline_secs {
                Some(secs) => {
                    self.deadline.get_or_create(&p).set(secs);
                }
                None => {
                    self.deadline.remove(&p);
                }
            }
        }
    }
}

impl Observer for Metrics {
    fn request(&self, provider: &ProviderName, outcome: &str) {
        let labels = RequestLabels {
            provider: provider.to_string(),
            status: outcome.to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        if outcome == "429" {
            let p = ProviderLabel {
                provider: provider.to_string(),
            };
            self.throttled.get_or_create(&p).inc();
        }
    }

    fn retry(&self, provider: &ProviderName) {
        let p = ProviderLabel {
            provider: provider.to_string(),
        };
        self.retries.get_or_create(&p).inc();
    }

    fn mirrored(&self, provider: &ProviderName, bytes: u64) {
        let p = ProviderLabel {
            provider: provider.to_string(),
        };
        self.bytes.get_or_create(&p).inc_by(bytes);
    }
}

/// Serves `/metrics` and `/healthz` on `listen` until `cancel`. `healthy` decides `/healthz`:
/// 200, or 503 with its reason.
pub async fn serve(
    tasks: &tokio_util::task::TaskTracker,
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    healthy: Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics and /healthz");
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let verdict = healthy();
                async move {
                    match verdict {
                        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
                        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
                    }
                }
            }),
        );
    tasks.spawn(async move {
        let stop = cancel.cancelled_owned();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!("metrics endpoint failed: {e}");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_as_prometheus_text() {
        let m = Metrics::default();
        let p = ProviderName::parse("acme").unwrap();
        m.request(&p, "429");
        m.request(&p, "ok");
        m.mirrored(&p, 1234);
        let mut s = ProviderSummary {
            name: "acme".into(),
            ..ProviderSummary::default()
        };
        s.items.insert("mirrored".into(), 7);
        s.items.insert("lost".into(), 2);
        s.oldest_unmirrored_deadline_secs = Some(-5);
        m.observe_pass(1.5, 3, &[s]);
        let text = m.render();
        for line in [
            "batchmirror_requests_total{provider=\"acme\",status=\"429\"} 1",
            "batchmirror_throttled_total{provider=\"acme\"} 1",
            "batchmirror_mirrored_bytes_total{provider=\"acme\"} 1234",
            "batchmirror_items{provider=\"acme\",state=\"mirrored\"} 7",
            "batchmirror_lost_items{provider=\"acme\"} 2",
            "batchmirror_oldest_unmirrored_deadline_seconds{provider=\"acme\"} -5",
            "batchmirror_last_pass_duration_seconds 1.5",
            "batchmirror_last_pass_unmirrored_items 3",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
