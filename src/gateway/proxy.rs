//! The data path: one axum router that checks, routes and forwards MCP over streamable HTTP.
//!
//! POST: decode the JSON-RPC body → era and header agreement → session (signed id) or a member
//! ([`balance`]) → tool allow list → rate limit → circuit breaker → forward (a group's request
//! tried on other members when that is safe) → rewrite the session id, filter
//! `tools/list` answers (JSON or SSE, event by event) → stream the answer back. GET streams and
//! DELETE reach the session's member. Bodies are streamed, never buffered, except a request
//! body (bounded) and a JSON `tools/list` answer that must be filtered (bounded).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::time::Instant;

use super::GatewayConfig;
use super::auth::Access;
use super::balance::{self, Balancer, InFlight, Pick};
use super::breaker::{Admission, Breaker};
use super::condition::Publisher;
use super::era::{self, Era, McpHeaders, SESSION_HEADER};
use super::jsonrpc::{self, INVALID_PARAMS, Message, RATE_LIMITED, SESSION_NOT_FOUND, UNAVAILABLE};
use super::metrics::{GatewayMetrics, tool_label};
use super::ratelimit::Bucket;
use super::route::{Catalog, Resolved, RouteError, RouteKey, RouteKind, Upstream, resolve};
use super::session::{Session, SessionKey};
use super::sse;
use super::tools;
use super::wake::{DemandSignal, Waker};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type UpstreamConnector = HttpsConnector<HttpConnector<crate::mcp::Resolver>>;

/// Request headers passed upstream; everything else (credentials, cookies, Origin, hop-by-hop)
/// stays at the gateway.
const FORWARDED_REQUEST_HEADERS: [&str; 6] =
    ["accept", "content-type", "last-event-id", era::PROTOCOL_VERSION_HEADER, "traceparent", "tracestate"];
/// Prefix of the 2026-07-28 `Mcp-Param-*` headers.
const PARAM_HEADER_PREFIX: &str = "mcp-param-";

/// Whether a request header goes upstream. The 2026-07-28 routing headers (`Mcp-Method`,
/// `Mcp-Name`, `Mcp-Param-*`) go only with stateless requests, whose body the gateway checked
/// them against; a session request carrying them would pass unchecked claims on.
fn forwarded(name: &str, era: Era) -> bool {
    FORWARDED_REQUEST_HEADERS.contains(&name)
        || (era == Era::Modern
            && (name == era::METHOD_HEADER || name == era::NAME_HEADER || name.starts_with(PARAM_HEADER_PREFIX)))
}
/// Response headers passed back; the session id is rewritten, not copied.
const FORWARDED_RESPONSE_HEADERS: [&str; 5] =
    ["content-type", "cache-control", era::PROTOCOL_VERSION_HEADER, "retry-after", "www-authenticate"];

/// The gateway: routes, shared key, upstream client and per-server state.
pub struct Gateway {
    catalog: Arc<dyn Catalog>,
    key: SessionKey,
    config: GatewayConfig,
    client: Client<UpstreamConnector, Body>,
    buckets: Mutex<HashMap<String, Bucket>>,
    breakers: Mutex<HashMap<String, Breaker>>,
    balancer: Balancer,
    conditions: Option<Publisher>,
    metrics: GatewayMetrics,
    ready: AtomicBool,
    waker: Waker,
    access: Access,
}

impl Gateway {
    /// A gateway over `catalog`, signing sessions with `key`.
    pub fn new(catalog: Arc<dyn Catalog>, key: SessionKey, config: GatewayConfig, metrics: GatewayMetrics) -> Self {
        let resolver = crate::mcp::Resolver::new(config.host_overrides.clone());
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no system trust roots: https upstreams will be refused");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            })
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(tls);
        Gateway {
            catalog,
            key,
            client,
            buckets: Mutex::default(),
            breakers: Mutex::default(),
            balancer: Balancer::new(),
            conditions: None,
            waker: Waker::new(None, config.max_cold_start_waiters, metrics.clone()),
            config,
            metrics,
            ready: AtomicBool::new(false),
            access: Access::Open,
        }
    }

