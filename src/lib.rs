//! batchmirror keeps a local mirror of document-extraction batch results before the provider
//! deletes them.
//!
//! # Layout
//!
//! - [`model`]: ids, states and records shared by every layer; no I/O.
//! - [`error`]: the error enum of each seam and the one "retryable?" rule.
//! - [`config`]: TOML + `BATCHMIRROR__` environment into validated [`config::Settings`].
//! - [`ledger`]: sole owner of the SQLite ledger (schema, queries, lock, start-up checks).
//! - [`provider`]: the [`provider::Provider`] trait, one adapter per API, retry and rate limiting.
//! - [`storage`]: the mirror layout on disk and atomic, durable publishing.
//! - [`jsoncheck`]: the streaming JSON check of large results.
//! - [`sync`]: one listing pass: provider pages into ledger rows.
//! - [`alerts`]: one alert per event (item at risk or lost, provider failing, disk full).
//! - [`metrics`]: Prometheus counters and gauges, and the `/metrics` endpoint.
//! - [`download`]: the earliest-deadline-first queue and its bounded workers.
//! - [`dropfolder`]: the watched inbox whose files become jobs, and the outbox of their results.
//! - [`scheduler`]: cron ticks that request passes.
//! - [`daemon`]: wires everything: `run`, `sync_once`, `status`, `demo`.
//! - [`cli`]: the command-line definitions `main.rs` dispatches on.
//! - `crashloop`: the SIGKILL-and-restart harness of the ledger invariants (feature `sandbox`).
//! - `sandbox`: a local server of the provider APIs (feature `sandbox`).
//! - `bench`: `batchmirror bench`, the performance figures against the sandbox (feature `sandbox`).

pub mod alerts;
#[cfg(feature = "sandbox")]
pub mod bench;
pub mod cli;
pub mod config;
#[cfg(feature = "sandbox")]
pub mod crashloop;
pub mod daemon;
pub mod download;
pub mod dropfolder;
pub mod error;
pub mod jsoncheck;
pub mod ledger;
pub mod metrics;
pub mod model;
pub mod provider;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod scheduler;
pub mod storage;
pub mod sync;
pub mod telemetry;
