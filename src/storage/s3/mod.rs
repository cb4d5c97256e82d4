//! The mirror in an S3 bucket (scale-out): the same layout as on disk under a key prefix
//! (`<prefix>/<provider>/<batch>/<item>…`, names from [`Storage::item_path`] and friends, so never
//! a raw server id), published exactly once ([`publish`]), and read back, listed and cleaned up
//! here. Large bodies are staged under `<prefix>/.staging/` and committed with a conditional copy.
//!
//! Incomplete multipart uploads (a process killed mid-stream) are not objects: they are aborted
//! on failure when possible, and otherwise need the bucket's `AbortIncompleteMultipartUpload`
//! lifecycle rule; completed staged objects left by a crash are removed by
//! [`S3Store::remove_stray_staging`].

mod error;
mod publish;
mod settings;
mod upload;
mod uploads;

pub use error::{S3Error, S3ErrorKind};
pub use publish::{Outcome, S3Published, S3Staged, S3WriteError};
pub use settings::S3Settings;
pub use upload::{MAX_HELD_PARTS, PART_SIZE, PartWriter};

use std::path::{Component, Path as FsPath};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};

use super::Storage;
use crate::model::Published;
use error::Redactor;

/// The staging area's first segment under the prefix; no provider name starts with a dot.
const STAGING: &str = ".staging";
/// The user metadata holding an object's sha256 (`x-amz-meta-sha256`), set on small results.
const SHA256_META: &str = "sha256";

/// One object of a listing: its key relative to the prefix, size and ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    /// Relative to the prefix, as [`Storage::item_path`] would name it.
    pub rel_path: String,
    pub bytes: u64,
    pub e_tag: Option<String>,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// The mirror under one `s3://bucket/prefix`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

