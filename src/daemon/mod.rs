//! Wires the components: opens the ledger (locks, checks), locks the mirror root, recovers what a
//! crash left, builds the providers, and runs passes, once (`sync --once`) or on the cron schedule
//! (`run`) until shutdown.
//!
//! One [`CancellationToken`] reaches every task; only `main` decides when to exit.

mod dryrun;
mod observer;
mod pass;
mod preflight;
mod reload;
mod run;
mod status;
mod systemd;
mod verify;

pub use dryrun::{DryRun, dry_run};
pub use pass::{PassReport, ProviderPass};
pub use preflight::{Checked, preflight};
pub use reload::Reload;
pub use run::{StopSignal, cancel_on_signals, cancel_or_reload_on_signals, run, run_reloading};
pub use status::{StatusReport, status};
pub use verify::{Counts, Finding, FindingKind, Repaired, VerifyOptions, VerifyReport, verify};

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::download::Downloader;
use crate::dropfolder::DropFolder;
use crate::error::{Error, LedgerError};
use crate::ledger::Ledger;
use crate::model::Observer;
use crate::provider::{self, Provider};
use crate::scheduler::{PassTrigger, Scope};
use crate::storage::Storage;
use crate::sync::{self, ListError};
use observer::DaemonObserver;

/// An opened mirror: ledger and root locked, crash recovered, storage ready, providers built.
pub struct Mirror {
    settings: Settings,
    ledger: Ledger,
    storage: Arc<Storage>,
    providers: Vec<Arc<dyn Provider>>,
    downloader: Downloader,
    observer: Arc<dyn Observer>,
}

impl Mirror {
    /// Locks and checks the ledger, locks the mirror root, repairs what a crash left, and builds
    /// the providers.
    pub async fn open(settings: Settings) -> Result<Self, Error> {
        Self::open_with(settings, crate::model::no_observer()).await
    }

