//! Publishing to S3 exactly once. A small body (up to the local backend's small-body threshold)
//! is held in memory and created with `If-None-Match: *` (`PutMode::Create`), its sha256 stored
//! as user metadata. A large one is streamed as a multipart upload to a staging key (bounded
//! memory, [`PartWriter`]), then committed with a conditional copy, and the staged object removed;
//! a commit marker decides first which publisher may copy at all (`commit_turn`).
//! A key already taken is "already published" when it holds the same bytes (size and sha256:
//! from the metadata when present, else by streaming it), and a [`S3Error::Conflict`] otherwise:
//! nothing is ever overwritten. Sidecars are committed before their result, the result last.

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};
use sha2::{Digest, Sha256};

use super::error::S3Error;
use super::upload::PartWriter;
use super::{S3Store, SHA256_META};
use crate::jsoncheck::JsonCheck;
use crate::model::Published;
use crate::storage::{Body, Head, HeadError, publish::check_small, read_head};

/// Why a body could not be published to S3.
#[derive(Debug, thiserror::Error)]
pub enum S3WriteError<E: std::error::Error + 'static> {
    /// The body stream failed (connection reset, truncated body, …).
    #[error(transparent)]
    Body(E),
    #[error("result is larger than the {cap}-byte cap")]
    TooLarge { cap: u64 },
    #[error("result is not valid JSON: {0}")]
    InvalidJson(String),
    #[error(transparent)]
    S3(#[from] S3Error),
}

impl<E: std::error::Error + 'static> From<HeadError<E>> for S3WriteError<E> {
    fn from(e: HeadError<E>) -> Self {
        match e {
            HeadError::TooLarge { cap } => S3WriteError::TooLarge { cap },
            HeadError::Body(e) => S3WriteError::Body(e),
        }
    }
}

impl<E: std::error::Error + 'static> S3WriteError<E> {
    /// Whether fetching and publishing again later may succeed: a failed body stream or a
    /// transient store failure ([`S3Error::is_retryable`]); never a conflict, a cap or bad JSON.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Body(_) => true,
            Self::S3(e) => e.is_retryable(),
            Self::TooLarge { .. } | Self::InvalidJson(_) => false,
        }
    }
}

/// Whether this publish created the object or found it already there with the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// The key held exactly these bytes already (an earlier attempt, or another daemon).
    AlreadyPublished,
}

/// What a publish produced: what the ledger records for the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Published {
    /// `rel_path` relative to the prefix, as on disk; size and sha256 of the bytes.
    pub published: Published,
    /// The full object key.
    pub key: String,
    pub e_tag: Option<String>,
    pub outcome: Outcome,
    /// The most body bytes held in memory at once while it streamed.
    pub peak_buffered: usize,
}

/// A body checked and held (small) or uploaded to the staging area (large), not published yet:
/// a sidecar waiting for its item's result. Dropped unpublished, its staged object is removed in
/// the background (and by [`S3Store::remove_stray_staging`] if the process dies first).
#[derive(Debug)]
pub struct S3Staged {
    store: S3Store,
    key: String,
    body: Staged,
    published: Published,
    peak: usize,
}

#[derive(Debug)]
enum Staged {
    Memory(Vec<Bytes>),
    Object(String),
    /// Committed: nothing left to remove.
    Done,
}

impl S3Staged {
    /// Size, digest and relative path of the staged body.
    pub fn published(&self) -> &Published {
        &self.published
    }
}

impl Drop for S3Staged {
    fn drop(&mut self) {
        let Staged::Object(staging) = std::mem::replace(&mut self.body, Staged::Done) else {
            return;
        };
        if let (Ok(handle), Ok(path)) = (
            tokio::runtime::Handle::try_current(),
            self.store.path(&staging),
        ) {
            let store = self.store.clone();
            handle.spawn(async move { store.inner.store.delete(&path).await });
        }
    }
}

