//! Alerts: an item at risk, an item lost, a provider failing for too long, a full disk. Each event
//! alerts once (the ledger remembers what fired, across restarts), through a command given the
//! event as JSON on stdin and/or a webhook given it as a POST. A failing alert target is logged and
//! never blocks mirroring: deliveries run in their own tasks with time limits.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_util::task::TaskTracker;

use crate::config::AlertSettings;
use crate::error::redact_url;
use crate::ledger::Ledger;
use crate::model::DueItem;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
const DISK_FULL_KEY: &str = "disk_full";

/// What an alert says, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct AlertEvent {
    /// `item_at_risk`, `item_lost`, `provider_failing` or `disk_full`.
    pub event: &'static str,
    pub provider: Option<String>,
    pub batch: Option<String>,
    pub item: Option<String>,
    pub deadline: Option<DateTime<Utc>>,
    pub message: String,
    pub at: DateTime<Utc>,
}

impl AlertEvent {
    fn item(event: &'static str, item: &DueItem, message: String) -> Self {
        Self {
            event,
            provider: Some(item.provider.to_string()),
            batch: Some(item.batch.to_string()),
            item: Some(item.item.to_string()),
            deadline: item.deadline,
            message,
            at: Utc::now(),
        }
    }
}

/// Fires each alert once and delivers it in the background.
pub struct Alerter {
    settings: AlertSettings,
    client: reqwest::Client,
    ledger: OnceLock<Ledger>,
    tasks: TaskTracker,
    disk_full: AtomicBool,
}

impl Alerter {
    pub fn new(settings: AlertSettings) -> Self {
        Self {
            settings,
            client: reqwest::Client::builder()
                .timeout(WEBHOOK_TIMEOUT)
                .build()
                .unwrap_or_default(),
            ledger: OnceLock::new(),
            tasks: TaskTracker::new(),
            disk_full: AtomicBool::new(false),
        }
    }

    /// The ledger that remembers which alerts fired (set once it is open).
    pub fn attach(&self, ledger: Ledger) {
        let _ = self.ledger.set(ledger);
    }

    pub fn lost(&self, item: &DueItem, error: &str) {
        let key = format!("lost:{}/{}/{}", item.provider, item.batch, item.item);
        let message = format!("the provider no longer has this result: {error}");
        self.fire(key, AlertEvent::item("item_lost", item, message));
    }

    pub fn at_risk(&self, item: &DueItem) {
        let key = format!("at_risk:{}/{}/{}", item.provider, item.batch, item.item);
        let message = "not mirrored yet, and its deadline is within the alert margin".to_owned();
        self.fire(key, AlertEvent::item("item_at_risk", item, message));
    }

    pub fn disk_full(&self, error: &str) {
        if !self.disk_full.swap(true, Ordering::SeqCst) {
            let event = AlertEvent {
                event: "disk_full",
                provider: None,
                batch: None,
                item: None,
                deadline: None,
                message: format!("downloads are failing: {error}"),
                at: Utc::now(),
            };
            self.fire(DISK_FULL_KEY.to_owned(), event);
        }
    }

    /// A pass wrote results with no full disk: a later full disk is a new event.
    pub fn disk_ok(&self) {
        // Cleared whatever this process saw: a `sync --once` run cannot know whether an earlier
        // run alerted.
        self.disk_full.store(false, Ordering::SeqCst);
        self.clear(DISK_FULL_KEY.to_owned());
    }

    /// Alerts once a provider has been failing for `provider_failing_after` (counted from its first
    /// failed pass, kept in the ledger, so separate `sync --once` runs count too), and again only
    /// after it has answered once more.
    pub fn provider_listed(
        &self,
        provider: &str,
        error: Option<&str>,
        failing_since: Option<DateTime<Utc>>,
    ) {
        let key = format!("provider_failing:{provider}");
        let (Some(error), Some(since)) = (error, failing_since) else {
            // Answering again ends the episode: a later failure is a new event. Cleared on every
            // good pass, since a `sync --once` run cannot know whether an earlier run alerted.
            self.clear(key);
            return;
        };
        let failing_for = (Utc::now() - since).to_std().unwrap_or_default();
        if failing_for >= self.settings.provider_failing_after {
            let event = AlertEvent {
                event: "provider_failing",
                provider: Some(provider.to_owned()),
                batch: None,
                item: None,
                deadline: None,
                message: format!(
                    "failing since {} ({}): {error}",
                    since.to_rfc3339(),
                    humantime::format_duration(Duration::from_secs(failing_for.as_secs()))
                ),
                at: Utc::now(),
            };
            self.fire(key, event);
        }
    }

    /// Waits (up to `limit`) for deliveries in flight, e.g. before `sync --once` exits.
    pub async fn flush(&self, limit: Duration) {
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("alert deliveries still running after {limit:?}; not waiting longer");
        }
    }

    fn clear(&self, key: String) {
        if let Some(ledger) = self.ledger.get().cloned() {
            self.tasks.spawn(async move {
                if let Err(e) = ledger.clear_alert(&key).await {
                    tracing::warn!("cannot reset alert {key}: {e}");
                }
            });
        }
    }

    fn fire(&self, key: String, event: AlertEvent) {
        let ledger = self.ledger.get().cloned();
        let settings = self.settings.clone();
        let client = self.client.clone();
        self.tasks.spawn(async move {
            if let Some(ledger) = ledger {
                match ledger.claim_alert(&key, Utc::now()).await {
                    Ok(true) => {}
                    Ok(false) => return, // already alerted about
                    Err(e) => tracing::warn!("cannot record alert {key}, sending it anyway: {e}"),
                }
            }
            deliver(&settings, &client, &event).await;
        });
    }
}

async fn deliver(settings: &AlertSettings, client: &reqwest::Client, event: &AlertEvent) {
    let body = match serde_json::to_string(event) {
        Ok(b) => b,
        Err(e) => return tracing::error!("cannot encode alert: {e}"),
    };
    if let Some((program, args)) = settings.command.split_first()
        && let Err(e) = run_command(program, args, &body).await
    {
        tracing::error!(event = event.event, "alert command {program} failed: {e}");
    }
    if let Some(url) = &settings.webhook_url {
        let shown =
            url::Url::parse(url.expose()).map_or_else(|_| "webhook".into(), |u| redact_url(&u));
        let sent = client
            .post(url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::error!(
                event = event.event,
                "alert webhook {shown} answered {}",
                r.status()
            ),
            Err(e) => tracing::error!(
                event = event.event,
                "alert webhook {shown} failed: {}",
                e.without_url()
            ),
        }
    }
}

async fn run_command(program: &str, args: &[String], body: &str) -> Result<(), String> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(body.as_bytes())
            .await
            .and(stdin.write_all(b"\n").await)
            .map_err(|e| format!("writing the event to its stdin: {e}"))?;
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("exited with {status}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("still running after {COMMAND_TIMEOUT:?}; killed")),
    }
}
