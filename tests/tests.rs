//! Integration tests: the real daemon code in-process (or the real binary) against the sandbox
//! over loopback HTTP, with a real SQLite ledger in a temp dir.

mod common;

// Full mirror, no re-download, pagination, status.
mod mirror;
// 409 / 410 / 429 / redirects / hostile ids: the provider's failure modes.
mod provider_faults;
// SIGKILL mid-mirror and SIGTERM drain, on the real binary.
mod crash;
// The crash-loop harness: repeated SIGKILLs of the real binary, then the ledger invariants.
mod crashloop;
// sd_notify: READY, STATUS, STOPPING, and a watchdog fed only by progress.
mod systemd;
// The Prometheus endpoint and /healthz.
mod metrics;
// Alerts: once per event, never blocking.
mod alerts;
// ENOSPC pauses and resumes (on a real tmpfs, where mounting is allowed).
mod disk_full;
// Exit codes and messages of the command line.
mod cli;
// The LlamaCloud adapter against its sandbox (and the official SDK against the sandbox).
mod provider_llamacloud;
// The Talonic adapter against its sandbox.
mod provider_talonic;
// The PerfectParser adapter against its sandbox.
mod provider_perfectparser;
