//! Integration tests: the real daemon code in-process (or the real binary) against the sandbox
//! over loopback HTTP, with a real SQLite ledger in a temp dir.

mod common;

// The house rules: layers, no import circles, file lengths, a sandbox free of the daemon.
mod layout;

// Full mirror, no re-download, pagination, status.
mod mirror;
// The ledger contract on SQLite and PostgreSQL; leases and walker turns of several daemons.
mod ledger_contract;
// The S3 storage backend on a real SeaweedFS: exactly-once publishing, multipart, cleanup.
mod storage_s3;
// Resumable listing walks: a failing list page is reached by the next pass, per provider.
mod walks;
// The learned pacing cap is kept across restarts.
mod pace_restart;
// 409 / 410 / 429 / redirects / hostile ids: the provider's failure modes.
mod provider_faults;
// Injected faults, one test each: the item ends right, nothing lost or corrupted (issue 7).
mod faults;
// An outage near deadlines on the test clock, a random fault mix, the sandbox's fault switch.
mod faults_outage;
// Issue 17: in-pass retries, the low-speed guard, exit 1 for anything due but not mirrored.
mod in_pass;
// Sidecars staged and published only with their result; a layout where no names collide.
mod sidecars;
// SIGKILL mid-mirror and SIGTERM drain, on the real binary.
mod crash;
// Locks on files, not names: a hard-linked ledger, two daemons on one root, readers unhindered.
mod locks;
// The crash-loop harness: repeated SIGKILLs of the real binary, then the ledger invariants.
mod crashloop;
// sd_notify: READY, STATUS, STOPPING, and a watchdog fed only by progress.
mod systemd;
// SIGHUP in `run`: the config read again, what is live applied, a bad one refused.
mod reload;
// The Prometheus endpoint and /healthz.
mod metrics;
// Alerts: once per event, never blocking.
mod alerts;
// ENOSPC pauses and resumes (on a real tmpfs, where mounting is allowed).
mod disk_full;
// Exit codes and messages of the command line.
mod cli;
// Issue 16's command-line habits: -v/-q, JSON logs, NO_COLOR.
mod cli_logs;
// `status --items`: the items themselves, by state and provider.
mod cli_items;
// check-config's output loads back without its secrets; errors name providers by name.
mod cli_config;
// The LlamaCloud adapter against its sandbox (and the official SDK against the sandbox).
mod provider_llamacloud;
// The Talonic adapter against its sandbox.
mod provider_talonic;
// The PerfectParser adapter against its sandbox.
mod provider_perfectparser;
// Issue 15: PerfectParser results in bulk, one request per extraction, and their fallback.
mod provider_perfectparser_bulk;
// The drop folder: inbox → job → outbox, exactly once.
mod dropfolder;
mod dropfolder_perfectparser;
// Submitting files (extract.page upload flow, PerfectParser multipart) through the built provider.
mod provider_submit;
// `batchmirror bench` at a small size on the real binary.
mod bench;
// Adaptive pacing converges on each sandbox's rate limit, obeys its waits, recovers (issue 15).
mod pacing;
// `sync --once --dry-run`: lists and plans on a copy of the ledger, fetches and writes nothing.
mod dryrun;
// `verify`: each finding, --repair and the pass after it, lost past the deadline, exit codes.
mod verify;
// Issue 13: the verified webhook receiver; push latency, refused deliveries, polling as backstop.
mod webhook;