    /// Who may call (the default, [`Access::Open`], lets anyone through).
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Writes breaker transitions on the MCPServers through `publisher`.
    pub fn with_breaker_conditions(mut self, publisher: Publisher) -> Self {
        self.conditions = Some(publisher);
        self
    }

    /// Wakes scale-to-zero servers by recording demand through `signal` (without one, they are
    /// forwarded to as they are).
    pub fn with_demand(mut self, signal: Arc<dyn DemandSignal>) -> Self {
        self.waker = Waker::new(Some(signal), self.config.max_cold_start_waiters, self.metrics.clone());
        self
    }

    /// Marks the gateway ready (routes synced) or not (starting, shutting down).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The settings in force.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }
}

/// The gateway's routes: the MCP endpoints and the probes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/servers/{namespace}/{name}/mcp", any(server_route))
        .route("/groups/{namespace}/{name}/mcp", any(group_route))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(gateway)
}

async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    if gateway.is_ready() {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn server_route(
    State(gateway): State<Arc<Gateway>>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    gateway.handle(RouteKey { kind: RouteKind::Server, namespace, name }, request).await
}

async fn group_route(
    State(gateway): State<Arc<Gateway>>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    gateway.handle(RouteKey { kind: RouteKind::Group, namespace, name }, request).await
}

/// A JSON-RPC error answer with an HTTP status (and `Retry-After` when given).
fn rpc_error(status: StatusCode, id: Option<&Value>, code: i64, message: &str, retry: Option<Duration>) -> Response {
    let body = jsonrpc::error(id, code, message, None);
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    if let Some(retry) = retry {
        let seconds = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    response
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.trim_matches([' ', '\t']))
}

/// What the access log records of a request: never arguments or credentials.
#[derive(Default)]
struct Facts {
    rpc_method: Option<String>,
    tool: Option<String>,
    member: Option<String>,
}

/// An upstream exchange under way: if its future is dropped (the client went away) before an
/// outcome, the breaker's admission is given back.
struct Pending<'a> {
    gateway: &'a Gateway,
    upstream: &'a Upstream,
    admission: Option<Admission>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let Some(admission) = self.admission else { return };
        if let Some(breaker) = self.gateway.breakers.lock().expect("breaker lock").get_mut(&self.upstream.member) {
            breaker.abandon(admission);
        }
    }
}

/// A request the gateway answers itself (boxed: a response is large).
struct Refused(Box<Response>);

/// An exchange that got no answer from its upstream.
struct Unanswered {
    /// The gateway's answer.
    refused: Refused,
    /// Whether the request may have reached the upstream (false: breaker open, connect error).
    reached: bool,
}

/// One try of a request on one member.
struct Attempt<'a> {
    upstream: &'a Upstream,
    outcome: Result<hyper::Response<Incoming>, Unanswered>,
    in_flight: InFlight,
}

/// The body, holding the member's in-flight count until it has been sent or dropped.
fn holding(body: Body, in_flight: InFlight) -> Body {
    Body::from_stream(body.into_data_stream().map(move |chunk| {
        let _held = &in_flight;
        chunk
    }))
}

fn refused(status: StatusCode, id: Option<&Value>, code: i64, message: &str, retry: Option<Duration>) -> Refused {
    Refused(Box::new(rpc_error(status, id, code, message, retry)))
}

impl Gateway {
    async fn handle(self: Arc<Self>, key: RouteKey, request: Request) -> Response {
        let started = Instant::now();
        let http_method = request.method().clone();
        let mut facts = Facts::default();
        let (response, routed) = self.dispatch(&key, request, &mut facts).await;
        let elapsed = started.elapsed();
        if routed {
            self.metrics
                .request_duration
                .with_label_values(&[key.kind_label(), &key.namespace, &key.name, http_method.as_str()])
                .observe(elapsed.as_secs_f64());
        }
        tracing::info!(
            route = %key.id(),
            method = %http_method,
            rpc_method = facts.rpc_method.as_deref().unwrap_or(""),
            tool = facts.tool.as_deref().map(tool_label).unwrap_or(""),
            member = facts.member.as_deref().unwrap_or(""),
            status = response.status().as_u16(),
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "gateway request"
        );
        response
    }

