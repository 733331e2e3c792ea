//! HTTP exchanges: streamable HTTP (handshake sessions and stateless requests) and the older
//! HTTP+SSE transport. Every body is read with a size limit, redirects are not followed, and
//! a session opened here is always ended: [`SessionGuard`] sends the `DELETE` when dropped,
//! so success, errors, timeouts and cancellation all close it.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;

use super::jsonrpc::{self, Revision};
use super::sse::{EventStream, SseEvent};
use super::{MAX_ANSWER_BYTES, MAX_ERROR_BODY_BYTES, McpError, error_chain, quote};

/// What a client accepts from a streamable-HTTP server.
const ACCEPT_BOTH: &str = "application/json, text/event-stream";
/// How long a background `DELETE` of a session may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector<Resolver>>, Full<Bytes>>;

/// Resolves host names through the system, except for fixed overrides (as `curl --resolve`);
/// the gateway's upstream client uses it too.
#[derive(Clone)]
pub struct Resolver {
    overrides: Arc<HashMap<String, IpAddr>>,
    system: GaiResolver,
}

impl Resolver {
    /// A resolver connecting these host names (any case) to fixed addresses.
    pub fn new(overrides: impl IntoIterator<Item = (String, IpAddr)>) -> Self {
        let overrides = overrides.into_iter().map(|(host, ip)| (host.to_ascii_lowercase(), ip)).collect();
        Resolver { overrides: Arc::new(overrides), system: GaiResolver::new() }
    }
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

/// A pooled HTTP(S) client; cheap to clone.
#[derive(Clone)]
pub(crate) struct Http {
    client: HttpClient,
}

impl Http {
    /// A client with `tls` for https, resolving names with `resolver`.
    pub(crate) fn new(tls: rustls::ClientConfig, resolver: Resolver) -> Self {
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        Http { client }
    }

    async fn send(&self, request: Request<Full<Bytes>>, method: &'static str) -> Result<Response<Incoming>, McpError> {
        self.client.request(request).await.map_err(|e| McpError::Connection { method, detail: error_chain(&e) })
    }
}

pub(crate) fn to_uri(url: &url::Url) -> Result<Uri, McpError> {
    url.as_str().parse().map_err(|e: hyper::http::uri::InvalidUri| McpError::InvalidUrl(e.to_string()))
}

fn user_agent() -> &'static str {
    concat!("mcp-hangar/", env!("CARGO_PKG_VERSION"))
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

/// Turns an answer into its result, or its error into [`McpError::Rpc`].
pub(crate) fn rpc_result(answer: Value, method: &'static str, status: Option<u16>) -> Result<Value, McpError> {
    if let Some(error) = jsonrpc::error_of(&answer) {
        let supported = error
            .data
            .as_ref()
            .and_then(|d| d.get("supported"))
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_str).take(16).map(quote).collect())
            .unwrap_or_default();
        return Err(McpError::Rpc {
            method,
            code: i64::from(error.code.0),
            message: quote(&error.message),
            status,
            supported,
        });
    }
    Ok(answer.get("result").cloned().unwrap_or(Value::Null))
}

/// The answer with that id in an SSE event, if the event carries it.
fn event_answer(event: &SseEvent, id: u64) -> Option<Value> {
    if !(event.event.is_empty() || event.event == "message") {
        return None;
    }
    serde_json::from_str(&event.data).ok().and_then(|value| jsonrpc::find_answer(value, id))
}

/// The failure a non-2xx answer stands for: its JSON-RPC error when the body carries one,
/// else the status with the start of the body.
async fn rejection(response: Response<Incoming>, method: &'static str) -> McpError {
    let status = response.status().as_u16();
    let body = read_limited(response.into_body(), MAX_ERROR_BODY_BYTES).await.unwrap_or_default();
    if let Ok(value) = serde_json::from_slice::<Value>(&body)
        && value.get("error").is_some()
    {
        return rpc_result(value, method, Some(status)).err().unwrap_or(McpError::Status {
            method,
            status,
            detail: String::new(),
        });
    }
    let text = String::from_utf8_lossy(&body);
    McpError::Status { method, status, detail: quote(text.trim()) }
}

