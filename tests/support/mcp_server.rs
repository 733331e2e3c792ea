//! A tiny real MCP server for tests, on 127.0.0.1 with a free port.
//!
//! It speaks streamable HTTP on `POST /mcp` (`initialize`, `notifications/initialized`,
//! `tools/list` with cursor pagination, `DELETE` to end a session) and the older HTTP+SSE
//! transport on `GET /sse` + `POST /messages`. How it answers can be switched at runtime
//! ([`Answer`]) to drill clients: JSON or event-stream bodies, streams left open, HTTP
//! errors, JSON-RPC errors, or no answer at all. Every request is logged ([`Seen`]).

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// The session id the server hands out.
pub const SESSION_ID: &str = "test-session-1";
/// The protocol version the server answers with.
pub const SERVER_PROTOCOL: &str = "2025-06-18";

/// How the server answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `application/json` bodies.
    Json,
    /// `text/event-stream` bodies: a notification event, then the answer, then the end.
    Sse,
    /// Like `Sse`, but the stream stays open after the answer.
    SseKeepOpen,
    /// Every request fails with this HTTP status.
    Status(u16),
    /// Every request waits forever.
    Hang,
    /// Every request gets a JSON-RPC error.
    RpcError,
    /// A 200 with a `text/html` page.
    NotMcp,
    /// Only the stateless 2026-07-28 revision: `server/discover` and `tools/list` with the
    /// `_meta` envelope and matching headers; anything else is refused with `-32022`.
    Stateless,
    /// Only a revision from the future: everything is refused with `-32022`.
    FutureOnly,
}

/// The revision [`Answer::FutureOnly`] claims to serve.
pub const FUTURE_PROTOCOL: &str = "2099-01-01";

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// HTTP method.
    pub http: String,
    /// JSON-RPC method, when there is one.
    pub method: Option<String>,
    /// `Mcp-Session-Id` sent by the client.
    pub session: Option<String>,
    /// `MCP-Protocol-Version` sent by the client.
    pub protocol: Option<String>,
    /// `Accept` sent by the client.
    pub accept: Option<String>,
    /// `Mcp-Method` sent by the client.
    pub mcp_method: Option<String>,
}

struct Shared {
    answer: Mutex<Answer>,
    tools: Mutex<Vec<String>>,
    page_size: Mutex<usize>,
    seen: Mutex<Vec<Seen>>,
    legacy_stream: Mutex<Option<mpsc::Sender<Bytes>>>,
}

