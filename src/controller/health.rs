//! MCP health checks: a minimal MCP client that opens a session, lists the tools and leaves.
//!
//! One check is `initialize`, `notifications/initialized` and `tools/list` (following
//! `nextCursor`), all under one deadline. Two transports are spoken:
//!
//! - streamable HTTP: every message is a JSON-RPC POST; the answer is `application/json`
//!   or a `text/event-stream` whose `data:` lines carry it. `Mcp-Session-Id` and
//!   `MCP-Protocol-Version` are sent back as the specification asks.
//! - the older HTTP+SSE transport: a GET opens an event stream whose `endpoint` event names
//!   where to POST; answers arrive as `message` events on the stream.
//!
//! Every body is read with a size limit, redirects are not followed, and nothing a server
//! sends is logged or echoed beyond a short error message.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{Value, json};

use crate::crd::Transport;

/// Protocol version offered over streamable HTTP.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// Protocol version offered over the older HTTP+SSE transport.
pub const LEGACY_PROTOCOL_VERSION: &str = "2024-11-05";
/// Largest answer read from a server, in bytes.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// Most `tools/list` pages followed.
pub const MAX_TOOL_PAGES: usize = 50;
/// Most tool names kept from one server.
pub const MAX_TOOLS: usize = 1024;
/// Longest tool name kept; longer names break the MCP naming rules and are skipped.
pub const MAX_TOOL_NAME_LEN: usize = 128;
/// Longest server-provided text quoted in an error.
const MAX_QUOTED: usize = 200;
/// `Mcp-Session-Id` header.
const SESSION_HEADER: &str = "mcp-session-id";
/// `MCP-Protocol-Version` header.
const PROTOCOL_HEADER: &str = "mcp-protocol-version";
/// What a client accepts from a streamable-HTTP server.
const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// Why a health check failed. The text is shown in conditions and events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// The URL cannot be used.
    #[error("invalid endpoint URL: {0}")]
    InvalidUrl(String),
    /// TLS could not be configured.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// No connection, or the connection broke.
    #[error("{method}: request failed: {detail}")]
    Connection {
        /// The MCP method (or step) being sent.
        method: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The server answered with an unexpected HTTP status.
    #[error("{method}: HTTP {status}")]
    Status {
        /// The MCP method being sent.
        method: &'static str,
        /// The HTTP status code.
        status: u16,
    },
    /// The answer is not what the MCP specification says.
    #[error("{method}: {detail}")]
    Protocol {
        /// The MCP method being sent.
        method: &'static str,
        /// What is wrong with the answer.
        detail: String,
    },
    /// The server answered with a JSON-RPC error.
    #[error("{method}: JSON-RPC error {code}: {message}")]
    Rpc {
        /// The MCP method being sent.
        method: &'static str,
        /// JSON-RPC error code.
        code: i64,
        /// The server's message (shortened).
        message: String,
    },
    /// The whole check took longer than its timeout.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
}

/// What a passed check learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The protocol version the server chose.
    pub protocol_version: String,
    /// `serverInfo.name`, when given.
    pub server_name: Option<String>,
    /// Every tool name, in the server's order (at most [`MAX_TOOLS`]).
    pub tools: Vec<String>,
}

type HttpClient = Client<HttpsConnector<HttpConnector<Resolver>>, Full<Bytes>>;

/// Resolves host names through the system, except for fixed overrides (as `curl --resolve`).
#[derive(Clone)]
struct Resolver {
    overrides: Arc<HashMap<String, IpAddr>>,
    system: GaiResolver,
}

type Resolved = std::vec::IntoIter<SocketAddr>;

impl tower::Service<Name> for Resolver {
    type Response = Resolved;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Resolved, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        if let Some(ip) = self.overrides.get(&name.as_str().to_ascii_lowercase()) {
            let resolved = vec![SocketAddr::new(*ip, 0)].into_iter();
            return Box::pin(std::future::ready(Ok(resolved)));
        }
        let mut system = self.system.clone();
        Box::pin(async move {
            let addresses = tower::Service::call(&mut system, name).await?;
            Ok(addresses.collect::<Vec<_>>().into_iter())
        })
    }
}

/// An MCP client for health checks; cheap to clone, connections are pooled.
#[derive(Clone)]
pub struct McpClient {
    http: HttpClient,
}

fn quote(text: &str) -> String {
    let mut quoted: String = text.chars().take(MAX_QUOTED).collect();
    if quoted.len() < text.len() {
        quoted.push('…');
    }
    quoted
}