/// Ends a streamable-HTTP session when dropped: a background `DELETE` with its id
/// (servers may refuse with 405, which is fine).
pub(crate) struct SessionGuard {
    http: Http,
    uri: Uri,
    id: HeaderValue,
    protocol: Option<HeaderValue>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut builder = Request::builder()
            .method(Method::DELETE)
            .uri(self.uri.clone())
            .header(jsonrpc::SESSION_HEADER, self.id.clone())
            .header(USER_AGENT, user_agent());
        if let Some(protocol) = &self.protocol {
            builder = builder.header(jsonrpc::PROTOCOL_VERSION_HEADER, protocol.clone());
        }
        let (Ok(request), Ok(runtime)) = (builder.body(Full::new(Bytes::new())), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let http = self.http.clone();
        runtime.spawn(async move {
            match tokio::time::timeout(CLOSE_TIMEOUT, http.client.request(request)).await {
                Ok(Ok(response)) => tracing::debug!(status = response.status().as_u16(), "MCP session closed"),
                Ok(Err(error)) => tracing::debug!(error = %error_chain(&error), "closing an MCP session failed"),
                Err(_) => tracing::debug!("closing an MCP session timed out"),
            }
        });
    }
}

/// A conversation over streamable HTTP: a handshake session, or stateless requests.
pub(crate) struct Streamable {
    http: Http,
    uri: Uri,
    session: Option<SessionGuard>,
    protocol: Option<HeaderValue>,
    stateless: Option<Revision>,
}

impl Streamable {
    /// A conversation that starts with `initialize`.
    pub(crate) fn handshake(http: Http, uri: Uri) -> Self {
        Streamable { http, uri, session: None, protocol: None, stateless: None }
    }

    /// Stateless requests of `revision`: each carries the `_meta` envelope and routing headers.
    pub(crate) fn stateless(http: Http, uri: Uri, revision: Revision) -> Self {
        let protocol = Some(HeaderValue::from_static(revision.as_str()));
        Streamable { http, uri, session: None, protocol, stateless: Some(revision) }
    }

    /// Sends `MCP-Protocol-Version` from now on (after `initialize` chose it).
    pub(crate) fn set_protocol(&mut self, version: &str, method: &'static str) -> Result<(), McpError> {
        let value = HeaderValue::from_str(version)
            .map_err(|_| McpError::Protocol { method, detail: "the protocol version is not a header value".into() })?;
        self.protocol = Some(value);
        Ok(())
    }

