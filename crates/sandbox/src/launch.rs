//! Starting a generated sandbox of any provider kind, for `batchmirror demo` and `batchmirror
//! sandbox --provider K`. The sandboxes are servers, not clients, so matching on the kind's name
//! here is the server side's own dispatch (the client's one match on kinds is the provider factory).

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;

use super::llamacloud::{LlamaSandbox, LlamaSpec};
use super::perfectparser::{PerfectSandbox, PerfectSpec};
use super::talonic::{TalonicSandbox, TalonicSpec};
use super::{FaultMix, ResultFault, Running, Sandbox, SandboxSpec};

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

/// Starts a generated account of `kind` on `listen`.
pub async fn start_generated(
    kind: &str,
    g: &Generated,
    listen: SocketAddr,
) -> std::io::Result<Box<dyn Running>> {
    let (b, n, bytes, seed, api_key) = (
        g.batches,
        g.items_per_batch,
        g.result_bytes,
        g.seed,
        g.api_key.clone(),
    );
    if !g.faults.is_empty() && kind != "extract_page" {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "fault injection is built into the extract_page sandbox only",
        ));
    }
    let mix = (!g.faults.is_empty()).then(|| FaultMix {
        faults: g.faults.clone(),
        rate: g.fault_rate,
        seed,
    });
    Ok(match kind {
        "extract_page" => {
            let spec = SandboxSpec::generated(b, n, bytes, seed);
            let sb = Sandbox::start(SandboxSpec { api_key, ..spec }, listen).await?;
            sb.set_fault_mix(mix);
            Box::new(sb)
        }
        "llamacloud" => {
            let spec = LlamaSpec::generated(b, n, bytes, seed);
            Box::new(LlamaSandbox::start(LlamaSpec { api_key, ..spec }, listen).await?)
        }
        "talonic" => {
            let spec = TalonicSpec::generated(b, n, bytes, seed);
            Box::new(TalonicSandbox::start(TalonicSpec { api_key, ..spec }, listen).await?)
        }
        "perfectparser" => {
            let spec = PerfectSpec::generated(b, n, bytes, seed);
            Box::new(PerfectSandbox::start(PerfectSpec { api_key, ..spec }, listen).await?)
        }
        other => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "no sandbox for kind {other:?}: available are {}",
                    KINDS.join(", ")
                ),
            ));
        }
    })
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