impl McpClient {
    /// A client trusting the roots of `tls` for https endpoints.
    pub fn new(tls: rustls::ClientConfig) -> Self {
        Self::with_host_overrides(tls, [])
    }

    /// A client that connects to the given addresses for these host names, instead of
    /// asking DNS (TLS still verifies the name).
    pub fn with_host_overrides(
        tls: rustls::ClientConfig,
        overrides: impl IntoIterator<Item = (String, IpAddr)>,
    ) -> Self {
        let resolver = Resolver {
            overrides: Arc::new(overrides.into_iter().map(|(host, ip)| (host.to_ascii_lowercase(), ip)).collect()),
            system: GaiResolver::new(),
        };
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        McpClient { http }
    }

    /// A client trusting the system's root certificates. Without any (a minimal image),
    /// https checks fail with a certificate error; plain http still works.
    pub fn with_native_roots() -> Result<Self, HealthError> {
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| HealthError::Tls(e.to_string()))?;
        let config = match builder.clone().with_native_roots() {
            Ok(builder) => builder.with_no_client_auth(),
            Err(e) => {
                tracing::warn!(error = %e, "no system root certificates: https health checks will fail");
                builder.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth()
            }
        };
        Ok(McpClient::new(config))
    }

    /// Runs one health check against `url` within `timeout`.
    pub async fn check(
        &self,
        url: &str,
        transport: Option<Transport>,
        timeout: Duration,
    ) -> Result<HealthReport, HealthError> {
        let base = url::Url::parse(url).map_err(|e| HealthError::InvalidUrl(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || !base.has_host() {
            return Err(HealthError::InvalidUrl("use an http or https URL with a host".into()));
        }
        let session = async {
            match transport {
                Some(Transport::Sse) => self.legacy_session(&base).await,
                _ => self.streamable_session(&base).await,
            }
        };
        tokio::time::timeout(timeout, session).await.map_err(|_| HealthError::Timeout(timeout))?
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        method: &'static str,
    ) -> Result<Response<Incoming>, HealthError> {
        self.http.request(request).await.map_err(|e| HealthError::Connection { method, detail: error_chain(&e) })
    }

    async fn streamable_session(&self, base: &url::Url) -> Result<HealthReport, HealthError> {
        let uri = to_uri(base)?;
        let mut session = StreamableSession { uri, id: None, protocol: None };
        let init = self.streamable_call(&mut session, 1, "initialize", initialize_params(PROTOCOL_VERSION)).await?;
        let (protocol_version, server_name) = read_initialize(&init)?;
        session.protocol = Some(protocol_version.clone());
        self.streamable_notify(&session).await?;
        let mut pages = ToolPages::default();
        while let Some(params) = pages.next_params()? {
            let id = pages.request_id();
            let result = self.streamable_call(&mut session, id, "tools/list", params).await?;
            pages.read(&result)?;
        }
        self.close_session(&session);
        Ok(HealthReport { protocol_version, server_name, tools: pages.tools })
    }

    fn post(
        &self,
        uri: &Uri,
        session: Option<&StreamableSession>,
        message: &Value,
    ) -> Result<Request<Full<Bytes>>, HealthError> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, ACCEPT_BOTH)
            .header(USER_AGENT, user_agent());
        if let Some(session) = session {
            if let Some(id) = &session.id {
                builder = builder.header(SESSION_HEADER, id.clone());
            }
            if let Some(protocol) = &session.protocol {
                builder = builder.header(PROTOCOL_HEADER, protocol.as_str());
            }
        }
        builder.body(Full::new(Bytes::from(message.to_string()))).map_err(|e| HealthError::InvalidUrl(e.to_string()))
    }

    async fn streamable_call(
        &self,
        session: &mut StreamableSession,
        id: u64,
        method: &'static str,
        params: Value,
    ) -> Result<Value, HealthError> {
        let request = self.post(&session.uri, Some(session), &rpc_request(id, method, params))?;
        let response = self.send(request, method).await?;
        if response.status() != StatusCode::OK {
            return Err(HealthError::Status { method, status: response.status().as_u16() });
        }
        if let Some(value) = response.headers().get(SESSION_HEADER) {
            let id = value
                .to_str()
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| (0x21..=0x7e).contains(&b)))
                .ok_or(HealthError::Protocol { method, detail: "Mcp-Session-Id must be visible ASCII".into() })?;
            session.id =
                Some(HeaderValue::from_str(id).map_err(|e| HealthError::Protocol { method, detail: e.to_string() })?);
        }
        let protocol_error = |detail: String| HealthError::Protocol { method, detail };
        let answer = match content_type(&response).as_str() {
            "application/json" => {
                let body = read_limited(response.into_body(), MAX_ANSWER_BYTES).await.map_err(protocol_error)?;
                let value: Value = serde_json::from_slice(&body)
                    .map_err(|e| protocol_error(format!("the answer is not JSON: {e}")))?;
                find_answer(value, id)
            }
            "text/event-stream" => {
                let mut events = EventStream::new(response.into_body(), MAX_ANSWER_BYTES);
                loop {
                    match events.next().await.map_err(protocol_error)? {
                        Some(event) => {
                            if let Some(answer) = event_answer(&event, id) {
                                break Some(answer);
                            }
                        }
                        None => break None,
                    }
                }
            }
            other => {
                return Err(protocol_error(format!(
                    "unexpected content type {:?}: expected application/json or text/event-stream",
                    quote(other)
                )));
            }
        };
        let answer = answer.ok_or_else(|| protocol_error(format!("no JSON-RPC answer with id {id}")))?;
        rpc_result(answer, method)
    }

    async fn streamable_notify(&self, session: &StreamableSession) -> Result<(), HealthError> {
        const METHOD: &str = "notifications/initialized";
        let message = json!({"jsonrpc": "2.0", "method": METHOD});
        let request = self.post(&session.uri, Some(session), &message)?;
        let response = self.send(request, METHOD).await?;
        if !response.status().is_success() {
            return Err(HealthError::Status { method: METHOD, status: response.status().as_u16() });
        }
        Ok(())
    }

    /// Ends a streamable-HTTP session in the background; servers may refuse (405), which is fine.
    fn close_session(&self, session: &StreamableSession) {
        let Some(id) = session.id.clone() else {
            return;
        };
        let request = Request::builder()
            .method(Method::DELETE)
            .uri(session.uri.clone())
            .header(SESSION_HEADER, id)
            .header(USER_AGENT, user_agent())
            .body(Full::new(Bytes::new()));
        let Ok(request) = request else { return };
        let http = self.http.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), http.request(request)).await;
        });
    }

    async fn legacy_session(&self, base: &url::Url) -> Result<HealthReport, HealthError> {
        const OPEN: &str = "open event stream";
        let request = Request::builder()
            .method(Method::GET)
            .uri(to_uri(base)?)
            .header(ACCEPT, "text/event-stream")
            .header(USER_AGENT, user_agent())
            .body(Full::new(Bytes::new()))
            .map_err(|e| HealthError::InvalidUrl(e.to_string()))?;
        let response = self.send(request, OPEN).await?;
        if response.status() != StatusCode::OK {
            return Err(HealthError::Status { method: OPEN, status: response.status().as_u16() });
        }
        if content_type(&response) != "text/event-stream" {
            return Err(HealthError::Protocol { method: OPEN, detail: "the stream is not text/event-stream".into() });
        }
        let mut events = EventStream::new(response.into_body(), MAX_ANSWER_BYTES * 4);
        let protocol_error = |method, detail| HealthError::Protocol { method, detail };
        let endpoint = loop {
            match events.next().await.map_err(|d| protocol_error(OPEN, d))? {
                Some(event) if event.event == "endpoint" => break event.data,
                Some(_) => continue,
                None => {
                    return Err(protocol_error(OPEN, "the stream ended before an endpoint event".into()));
                }
            }
        };
        let target =
            base.join(endpoint.trim()).map_err(|e| protocol_error(OPEN, format!("invalid endpoint event: {e}")))?;
        if target.origin() != base.origin() {
            return Err(protocol_error(OPEN, "the endpoint event points to another origin".into()));
        }
        let mut session = LegacySession { uri: to_uri(&target)?, events };
        let init = self.legacy_call(&mut session, 1, "initialize", initialize_params(LEGACY_PROTOCOL_VERSION)).await?;
        let (protocol_version, server_name) = read_initialize(&init)?;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.legacy_post(&session, &note, "notifications/initialized").await?;
        let mut pages = ToolPages::default();
        while let Some(params) = pages.next_params()? {
            let id = pages.request_id();
            let result = self.legacy_call(&mut session, id, "tools/list", params).await?;
            pages.read(&result)?;
        }
        Ok(HealthReport { protocol_version, server_name, tools: pages.tools })
    }

    async fn legacy_post(
        &self,
        session: &LegacySession,
        message: &Value,
        method: &'static str,
    ) -> Result<(), HealthError> {
        let request = self.post(&session.uri, None, message)?;
        let response = self.send(request, method).await?;
        if !response.status().is_success() {
            return Err(HealthError::Status { method, status: response.status().as_u16() });
        }
        Ok(())
    }

    async fn legacy_call(
        &self,
        session: &mut LegacySession,
        id: u64,
        method: &'static str,
        params: Value,
    ) -> Result<Value, HealthError> {
        self.legacy_post(session, &rpc_request(id, method, params), method).await?;
        loop {
            let event =
                session.events.next().await.map_err(|detail| HealthError::Protocol { method, detail })?.ok_or_else(
                    || HealthError::Protocol { method, detail: "the event stream ended before the answer".into() },
                )?;
            if let Some(answer) = event_answer(&event, id) {
                return rpc_result(answer, method);
            }
        }
    }
}