    /// Answers one request; the flag says whether it reached a known route (for metrics).
    async fn dispatch(&self, key: &RouteKey, request: Request, facts: &mut Facts) -> (Response, bool) {
        if let Some(origin) = header_str(request.headers(), "origin")
            && !self.config.allows_origin(origin)
        {
            let message = "Forbidden: the Origin is not allowed to reach this gateway";
            return (rpc_error(StatusCode::FORBIDDEN, None, jsonrpc::INVALID_REQUEST, message, None), false);
        }
        // Callers are checked before anything is forwarded, and before an unknown route is told apart.
        let resolved = resolve(self.catalog.as_ref(), key);
        let members = resolved.as_ref().map(|r| r.upstreams.as_slice()).unwrap_or_default();
        if let Err(refusal) = self.access.check(self.catalog.as_ref(), request.headers(), members).await {
            return (refusal.into_response(), resolved.is_ok());
        }
        let resolved = match resolved {
            Ok(resolved) => resolved,
            Err(e @ RouteError::NotFound { .. }) => {
                return (rpc_error(StatusCode::NOT_FOUND, None, jsonrpc::INVALID_REQUEST, &e.to_string(), None), false);
            }
            Err(e) => {
                return (rpc_error(StatusCode::SERVICE_UNAVAILABLE, None, UNAVAILABLE, &e.to_string(), None), true);
            }
        };
        // A server route wakes its server here; a group wakes the member it picks (`post`).
        if request.method() == Method::POST
            && key.kind == RouteKind::Server
            && let Err(cold) = self.waker.admit(self.catalog.as_ref(), key, &resolved.upstreams).await
        {
            return (rpc_error(cold.status, None, UNAVAILABLE, &cold.message, Some(cold.retry_after)), true);
        }
        let response = match *request.method() {
            Method::POST => self.post(key, &resolved, request, facts).await,
            Method::GET | Method::DELETE => self.session_call(key, &resolved.upstreams, request, facts).await,
            _ => {
                let mut response = rpc_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    None,
                    jsonrpc::INVALID_REQUEST,
                    "Method Not Allowed: use POST, GET or DELETE",
                    None,
                );
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
                response
            }
        };
        (response, true)
    }

    /// The member a request goes to next, skipping those it `tried`: a server route has one,
    /// a group's is chosen by its strategy ([`balance`]).
    fn choose(&self, key: &RouteKey, resolved: &Resolved, tried: &[usize]) -> Option<Pick> {
        let Some(group) = &resolved.group else {
            return (!tried.contains(&0)).then_some(Pick::Warm(0));
        };
        let members: Vec<(&str, balance::Standing)> =
            resolved.upstreams.iter().map(|u| (u.member.as_str(), u.standing)).collect();
        // A member whose breaker is open would fail fast: it is skipped like one already tried.
        let now = Instant::now();
        let mut skip = tried.to_vec();
        {
            let breakers = self.breakers.lock().expect("breaker lock");
            let open = |u: &Upstream| breakers.get(&u.member).is_some_and(|b| b.fails_fast(now));
            skip.extend(resolved.upstreams.iter().enumerate().filter(|(_, u)| open(u)).map(|(i, _)| i));
        }
        self.balancer.pick(&key.id(), group.strategy, &members, group.unhealthy_threshold, &skip, now)
    }

    /// The session a request names, checked: `Ok(None)` without a session header.
    fn session<'a>(
        &self,
        key: &RouteKey,
        headers: &HeaderMap,
        upstreams: &'a [Upstream],
        id: Option<&Value>,
    ) -> Result<Option<(Session, &'a Upstream)>, Refused> {
        let Some(token) = headers.get(SESSION_HEADER) else { return Ok(None) };
        let not_found = |reason: &str| {
            tracing::info!(route = %key.id(), reason, "refused a session id");
            refused(StatusCode::NOT_FOUND, id, SESSION_NOT_FOUND, "Session not found", None)
        };
        let token = token.to_str().map_err(|_| not_found("not ASCII"))?;
        let session = self.key.open(token, &key.id()).map_err(|e| not_found(&e.to_string()))?;
        let upstream = upstreams
            .iter()
            .find(|u| u.member == session.member)
            .ok_or_else(|| not_found("its member left the route"))?;
        Ok(Some((session, upstream)))
    }

    async fn post(&self, key: &RouteKey, resolved: &Resolved, request: Request, facts: &mut Facts) -> Response {
        let upstreams = &resolved.upstreams;
        let (parts, body) = request.into_parts();
        let limit = self.config.max_body_bytes;
        let too_large = || {
            let message = format!("Payload Too Large: the body is over {limit} bytes");
            rpc_error(StatusCode::PAYLOAD_TOO_LARGE, None, jsonrpc::INVALID_REQUEST, &message, None)
        };
        if header_str(&parts.headers, "content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > limit as u64)
        {
            return too_large();
        }
        let bytes =
            match tokio::time::timeout(self.config.request_body_timeout, Limited::new(body, limit).collect()).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return too_large(),
                Ok(Err(_)) => {
                    return rpc_error(
                        StatusCode::BAD_REQUEST,
                        None,
                        jsonrpc::INVALID_REQUEST,
                        "the body could not be read",
                        None,
                    );
                }
                Err(_) => {
                    let message = "Request Timeout: the body did not arrive in time";
                    return rpc_error(StatusCode::REQUEST_TIMEOUT, None, jsonrpc::INVALID_REQUEST, message, None);
                }
            };
        let message = match jsonrpc::decode(&bytes) {
            Ok(message) => message,
            Err(e) => return rpc_error(StatusCode::BAD_REQUEST, None, e.code(), &e.to_string(), None),
        };
        facts.rpc_method = message.method().map(str::to_owned);
        let id = message.request_id().cloned();
        let headers = McpHeaders {
            protocol_version: header_str(&parts.headers, era::PROTOCOL_VERSION_HEADER),
            method: header_str(&parts.headers, era::METHOD_HEADER),
            name: header_str(&parts.headers, era::NAME_HEADER),
        };
        let era = match era::classify(&message, headers) {
            Ok(era) => era,
            Err(refusal) => {
                return rpc_error(StatusCode::BAD_REQUEST, id.as_ref(), refusal.code, &refusal.message, None);
            }
        };
        let initialize = message.method() == Some("initialize");
        let session = if era == Era::Session && !initialize {
            match self.session(key, &parts.headers, upstreams, id.as_ref()) {
                Ok(session) => session,
                Err(Refused(response)) => return *response,
            }
        } else {
            None
        };
        if message.method() == Some("tools/call") {
            if id.is_none() {
                let message = "Invalid Request: tools/call must be a request (with an id), not a notification";
                return rpc_error(StatusCode::BAD_REQUEST, None, jsonrpc::INVALID_REQUEST, message, None);
            }
            if message.param_str("name").is_none() {
                let message = "Invalid params: tools/call needs params.name";
                return rpc_error(StatusCode::OK, id.as_ref(), INVALID_PARAMS, message, None);
            }
        }
        let tool = message.param_str("name").filter(|_| message.method() == Some("tools/call")).map(str::to_owned);
        facts.tool = tool.clone();
        let upstream_session = session.as_ref().and_then(|(s, _)| s.upstream.as_deref());
        // Failover: a group's request that is not pinned to a session may go to other members,
        // when it never reached its upstream or is read-only (`balance::retry_safe`).
        let retries = match (&session, &resolved.group) {
            (None, Some(group)) => group.max_retries as usize,
            _ => 0,
        };
        let retry_safe = message.method().is_some_and(balance::retry_safe);
        let mut tried: Vec<usize> = Vec::new();
        let mut attempts = 0usize;
        let mut last: Option<Attempt<'_>> = None;
        let attempt = loop {
            let next = match &session {
                Some((_, upstream)) => Some(*upstream),
                None => self.choose(key, resolved, &tried).map(|pick| {
                    tried.push(pick.index());
                    &upstreams[pick.index()]
                }),
            };
            let Some(upstream) = next else {
                match last {
                    Some(attempt) => break attempt,
                    None => {
                        let message = format!(
                            "Service Unavailable: no member of MCPServerGroup {}/{} is Ready and in rotation ({} members)",
                            key.namespace,
                            key.name,
                            upstreams.len()
                        );
                        return rpc_error(StatusCode::SERVICE_UNAVAILABLE, id.as_ref(), UNAVAILABLE, &message, None);
                    }
                }
            };
            if let (Some(previous), Some(group)) = (&last, &resolved.group) {
                tracing::info!(route = %key.id(), from = %previous.upstream.member, to = %upstream.member, "retrying on another member");
                // Bounded by the upstream timeout: a retry never waits longer than an answer would.
                tokio::time::sleep(group.retry_delay.min(self.config.upstream_timeout)).await;
            }
            facts.member = Some(upstream.member.clone());
            // The member's demand (a scale-to-zero one): renewed when warm, and a cold one, which
            // is picked only when no warm member is left (`Pick::WakeCold`), is woken and awaited.
            if key.kind == RouteKind::Group {
                let member = RouteKey {
                    kind: RouteKind::Server,
                    namespace: upstream.namespace.clone(),
                    name: upstream.name.clone(),
                };
                if let Err(cold) =
                    self.waker.admit(self.catalog.as_ref(), &member, std::slice::from_ref(upstream)).await
                {
                    return rpc_error(cold.status, id.as_ref(), UNAVAILABLE, &cold.message, Some(cold.retry_after));
                }
            }
            if let Some(name) = &tool
                && let Some(refused) = self.check_tool_call(upstream, name, id.as_ref())
            {
                return refused;
            }
            let in_flight = self.balancer.start(&upstream.member);
            let body = Body::from(bytes.clone());
            let outcome = self.forward(upstream, Method::POST, &parts.headers, body, (era, upstream_session)).await;
            let retryable = match &outcome {
                Ok(response) => response.status().is_server_error() && retry_safe,
                Err(failed) => !failed.reached || retry_safe,
            };
            if outcome.is_err() {
                self.count_call(upstream, tool.as_deref(), "unavailable");
            }
            let attempt = Attempt { upstream, outcome, in_flight };
            attempts += 1;
            if !retryable || attempts > retries {
                break attempt;
            }
            last = Some(attempt);
        };
        let Attempt { upstream, outcome, in_flight } = attempt;
        let response = match outcome {
            Ok(response) => response,
            Err(failed) => return *failed.refused.0,
        };
        let status = response.status();
        if let Some(tool) = &tool {
            let outcome = if status.is_success() { "forwarded" } else { "upstream_error" };
            self.count_call(upstream, Some(tool), outcome);
        }
        let (upstream_parts, upstream_body) = response.into_parts();
        let mut out = Response::builder().status(status).body(Body::empty()).expect("a status and no headers");
        copy_response_headers(&upstream_parts.headers, out.headers_mut());
        if era == Era::Session {
            let upstream_id = header_str(&upstream_parts.headers, SESSION_HEADER).map(str::to_owned);
            let opens = initialize && status.is_success() && (upstream_id.is_some() || key.kind == RouteKind::Group);
            let token = if opens {
                let sealed = Session { route: key.id(), member: upstream.member.clone(), upstream: upstream_id };
                Some(self.key.seal(&sealed))
            } else {
                upstream_id.and(parts.headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned))
            };
            if let Some(value) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
                out.headers_mut().insert(SESSION_HEADER, value);
            }
        }
        let filter = match (&message, status.is_success()) {
            (Message::Request { id, method, .. }, true) if method == "tools/list" && upstream.tools.filters() => {
                Some(id.clone())
            }
            _ => None,
        };
        let body = match filter {
            None => Body::from_stream(idle_bounded(upstream_body, self.config.stream_idle_timeout)),
            Some(id) => {
                match self.filter_tools(&upstream_parts.headers, upstream_body, upstream, &id, &mut out).await {
                    Ok(body) => body,
                    Err(Refused(response)) => return *response,
                }
            }
        };
        *out.body_mut() = holding(body, in_flight);
        out
    }

    /// The gateway's own answer to a `tools/call` that must not go upstream, if any.
    fn check_tool_call(&self, upstream: &Upstream, tool: &str, id: Option<&Value>) -> Option<Response> {
        let id = id?;
        if !upstream.tools.allows(tool) {
            self.count_call(upstream, None, "denied");
            let body = tools::unknown_tool(id, tool).to_string();
            return Some((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response());
        }
        let rate = upstream.rate?;
        let now = Instant::now();
        let taken = {
            let mut buckets = self.buckets.lock().expect("bucket lock");
            let bucket = buckets.entry(upstream.member.clone()).or_insert_with(|| Bucket::new(rate, now));
            if bucket.rate() != rate {
                *bucket = Bucket::new(rate, now);
            }
            bucket.take(now)
        };
        let wait = taken.err()?;
        self.metrics.rate_limit_hits.with_label_values(&[&upstream.namespace, &upstream.name]).inc();
        self.count_call(upstream, Some(tool), "rate_limited");
        let message = format!(
            "Too Many Requests: MCPServer {} allows {} tool calls per minute; retry in {}s",
            upstream.member,
            rate.per_minute,
            wait.as_secs() + 1
        );
        Some(rpc_error(StatusCode::TOO_MANY_REQUESTS, Some(id), RATE_LIMITED, &message, Some(wait)))
    }

    fn count_call(&self, upstream: &Upstream, tool: Option<&str>, outcome: &str) {
        let tool = tool.map_or("(not allowed)", tool_label);
        self.metrics.tool_calls.with_label_values(&[&upstream.namespace, &upstream.name, tool, outcome]).inc();
    }

    /// GET (the server's stream) and DELETE (end the session): they belong to a session.
    async fn session_call(
        &self,
        key: &RouteKey,
        upstreams: &[Upstream],
        request: Request,
        facts: &mut Facts,
    ) -> Response {
        let session = match self.session(key, request.headers(), upstreams, None) {
            Ok(session) => session,
            Err(Refused(response)) => return *response,
        };
        let (upstream, upstream_session) = match (&session, key.kind) {
            (Some((session, upstream)), _) => (*upstream, session.upstream.as_deref()),
            (None, RouteKind::Server) => (&upstreams[0], None),
            (None, RouteKind::Group) => {
                let message = "Bad Request: a group's streams and sessions need the Mcp-Session-Id of its initialize";
                return rpc_error(StatusCode::BAD_REQUEST, None, jsonrpc::INVALID_REQUEST, message, None);
            }
        };
        facts.member = Some(upstream.member.clone());
        let method = request.method().clone();
        let headers = request.headers().clone();
        let in_flight = self.balancer.start(&upstream.member);
        match self.forward(upstream, method, &headers, Body::empty(), (Era::Session, upstream_session)).await {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                let mut out = Response::builder()
                    .status(parts.status)
                    .body(holding(Body::from_stream(idle_bounded(body, self.config.stream_idle_timeout)), in_flight))
                    .expect("a status and no headers");
                copy_response_headers(&parts.headers, out.headers_mut());
                out
            }
            Err(failed) => *failed.refused.0,
        }
    }

    /// Sends one request upstream through the breaker, bounded by the upstream timeout (time to
    /// the response headers; the body then streams).
    async fn forward(
        &self,
        upstream: &Upstream,
        method: Method,
        headers: &HeaderMap,
        body: Body,
        (era, upstream_session): (Era, Option<&str>),
    ) -> Result<hyper::Response<Incoming>, Unanswered> {
        let admission = self.admit(upstream).map_err(|refused| Unanswered { refused, reached: false })?;
        let mut request = hyper::Request::builder().method(method).uri(upstream.url.clone());
        for (name, value) in headers {
            if forwarded(name.as_str(), era) {
                request = request.header(name, value);
            }
        }
        if let Some(session) = upstream_session.and_then(|s| HeaderValue::from_str(s).ok()) {
            request = request.header(SESSION_HEADER, session);
        }
        let request = request.body(body).map_err(|_| Unanswered {
            refused: refused(StatusCode::BAD_GATEWAY, None, UNAVAILABLE, "the upstream request is invalid", None),
            reached: false,
        })?;
        let mut pending = Pending { gateway: self, upstream, admission };
        let outcome = tokio::time::timeout(self.config.upstream_timeout, self.client.request(request)).await;
        pending.admission = None;
        let (success, failure, reached) = match &outcome {
            Ok(Ok(response)) => (response.status().as_u16() < 500, None, true),
            Ok(Err(e)) => {
                tracing::warn!(member = %upstream.member, error = %e, "upstream unreachable");
                (false, Some(format!("MCPServer {} cannot be reached", upstream.member)), !e.is_connect())
            }
            Err(_) => (
                false,
                Some(format!("MCPServer {} did not answer within {:?}", upstream.member, self.config.upstream_timeout)),
                true,
            ),
        };
        self.record(upstream, admission, success);
        self.balancer.record(&upstream.member, success, Instant::now());
        match (outcome, failure) {
            (Ok(Ok(response)), _) => Ok(response),
            (_, failure) => {
                let status = StatusCode::BAD_GATEWAY;
                Err(Unanswered {
                    refused: refused(status, None, UNAVAILABLE, &failure.unwrap_or_default(), None),
                    reached,
                })
            }
        }
    }

    fn admit(&self, upstream: &Upstream) -> Result<Option<Admission>, Refused> {
        let Some(config) = upstream.breaker else { return Ok(None) };
        let now = Instant::now();
        let mut breakers = self.breakers.lock().expect("breaker lock");
        let breaker = breakers.entry(upstream.member.clone()).or_insert_with(|| Breaker::new(config));
        breaker.reconfigure(config);
        let admission = breaker.admit(now);
        self.metrics
            .circuit_breaker_state
            .with_label_values(&[&upstream.namespace, &upstream.name])
            .set(breaker.state().gauge());
        match admission {
            Admission::Reject(wait) => {
                let message = format!(
                    "Service Unavailable: MCPServer {} is failing (circuit breaker open); next try in {}s",
                    upstream.member,
                    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
                );
                Err(refused(StatusCode::SERVICE_UNAVAILABLE, None, UNAVAILABLE, &message, Some(wait)))
            }
            admitted => Ok(Some(admitted)),
        }
    }

    fn record(&self, upstream: &Upstream, admission: Option<Admission>, success: bool) {
        let Some(admission) = admission else { return };
        let mut breakers = self.breakers.lock().expect("breaker lock");
        if let Some(breaker) = breakers.get_mut(&upstream.member) {
            let before = breaker.state().gauge();
            breaker.record(admission, success, Instant::now());
            let after = breaker.state().gauge();
            if before != after {
                tracing::warn!(member = %upstream.member, state = after, "circuit breaker changed state");
            }
            if let Some(conditions) = &self.conditions
                && (before == 0) != (after == 0)
            {
                let retry_in = upstream.breaker.map(|config| config.reset_timeout).filter(|_| after != 0);
                conditions.publish(&upstream.namespace, &upstream.name, retry_in);
            }
            self.metrics.circuit_breaker_state.with_label_values(&[&upstream.namespace, &upstream.name]).set(after);
        }
    }

    /// The body of a `tools/list` answer with the tools that are not allowed taken out: a JSON
    /// answer is read (bounded) and rewritten, an SSE answer is rewritten event by event.
    async fn filter_tools(
        &self,
        headers: &HeaderMap,
        body: Incoming,
        upstream: &Upstream,
        id: &Value,
        out: &mut Response,
    ) -> Result<Body, Refused> {
        let content_type = header_str(headers, "content-type").unwrap_or_default().to_ascii_lowercase();
        let limit = self.config.max_response_bytes;
        if content_type.starts_with("text/event-stream") {
            let stream = filter_sse(
                idle_bounded(body, self.config.stream_idle_timeout),
                upstream.tools.clone(),
                id.clone(),
                limit,
            );
            return Ok(Body::from_stream(stream));
        }
        let bad = |message: &str| refused(StatusCode::BAD_GATEWAY, Some(id), UNAVAILABLE, message, None);
        let collected = tokio::time::timeout(self.config.upstream_timeout, Limited::new(body, limit).collect())
            .await
            .map_err(|_| bad("the upstream's tools/list answer did not arrive in time"))?
            .map_err(|_| bad("the upstream's tools/list answer is too large or broken"))?
            .to_bytes();
        let mut answer: Value =
            serde_json::from_slice(&collected).map_err(|_| bad("the upstream's tools/list answer is not JSON"))?;
        upstream.tools.filter_answer(&mut answer, id);
        out.headers_mut().remove(header::CONTENT_LENGTH);
        Ok(Body::from(answer.to_string()))
    }
}

