//! The MCP gateway: an MCP-aware reverse proxy in front of every MCPServer and MCPServerGroup,
//! at `/servers/{namespace}/{name}/mcp` and `/groups/{namespace}/{name}/mcp`.
//!
//! Before anything is forwarded, the caller is checked ([`auth`]): a ServiceAccount token
//! (TokenReview) whose namespace the server's permission profile admits.
//!
//! Both protocol eras are served: 2026-07-28 requests are routed one by one; earlier revisions
//! keep a session, whose id the gateway signs ([`session`]) so that any replica routes it to the
//! same member with no shared store. Tool policy is applied to the decoded JSON-RPC body
//! ([`tools`]), then the rate limit ([`ratelimit`]) and the circuit breaker ([`breaker`]), whose
//! transitions reach the MCPServer's conditions ([`condition`]). A group's request goes to a
//! member its strategy picks, and to another when that is safe ([`balance`]).
//!
//! Rate limits and breakers are kept per gateway replica, in memory. A shared counter would put
//! a network round trip (and a store that can fail) on every tool call, for a limit whose purpose
//! is to protect one upstream from floods; with R replicas behind a Service, a server sees at most
//! R × `requestsPerMinute` (R × `burstSize` at once). Size the limit for the replica count, or
//! run one replica per limit domain. A breaker opening on each replica on its own is what a
//! breaker should do: each replica sees the failures itself.
//!
//! A request to a scale-to-zero server wakes it ([`wake`]): the gateway renews the server's
//! demand Lease and holds the request until the MCPServer reflector shows a ready replica.

pub mod auth;
pub mod balance;
pub mod breaker;
pub mod condition;
pub mod era;
pub mod jsonrpc;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod route;
pub mod server;
pub mod session;
pub mod sse;
pub mod tools;
pub mod wake;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

pub use proxy::{Gateway, router};
pub use route::{Catalog, StaticCatalog, StoreCatalog};
pub use session::SessionKey;

/// The gateway's settings (built by `mcp-hangar gateway` from its flags, or by tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Largest `tools/list` answer (JSON) or SSE event read to be filtered.
    pub max_response_bytes: usize,
    /// Time a client gets to send a request's body.
    pub request_body_timeout: Duration,
    /// Time to connect to an upstream.
    pub connect_timeout: Duration,
    /// Time an upstream gets to answer with its headers.
    pub upstream_timeout: Duration,
    /// Longest silence on a streamed answer before it is cut.
    pub stream_idle_timeout: Duration,
    /// Time a client gets to send a request's headers.
    pub header_read_timeout: Duration,
    /// Browser Origins allowed to call (exact, case-insensitive; `*` for any). Requests without
    /// Origin are not from a browser and are always allowed.
    pub allowed_origins: Vec<String>,
    /// Most requests per server waiting for it to start from zero; more are refused at once.
    pub max_cold_start_waiters: usize,
    /// Upstream host names connected to fixed addresses instead of DNS (as `curl --resolve`);
    /// tests point the `*.svc` names of container servers at 127.0.0.1.
    pub host_overrides: BTreeMap<String, IpAddr>,
}

/// Default of [`GatewayConfig::max_cold_start_waiters`].
pub const DEFAULT_MAX_COLD_START_WAITERS: usize = 256;

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_body_bytes: 4 * 1024 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            request_body_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(60),
            stream_idle_timeout: Duration::from_secs(300),
            header_read_timeout: Duration::from_secs(10),
            allowed_origins: Vec::new(),
            max_cold_start_waiters: DEFAULT_MAX_COLD_START_WAITERS,
            host_overrides: BTreeMap::new(),
        }
    }
}

/// Errors that stop the gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The session key is unusable.
    #[error("session key: {0}")]
    Key(#[from] session::SessionError),
    /// A metric could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A file or socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The failure.
        source: std::io::Error,
    },
}