struct StreamableSession {
    uri: Uri,
    id: Option<HeaderValue>,
    protocol: Option<String>,
}

struct LegacySession {
    uri: Uri,
    events: EventStream,
}

fn user_agent() -> &'static str {
    concat!("mcp-hangar/", env!("CARGO_PKG_VERSION"))
}

fn to_uri(url: &url::Url) -> Result<Uri, HealthError> {
    url.as_str().parse().map_err(|e: hyper::http::uri::InvalidUri| HealthError::InvalidUrl(e.to_string()))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    quote(&text)
}

fn content_type<B>(response: &Response<B>) -> String {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, String> {
    Limited::new(body, limit)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| format!("reading the answer failed: {}", quote(&e.to_string())))
}

/// A JSON-RPC 2.0 request.
fn rpc_request(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn initialize_params(version: &str) -> Value {
    json!({
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "mcp-hangar", "version": env!("CARGO_PKG_VERSION")},
    })
}

fn read_initialize(result: &Value) -> Result<(String, Option<String>), HealthError> {
    let version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or(HealthError::Protocol { method: "initialize", detail: "the result has no protocolVersion".into() })?;
    let name = result.pointer("/serverInfo/name").and_then(Value::as_str).map(quote);
    Ok((quote(version), name))
}

/// Follows `tools/list` pages and collects the names.
#[derive(Default)]
struct ToolPages {
    tools: Vec<String>,
    cursor: Option<String>,
    pages: usize,
    done: bool,
}