impl GatewayConfig {
    /// Whether a browser `Origin` may call (absent Origins are not browsers and always may).
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    }
}

fn copy_response_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for name in FORWARDED_RESPONSE_HEADERS {
        for value in from.get_all(name) {
            to.append(HeaderName::from_static(name), value.clone());
        }
    }
}

/// The upstream body as a stream of chunks, ended with an error when no chunk comes for `idle`.
fn idle_bounded(body: Incoming, idle: Duration) -> impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static {
    futures::stream::unfold(Some(body.into_data_stream()), move |state| async move {
        let mut frames = state?;
        match tokio::time::timeout(idle, frames.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(frames))),
            Ok(Some(Err(e))) => Some((Err(Box::new(e) as BoxError), None)),
            Ok(None) => None,
            Err(_) => Some((Err("the upstream stream was idle for too long".into()), None)),
        }
    })
}

/// An SSE stream with every `tools/list` answer to `id` filtered, passed on event by event.
fn filter_sse(
    upstream: impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
    policy: tools::ToolPolicy,
    id: Value,
    max_event: usize,
) -> impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static {
    struct FilterState<S> {
        upstream: std::pin::Pin<Box<S>>,
        parser: sse::Parser,
        policy: tools::ToolPolicy,
        id: Value,
        done: bool,
    }
    let state =
        FilterState { upstream: Box::pin(upstream), parser: sse::Parser::new(max_event), policy, id, done: false };
    futures::stream::unfold(state, |mut state| async move {
        while !state.done {
            match state.upstream.next().await {
                Some(Ok(chunk)) => match state.parser.push(&chunk) {
                    Ok(events) if events.is_empty() => continue,
                    Ok(events) => {
                        let mut out = BytesMut::new();
                        for mut event in events {
                            if let Some(data) = event.data()
                                && let Ok(mut message) = serde_json::from_str::<Value>(&data)
                                && state.policy.filter_answer(&mut message, &state.id)
                            {
                                event.set_data(&message.to_string());
                            }
                            out.extend_from_slice(&event.to_bytes());
                        }
                        return Some((Ok(out.freeze()), state));
                    }
                    Err(e) => {
                        state.done = true;
                        return Some((Err(Box::new(e) as BoxError), state));
                    }
                },
                Some(Err(e)) => {
                    state.done = true;
                    return Some((Err(e), state));
                }
                // An event cut off by the end of the stream is never dispatched by an SSE client
                // (and could not be filtered): it is dropped.
                None => state.done = true,
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_stay_and_routing_headers_go_only_with_stateless_requests() {
        for name in ["authorization", "cookie", "origin", "host", "connection", "mcp-session-id"] {
            assert!(!forwarded(name, Era::Modern) && !forwarded(name, Era::Session), "{name}");
        }
        for name in ["accept", "content-type", "mcp-protocol-version", "last-event-id"] {
            assert!(forwarded(name, Era::Modern) && forwarded(name, Era::Session), "{name}");
        }
        for name in ["mcp-method", "mcp-name", "mcp-param-region"] {
            assert!(forwarded(name, Era::Modern) && !forwarded(name, Era::Session), "{name}");
        }
    }

    #[test]
    fn origins_are_matched_exactly_or_by_wildcard() {
        let config = GatewayConfig { allowed_origins: vec!["https://app.example.com".into()], ..Default::default() };
        assert!(config.allows_origin("https://APP.example.com"));
        assert!(!config.allows_origin("https://app.example.com.evil.io"));
        assert!(!config.allows_origin("null"));
        assert!(!GatewayConfig::default().allows_origin("http://localhost:3000"), "none allowed by default");
        let any = GatewayConfig { allowed_origins: vec!["*".into()], ..Default::default() };
        assert!(any.allows_origin("https://anything.example"));
    }
}
