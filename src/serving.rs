//! The accept loop every listener of the binary shares (the webhook over TLS, the gateway over
//! plain HTTP): HTTP/1.1 and HTTP/2, a bound on open connections, deadlines for slow or silent
//! clients, and a graceful stop.
//!
//! Slow or silent clients cannot hold a connection for long: the handshake (TLS), the request
//! headers (HTTP/1.1), the first request and every idle period between requests have their own
//! deadline, and the request itself is bounded by the router. Connections over
//! [`ConnectionLimits::max_connections`] wait in the listen backlog.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// Longest time a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time a client may take to send a request's headers (HTTP/1.1). Hyper starts this
/// timer as soon as it waits for a request, so an HTTP/1.1 connection silent for this long
/// between requests is closed too.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time after the handshake before the first request must have arrived, whatever the
/// protocol (a client that sends nothing, or trickles an HTTP/2 preface, is cut off).
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time a connection may stay open with no request in progress after its last answer
/// (HTTP/2 connections, which have no header timer; closed with a GOAWAY). Longer than the
/// apiserver's own idle timeout would make it the one closing; short enough to hand back
/// the slots of abandoned connections.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most connections served at once; more wait in the listen backlog. An idle HTTP/2
/// connection holds about 44 KiB (mostly hyper's and rustls' buffers), so this bounds what
/// idle or abandoned connections can hold to about 45 MiB; apiservers open a few each.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most concurrent requests on one HTTP/2 connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// The connection limits of [`serve`]. The default is the constants of this module, sized for
/// the webhook and its apiserver clients; the gateway sets its own, tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// See [`HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`FIRST_REQUEST_TIMEOUT`].
    pub first_request_timeout: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
            first_request_timeout: FIRST_REQUEST_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// What turns an accepted TCP stream into the byte stream HTTP is spoken on.
pub trait Handshake: Clone + Send + Sync + 'static {
    /// The stream HTTP runs over.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Completes the handshake (bounded by [`ConnectionLimits::handshake_timeout`]).
    fn handshake(&self, stream: TcpStream) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

/// Plain HTTP: the TCP stream as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl Handshake for Plain {
    type Io = TcpStream;

    async fn handshake(&self, stream: TcpStream) -> std::io::Result<TcpStream> {
        Ok(stream)
    }
}

/// Serves `router` on `listener`, each connection first through `handshake`, until `shutdown`
/// completes.
///
/// On `shutdown` the listener closes at once (new connections are refused), every open
/// connection finishes the requests it has begun (streams included) and then closes (HTTP/2:
/// GOAWAY), and this returns when they all have, or after `drain`.
pub async fn serve<H: Handshake>(
    listener: TcpListener,
    handshake: H,
    router: Router,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    limits: ConnectionLimits,
) {
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS) as u32;
    let slots = Arc::new(Semaphore::new(max_connections as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let builder = Arc::new(builder);
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handshake = handshake.clone();
        let builder = builder.clone();
        let router = router.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let io = match tokio::time::timeout(limits.handshake_timeout, handshake.handshake(stream)).await {
                Ok(Ok(io)) => io,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "handshake timed out");
                    return;
                }
            };
            let activity = Arc::new(Activity::new());
            let service = TowerToHyperService::new(Tracked { inner: router, activity: activity.clone() });
            let mut connection = pin!(builder.serve_connection(TokioIo::new(io), service));
            let mut closing = false;
            // Finish what has begun, then close (HTTP/2: GOAWAY), on the server's stop or when idle.
            let result = loop {
                tokio::select! {
                    result = connection.as_mut() => break result,
                    _ = stop.wait_for(|stop| *stop), if !closing => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    () = activity.idle(limits.first_request_timeout, limits.idle_timeout), if !closing => {
                        tracing::debug!(%peer, "closing an idle connection");
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(drain, slots.acquire_many(max_connections)).await.is_err() {
        tracing::warn!("connections still open after {drain:?}; closing them");
    }
}

/// What a connection is doing: requests in progress, and when the last one ended.
struct Activity {
    opened: Instant,
    in_flight: AtomicU32,
    /// Milliseconds from `opened` to the end of the last request; [`NOT_YET`] before the first.
    last_end_ms: AtomicU64,
}

/// `last_end_ms` of a connection that has answered nothing yet.
const NOT_YET: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Activity { opened: Instant::now(), in_flight: AtomicU32::new(0), last_end_ms: AtomicU64::new(NOT_YET) }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn end(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_end_ms.store(ms, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Completes once the connection has had no request in progress for `idle_timeout` since its
    /// last answer, or no request at all for `first_request_timeout` since it opened.
    async fn idle(&self, first_request_timeout: Duration, idle_timeout: Duration) {
        loop {
            let busy = self.in_flight.load(Ordering::Acquire) > 0;
            let deadline = match self.last_end_ms.load(Ordering::Acquire) {
                _ if busy => Instant::now() + idle_timeout,
                NOT_YET => self.opened + first_request_timeout,
                ms => self.opened + Duration::from_millis(ms) + idle_timeout,
            };
            if !busy && Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Marks a request in progress until dropped (answered, failed or cancelled).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The router, counting the requests of one connection in its [`Activity`].
#[derive(Clone)]
struct Tracked {
    inner: Router,
    activity: Arc<Activity>,
}

impl tower::Service<hyper::Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<hyper::Request<Incoming>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let answer = tower::Service::call(&mut self.inner, request);
        Box::pin(async move {
            let response = answer.await;
            drop(in_flight);
            response
        })
    }
}
