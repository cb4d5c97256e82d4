//! SIGHUP in `run`: read the config again, apply what can change under a running daemon, and
//! name what needs a restart. A config that no longer loads changes nothing: the daemon keeps
//! running on the one it has, and says so.
//!
//! Applied from the next pass: `schedule.cron`, `log.level` (unless `-v`/`-q` or `RUST_LOG` chose
//! it) and every `[download]` key but the two timeouts, which are built into the providers' HTTP
//! clients. The rest (ledger, storage root, providers, metrics and webhook listeners, alerts, drop folder, log
//! format) is opened once at start: changing it live would mean reopening the ledger or the
//! providers' pacing state under running work, so a restart is the honest answer.

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::Mirror;
use crate::config::{self, Settings};
use crate::download::Downloader;
use crate::telemetry::{self, LevelChange};

/// Reload requests for `run`, and the config file they read again.
#[derive(Debug)]
pub struct Reload {
    path: PathBuf,
    requests: mpsc::Receiver<()>,
}

impl Reload {
    /// Requests that arrive through `requests` (a signal handler's), for the config at `path`.
    pub(super) fn new(path: &Path, requests: mpsc::Receiver<()>) -> Self {
        Self {
            path: path.to_owned(),
            requests,
        }
    }

    /// Waits for the next request; never returns once the sender is gone.
    pub(super) async fn requested(&mut self) {
        if self.requests.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// Reads the config again. The error is logged, never returned: the daemon runs on.
    pub(super) fn load(&self) -> Option<Settings> {
        match config::load(&self.path) {
            Ok(fresh) => {
                for warning in config::warnings(&fresh, &self.path) {
                    tracing::warn!("{warning}");
                }
                Some(fresh)
            }
            Err(e) => {
                tracing::error!(
                    "config {} not reloaded, still running on the config loaded before: {e}",
                    self.path.display()
                );
                None
            }
        }
    }
}

/// What a reloaded config changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Changes {
    /// `key: old → new`, applied from the next pass.
    pub live: Vec<String>,
    /// Keys (or sections) that changed but take effect only after a restart.
    pub restart: Vec<&'static str>,
}

/// Compares the running config with a reloaded one.
pub(super) fn changes(old: &Settings, new: &Settings) -> Changes {
    let mut c = Changes::default();
    if old.schedule_cron != new.schedule_cron {
        c.live.push(format!(
            "schedule.cron {:?} → {:?}",
            old.schedule_cron, new.schedule_cron
        ));
    }
    if old.log.level != new.log.level {
        c.live.push(format!(
            "log.level {:?} → {:?}",
            old.log.level, new.log.level
        ));
    }
    let (od, nd) = (&old.download, &new.download);
    if od.connect_timeout != nd.connect_timeout {
        c.restart.push("download.connect_timeout");
    }
    if od.read_timeout != nd.read_timeout {
        c.restart.push("download.read_timeout");
    }
    if *od != live_download(old, new) {
        c.live.push("[download]".to_owned());
    }
    let restart_only = [
        ("ledger.path", old.ledger_path != new.ledger_path),
        ("storage.root", old.storage_root != new.storage_root),
        ("[[provider]]", old.providers != new.providers),
        ("[metrics]", old.metrics != new.metrics),
        ("[alerts]", old.alerts != new.alerts),
        ("[dropfolder]", old.dropfolder != new.dropfolder),
        ("[webhook]", old.webhook != new.webhook),
        ("log.format", old.log.format != new.log.format),
    ];
    c.restart.extend(
        restart_only
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| key),
    );
    c
}

/// `new`'s `[download]` with the running timeouts, which only a restart changes.
fn live_download(old: &Settings, new: &Settings) -> config::DownloadSettings {
    config::DownloadSettings {
        connect_timeout: old.download.connect_timeout,
        read_timeout: old.download.read_timeout,
        ..new.download.clone()
    }
}

impl Mirror {
    /// Takes the live part of `fresh` (see the module doc) and logs every change, applied or
    /// not. Returns the new cron expression when the schedule changed, for the caller to restart
    /// its scheduler with.
    pub(super) fn reconfigure(&mut self, fresh: &Settings) -> Option<String> {
        let c = changes(&self.settings, fresh);
        if c.live.is_empty() && c.restart.is_empty() {
            tracing::info!("config reloaded: nothing changed");
            return None;
        }
        for key in &c.restart {
            tracing::warn!(
                "config reloaded: {key} changed, which takes effect only after a restart; \
                 still running with the value loaded at start"
            );
        }
        for change in &c.live {
            tracing::info!("config reloaded: {change}, applied from the next pass");
        }
        if self.settings.log.level != fresh.log.level {
            match telemetry::set_level(&fresh.log.level) {
                Ok(LevelChange::Applied | LevelChange::NotOurs) => {}
                Ok(LevelChange::PinnedBy(who)) => {
                    tracing::warn!("log.level not applied: {who} chose the level, and wins");
                }
                Err(e) => tracing::error!("log.level not applied: {e}"),
            }
            self.settings.log.level.clone_from(&fresh.log.level);
        }
        let download = live_download(&self.settings, fresh);
        if self.settings.download != download {
            // Between passes no download is in flight, so a fresh downloader loses nothing.
            self.downloader = Downloader::new(
                self.ledger.clone(),
                self.storage.clone(),
                &self.providers,
                download.clone(),
                self.observer.clone(),
            );
            self.settings.download = download;
        }
        (self.settings.schedule_cron != fresh.schedule_cron).then(|| {
            self.settings.schedule_cron.clone_from(&fresh.schedule_cron);
            fresh.schedule_cron.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!(
                "[ledger]\npath = \"/var/lib/bm/ledger.db\"\n[storage]\nroot = \"/var/lib/bm/out\"\n\
                 [[provider]]\nname = \"ep\"\nkind = \"extract_page\"\n\
                 base_url = \"https://api.extract.page\"\napi_key = \"k\"\n{extra}"
            ),
        )
        .unwrap();
        config::load(&path).unwrap()
    }

    #[test]
    fn the_same_config_changes_nothing() {
        assert_eq!(changes(&settings(""), &settings("")), Changes::default());
    }

    #[test]
    fn schedule_level_and_download_caps_are_live_and_the_rest_waits_for_a_restart() {
        let old = settings("");
        let new = settings(
            "[schedule]\ncron = \"0 */7 * * * *\"\n[log]\nlevel = \"debug\"\n\
             [download]\nconcurrency = 2\nread_timeout = \"5s\"\n",
        );
        let c = changes(&old, &new);
        assert_eq!(c.live.len(), 3, "{c:?}");
        assert!(c.live[0].starts_with("schedule.cron"), "{c:?}");
        assert!(c.live[1].starts_with("log.level"), "{c:?}");
        assert_eq!(c.live[2], "[download]");
        assert_eq!(c.restart, ["download.read_timeout"]);
    }

    #[test]
    fn a_timeout_alone_is_not_a_live_download_change() {
        let c = changes(
            &settings(""),
            &settings("[download]\nconnect_timeout = \"3s\"\n"),
        );
        assert!(c.live.is_empty(), "{c:?}");
        assert_eq!(c.restart, ["download.connect_timeout"]);
    }

    #[test]
    fn a_changed_key_or_provider_needs_a_restart() {
        let mut new = settings("[log]\nformat = \"json\"\n");
        new.providers[0].max_retries += 1;
        let c = changes(&settings(""), &new);
        assert!(c.live.is_empty(), "{c:?}");
        assert_eq!(c.restart, ["[[provider]]", "log.format"]);
    }
}
