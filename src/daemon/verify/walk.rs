//! The walks of `verify` beyond the mirrored results: stray `.part` files, unknown files, whole
//! directories no ledger batch claims (walked with an explicit stack, never recursively), the
//! root's own entries, and the progress bar.

use std::collections::HashSet;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Finding, FindingKind, Verifier};
use crate::config::Settings;
use crate::error::Error;
use crate::storage::{EntryKind, PART_SUFFIX, QUARANTINE, ROOT_LOCK};

impl Verifier {
    pub(super) async fn part(&mut self, provider: Option<&str>, rel: String) -> Result<(), Error> {
        if self.report.writer_running {
            self.report.in_flight += 1;
            return Ok(());
        }
        let mut finding = Finding::path(FindingKind::Part, provider, rel.clone());
        if self.opts.repair {
            self.blocking(move |m| m.remove(&rel)).await?;
            self.repaired().parts_removed += 1;
            finding.repair = Some("removed".into());
        }
        self.report.add(finding);
        Ok(())
    }

    pub(super) async fn unknown(
        &mut self,
        provider: Option<&str>,
        rel: String,
    ) -> Result<(), Error> {
        let mut finding = Finding::path(FindingKind::Unknown, provider, rel);
        if self.opts.repair {
            finding.repair = Some("left alone".into());
        }
        self.report.add(finding);
        Ok(())
    }

    /// Reports every file at or under `rel` as unknown (`.part` ones as stray), walking
    /// directories with an explicit stack.
    pub(super) async fn unknown_tree(
        &mut self,
        provider: Option<&str>,
        rel: String,
        kind: EntryKind,
    ) -> Result<(), Error> {
        let mut stack = vec![(rel, kind)];
        while let Some((rel, kind)) = stack.pop() {
            match kind {
                EntryKind::Dir if self.excluded.contains(&rel) => {}
                EntryKind::Dir => {
                    let at = rel.clone();
                    let listed = self.blocking(move |m| m.list(&at)).await?;
                    for e in listed.into_iter().flatten().rev() {
                        stack.push((format!("{rel}/{}", e.name), e.kind));
                    }
                }
                EntryKind::File if rel.ends_with(PART_SUFFIX) => self.part(provider, rel).await?,
                _ => self.unknown(provider, rel).await?,
            }
        }
        Ok(())
    }

    /// The root's own entries: providers were walked already; the lock, the quarantine and the
    /// drop folder's directories belong there; anything else is unknown.
    pub(super) async fn root_level(&mut self, providers: &[String]) -> Result<(), Error> {
        let listed = self.blocking(|m| m.list("")).await?;
        for e in listed.into_iter().flatten() {
            let ours = match e.kind {
                EntryKind::Dir => providers.contains(&e.name) || e.name == QUARANTINE,
                EntryKind::File => e.name == ROOT_LOCK,
                EntryKind::Other => false,
            };
            if !ours {
                self.unknown_tree(None, e.name, e.kind).await?;
            }
        }
        Ok(())
    }
}

/// The drop folder's directories that lie under the root, relative to it.
pub(super) fn drop_folder_dirs(settings: &Settings) -> HashSet<String> {
    let Some(d) = &settings.dropfolder else {
        return HashSet::new();
    };
    let root = settings
        .storage_root
        .canonicalize()
        .unwrap_or_else(|_| settings.storage_root.clone());
    [&d.inbox, &d.done, &d.failed, &d.outbox]
        .into_iter()
        .filter_map(|p| {
            let p = p.canonicalize().unwrap_or_else(|_| p.clone());
            Some(p.strip_prefix(&root).ok()?.to_string_lossy().into_owned())
        })
        .filter(|rel| !rel.is_empty())
        .collect()
}

pub(super) fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} verify {pos}/{len} files [{elapsed}, ETA {eta}]")
    {
        bar.set_style(style);
    }
    // Both draw on stderr: log lines must clear the bar first, not run into it.
    crate::telemetry::print_through(Some(bar.clone()));
    bar
}