impl S3Store {
    /// Publishes `body` at `rel` after committing `sidecars`: the result's object is the item's
    /// completion mark. A body that fails publishes nothing (neither result nor sidecar).
    pub async fn write_atomic<E: std::error::Error + 'static>(
        &self,
        rel: &std::path::Path,
        body: impl Body<E>,
        cap: u64,
        validate_json: bool,
        sidecars: Vec<S3Staged>,
    ) -> Result<S3Published, S3WriteError<E>> {
        let result = self.stage(rel, body, cap, validate_json).await?;
        for sidecar in sidecars {
            sidecar.commit().await?;
        }
        Ok(result.commit().await?)
    }

    /// Checks and holds `body` (small) or streams it to the staging area (large), without
    /// publishing it: a sidecar, committed by [`S3Store::write_atomic`] with its item's result.
    pub async fn stage<E: std::error::Error + 'static>(
        &self,
        rel: &std::path::Path,
        mut body: impl Body<E>,
        cap: u64,
        validate_json: bool,
    ) -> Result<S3Staged, S3WriteError<E>> {
        let key = self.key(rel)?;
        let rel_path = rel.to_string_lossy().into_owned();
        let Head {
            chunks: head,
            held,
            small,
        } = read_head(&mut body, cap).await?;
        let (body, (bytes, sha256), peak) = if small {
            let digest = check_small(&head, validate_json).map_err(S3WriteError::InvalidJson)?;
            (Staged::Memory(head), digest, held as usize)
        } else {
            let staging = self.staging_key();
            let rest = futures_util::stream::iter(head.into_iter().map(Ok)).chain(body);
            let (digest, peak) = self.upload(&staging, rest, cap, validate_json).await?;
            (Staged::Object(staging), digest, peak)
        };
        Ok(S3Staged {
            store: self.clone(),
            key,
            body,
            published: Published {
                rel_path,
                bytes,
                sha256,
            },
            peak,
        })
    }

    /// Streams a body into a multipart upload at `staging`, checking and digesting it on the way;
    /// on any failure the upload is aborted and nothing is left.
    async fn upload<E: std::error::Error + 'static>(
        &self,
        staging: &str,
        mut body: impl Body<E>,
        cap: u64,
        validate_json: bool,
    ) -> Result<((u64, String), usize), S3WriteError<E>> {
        let path = self.path(staging)?;
        let upload = (self.inner.store.put_multipart(&path).await)
            .map_err(|e| self.err(staging, "start upload", &e))?;
        let mut writer = PartWriter::new(upload);
        let mut check = validate_json.then(JsonCheck::new);
        let mut hash = Sha256::new();
        let mut n = 0u64;
        let failure = loop {
            let chunk = match body.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => break S3WriteError::Body(e),
                None => match check.take().map_or(Ok(()), JsonCheck::finish) {
                    Ok(()) => {
                        let peak = writer.peak_held();
                        return match writer.finish().await {
                            Ok(_) => Ok(((n, hex::encode(hash.finalize())), peak)),
                            Err(e) => Err(self.err(staging, "complete upload", &e).into()),
                        };
                    }
                    Err(e) => break S3WriteError::InvalidJson(e),
                },
            };
            n += chunk.len() as u64;
            if n > cap {
                break S3WriteError::TooLarge { cap };
            }
            if let Some(Err(e)) = check.as_mut().map(|c| c.feed(&chunk)) {
                break S3WriteError::InvalidJson(e);
            }
            hash.update(&chunk);
            if let Err(e) = writer.write(chunk).await {
                break self.err(staging, "upload part", &e).into();
            }
        };
        writer.abort().await;
        Err(failure)
    }

    /// Takes the turn to commit a large result at `key`. SeaweedFS let two concurrent conditional
    /// copies to one key both succeed (the CI run of stop 25), so the copy's condition alone does
    /// not decide: a small marker created with `If-None-Match: *` (which held under 8 concurrent
    /// creators) names the sha256 being committed. A marker naming another digest is a
    /// [`S3Error::Conflict`]; one naming ours (the same bytes from another publisher, or ours
    /// before a crash) lets the conditional copy decide. The turn's holder removes the marker
    /// after its copy (returned here for that); one left by a crash is in the staging area, which
    /// the stray cleanup sweeps.
    async fn commit_turn(
        &self,
        key: &str,
        bytes: u64,
        sha256: &str,
    ) -> Result<object_store::path::Path, S3Error> {
        let name = hex::encode(Sha256::digest(key.as_bytes()));
        let marker_key = format!("{}/commit-{name}", self.staging_dir());
        let marker = self.path(&marker_key)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        // A marker can vanish between our failed create and our read (its holder finished):
        // then the turn is free again, and the conditional copy will see the holder's object.
        for _ in 0..3 {
            let payload = PutPayload::from(sha256.to_owned());
            match self
                .inner
                .store
                .put_opts(&marker, payload, opts.clone())
                .await
            {
                Ok(_) => return Ok(marker),
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(self.err(&marker_key, "create", &e)),
            }
            let read = |e: object_store::Error| self.err(&marker_key, "read", &e);
            let theirs = match self.inner.store.get(&marker).await {
                Ok(got) => got.bytes().await.map_err(read)?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(read(e)),
            };
            if theirs.as_ref() == sha256.as_bytes() {
                return Ok(marker);
            }
            return Err(S3Error::Conflict {
                bucket: self.inner.bucket.clone(),
                key: key.to_owned(),
                existing: format!(
                    "a commit of sha256 {} under way or done",
                    String::from_utf8_lossy(&theirs)
                ),
                bytes,
                sha256: sha256.to_owned(),
            });
        }
        Err(S3Error::Request {
            bucket: self.inner.bucket.clone(),
            key: marker_key,
            action: "take the commit turn",
            kind: super::error::S3ErrorKind::Other,
            message: "the commit marker kept changing hands".to_owned(),
        })
    }

    /// The ETag of the object at `key` when it holds exactly `bytes` bytes with this `sha256`,
    /// else a [`S3Error::Conflict`].
    async fn recognise(
        &self,
        key: &str,
        bytes: u64,
        sha256: &str,
    ) -> Result<Option<String>, S3Error> {
        let path = self.path(key)?;
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        let got = (self.inner.store.get_opts(&path, opts).await)
            .map_err(|e| self.err(key, "head", &e))?;
        let recorded = got
            .attributes
            .get(&Attribute::Metadata(SHA256_META.into()))
            .map(|v| v.as_ref().to_owned());
        let (size, e_tag) = (got.meta.size, got.meta.e_tag);
        let theirs = match recorded {
            Some(sha) if size == bytes => sha,
            Some(_) => String::new(),
            None if size == bytes => self.digest_key(key).await?.1,
            None => String::new(),
        };
        if theirs == sha256 {
            return Ok(e_tag);
        }
        Err(S3Error::Conflict {
            bucket: self.inner.bucket.clone(),
            key: key.to_owned(),
            existing: format!("{size} bytes, ETag {}", e_tag.unwrap_or_default()),
            bytes,
            sha256: sha256.to_owned(),
        })
    }
}

