//! The listeners every sandbox serves on: binding (the URL is known before the routes that need
//! it), serving a router until stopped or dropped, and stopping with a grace period.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long [`Served::stop`] lets in-flight responses finish before it gives up on them.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A URL a client can connect to: an unspecified bind address is reached over loopback.
fn url_for(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// A listener bound but not serving yet: its URL is known before the routes that need it.
pub(crate) struct Bound {
    listener: TcpListener,
    pub(crate) url: String,
}

/// Binds `listen` (port 0 = any free port).
pub(crate) async fn bind(listen: SocketAddr) -> std::io::Result<Bound> {
    let listener = TcpListener::bind(listen).await?;
    let url = url_for(listener.local_addr()?);
    Ok(Bound { listener, url })
}

impl Bound {
    /// Serves `router` until [`Served::stop`], or until the `Served` is dropped.
    pub(crate) fn serve(self, router: axum::Router) -> Served {
        let (shutdown, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            // `wait_for` also returns when the sender is dropped, so dropping the sandbox stops it.
            let signal = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            if let Err(err) = axum::serve(self.listener, router)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::warn!(%err, "sandbox listener failed");
            }
        });
        Served {
            url: self.url,
            shutdown,
            task,
        }
    }
}

/// A serving listener.
pub(crate) struct Served {
    url: String,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Served {
    /// `http://HOST:PORT`, without a trailing slash.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Stops, letting in-flight responses finish for a short grace period.
    pub(crate) async fn stop(self) {
        let _ = self.shutdown.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(STOP_GRACE, self.task).await.is_err() {
            abort.abort();
        }
    }
}