    fn post(&self, message: &Value, method: &str, name: Option<String>) -> Result<Request<Full<Bytes>>, McpError> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, ACCEPT_BOTH)
            .header(USER_AGENT, user_agent());
        if let Some(session) = &self.session {
            builder = builder.header(jsonrpc::SESSION_HEADER, session.id.clone());
        }
        if let Some(protocol) = &self.protocol {
            builder = builder.header(jsonrpc::PROTOCOL_VERSION_HEADER, protocol.clone());
        }
        if self.stateless.is_some() {
            builder = builder.header(jsonrpc::METHOD_HEADER, method);
            if let Some(name) = name {
                builder = builder.header(jsonrpc::NAME_HEADER, name);
            }
        }
        builder.body(Full::new(Bytes::from(message.to_string()))).map_err(|e| McpError::InvalidUrl(e.to_string()))
    }

    fn keep_session(&mut self, response: &Response<Incoming>, method: &'static str) -> Result<(), McpError> {
        let Some(value) = response.headers().get(jsonrpc::SESSION_HEADER) else {
            return Ok(());
        };
        let valid = value.to_str().ok().filter(|v| !v.is_empty() && v.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        if valid.is_none() {
            return Err(McpError::Protocol { method, detail: "Mcp-Session-Id must be visible ASCII".into() });
        }
        if self.session.as_ref().is_none_or(|s| s.id != value) {
            self.session = Some(SessionGuard {
                http: self.http.clone(),
                uri: self.uri.clone(),
                id: value.clone(),
                protocol: self.protocol.clone(),
            });
        }
        Ok(())
    }

    /// Sends a request and returns its result.
    pub(crate) async fn call(&mut self, id: u64, method: &'static str, params: Value) -> Result<Value, McpError> {
        let name = jsonrpc::name_header(method, &params);
        let params = match self.stateless {
            Some(revision) => jsonrpc::with_envelope(params, revision),
            None => params,
        };
        let request = self.post(&jsonrpc::request(id, method, params), method, name)?;
        let response = self.http.send(request, method).await?;
        self.keep_session(&response, method)?;
        if let Some(session) = &mut self.session {
            session.protocol = self.protocol.clone();
        }
        if !response.status().is_success() {
            return Err(rejection(response, method).await);
        }
        if response.status() != StatusCode::OK {
            let status = response.status().as_u16();
            return Err(McpError::Status { method, status, detail: "a request needs a 200 answer".into() });
        }
        let protocol_error = |detail: String| McpError::Protocol { method, detail };
        let answer = match content_type(&response).as_str() {
            "application/json" => {
                let body = read_limited(response.into_body(), MAX_ANSWER_BYTES).await.map_err(protocol_error)?;
                let value: Value = serde_json::from_slice(&body)
                    .map_err(|e| protocol_error(format!("the answer is not JSON: {}", quote(&e.to_string()))))?;
                jsonrpc::find_answer(value, id)
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
        rpc_result(answer, method, None)
    }

    /// Sends a notification.
    pub(crate) async fn notify(&mut self, method: &'static str) -> Result<(), McpError> {
        let request = self.post(&jsonrpc::notification(method), method, None)?;
        let response = self.http.send(request, method).await?;
        if !response.status().is_success() {
            return Err(rejection(response, method).await);
        }
        Ok(())
    }
}

/// A session of the older HTTP+SSE transport; dropping it drops the event stream.
pub(crate) struct Legacy {
    http: Http,
    post_uri: Uri,
    events: EventStream,
}

impl Legacy {
    /// Opens the event stream at `base` and waits for its `endpoint` event.
    pub(crate) async fn open(http: Http, base: &url::Url) -> Result<Legacy, McpError> {
        const OPEN: &str = "open event stream";
        let request = Request::builder()
            .method(Method::GET)
            .uri(to_uri(base)?)
            .header(ACCEPT, "text/event-stream")
            .header(USER_AGENT, user_agent())
            .body(Full::new(Bytes::new()))
            .map_err(|e| McpError::InvalidUrl(e.to_string()))?;
        let response = http.send(request, OPEN).await?;
        if response.status() != StatusCode::OK {
            return Err(rejection(response, OPEN).await);
        }
        if content_type(&response) != "text/event-stream" {
            return Err(McpError::Protocol { method: OPEN, detail: "the stream is not text/event-stream".into() });
        }
        let mut events = EventStream::new(response.into_body(), MAX_ANSWER_BYTES * 4);
        let protocol_error = |detail| McpError::Protocol { method: OPEN, detail };
        let endpoint = loop {
            match events.next().await.map_err(protocol_error)? {
                Some(event) if event.event == "endpoint" => break event.data,
                Some(_) => continue,
                None => return Err(protocol_error("the stream ended before an endpoint event".into())),
            }
        };
        let target = base.join(endpoint.trim()).map_err(|e| protocol_error(format!("invalid endpoint event: {e}")))?;
        if target.origin() != base.origin() {
            return Err(protocol_error("the endpoint event points to another origin".into()));
        }
        Ok(Legacy { http, post_uri: to_uri(&target)?, events })
    }

    async fn post(&self, message: &Value, method: &'static str) -> Result<(), McpError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.post_uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, user_agent())
            .body(Full::new(Bytes::from(message.to_string())))
            .map_err(|e| McpError::InvalidUrl(e.to_string()))?;
        let response = self.http.send(request, method).await?;
        if !response.status().is_success() {
            return Err(rejection(response, method).await);
        }
        Ok(())
    }

    /// Posts a request and waits for its answer on the stream.
    pub(crate) async fn call(&mut self, id: u64, method: &'static str, params: Value) -> Result<Value, McpError> {
        self.post(&jsonrpc::request(id, method, params), method).await?;
        loop {
            let event =
                self.events.next().await.map_err(|detail| McpError::Protocol { method, detail })?.ok_or_else(|| {
                    McpError::Protocol { method, detail: "the event stream ended before the answer".into() }
                })?;
            if let Some(answer) = event_answer(&event, id) {
                return rpc_result(answer, method, None);
            }
        }
    }

    /// Posts a notification.
    pub(crate) async fn notify(&mut self, method: &'static str) -> Result<(), McpError> {
        self.post(&jsonrpc::notification(method), method).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rpc_errors_keep_code_message_status_and_supported_revisions() {
        let long = "x".repeat(1000);
        let answer = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": long}});
        match rpc_result(answer, "initialize", None) {
            Err(McpError::Rpc { code, message, .. }) => {
                assert_eq!(code, -32601);
                assert!(message.chars().count() <= super::super::MAX_QUOTED + 1);
            }
            other => panic!("unexpected {other:?}"),
        }
        let unsupported = json!({"jsonrpc": "2.0", "id": null, "error": {
            "code": -32022, "message": "Unsupported protocol version: 2025-06-18",
            "data": {"supported": ["2026-07-28"], "requested": "2025-06-18"}}});
        let error = rpc_result(unsupported, "initialize", Some(400)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "initialize: JSON-RPC error -32022: Unsupported protocol version: 2025-06-18 (HTTP 400) (supported: 2026-07-28)"
        );
    }
}