impl ToolPages {
    /// Parameters of the next request, or `None` when every page is read.
    fn next_params(&self) -> Result<Option<Value>, HealthError> {
        if self.done {
            return Ok(None);
        }
        if self.pages >= MAX_TOOL_PAGES {
            return Err(HealthError::Protocol {
                method: "tools/list",
                detail: format!("more than {MAX_TOOL_PAGES} pages of tools"),
            });
        }
        Ok(Some(match &self.cursor {
            Some(cursor) => json!({"cursor": cursor}),
            None => json!({}),
        }))
    }

    /// JSON-RPC id of the next request (1 is `initialize`).
    fn request_id(&self) -> u64 {
        2 + self.pages as u64
    }

    fn read(&mut self, result: &Value) -> Result<(), HealthError> {
        self.pages += 1;
        let tools = result
            .get("tools")
            .and_then(Value::as_array)
            .ok_or(HealthError::Protocol { method: "tools/list", detail: "the result has no tools array".into() })?;
        let names = tools
            .iter()
            .filter_map(|tool| tool.get("name").and_then(Value::as_str))
            .filter(|name| !name.is_empty() && name.len() <= MAX_TOOL_NAME_LEN);
        for name in names {
            if self.tools.len() < MAX_TOOLS {
                self.tools.push(name.to_string());
            }
        }
        self.cursor = result.get("nextCursor").and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_string);
        self.done = self.cursor.is_none();
        Ok(())
    }
}

/// The JSON-RPC answer with that id in a message or batch.
fn find_answer(value: Value, id: u64) -> Option<Value> {
    match value {
        Value::Array(items) => items.into_iter().find_map(|item| find_answer(item, id)),
        Value::Object(ref map)
            if map.get("id") == Some(&json!(id)) && (map.contains_key("result") || map.contains_key("error")) =>
        {
            Some(value)
        }
        _ => None,
    }
}

/// The answer with that id in an SSE event, if the event carries it.
fn event_answer(event: &SseEvent, id: u64) -> Option<Value> {
    if !(event.event.is_empty() || event.event == "message") {
        return None;
    }
    serde_json::from_str(&event.data).ok().and_then(|value| find_answer(value, id))
}

