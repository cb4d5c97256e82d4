//! One settled file through submission and filing, and start-up recovery of uploads a crash cut
//! short. Every name derived from the file is checked ([`Names`]) before anything is submitted.

use std::ffi::OsString;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use super::files::{self, Refusal, Stamp, Taken};
use super::names::{self, Names};
use super::{DropFolder, Next};
use crate::error::{Error, ProviderError};
use crate::ledger::{NewUpload, Upload, UploadState};
use crate::model::Submission;

/// How a refused submission is treated.
enum Verdict {
    /// The file itself is refused (bad type, too large, invalid): `failed/`.
    Rejected,
    /// Not the file's fault (credits, auth, provider down): keep it, try again later.
    Later,
}

/// The one place that decides whether a refusal is the file's fault.
fn verdict(e: &ProviderError) -> Verdict {
    match e.status() {
        Some(400 | 413 | 415 | 422) => Verdict::Rejected,
        _ => Verdict::Later,
    }
}

/// One line, for `<name>.error.txt` and logs.
pub(super) fn one_line(s: &str) -> String {
    let line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(2000).collect()
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

impl DropFolder {
    /// Takes one settled file: resume, link, submit, file away.
    pub(super) async fn take(&self, name: &OsString, stamp: Stamp) -> Result<Next, Error> {
        let s = &self.settings;
        let (inbox, os_name, cap) = (s.inbox.clone(), name.clone(), s.max_file_bytes);
        let taken = tokio::task::spawn_blocking(move || files::take(&inbox, &os_name, stamp, cap))
            .await
            .map_err(|source| Error::Task {
                task: "drop folder file intake",
                source,
            })?;
        let (name, taken) = match taken {
            Ok(t) => t,
            // Refused for good without asking the provider: recorded, and filed in failed/.
            Err(refusal @ (Refusal::TooLarge { .. } | Refusal::Empty)) => {
                let name = name.to_string_lossy().into_owned();
                let why = refusal.to_string();
                let size = match refusal {
                    Refusal::TooLarge { size, .. } => size,
                    _ => 0,
                };
                let file = NewUpload {
                    name: name.clone(),
                    size,
                    sha256: String::new(),
                };
                let row = self
                    .ledger
                    .upload_begin(&s.provider, file, |_| String::new(), Utc::now())
                    .await?;
                self.reject(&row, &why).await?;
                return Ok(Next::Done);
            }
            Err(r) => return Ok(self.refuse(name, &r)),
        };
        // Before anything is paid for: every name the file will give rise to must be writable.
        if let Err(e) = Names::new(&name, self.name_limit()) {
            tracing::warn!(
                inbox = %s.inbox.display(),
                file = %name,
                "drop folder: refused, left in place: {e}; rename the file shorter"
            );
            return Ok(Next::Ignored);
        }
        let file = NewUpload {
            name: name.clone(),
            size: taken.stamp.size,
            sha256: taken.sha256.clone(),
        };
        let mut resume = None;
        for row in self.ledger.uploads_holding(&s.provider, &name).await? {
            if row.sha256 != taken.sha256 && row.state == UploadState::Accepted {
                // Its job exists; only the file was replaced before the move. The result still
                // comes back under the name; the new content is a new upload.
                self.ledger
                    .upload_filed(row.id, &row.name, Utc::now())
                    .await?;
            } else if row.sha256 != taken.sha256 {
                tracing::warn!(
                    file = %name,
                    upload = row.id,
                    "drop folder: the file was replaced by different content before its first \
                     version was filed; the new content is a new upload"
                );
                let why = "replaced in the inbox by different content before it was filed";
                self.ledger
                    .upload_finish(row.id, UploadState::Failed, Some(why), Utc::now())
                    .await?;
            } else if row.state == UploadState::Accepted {
                // A crash came between the job's creation and the move to done/.
                self.file_done(&row).await?;
                return Ok(Next::Done);
            } else {
                resume = Some(row);
            }
        }
        let row = match resume {
            Some(row) => row,
            None => {
                if s.dedupe
                    && let Some(earlier) = self
                        .ledger
                        .upload_with_content(&s.provider, &taken.sha256)
                        .await?
                {
                    let row = self.ledger.upload_link(&earlier, file, Utc::now()).await?;
                    tracing::info!(
                        file = %name,
                        earlier = %earlier.name,
                        batch = earlier.batch.as_deref().unwrap_or(""),
                        "drop folder: same content as an earlier file: linked to its job, not submitted again"
                    );
                    self.file_done(&row).await?;
                    return Ok(Next::Done);
                }
                let sha = taken.sha256.clone();
                let dedupe = s.dedupe;
                let key = move |id: i64| {
                    if dedupe {
                        format!("batchmirror-{sha}")
                    } else {
                        format!("batchmirror-{sha}-{id}")
                    }
                };
                self.ledger
                    .upload_begin(&s.provider, file, key, Utc::now())
                    .await?
            }
        };
        self.submit(row, taken).await
    }

    async fn submit(&self, row: Upload, taken: Taken) -> Result<Next, Error> {
        let s = &self.settings;
        let submission = Submission {
            content_type: files::content_type(&row.name).to_owned(),
            file_name: row.name.clone(),
            bytes: taken.bytes,
            sha256: taken.sha256,
            idempotency_key: row.idempotency_key.clone(),
            options: s.submit.clone(),
        };
        let started = std::time::Instant::now();
        match self.provider.submit(&submission).await {
            Ok(job) => {
                self.ledger
                    .upload_accepted(row.id, &job.batch, job.item.as_ref(), Utc::now())
                    .await?;
                tracing::info!(
                    file = %row.name,
                    batch = %job.batch,
                    replayed = job.replayed,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "drop folder: submitted"
                );
                self.file_done(&row).await?;
                self.trigger.nudge();
                Ok(Next::Done)
            }
            Err(e) => match verdict(&e) {
                Verdict::Rejected => {
                    self.reject(&row, &e.to_string()).await?;
                    Ok(Next::Done)
                }
                Verdict::Later => {
                    let wait = s
                        .rescan
                        .min(Duration::from_secs(30) * 2u32.pow(row.attempts.min(6)));
                    let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                    let why = one_line(&e.to_string());
                    self.ledger
                        .upload_waiting(row.id, &why, at, Utc::now())
                        .await?;
                    if e.status() == Some(402) {
                        tracing::error!(
                            file = %row.name,
                            retry_in_s = wait.as_secs(),
                            "drop folder: the provider refused the job for lack of credits or \
                             quota (HTTP 402); the file stays in the inbox and is submitted again \
                             later: {why}"
                        );
                    } else {
                        tracing::error!(
                            file = %row.name,
                            retry_in_s = wait.as_secs(),
                            "drop folder: submission failed; the file stays in the inbox and is \
                             submitted again later with the same idempotency key: {why}"
                        );
                    }
                    Ok(Next::RetryAt(Instant::now() + wait))
                }
            },
        }
    }

    /// The name `row`'s file is filed under (before a collision suffix), logged when it is not
    /// the inbox name: filing happens once per upload, so the mapping is logged once.
    fn base_logged(&self, row: &Upload, folder: &std::path::Path) -> String {
        let base = names::base(&row.name, self.name_limit());
        if base != row.name {
            tracing::info!(
                file = %row.name,
                filed_as = %base,
                folder = %folder.display(),
                "drop folder: the name is too long for the names derived from it (outbox, \
                 .error.txt, collision suffixes); shortened, with a hash of the whole name"
            );
        }
        base
    }

    /// Moves an accepted upload's file into `done/` and records the name it got there.
    async fn file_done(&self, row: &Upload) -> Result<(), Error> {
        let s = &self.settings;
        let base = self.base_logged(row, &s.done);
        let (inbox, done, name) = (s.inbox.clone(), s.done.clone(), row.name.clone());
        let as_name = base.clone();
        match blocking(move || files::file_away(&inbox, &name, &done, &as_name)).await {
            Ok(filed) => self.ledger.upload_filed(row.id, &filed, Utc::now()).await?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Gone from the inbox already (moved by the user): the outbox still gets it.
                self.ledger.upload_filed(row.id, &base, Utc::now()).await?;
            }
            Err(e) => tracing::error!(
                file = %row.name,
                "drop folder: submitted, but cannot move the file to {}: {e}; it is retried at the next scan",
                s.done.display()
            ),
        }
        Ok(())
    }

    /// A permanent refusal: the file goes to `failed/` with `<name>.error.txt`.
    async fn reject(&self, row: &Upload, why: &str) -> Result<(), Error> {
        let s = &self.settings;
        let why = one_line(why);
        tracing::error!(file = %row.name, "drop folder: the file was refused and moved to {}: {why}", s.failed.display());
        let base = self.base_logged(row, &s.failed);
        let (inbox, failed, name) = (s.inbox.clone(), s.failed.clone(), row.name.clone());
        let note = format!("{why}\n");
        let limit = self.name_limit();
        let filed = blocking(move || {
            let filed = files::file_away(&inbox, &name, &failed, &base)?;
            let error_txt = names::derived(&filed, ".error.txt", limit);
            files::publish(&failed, &error_txt, note.as_bytes())?;
            Ok(filed)
        })
        .await;
        if let Ok(f) = &filed {
            self.ledger.upload_filed(row.id, f, Utc::now()).await?;
        }
        self.ledger
            .upload_finish(row.id, UploadState::Rejected, Some(&why), Utc::now())
            .await?;
        if let Err(e) = filed {
            tracing::error!(file = %row.name, "drop folder: cannot move the refused file: {e}");
        }
        Ok(())
    }

    /// Accepted uploads a crash left unfiled whose file is no longer in the inbox keep their name
    /// for the outbox (those still in the inbox are filed when the scan takes them again).
    pub(super) async fn recover(&self) -> Result<(), Error> {
        let s = &self.settings;
        for row in self
            .ledger
            .uploads_in(&s.provider, UploadState::Accepted)
            .await?
        {
            if row.filed_as.is_none() && !s.inbox.join(&row.name).exists() {
                let base = names::base(&row.name, self.name_limit());
                self.ledger.upload_filed(row.id, &base, Utc::now()).await?;
            }
        }
        Ok(())
    }
}