/// Its Debug shows where, never the client (whose Debug shows the access key id).
struct Inner {
    store: AmazonS3,
    bucket: String,
    prefix: String,
    redactor: Redactor,
    /// For the requests the object store crate does not offer ([`uploads`]).
    endpoint: uploads::Endpoint,
    http: reqwest::Client,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A client for `settings.url`; nothing is sent until the first operation.
    pub fn new(settings: &S3Settings) -> Result<Self, S3Error> {
        let (store, loc, redactor, endpoint) = settings::build(settings)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| S3Error::Location {
                url: format!("s3://{}/{}", loc.bucket, loc.prefix),
                reason: e.to_string(),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                bucket: loc.bucket,
                prefix: loc.prefix,
                redactor,
                endpoint,
                http,
            }),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The object key of a relative mirror path (from [`Storage::item_path`],
    /// [`Storage::sidecar_path`], …): only plain UTF-8 components, none of them the staging area,
    /// so every key stays under the prefix and outside `.staging/`.
    pub fn key(&self, rel: &FsPath) -> Result<String, S3Error> {
        let outside = || S3Error::OutsidePrefix {
            path: rel.to_string_lossy().into_owned(),
        };
        let mut parts = Vec::new();
        for c in rel.components() {
            let Component::Normal(p) = c else {
                return Err(outside());
            };
            let p = p.to_str().ok_or_else(outside)?;
            if p.is_empty() || p.contains('/') || (parts.is_empty() && p == STAGING) {
                return Err(outside());
            }
            parts.push(p);
        }
        if parts.is_empty() {
            return Err(outside());
        }
        Ok(self.join(&parts.join("/")))
    }

    /// The key of an item's result, named as on disk.
    pub fn item_key(
        &self,
        provider: &crate::model::ProviderName,
        batch: &crate::model::BatchId,
        item: &crate::model::ItemId,
    ) -> Result<String, S3Error> {
        self.key(&Storage::item_path(provider, batch, item))
    }

    fn join(&self, rel: &str) -> String {
        if self.inner.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.inner.prefix)
        }
    }

    fn staging_dir(&self) -> String {
        self.join(STAGING)
    }

    /// A fresh key in the staging area.
    fn staging_key(&self) -> String {
        let id: [u8; 16] = rand::random();
        format!("{}/{}.part", self.staging_dir(), hex::encode(id))
    }

    fn path(&self, key: &str) -> Result<Path, S3Error> {
        Path::parse(key).map_err(|_| S3Error::OutsidePrefix {
            path: key.to_owned(),
        })
    }

    fn err(&self, key: &str, action: &'static str, e: &object_store::Error) -> S3Error {
        self.inner
            .redactor
            .request(&self.inner.bucket, key, action, e)
    }

    /// Whether a published object is at `rel`.
    pub async fn exists(&self, rel: &FsPath) -> Result<bool, S3Error> {
        let key = self.key(rel)?;
        match self.inner.store.head(&self.path(&key)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(&key, "head", &e)),
        }
    }

    /// The object at `rel` as a stream of chunks.
    pub async fn read(
        &self,
        rel: &FsPath,
    ) -> Result<impl Stream<Item = Result<bytes::Bytes, S3Error>> + use<>, S3Error> {
        let key = self.key(rel)?;
        self.read_key(key).await
    }

    async fn read_key(
        &self,
        key: String,
    ) -> Result<impl Stream<Item = Result<bytes::Bytes, S3Error>> + use<>, S3Error> {
        let got = self
            .inner
            .store
            .get(&self.path(&key)?)
            .await
            .map_err(|e| self.err(&key, "get", &e))?;
        let this = self.clone();
        Ok(got
            .into_stream()
            .map_err(move |e| this.err(&key, "read", &e)))
    }

    /// Size and sha256 of the object at `rel`, streamed (never held whole).
    pub async fn digest(&self, rel: &FsPath) -> Result<Published, S3Error> {
        let key = self.key(rel)?;
        let (bytes, sha256) = self.digest_key(&key).await?;
        Ok(Published {
            rel_path: rel.to_string_lossy().into_owned(),
            bytes,
            sha256,
        })
    }

    async fn digest_key(&self, key: &str) -> Result<(u64, String), S3Error> {
        let mut body = std::pin::pin!(self.read_key(key.to_owned()).await?);
        let mut h = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            n += chunk.len() as u64;
            h.update(&chunk);
        }
        Ok((n, hex::encode(h.finalize())))
    }

    /// The published objects under `rel_dir` (relative to the prefix; empty for all), one page
    /// of the store's listing at a time, the staging area left out.
    pub fn list(&self, rel_dir: &FsPath) -> impl Stream<Item = Result<S3Object, S3Error>> + use<> {
        let this = self.clone();
        let dir = if rel_dir.as_os_str().is_empty() {
            Ok(self.inner.prefix.clone())
        } else {
            self.key(rel_dir)
        };
        let listing = dir.and_then(|d| Ok((self.path(&d)?, d)));
        futures_util::stream::once(async move { listing })
            .map_ok(move |(path, dir)| {
                let this = this.clone();
                let strip = this.inner.prefix.clone();
                this.inner
                    .store
                    .list(Some(&path))
                    .map_err(move |e| this.err(&dir, "list", &e))
                    .try_filter_map(move |meta| {
                        let key = meta.location.to_string();
                        let rel = if strip.is_empty() {
                            key.as_str()
                        } else {
                            key.strip_prefix(&format!("{strip}/")).unwrap_or(&key)
                        };
                        let staged = rel == STAGING || rel.starts_with(&format!("{STAGING}/"));
                        let obj = (!staged).then(|| S3Object {
                            rel_path: rel.to_owned(),
                            bytes: meta.size,
                            e_tag: meta.e_tag,
                            last_modified: meta.last_modified,
                        });
                        futures_util::future::ready(Ok(obj))
                    })
            })
            .try_flatten()
    }

    /// Removes staged objects, and aborts incomplete uploads to the staging area, older than
    /// `older_than` (left by a crash mid-stream or between staging and commit); younger ones may
    /// belong to a publish in progress, here or in another daemon. Returns how many went.
    pub async fn remove_stray_staging(&self, older_than: Duration) -> Result<usize, S3Error> {
        let dir = self.staging_dir();
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let mut listing = self.inner.store.list(Some(&self.path(&dir)?));
        let mut removed = 0;
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.err(&dir, "list", &e))?;
            if meta.last_modified > cutoff {
                continue;
            }
            match self.inner.store.delete(&meta.location).await {
                Ok(()) => removed += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err(meta.location.as_ref(), "delete", &e)),
            }
        }
        let raw_err = |key: &str, action, message| S3Error::Request {
            bucket: self.inner.bucket.clone(),
            key: key.to_owned(),
            action,
            kind: S3ErrorKind::Other,
            message: self.inner.redactor.clean(message),
        };
        let (store, http, at) = (&self.inner.store, &self.inner.http, &self.inner.endpoint);
        let stale = uploads::list(store, http, at, &format!("{dir}/"))
            .await
            .map_err(|m| raw_err(&dir, "list uploads", m))?;
        for u in stale.iter().filter(|u| u.initiated <= cutoff) {
            uploads::abort(store, http, at, u)
                .await
                .map_err(|m| raw_err(&u.key, "abort upload", m))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Removes these published objects if present (an item's sidecars once it ended lost or
    /// failed). Missing objects are fine.
    pub async fn remove_published(&self, rels: &[&FsPath]) -> Result<usize, S3Error> {
        let mut removed = 0;
        for rel in rels {
            let key = self.key(rel)?;
            let path = self.path(&key)?;
            if self.inner.store.head(&path).await.is_err() {
                continue;
            }
            match self.inner.store.delete(&path).await {
                Ok(()) => removed += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err(&key, "delete", &e)),
            }
        }
        Ok(removed)
    }
}
