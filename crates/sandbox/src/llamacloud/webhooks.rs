//! LlamaCloud job webhooks as documented (`providers.md` §2.5, seed 001): a job created with
//! `job_config.parameters.webhook_configurations[{webhook_url, webhook_headers, webhook_events,
//! webhook_output_format}]` gets a POST to each `webhook_url`, carrying that entry's
//! `webhook_headers` verbatim (LlamaCloud signs nothing: custom headers are the proof), whenever
//! one of its items' parse jobs changes state: `parse.running`, then `parse.success`,
//! `parse.error` or `parse.cancelled`. `webhook_events` null or absent means every event.
//!
//! The body is undocumented beyond the event names; this one is
//! `{"event_id","event_type","data":{"job_id":<parse job>,"batch_job_id","item_id","status"}}`.
//! One attempt per event (the retry schedule is undocumented). Tests read every delivery and may
//! switch delivery off ([`LlamaSandbox::set_webhook_delivery`]).

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::world::ItemStatus;
use super::{LlamaSandbox, Shared};

/// How often the clock is read for items that changed state while a job has webhooks.
const SCAN_EVERY: Duration = Duration::from_millis(10);

/// One entry of `webhook_configurations`.
#[derive(Debug, Clone)]
struct Config {
    url: String,
    headers: Vec<(String, String)>,
    /// None: every event.
    events: Option<Vec<String>>,
}

/// One delivery attempt, as the tests see it.
#[derive(Debug, Clone)]
pub struct LlamaWebhookDelivery {
    pub event_type: String,
    pub batch_job_id: String,
    pub item_id: String,
    /// The item's parse job id (`JobItem.job_id`), the id the payload names.
    pub parse_job_id: String,
    /// When the item reached that state, on the simulated clock (µs since the epoch).
    pub at_us: i64,
    pub body: Bytes,
    pub headers: Vec<(String, String)>,
    /// The receiver's status; None when unreachable or dropped.
    pub status: Option<u16>,
    pub dropped: bool,
}

#[derive(Default)]
struct Inner {
    /// (batch job id, its configurations).
    jobs: Vec<(String, Vec<Config>)>,
    dropping: bool,
    log: Vec<LlamaWebhookDelivery>,
    scanned_us: Option<i64>,
}

/// The webhook configurations of one sandbox's jobs (a leaf lock).
#[derive(Default)]
pub(crate) struct Registry(Mutex<Inner>);

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LlamaSandbox {
    /// While false, due deliveries are recorded as dropped and never sent.
    pub fn set_webhook_delivery(&self, on: bool) {
        self.shared.webhooks.lock().dropping = !on;
    }

    /// Every delivery attempted or dropped, in order.
    pub fn webhook_deliveries(&self) -> Vec<LlamaWebhookDelivery> {
        self.shared.webhooks.lock().log.clone()
    }
}

/// The well-formed entries of a create request's `webhook_configurations` (others are ignored:
/// the API's own validation of them is undocumented).
fn configurations(create_body: &[u8]) -> Vec<Config> {
    let Ok(body) = serde_json::from_slice::<Value>(create_body) else {
        return Vec::new();
    };
    let list = &body["job_config"]["parameters"]["webhook_configurations"];
    let Some(list) = list.as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|c| {
            let url = c["webhook_url"].as_str()?.to_owned();
            let headers = c["webhook_headers"]
                .as_object()
                .map(|h| {
                    h.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            let events = c["webhook_events"].as_array().map(|e| {
                e.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            });
            Some(Config {
                url,
                headers,
                events,
            })
        })
        .collect()
}

/// Registers the job's webhooks from its create request body, starting the delivery loop once.
pub(crate) fn register(sh: &Arc<Shared>, job_id: &str, create_body: &[u8]) {
    let configs = configurations(create_body);
    if configs.is_empty() {
        return;
    }
    let start = {
        let mut w = sh.webhooks.lock();
        w.jobs.push((job_id.to_owned(), configs));
        let first = w.scanned_us.is_none();
        w.scanned_us.get_or_insert(sh.clock.now_us());
        first
    };
    if start {
        tokio::spawn(deliver_loop(Arc::downgrade(sh)));
    }
}

fn event_for(status: ItemStatus) -> Option<&'static str> {
    match status {
        ItemStatus::Processing => Some("parse.running"),
        ItemStatus::Completed => Some("parse.success"),
        ItemStatus::Failed => Some("parse.error"),
        ItemStatus::Cancelled => Some("parse.cancelled"),
        ItemStatus::Pending | ItemStatus::Skipped => None,
    }
}

/// One event due to one configuration.
struct Due {
    config: Config,
    event: &'static str,
    batch_job_id: String,
    item_id: String,
    parse_job_id: String,
    status: &'static str,
    at_us: i64,
}

async fn deliver_loop(shared: Weak<Shared>) {
    let client = reqwest::Client::new();
    loop {
        tokio::time::sleep(SCAN_EVERY).await;
        let Some(sh) = shared.upgrade() else { return };
        let now = sh.clock.now_us();
        let (jobs, from) = {
            let mut w = sh.webhooks.lock();
            let from = w.scanned_us.replace(now).unwrap_or(now);
            (w.jobs.clone(), from)
        };
        let mut due = Vec::new();
        {
            let world = sh.world();
            for (job_id, configs) in &jobs {
                let Some(job) = world.job(job_id) else {
                    continue;
                };
                for it in &job.items {
                    let (before, after) = (it.status(from), it.status(now));
                    let Some(event) = event_for(after).filter(|_| before != after) else {
                        continue;
                    };
                    let at_us = match after {
                        ItemStatus::Processing => it.running_us,
                        ItemStatus::Cancelled => it.cancelled_us.unwrap_or(now),
                        _ => it.done_us,
                    };
                    for c in configs.iter().filter(|c| {
                        c.events
                            .as_ref()
                            .is_none_or(|e| e.iter().any(|x| x == event))
                    }) {
                        due.push(Due {
                            config: c.clone(),
                            event,
                            batch_job_id: job_id.clone(),
                            item_id: it.spec.id.clone(),
                            parse_job_id: it.spec.parse_job_id.clone(),
                            status: after.as_str(),
                            at_us,
                        });
                    }
                }
            }
        }
        for d in due {
            let (sh, client) = (sh.clone(), client.clone());
            tokio::spawn(async move { send(&sh, &client, d).await });
        }
    }
}

async fn send(sh: &Shared, client: &reqwest::Client, d: Due) {
    let body = json!({
        "event_id": format!("evt-{:032x}", rand::random::<u128>()),
        "event_type": d.event,
        "data": {
            "job_id": d.parse_job_id, "batch_job_id": d.batch_job_id,
            "item_id": d.item_id, "status": d.status,
        },
    });
    let body = Bytes::from(body.to_string());
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    headers.extend(d.config.headers.iter().cloned());
    let dropped = sh.webhooks.lock().dropping;
    let status = if dropped {
        None
    } else {
        let mut req = client
            .post(&d.config.url)
            .timeout(Duration::from_secs(10))
            .body(body.clone());
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        req.send().await.ok().map(|r| r.status().as_u16())
    };
    sh.webhooks.lock().log.push(LlamaWebhookDelivery {
        event_type: d.event.to_owned(),
        batch_job_id: d.batch_job_id,
        item_id: d.item_id,
        parse_job_id: d.parse_job_id,
        at_us: d.at_us,
        body,
        headers,
        status,
        dropped,
    });
}
