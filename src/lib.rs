//! batchmirror keeps a local mirror of document-extraction batch results before the provider
//! deletes them.
//!
//! # Layout
//!
//! - [`model`]: ids, states and records shared by every layer; no I/O.
//! - [`error`]: the error enum of each seam and the one "retryable?" rule.
//! - [`config`]: TOML + `BATCHMIRROR__` environment into validated [`config::Settings`]; one
//!   file per section (raw struct, validation, display), shared field parsers in `config/fields`.
//! - [`ledger`]: sole owner of the SQLite ledger (schema, queries, lock, start-up checks).
//! - [`provider`]: the [`provider::Provider`] trait, one adapter per API, retry and rate limiting.
//! - [`storage`]: the mirror layout on disk and atomic, durable publishing.
//! - [`jsoncheck`]: the streaming JSON check of large results.
//! - [`sync`]: one listing pass: provider pages into ledger rows.
//! - [`alerts`]: one alert per event (item at risk or lost, provider failing, disk full).
//! - [`metrics`]: Prometheus counters and gauges, and the `/metrics` endpoint.
//! - [`download`]: the earliest-deadline-first queue and its bounded workers.
//! - [`dropfolder`]: the watched inbox whose files become jobs, and the outbox of their results.
//! - [`webhook`]: the verified receiver of provider events (`POST /hooks/<provider>`), each a
//!   request for a follow-up pass, never a result.
//! - [`scheduler`]: cron ticks that request passes.
//! - [`daemon`]: wires everything: `run` (its tasks in one tracker, one stop deadline),
//!   `sync_once`, `status`, `verify`.
//! - [`cli`]: the command-line definitions `main.rs` dispatches on.
//! - `lab` (feature `sandbox`): the harnesses above the daemon: `demo`, `bench`, the crash loop,
//!   reached from [`cli`] through one flattened `LabCommand`.
//!
//! The workspace beside this crate: `crates/sandbox` (`batchmirror-sandbox`, not published), a
//! local server of the four provider APIs built from their contracts: one folder per provider
//! (`extract_page/`, `llamacloud/`, `perfectparser/`, `talonic/`, each mod = face + router,
//! routes, world), the shared kit (clock, bodies, faults, seeded ids, the `Running` trait) at its
//! root. It imports nothing from here; this crate uses it only in `lab` (feature `sandbox`, on by
//! default) and in the tests, so `cargo check --no-default-features` builds a daemon without any
//! sandbox code.
//!
//! Imports point down the list above, in the layers `tests/layout.rs` names (`model`, `error`
//! and `config` at the bottom; `daemon`, `lab`, `cli` at the top); that test fails on an import
//! running up, on a circle of imports among a folder's files, and on a file of 500 lines.

// Module docs link their private parts for maintainers (`cargo doc --document-private-items`).
#![allow(rustdoc::private_intra_doc_links)]

pub mod alerts;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod download;
pub mod dropfolder;
pub mod error;
pub mod jsoncheck;
#[cfg(feature = "sandbox")]
pub mod lab;
pub mod ledger;
pub mod metrics;
pub mod model;
pub mod provider;
pub mod scheduler;
pub mod storage;
pub mod sync;
pub mod telemetry;
pub mod webhook;
