//! Serving the gateway's router over plain HTTP (TLS ends at the mesh or ingress in front of
//! it), on the shared accept loop of [`crate::serving`], with a graceful stop that lets open
//! streams drain.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::serving::{self, ConnectionLimits, Plain};

/// Most connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 4096;
/// Longest time an HTTP/2 connection may stay open with no request begun since its last answer
/// (a stream being answered is not idle: GOAWAY lets it finish).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Serves `router` on `listener` until `shutdown` completes; then the listener closes, every
/// connection finishes what it has begun (streams included) and closes, for at most `drain`.
/// `header_read_timeout` also bounds the wait for a connection's first request.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let limits = ConnectionLimits {
        handshake_timeout: header_read_timeout,
        header_read_timeout,
        first_request_timeout: header_read_timeout,
        idle_timeout: IDLE_TIMEOUT,
        max_connections: MAX_CONNECTIONS,
    };
    serving::serve(listener, Plain, router, shutdown, drain, limits).await;
}
