//! The sandboxes: faithful local servers of the four provider APIs batchmirror mirrors
//! (extract.page, LlamaCloud, Talonic, PerfectParser), for `batchmirror demo`,
//! `batchmirror sandbox` and the tests. They are built from the providers' published contracts
//! (`providers.md` and the OpenAPI seeds), and this crate depends on nothing of the daemon's: the
//! compiler keeps the client from passing a test because both sides share a bug.
//!
//! # Layout
//!
//! One folder per provider, each laid out the same way: `mod.rs` is the face (the spec, the
//! faults, the stats, the running sandbox and its start and stop), the router and the state its
//! handlers share; `routes.rs` the gate, the read routes and wire shapes; `world.rs` the timeline
//! on the simulated clock and the generated mix; further files the write routes and wire
//! helpers, which import `routes`/`world` but are not imported back; `tests.rs` and
//! `route_tests.rs` its tests over real HTTP.
//!
//! - [`extract_page`]: the extract.page batch API and the S3-style object store its results
//!   redirect to (uploads, batch creation, presigned URLs, result faults and their seeded mix).
//!   Its names are re-exported here ([`Sandbox`], [`SandboxSpec`], [`Fault`], …), as they were
//!   the crate's first.
//! - [`llamacloud`]: the LlamaCloud v1 beta batch-processing API and the parse-result routes.
//! - [`talonic`]: the Talonic batches API.
//! - [`perfectparser`]: the PerfectParser extractions API (JSON, CSV and XLSX exports).
//!
//! The shared kit, at the crate root:
//!
//! - `running`: the [`Running`] trait of a started sandbox and the `Server` every face holds
//!   (its listeners, started and stopped once for all four); `listen` binds and serves one
//!   listener.
//! - `launch`: a generated account of any kind by name ([`start_generated`], [`serve_until`]).
//! - `clock`: the simulated clock (scaled, advanceable) every timeline runs on.
//! - `body`: the streamed, seeded result bodies (exact length up front, never materialised).
//! - `seeded`: the seeded generator, id hashing and the shared pieces of the generated mixes.
//! - `list_faults`: failing list pages ([`ListFault`]) and the half-body cuts.
//! - `fastapi`: the FastAPI error and query conventions extract.page and LlamaCloud share.
//! - `rate`: the per-key rate limit ([`RateLimit`]); `request_log`: the request log
//!   ([`LoggedRequest`]).
//! - `route_check` (tests only): holds each router to its route table in
//!   `shared/providers.md`; `rate_tests`: the rate limit of every sandbox over HTTP.

// Module docs link their private parts for maintainers (`cargo doc --document-private-items`).
#![allow(rustdoc::private_intra_doc_links)]

mod body;
mod clock;
pub mod extract_page;
mod fastapi;
mod launch;
mod list_faults;
mod listen;
pub mod llamacloud;
pub mod perfectparser;
mod rate;
mod request_log;
mod running;
mod seeded;
pub mod talonic;

#[cfg(test)]
mod rate_tests;
#[cfg(test)]
mod route_check;

pub(crate) use clock::Clock;
pub use extract_page::{
    BatchSpec, DEFAULT_API_KEY, Delivery, Fault, FaultMix, ItemSpec, Outcome, ResultFault,
    RetryAfter, Sandbox, SandboxSpec, Stats,
};
pub use launch::{Generated, KINDS, serve_until, start_generated};
pub use list_faults::ListFault;
pub(crate) use listen::bind;
pub(crate) use rate::{Align, Budget, Mark};
pub use rate::{RateLimit, RetryAfterForm};
pub use request_log::LoggedRequest;
pub(crate) use request_log::RequestLog;
pub use running::Running;