fn rpc_result(answer: Value, method: &'static str) -> Result<Value, HealthError> {
    if let Some(error) = answer.get("error") {
        return Err(HealthError::Rpc {
            method,
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: quote(error.get("message").and_then(Value::as_str).unwrap_or("")),
        });
    }
    Ok(answer.get("result").cloned().unwrap_or(Value::Null))
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; empty for the default `message` type.
    pub event: String,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// Incremental parser of a `text/event-stream` (LF or CRLF line ends).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: String,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in chunk {
            if byte == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if let Some(event) = self.line_done(&String::from_utf8_lossy(&line)) {
                    events.push(event);
                }
            } else {
                self.line.push(byte);
            }
        }
        events
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            return self.data.take().map(|data| SseEvent { event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "event" => self.event = value.to_string(),
            _ => {}
        }
        None
    }
}

/// Events read from a response body, at most `limit` bytes in all.
struct EventStream {
    body: Incoming,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
    read: usize,
    limit: usize,
}

impl EventStream {
    fn new(body: Incoming, limit: usize) -> Self {
        EventStream { body, parser: SseParser::default(), pending: VecDeque::new(), read: 0, limit }
    }

    /// The next event; `None` at the end of the stream.
    async fn next(&mut self) -> Result<Option<SseEvent>, String> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            let frame = frame.map_err(|e| format!("the event stream broke: {}", error_chain(&e)))?;
            if let Some(data) = frame.data_ref() {
                self.read += data.len();
                if self.read > self.limit {
                    return Err(format!("the event stream exceeded {} bytes", self.limit));
                }
                self.pending.extend(self.parser.push(data));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_handles_split_chunks_crlf_comments_and_multiline_data() {
        let mut parser = SseParser::default();
        let mut events = parser.push(b": keep-alive\r\nevent: endpoint\r\ndata: /messages?s");
        assert!(events.is_empty());
        events.extend(parser.push(b"=1\r\n\r\ndata: {\"a\":\ndata: 1}\n\n"));
        assert_eq!(
            events,
            vec![
                SseEvent { event: "endpoint".into(), data: "/messages?s=1".into() },
                SseEvent { event: String::new(), data: "{\"a\":\n1}".into() },
            ]
        );
        assert!(parser.push(b"id: 7\nretry: 10\n\n").is_empty(), "no data, no event");
    }

    #[test]
    fn answers_are_found_by_id_in_messages_and_batches() {
        let answer = json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": []}});
        assert_eq!(find_answer(answer.clone(), 2), Some(answer.clone()));
        assert_eq!(find_answer(answer.clone(), 3), None);
        let request = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
        assert_eq!(find_answer(request.clone(), 2), None, "a request is not an answer");
        let batch = json!([request, answer.clone()]);
        assert_eq!(find_answer(batch, 2), Some(answer));
    }

    #[test]
    fn rpc_errors_are_reported_and_shortened() {
        let long = "x".repeat(1000);
        let answer = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": long}});
        match rpc_result(answer, "initialize") {
            Err(HealthError::Rpc { code, message, .. }) => {
                assert_eq!(code, -32601);
                assert!(message.chars().count() <= MAX_QUOTED + 1);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn tool_pages_follow_cursors_and_skip_bad_names() {
        let mut pages = ToolPages::default();
        assert_eq!(pages.next_params().unwrap(), Some(json!({})));
        let long = "n".repeat(MAX_TOOL_NAME_LEN + 1);
        pages
            .read(&json!({"tools": [{"name": "a"}, {"name": ""}, {"name": long}, {"title": "x"}], "nextCursor": "c1"}))
            .unwrap();
        assert_eq!(pages.next_params().unwrap(), Some(json!({"cursor": "c1"})));
        assert_eq!(pages.request_id(), 3);
        pages.read(&json!({"tools": [{"name": "b"}]})).unwrap();
        assert_eq!(pages.next_params().unwrap(), None);
        assert_eq!(pages.tools, vec!["a".to_string(), "b".to_string()]);
        assert!(ToolPages::default().read(&json!({"tool": []})).is_err());
    }

    #[test]
    fn endless_pagination_is_cut_off() {
        let mut pages = ToolPages::default();
        for _ in 0..MAX_TOOL_PAGES {
            pages.next_params().unwrap();
            pages.read(&json!({"tools": [], "nextCursor": "again"})).unwrap();
        }
        assert!(pages.next_params().is_err());
    }
}