/// The running server; stops when dropped.
pub struct McpTestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl McpTestServer {
    /// Starts a server offering these tools, answering with JSON.
    pub async fn start(tools: &[&str]) -> McpTestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let (server, router) = Self::prepare(listener.local_addr().expect("address"), tools);
        let mut stop = server.shutdown.subscribe();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let _ = axum::serve(listener, router).with_graceful_shutdown(stopped).await;
        });
        server
    }

    /// Builds the shared state and router for a server at `addr` (used by TLS variants too).
    pub fn prepare(addr: SocketAddr, tools: &[&str]) -> (McpTestServer, Router) {
        let shared = Arc::new(Shared {
            answer: Mutex::new(Answer::Json),
            tools: Mutex::new(tools.iter().map(|t| t.to_string()).collect()),
            page_size: Mutex::new(usize::MAX),
            seen: Mutex::new(Vec::new()),
            legacy_stream: Mutex::new(None),
        });
        let router = Router::new()
            .route("/mcp", post(streamable).delete(end_session))
            .route("/sse", get(legacy_open))
            .route("/messages", post(legacy_message))
            .with_state(shared.clone());
        let (shutdown, _) = watch::channel(false);
        (McpTestServer { addr, shared, shutdown }, router)
    }

    /// `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// `http://127.0.0.1:PORT/sse`, the older transport's stream.
    pub fn legacy_url(&self) -> String {
        format!("http://{}/sse", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes how the server answers.
    pub fn set_answer(&self, answer: Answer) {
        *self.shared.answer.lock().unwrap() = answer;
    }

    /// Changes the tools offered.
    pub fn set_tools(&self, tools: &[&str]) {
        *self.shared.tools.lock().unwrap() = tools.iter().map(|t| t.to_string()).collect();
    }

    /// Splits `tools/list` into pages of this size.
    pub fn set_page_size(&self, size: usize) {
        *self.shared.page_size.lock().unwrap() = size.max(1);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The JSON-RPC methods received so far, in order.
    pub fn methods(&self) -> Vec<String> {
        self.seen().into_iter().filter_map(|s| s.method).collect()
    }
}

impl Drop for McpTestServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn record(shared: &Shared, http: &str, headers: &HeaderMap, message: Option<&Value>) {
    shared.seen.lock().unwrap().push(Seen {
        http: http.into(),
        method: message.and_then(|m| m.get("method")).and_then(Value::as_str).map(str::to_string),
        session: header_text(headers, "mcp-session-id"),
        protocol: header_text(headers, "mcp-protocol-version"),
        accept: header_text(headers, "accept"),
        mcp_method: header_text(headers, "mcp-method"),
    });
}

/// The JSON-RPC answer to one request, or `None` for a notification.
fn answer_to(shared: &Shared, message: &Value, answer: Answer) -> Option<Value> {
    let id = message.get("id")?.clone();
    if answer == Answer::RpcError {
        return Some(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": "internal failure"}}));
    }
    let result = match message.get("method").and_then(Value::as_str) {
        Some("initialize") => json!({
            "protocolVersion": SERVER_PROTOCOL,
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "test-mcp", "version": "1.0.0"},
        }),
        Some("tools/list") => {
            let tools = shared.tools.lock().unwrap().clone();
            let size = *shared.page_size.lock().unwrap();
            let start: usize =
                message.pointer("/params/cursor").and_then(Value::as_str).and_then(|c| c.parse().ok()).unwrap_or(0);
            let end = start.saturating_add(size).min(tools.len());
            let page: Vec<Value> = tools[start.min(end)..end]
                .iter()
                .map(|name| json!({"name": name, "description": "a test tool", "inputSchema": {"type": "object"}}))
                .collect();
            let mut result = json!({"tools": page});
            if end < tools.len() {
                result["nextCursor"] = json!(end.to_string());
            }
            result
        }
        _ => {
            return Some(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "method not found"}}));
        }
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

async fn streamable(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(&shared, "POST", &headers, Some(&message));
    let answer = *shared.answer.lock().unwrap();
    match answer {
        Answer::Status(code) => {
            return StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response();
        }
        Answer::Hang => return std::future::pending().await,
        Answer::NotMcp => {
            return ([(header::CONTENT_TYPE, "text/html")], "<html>hello</html>").into_response();
        }
        _ => {}
    }
    let method = message.get("method").and_then(Value::as_str).unwrap_or_default();
    if matches!(answer, Answer::Stateless | Answer::FutureOnly) {
        return stateless(&shared, &headers, &message, answer);
    }
    if method != "initialize" && header_text(&headers, "mcp-session-id").as_deref() != Some(SESSION_ID) {
        return (StatusCode::BAD_REQUEST, "missing or unknown Mcp-Session-Id").into_response();
    }
    let Some(reply) = answer_to(&shared, &message, answer) else {
        return StatusCode::ACCEPTED.into_response();
    };
    let session = [("mcp-session-id", SESSION_ID)];
    match answer {
        Answer::Sse | Answer::SseKeepOpen => {
            let note = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "working"}});
            let text = format!(": comment\n\ndata: {note}\n\nevent: message\nid: 1\ndata: {reply}\n\n");
            let (sender, receiver) = mpsc::channel::<Bytes>(4);
            let keep_open = answer == Answer::SseKeepOpen;
            tokio::spawn(async move {
                let (first, second) = text.split_at(text.len() / 2);
                let _ = sender.send(Bytes::from(first.to_string())).await;
                let _ = sender.send(Bytes::from(second.to_string())).await;
                if keep_open {
                    sender.closed().await;
                }
            });
            (session, [(header::CONTENT_TYPE, "text/event-stream")], stream_body(receiver)).into_response()
        }
        _ => (session, [(header::CONTENT_TYPE, "application/json")], reply.to_string()).into_response(),
    }
}

