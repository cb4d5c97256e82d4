//! Starting a generated sandbox of any provider kind, for `batchmirror demo` and `batchmirror
//! sandbox --provider K`. The sandboxes are servers, not clients, so matching on the kind's name
//! here is the server side's own dispatch (the client's one match on kinds is the provider factory).

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;

use super::llamacloud::{LlamaSandbox, LlamaSpec};
use super::perfectparser::{PerfectSandbox, PerfectSpec};
use super::talonic::{TalonicSandbox, TalonicSpec};
use super::{FaultMix, ResultFault, Sandbox, SandboxSpec};

/// The provider kinds a sandbox exists for, as config names them.
pub const KINDS: [&str; 4] = ["extract_page", "llamacloud", "talonic", "perfectparser"];

/// The size and identity of a generated sandbox account.
#[derive(Debug, Clone)]
pub struct Generated {
    pub batches: usize,
    pub items_per_batch: usize,
    pub result_bytes: usize,
    pub seed: u64,
    /// The key clients must send.
    pub api_key: String,
    /// Faults drawn at random for `fault_rate` of the result requests (extract_page only).
    pub faults: Vec<ResultFault>,
    pub fault_rate: f64,
}

type StopFn = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A running sandbox of some kind.
pub struct Running {
    base_url: String,
    stop: StopFn,
}

impl Running {
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub async fn stop(self) {
        (self.stop)().await;
    }
}

/// Starts a generated account of `kind` on `listen`.
pub async fn start_generated(
    kind: &str,
    g: &Generated,
    listen: SocketAddr,
) -> std::io::Result<Running> {
    let (b, n, bytes, seed) = (g.batches, g.items_per_batch, g.result_bytes, g.seed);
    if !g.faults.is_empty() && kind != "extract_page" {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "fault injection is built into the extract_page sandbox only",
        ));
    }
    match kind {
        "extract_page" => {
            let mut spec = SandboxSpec::generated(b, n, bytes, seed);
            spec.api_key = g.api_key.clone();
            let sb = Sandbox::start(spec, listen).await?;
            if !g.faults.is_empty() {
                sb.set_fault_mix(Some(FaultMix {
                    faults: g.faults.clone(),
                    rate: g.fault_rate,
                    seed,
                }));
            }
            Ok(Running {
                base_url: sb.base_url(),
                stop: Box::new(move || Box::pin(sb.stop())),
            })
        }
        "llamacloud" => {
            let mut spec = LlamaSpec::generated(b, n, bytes, seed);
            spec.api_key = g.api_key.clone();
            let sb = LlamaSandbox::start(spec, listen).await?;
            Ok(Running {
                base_url: sb.base_url(),
                stop: Box::new(move || Box::pin(sb.stop())),
            })
        }
        "talonic" => {
            let mut spec = TalonicSpec::generated(b, n, bytes, seed);
            spec.api_key = g.api_key.clone();
            let sb = TalonicSandbox::start(spec, listen).await?;
            Ok(Running {
                base_url: sb.base_url(),
                stop: Box::new(move || Box::pin(sb.stop())),
            })
        }
        "perfectparser" => {
            let mut spec = PerfectSpec::generated(b, n, bytes, seed);
            spec.api_key = g.api_key.clone();
            let sb = PerfectSandbox::start(spec, listen).await?;
            Ok(Running {
                base_url: sb.base_url(),
                stop: Box::new(move || Box::pin(sb.stop())),
            })
        }
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "no sandbox for kind {other:?}: available are {}",
                KINDS.join(", ")
            ),
        )),
    }
}

/// Starts, prints `listening on http://HOST:PORT` (flushed), serves until `shutdown`, stops.
pub async fn serve_until(
    kind: &str,
    g: &Generated,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let running = start_generated(kind, g, listen).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", running.base_url())?;
        out.flush()?;
    }
    shutdown.await;
    running.stop().await;
    Ok(())
}
