//! Serving the webhook: the HTTPS listener (rustls, HTTP/1.1 and HTTP/2, on the shared accept
//! loop of [`crate::serving`]) and the plain-HTTP admin listener, both stopping gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::serving::{self, Handshake};
pub use crate::serving::{
    ConnectionLimits, FIRST_REQUEST_TIMEOUT, HANDSHAKE_TIMEOUT, HEADER_READ_TIMEOUT, IDLE_TIMEOUT,
    MAX_CONCURRENT_STREAMS, MAX_CONNECTIONS,
};

/// Serves `router` over TLS on `listener` until `shutdown` completes, then lets open
/// connections finish their requests for at most `drain`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    serve_tls_with(listener, tls, router, shutdown, drain, ConnectionLimits::default()).await;
}

/// [`serve_tls`] with explicit connection limits (see [`serving::serve`]).
pub async fn serve_tls_with(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    limits: ConnectionLimits,
) {
    serving::serve(listener, Tls(TlsAcceptor::from(tls)), router, shutdown, drain, limits).await;
}

/// The TLS handshake (rustls).
#[derive(Clone)]
struct Tls(TlsAcceptor);

impl Handshake for Tls {
    type Io = TlsStream<TcpStream>;

    async fn handshake(&self, stream: TcpStream) -> std::io::Result<Self::Io> {
        self.0.accept(stream).await
    }
}

/// Serves the admin routes over plain HTTP until `shutdown` completes.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