/// A 2026-07-28 server: every request carries its revision in `params._meta` and headers.
fn stateless(shared: &Shared, headers: &HeaderMap, message: &Value, answer: Answer) -> Response {
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let method = message.get("method").and_then(Value::as_str).unwrap_or_default();
    let envelope = message["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"].as_str();
    let refuse = |code: i64, text: String, data: Value| {
        let error = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": text, "data": data}});
        (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], error.to_string()).into_response()
    };
    let supported = if answer == Answer::FutureOnly { FUTURE_PROTOCOL } else { "2026-07-28" };
    if envelope != Some(supported) {
        let requested = envelope.map(str::to_string).or_else(|| header_text(headers, "mcp-protocol-version"));
        let text = format!("Unsupported protocol version: {}", requested.clone().unwrap_or_default());
        return refuse(-32022, text, json!({"supported": [supported], "requested": requested}));
    }
    if header_text(headers, "mcp-protocol-version").as_deref() != envelope
        || header_text(headers, "mcp-method").as_deref() != Some(method)
    {
        return refuse(-32020, "header mismatch".into(), Value::Null);
    }
    let stamp = json!({"io.modelcontextprotocol/serverInfo": {"name": "test-mcp-stateless", "version": "2.0.0"}});
    let result = match method {
        "server/discover" => json!({
            "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {}},
            "resultType": "complete", "ttlMs": 0, "cacheScope": "private",
            "_meta": stamp,
        }),
        "tools/list" => {
            let Some(mut reply) = answer_to(shared, message, Answer::Json) else {
                return StatusCode::ACCEPTED.into_response();
            };
            reply["result"]["_meta"] = stamp;
            return ([(header::CONTENT_TYPE, "application/json")], reply.to_string()).into_response();
        }
        _ => {
            let error = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "method not found"}});
            return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "application/json")], error.to_string())
                .into_response();
        }
    };
    let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
    ([(header::CONTENT_TYPE, "application/json")], reply.to_string()).into_response()
}

async fn end_session(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> StatusCode {
    record(&shared, "DELETE", &headers, None);
    StatusCode::OK
}

async fn legacy_open(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    record(&shared, "GET", &headers, None);
    if let Answer::Status(code) = *shared.answer.lock().unwrap() {
        return StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response();
    }
    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    let _ = sender.send(Bytes::from(format!("event: endpoint\ndata: /messages?sessionId={SESSION_ID}\n\n"))).await;
    *shared.legacy_stream.lock().unwrap() = Some(sender);
    ([(header::CONTENT_TYPE, "text/event-stream")], stream_body(receiver)).into_response()
}

async fn legacy_message(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(&shared, "POST", &headers, Some(&message));
    let expected = format!("sessionId={SESSION_ID}");
    if uri.query() != Some(expected.as_str()) {
        return StatusCode::NOT_FOUND;
    }
    let answer = *shared.answer.lock().unwrap();
    if let Some(reply) = answer_to(&shared, &message, answer) {
        let sender = shared.legacy_stream.lock().unwrap().clone();
        if let Some(sender) = sender {
            let _ = sender.send(Bytes::from(format!("event: message\ndata: {reply}\n\n"))).await;
        }
    }
    StatusCode::ACCEPTED
}

/// Serves `router` over TLS on `listener` until the returned sender is dropped or set.
pub fn serve_tls(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
) -> watch::Sender<bool> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    let (stop, mut stopped) = watch::channel(false);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.changed() => break,
            };
            let Ok((stream, _)) = accepted else { continue };
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                }
            });
        }
    });
    stop
}

/// A streaming body fed by a channel; it ends when every sender is gone.
fn stream_body(receiver: mpsc::Receiver<Bytes>) -> Body {
    Body::from_stream(futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|bytes| (Ok::<_, Infallible>(bytes), receiver))
    }))
}
