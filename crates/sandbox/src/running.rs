//! What every running sandbox is, whatever its provider: a [`Server`] (its listeners, started and
//! stopped here once for all four faces) and the [`Running`] trait, the face `start_generated`
//! hands out. A face holds a `Server` in its `server` field and says `face!(ItsType)`: that makes
//! it a [`Face`], so [`Running`], and gives it the inherent `base_url` and `stop` callers use.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use super::listen::{Served, bind};

/// The listeners of one running sandbox, the API's first. Dropping it stops them all, without
/// waiting.
pub struct Server {
    api: Served,
    more: Vec<Served>,
}

impl Server {
    /// Binds `listen` (port 0 = any free port) and serves `router` there.
    pub(crate) async fn start(listen: SocketAddr, router: axum::Router) -> std::io::Result<Server> {
        Ok(Server::of(bind(listen).await?.serve(router), Vec::new()))
    }

    /// The API listener `api` and others beside it (extract.page's object store).
    pub(crate) fn of(api: Served, more: Vec<Served>) -> Server {
        Server { api, more }
    }

    /// `http://HOST:PORT` of the API, without a trailing slash.
    pub(crate) fn url(&self) -> String {
        self.api.url().to_owned()
    }

    /// Stops every listener, the API's first, letting in-flight responses finish for a short
    /// grace period.
    pub(crate) async fn stop(self) {
        self.api.stop().await;
        for other in self.more {
            other.stop().await;
        }
    }
}

/// A running sandbox of any provider kind.
pub trait Running: Send {
    /// `http://HOST:PORT` of the API, without a trailing slash.
    fn base_url(&self) -> String;

    /// Stops every listener, letting in-flight responses finish for a short grace period.
    fn stop(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// A provider's face: what it holds its [`Server`] in. Every face is [`Running`] through it.
/// (Public in a private module: a face outside the crate cannot be written.)
pub trait Face: Send + 'static {
    fn server(&self) -> &Server;
    fn into_server(self) -> Server;
}

impl<F: Face> Running for F {
    fn base_url(&self) -> String {
        self.server().url()
    }

    fn stop(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.into_server().stop())
    }
}

/// Makes `$face` (a struct with a `server: Server` field) a [`Face`], so [`Running`], and gives
/// it inherent `base_url` and `stop`, which callers use without importing the trait.
macro_rules! face {
    ($face:ty) => {
        impl $crate::running::Face for $face {
            fn server(&self) -> &$crate::running::Server {
                &self.server
            }

            fn into_server(self) -> $crate::running::Server {
                self.server
            }
        }

        impl $face {
            /// `http://HOST:PORT` of the API, without a trailing slash.
            pub fn base_url(&self) -> String {
                self.server.url()
            }

            /// Stops every listener, letting in-flight responses finish for a short grace period.
            pub async fn stop(self) {
                self.server.stop().await;
            }
        }
    };
}
pub(crate) use face;