impl S3Staged {
    /// Publishes the staged body at its key, exactly once.
    pub async fn commit(mut self) -> Result<S3Published, S3Error> {
        let store = self.store.clone();
        let key = self.key.clone();
        let path = store.path(&key)?;
        let Published { bytes, sha256, .. } = self.published.clone();
        let created = match std::mem::replace(&mut self.body, Staged::Done) {
            Staged::Memory(chunks) => {
                let mut attributes = Attributes::new();
                attributes.insert(
                    Attribute::Metadata(SHA256_META.into()),
                    sha256.clone().into(),
                );
                let opts = PutOptions {
                    mode: PutMode::Create,
                    attributes,
                    ..Default::default()
                };
                let payload = PutPayload::from_iter(chunks);
                match store.inner.store.put_opts(&path, payload, opts).await {
                    Ok(r) => Ok(r.e_tag),
                    Err(e) => Err(e),
                }
            }
            Staged::Object(staging) => {
                let from = store.path(&staging)?;
                let turn = store.commit_turn(&key, bytes, &sha256).await;
                let copied = match &turn {
                    Ok(marker) => {
                        let copied = store.inner.store.copy_if_not_exists(&from, &path).await;
                        // Once the copy is over the object (or its absence) speaks for itself;
                        // a marker left by a crash goes with the stray cleanup.
                        let _ = store.inner.store.delete(marker).await;
                        Some(copied)
                    }
                    Err(_) => None,
                };
                // The staged copy is not needed any more, whoever won; a failure here leaves it to
                // the stray cleanup.
                let _ = store.inner.store.delete(&from).await;
                turn?;
                match copied.expect("copied whenever the turn was ours") {
                    Ok(()) => match store.inner.store.head(&path).await {
                        Ok(meta) if meta.size == bytes => Ok(meta.e_tag),
                        Ok(meta) => {
                            return Err(S3Error::Conflict {
                                bucket: store.inner.bucket.clone(),
                                key,
                                existing: format!("{} bytes after the copy", meta.size),
                                bytes,
                                sha256,
                            });
                        }
                        Err(e) => return Err(store.err(&key, "head", &e)),
                    },
                    Err(e) => Err(e),
                }
            }
            Staged::Done => unreachable!("a staged body is committed once (commit takes self)"),
        };
        let (e_tag, outcome) = match created {
            Ok(e_tag) => (e_tag, Outcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) => (
                store.recognise(&key, bytes, &sha256).await?,
                Outcome::AlreadyPublished,
            ),
            Err(e) => return Err(store.err(&key, "create", &e)),
        };
        Ok(S3Published {
            published: self.published.clone(),
            key,
            e_tag,
            outcome,
            peak_buffered: self.peak,
        })
    }
}