    /// [`Mirror::open`], reporting progress and events to `observer`.
    pub async fn open_with(settings: Settings, observer: Arc<dyn Observer>) -> Result<Self, Error> {
        // The directories first: one that takes no writes stops here, before any download.
        for checked in preflight(&settings)? {
            tracing::info!("{checked}");
        }
        let path = settings.ledger_path.clone();
        let ledger = tokio::task::spawn_blocking(move || Ledger::open(&path))
            .await
            .map_err(|e| LedgerError::Task(e.to_string()))??;
        // Locked before recovery: a daemon with another ledger may be writing `.part` files here.
        let storage = Arc::new(Storage::new(&settings.storage_root)?.lock_root()?);
        let providers = settings
            .providers
            .iter()
            .map(|p| provider::build(p, &settings.download, observer.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let downloader = Downloader::new(
            ledger.clone(),
            storage.clone(),
            &providers,
            settings.download.clone(),
            observer.clone(),
        );
        let mirror = Self {
            settings,
            ledger,
            storage,
            providers,
            downloader,
            observer,
        };
        mirror.recover().await?;
        // A cap a provider taught an earlier run still holds: start there, not uncapped.
        for p in &mirror.providers {
            if let Some(per_minute) = mirror
                .ledger
                .pace(p.name())
                .await?
                .and_then(|x| x.per_minute)
            {
                tracing::info!(provider = %p.name(), per_minute, "pacing from the rate learned before");
                p.restore_pace(per_minute);
            }
        }
        Ok(mirror)
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The drop folder's worker when `[dropfolder]` is configured, for the caller to run.
    pub fn dropfolder(&self, trigger: Arc<PassTrigger>) -> Option<DropFolder> {
        let settings = self.settings.dropfolder.clone()?;
        // Validation guarantees the named provider exists.
        let provider = self
            .providers
            .iter()
            .find(|p| *p.name() == settings.provider)?
            .clone();
        Some(DropFolder::new(
            settings,
            self.ledger.clone(),
            provider,
            self.settings.storage_root.clone(),
            trigger,
            self.observer.clone(),
        ))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Rows a crash left `downloading` are adopted (result published) or released, as after an
    /// abort ([`Downloader::settle_interrupted`]); then stray `.part` files go. Safe because we
    /// hold the ledger's locks and the root's.
    async fn recover(&self) -> Result<(), Error> {
        let in_flight = self.ledger.in_flight().await?;
        let released = self.downloader.settle_interrupted(in_flight).await?;
        if released > 0 {
            tracing::info!(
                count = released,
                "downloads interrupted by a crash will be fetched again"
            );
        }
        let storage = self.storage.clone();
        let removed = tokio::task::spawn_blocking(move || storage.remove_stray_parts())
            .await
            .map_err(|source| Error::Task {
                task: "stray .part cleanup",
                source,
            })??;
        if removed > 0 {
            tracing::info!(removed, "removed unfinished .part files left by a crash");
        }
        Ok(())
    }

    /// What a failed listing says ([`pass::listing_error`]).
    fn listing_error(
        &self,
        name: &crate::model::ProviderName,
        e: &crate::error::ProviderError,
    ) -> String {
        pass::listing_error(&self.settings, name, e)
    }

    /// One pass: list every provider, then download every due item.
    pub async fn pass(&self, cancel: &CancellationToken) -> Result<PassReport, Error> {
        self.pass_scoped(cancel, &Scope::All).await
    }

    /// [`Mirror::pass`] listing only the providers in `scope` and reading the batches it names
    /// by id (webhooks named them); every due item is still downloaded.
    pub async fn pass_scoped(
        &self,
        cancel: &CancellationToken,
        scope: &Scope,
    ) -> Result<PassReport, Error> {
        let started = Instant::now();
        let read = self.providers.iter().filter_map(|p| {
            let name = p.name().as_str();
            if scope.includes(name) {
                return Some((p, Vec::new()));
            }
            let named = scope.named(name);
            (!named.is_empty()).then_some((p, named))
        });
        let listings = futures_util::future::join_all(read.map(|(p, named)| async move {
            let (ledger, observer) = (&self.ledger, self.observer.as_ref());
            let work = async {
                if named.is_empty() {
                    sync::list_provider(p.as_ref(), ledger, observer).await
                } else {
                    sync::refresh_named(p.as_ref(), ledger, observer, &named).await
                }
            };
            let result = tokio::select! {
                r = work => r,
                () = cancel.cancelled() => Err(ListError::Provider(crate::error::ProviderError::Cancelled)),
            };
            (p.name().clone(), result)
        }))
        .await;
        let mut providers = Vec::with_capacity(listings.len());
        for (name, result) in listings {
            let listing = match result {
                Ok(r) => Ok(r),
                Err(ListError::Other(e)) => return Err(e),
                Err(ListError::Provider(e)) => Err(self.listing_error(&name, &e)),
            };
            // Batches read by id say nothing of the listing: its last pass stays what it was.
            if !listing.as_ref().is_ok_and(|r| r.by_id) {
                let error = listing.as_ref().err().map(String::as_str);
                let since = self.ledger.record_pass(&name, Utc::now(), error).await?;
                self.observer.provider_listed(&name, error, since);
            }
            providers.push(ProviderPass {
                name: name.to_string(),
                listing,
            });
        }
        if self.observer.wants_plan() {
            let names: Vec<_> = self
                .providers
                .iter()
                .map(|p| (p.name().clone(), String::new()))
                .collect();
            let ready = self
                .ledger
                .summary(&names, Utc::now(), std::time::Duration::ZERO)
                .await?
                .iter()
                .map(|s| s.items.get("ready").copied().unwrap_or(0))
                .sum();
            self.observer.downloads_planned(ready);
        }
        let drain_started = Utc::now();
        let download = self.downloader.drain(drain_started, cancel).await?;
        // Only a whole pass without ENOSPC means there is room again; one write finishing beside
        // a failing one does not (it would re-arm the alert mid-episode).
        if download.paused == 0 && download.mirrored > 0 {
            self.observer.disk_ok();
        }
        // Items near their deadline, downloadable or not yet: each is alerted about once.
        let margin = self.settings.download.alert_margin;
        for item in self.ledger.at_risk(Utc::now(), margin, 1000).await? {
            self.observer.at_risk(&item);
        }
        // Batches whose last items just landed are done: mark them so the next pass skips them.
        for p in &self.providers {
            for batch in self.ledger.unhandled_batches(p.name()).await? {
                self.ledger.refresh_handled(p.name(), &batch).await?;
            }
            if let Some(pace) = p.pace() {
                self.ledger.save_pace(p.name(), pace).await?;
            }
        }
        let names: Vec<_> = self.providers.iter().map(|p| p.name().clone()).collect();
        let unmirrored = self
            .ledger
            .unmirrored(&names, Utc::now(), drain_started, margin, pass::NAMED)
            .await?;
        let report = PassReport {
            providers,
            download,
            unmirrored,
            elapsed: started.elapsed(),
        };
        report.log();
        Ok(report)
    }
}

/// `sync --once`: one pass, then return its report (the caller picks the exit code).
pub async fn sync_once(
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<PassReport, Error> {
    let observer = Arc::new(DaemonObserver::new(&settings, None).with_progress_bar());
    let mirror = Mirror::open_with(settings, observer.clone()).await?;
    observer.attach(&mirror.ledger);
    let report = mirror.pass(&shutdown).await;
    if let Err(e) = &report {
        alert_if_disk_full(observer.as_ref(), e);
    }
    observer.flush().await;
    report
}

/// A full disk under the ledger stops work (the pass fails): say so to the alert targets too.
fn alert_if_disk_full(observer: &dyn Observer, e: &Error) {
    if e.is_disk_full() {
        observer.disk_full(&e.to_string());
    }
}
