//! The gateway with real peers nobody here wrote: the official Python MCP SDK as the upstream
//! servers and as the client, in both protocol eras (2025-11-25 sessions, 2026-07-28 stateless).
//! Peers are installed by `.ci/peers.sh` and run on 127.0.0.1.

#[path = "support/fake_api.rs"]
mod fake_api;
#[path = "support/peers.rs"]
mod peers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mcp_hangar::crd::{CircuitBreaker, MCPServer, MCPServerGroup, MCPServerGroupSpec, MCPServerSpec, RateLimit};
use mcp_hangar::crd::{ServerMode, ToolsConfig};
use mcp_hangar::gateway::metrics::GatewayMetrics;
use mcp_hangar::gateway::{self, Catalog, Gateway, GatewayConfig, SessionKey, StaticCatalog, StoreCatalog};
use peers::message;
use prometheus::Registry;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const MODERN: &str = "2026-07-28";
const ALLOWED: [&str; 5] = ["add", "echo", "fail", "wait_for_gate", "whoami"];

/// A gateway replica served on 127.0.0.1, stopped on drop.
struct Replica {
    base: String,
    registry: Registry,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
}

impl Replica {
    async fn start(catalog: Arc<dyn Catalog>, key: u8, config: GatewayConfig) -> Replica {
        Replica::start_with_drain(catalog, key, config, Duration::from_secs(1)).await
    }

    async fn start_with_drain(catalog: Arc<dyn Catalog>, key: u8, config: GatewayConfig, drain: Duration) -> Replica {
        let registry = Registry::new();
        let metrics = GatewayMetrics::new(&registry).unwrap();
        let key = SessionKey::new(&[key; 32]).unwrap();
        let header_read_timeout = config.header_read_timeout;
        let gateway = Arc::new(Gateway::new(catalog, key, config, metrics));
        gateway.set_ready(true);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(gateway::server::serve(
            listener,
            gateway::router(gateway),
            header_read_timeout,
            async move {
                let _ = stopped.await;
            },
            drain,
        ));
        Replica { base, registry, stop: Some(stop), served }
    }

    /// Gives the order to stop; `served` ends once open connections have drained.
    fn stop(&mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        peers::metric(&self.registry, name, labels)
    }
}

fn server(name: &str, endpoint: String, tools: Option<ToolsConfig>, breaker: Option<CircuitBreaker>) -> MCPServer {
    let mut server = MCPServer::new(
        name,
        MCPServerSpec {
            mode: Some(ServerMode::Remote),
            endpoint: Some(endpoint),
            tools: tools.map(Box::new),
            circuit_breaker: breaker.map(Box::new),
            ..Default::default()
        },
    );
    server.metadata.namespace = Some("team".into());
    server.metadata.labels = Some(BTreeMap::from([("pool".to_string(), "py".to_string())]));
    server
}

fn allow_list() -> Option<ToolsConfig> {
    // `delete_everything` is allowed and denied: the deny list wins.
    let allow = ALLOWED.iter().chain(&["delete_everything"]).map(|t| t.to_string()).collect();
    Some(ToolsConfig { allow_list: Some(allow), deny_list: Some(vec!["delete_everything".into()]), rate_limit: None })
}

fn endpoint(peer: &peers::Peer) -> String {
    format!("http://{}/mcp", peer.addr)
}

fn gate() -> tempfile_path::Path {
    tempfile_path::Path::new()
}

/// A unique path that does not exist yet, removed on drop.
mod tempfile_path {
    pub struct Path(pub std::path::PathBuf);
    impl Path {
        pub fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Path(std::env::temp_dir().join(format!("mcp-hangar-gate-{}-{n}", std::process::id())))
        }
    }
    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// One POST; the whole answer.
async fn post(url: &str, headers: &[(&str, &str)], body: &Value) -> (StatusCode, HeaderMap, Bytes) {
    let mut request = Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client().request(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

/// A 2026-07-28 `tools/call` with its headers.
async fn modern_call(url: &str, tool: &str, name_header: &str) -> (StatusCode, HeaderMap, Bytes) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": tool, "arguments": {"text": "x"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
                  "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"}}}});
    let headers = [("mcp-protocol-version", MODERN), ("mcp-method", "tools/call"), ("mcp-name", name_header)];
    post(url, &headers, &body).await
}

/// A 2025-11-25 `initialize` + `notifications/initialized`; the session id the gateway gave.
async fn legacy_session(url: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    let (status, headers, body) = post(url, &[], &init).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let session = headers.get("mcp-session-id").expect("a session id").to_str().unwrap().to_string();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let version = [("mcp-session-id", session.as_str()), ("mcp-protocol-version", "2025-11-25")];
    let (status, _, _) = post(url, &version, &note).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    session
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_clients_see_only_allowed_tools_and_denied_calls_never_leave_the_gateway() {
    let gate = gate();
    let upstream = peers::python_server("alpha", &gate.0);
    let catalog = Arc::new(StaticCatalog::default());
    catalog.put_server(server("alpha", endpoint(&upstream), allow_list(), None));
    let replica = Replica::start(catalog, 1, GatewayConfig::default()).await;
    let url = format!("{}/servers/team/alpha/mcp", replica.base);
    for (mode, protocol) in [("legacy", "2025-11-25"), (MODERN, MODERN)] {
        let seen = peers::python_client(&url, mode, "policy").await;
        assert_eq!(seen["protocol"], protocol, "{seen}");
        assert_eq!(seen["tools"], json!(ALLOWED), "{mode}: tools/list is filtered (legacy: SSE, modern: JSON)");
        assert_eq!(seen["echo"], json!(["alpha: hi"]), "{mode}: an allowed call is forwarded");
        assert_eq!(seen["fail_is_error"], true, "{mode}: a tool error passes through as a result");
        assert_eq!(seen["denied"]["code"], -32602, "{mode}: {seen}");
        assert_eq!(seen["denied"]["message"], "Unknown tool: delete_everything");
    }
    let denied = [("namespace", "team"), ("server", "alpha"), ("outcome", "denied")];
    assert_eq!(replica.metric("mcp_hangar_tool_calls_total", &denied), 2.0);
    let forwarded = [("server", "alpha"), ("tool", "echo"), ("outcome", "forwarded")];
    assert_eq!(replica.metric("mcp_hangar_tool_calls_total", &forwarded), 2.0);
    let failed = [("server", "alpha"), ("tool", "fail"), ("outcome", "forwarded")];
    assert_eq!(replica.metric("mcp_hangar_tool_calls_total", &failed), 2.0, "isError is an answer");
    assert_eq!(replica.metric("mcp_hangar_circuit_breaker_state", &[("server", "alpha")]), 0.0);
}

/// A front that sends each request to the next replica in turn, like a Service would.
async fn alternating_front(backends: Vec<String>) -> (String, Arc<Vec<AtomicUsize>>) {
    let counts = Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect::<Vec<_>>());
    let next = Arc::new(AtomicUsize::new(0));
    let seen = counts.clone();
    let front = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (backends, counts, next) = (backends.clone(), counts.clone(), next.clone());
        async move {
            let i = next.fetch_add(1, Ordering::Relaxed) % backends.len();
            counts[i].fetch_add(1, Ordering::Relaxed);
            let (parts, body) = request.into_parts();
            let uri = format!("{}{}", backends[i], parts.uri.path_and_query().map_or("/", |p| p.as_str()));
            let mut forward = Request::builder().method(parts.method).uri(uri);
            for (name, value) in &parts.headers {
                if name != "host" {
                    forward = forward.header(name, value);
                }
            }
            let body = body.collect().await.unwrap().to_bytes();
            let response = client().request(forward.body(Body::from(body)).unwrap()).await.unwrap();
            response.map(Body::new)
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, front).await });
    (base, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_legacy_session_stays_on_its_member_while_requests_alternate_between_replicas() {
    let (gate_a, gate_b) = (gate(), gate());
    let alpha = peers::python_server("alpha", &gate_a.0);
    let beta = peers::python_server("beta", &gate_b.0);
    let catalog = Arc::new(StaticCatalog::default());
    catalog.put_server(server("alpha", endpoint(&alpha), None, None));
    catalog.put_server(server("beta", endpoint(&beta), None, None));
    let mut group = MCPServerGroup::new(
        "pool",
        MCPServerGroupSpec {
            selector: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                match_labels: Some(BTreeMap::from([("pool".to_string(), "py".to_string())])),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    group.metadata.namespace = Some("team".into());
    catalog.put_group(group);
    let one = Replica::start(catalog.clone(), 7, GatewayConfig::default()).await;
    let two = Replica::start(catalog.clone(), 7, GatewayConfig::default()).await;
    let (front, counts) = alternating_front(vec![one.base.clone(), two.base.clone()]).await;
    let url = format!("{front}/groups/team/pool/mcp");
    for _ in 0..2 {
        let seen = peers::python_client(&url, "legacy", "pinned").await;
        let whoami: Vec<&str> = seen["whoami"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert!(whoami.iter().all(|w| *w == whoami[0]), "one member serves the whole session: {whoami:?}");
    }
    let (a, b) = (counts[0].load(Ordering::Relaxed), counts[1].load(Ordering::Relaxed));
    assert!(a >= 8 && b >= 8, "both replicas served the sessions: {a} and {b}");
    let ended: f64 = [&one, &two]
        .iter()
        .map(|r| r.metric("mcp_hangar_gateway_request_duration_seconds", &[("name", "pool"), ("method", "DELETE")]))
        .sum();
    assert_eq!(ended, 2.0, "the SDK ended both sessions with DELETE through the gateway");

    // The session id is bound to its key, route and member: another key, another route or an
    // edited id reaches no upstream.
    let session = legacy_session(&format!("{}/groups/team/pool/mcp", one.base)).await;
    let list = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"});
    let with = |s: &str| [("mcp-session-id", s.to_string()), ("mcp-protocol-version", "2025-11-25".to_string())];
    let headers = with(&session);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, _) = post(&format!("{}/groups/team/pool/mcp", two.base), &headers, &list).await;
    assert_eq!(status, StatusCode::OK, "any replica with the key routes the session");
    let stranger = Replica::start(catalog.clone(), 8, GatewayConfig::default()).await;
    let (status, _, body) = post(&format!("{}/groups/team/pool/mcp", stranger.base), &headers, &list).await;
    assert_eq!((status, message(&body)["error"]["code"].clone()), (StatusCode::NOT_FOUND, json!(-32001)));
    let (status, _, _) = post(&format!("{}/servers/team/alpha/mcp", one.base), &headers, &list).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a group's session does not open on another route");
    let mut edited = session.clone().into_bytes();
    edited[8] = if edited[8] == b'A' { b'B' } else { b'A' };
    let edited = with(std::str::from_utf8(&edited).unwrap());
    let edited: Vec<(&str, &str)> = edited.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, _) = post(&format!("{}/groups/team/pool/mcp", one.base), &edited, &list).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an edited id is refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_answers_pass_through_event_by_event() {
    let gate = gate();
    let upstream = peers::python_server("alpha", &gate.0);
    let catalog = Arc::new(StaticCatalog::default());
    catalog.put_server(server("alpha", endpoint(&upstream), allow_list(), None));
    let replica = Replica::start(catalog, 1, GatewayConfig::default()).await;
    let url = format!("{}/servers/team/alpha/mcp", replica.base);
    let session = legacy_session(&url).await;
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "wait_for_gate", "arguments": {}, "_meta": {"progressToken": "p1"}}});
    let request = Request::post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .body(Body::from(call.to_string()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body().into_data_stream();
    let mut seen = String::new();
    // The tool does not finish until the gate opens, so the progress event can only arrive now
    // if the gateway passes events on as they come.
    while !seen.contains("notifications/progress") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("the progress event arrives while the tool still runs")
            .expect("the stream is open")
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(!seen.contains("gate opened"));
    std::fs::write(&gate.0, b"open").unwrap();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), body.next()).await.unwrap() {
        seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(seen.contains("gate opened"), "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stateless_requests_are_checked_rate_limited_and_refused_from_foreign_origins() {
    let gate = gate();
    let upstream = peers::python_server("alpha", &gate.0);
    let catalog = Arc::new(StaticCatalog::default());
    let tools = ToolsConfig {
        allow_list: None,
        deny_list: None,
        rate_limit: Some(RateLimit { requests_per_minute: Some(1), burst_size: Some(2) }),
    };
    catalog.put_server(server("alpha", endpoint(&upstream), Some(tools), None));
    let config = GatewayConfig {
        allowed_origins: vec!["https://app.example.com".into()],
        max_body_bytes: 2048,
        ..Default::default()
    };
    let replica = Replica::start(catalog, 1, config).await;
    let url = format!("{}/servers/team/alpha/mcp", replica.base);

    let (status, _, body) = modern_call(&url, "echo", "delete_everything").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "Mcp-Name must name the body's tool");
    assert_eq!(message(&body)["error"]["code"], -32020);

    for _ in 0..2 {
        let (status, _, body) = modern_call(&url, "echo", "echo").await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(message(&body)["result"]["content"][0]["text"], "alpha: x");
    }
    let (status, headers, body) = modern_call(&url, "echo", "echo").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "60", "one call a minute, the burst used up");
    assert_eq!(message(&body)["error"]["code"], -32029);
    assert_eq!(replica.metric("mcp_hangar_rate_limit_hits_total", &[("server", "alpha")]), 1.0);

    let sneaky = json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "delete_everything"}});
    let (status, _, _) = post(&url, &[], &sneaky).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a tools/call notification is refused, never forwarded");
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let (status, _, body) = post(&url, &[("origin", "https://evil.example")], &list).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a foreign browser Origin (DNS rebinding) is refused");
    assert!(message(&body)["error"].is_object());
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let (status, _, _) = post(&url, &[("origin", "https://app.example.com")], &init).await;
    assert_eq!(status, StatusCode::OK, "an allowed Origin passes");
    let (status, _, _) =
        post(&url, &[], &json!({"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"p": "a".repeat(4096)}})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, body) = post(&format!("{}/servers/team/nobody/mcp", replica.base), &[], &list).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_breaker_opens_on_unreachable_upstreams_and_fails_fast() {
    let dead_port = peers::free_port();
    let catalog = Arc::new(StaticCatalog::default());
    let breaker = CircuitBreaker { enabled: Some(true), failure_threshold: Some(2), reset_timeout: Some("1h".into()) };
    catalog.put_server(server("gone", format!("http://127.0.0.1:{dead_port}/mcp"), None, Some(breaker)));
    let replica = Replica::start(catalog, 1, GatewayConfig::default()).await;
    let url = format!("{}/servers/team/gone/mcp", replica.base);
    for _ in 0..2 {
        let (status, _, body) = modern_call(&url, "echo", "echo").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{}", String::from_utf8_lossy(&body));
    }
    let (status, headers, body) = modern_call(&url, "echo", "echo").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "3600");
    let error = &message(&body)["error"];
    assert_eq!(error["code"], -32030);
    assert!(error["message"].as_str().unwrap().contains("team/gone"), "{error}");
    assert_eq!(replica.metric("mcp_hangar_circuit_breaker_state", &[("server", "gone")]), 1.0);
    let unavailable = [("server", "gone"), ("outcome", "unavailable")];
    assert_eq!(replica.metric("mcp_hangar_tool_calls_total", &unavailable), 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_upstream_times_out_and_opens_the_breaker() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let catalog = Arc::new(StaticCatalog::default());
    let breaker = CircuitBreaker { enabled: None, failure_threshold: Some(1), reset_timeout: Some("30s".into()) };
    catalog.put_server(server("silent", format!("http://{addr}/mcp"), None, Some(breaker)));
    let config = GatewayConfig { upstream_timeout: Duration::from_millis(300), ..Default::default() };
    let replica = Replica::start(catalog, 1, config).await;
    let url = format!("{}/servers/team/silent/mcp", replica.base);
    let (status, _, body) = modern_call(&url, "echo", "echo").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(message(&body)["error"]["message"].as_str().unwrap().contains("did not answer within"));
    let (status, headers, _) = modern_call(&url, "echo", "echo").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "a timeout is a failure");
    assert_eq!(headers["retry-after"], "30");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_an_open_stream_finish_and_refuses_new_connections() {
    let gate = gate();
    let upstream = peers::python_server("alpha", &gate.0);
    let catalog = Arc::new(StaticCatalog::default());
    catalog.put_server(server("alpha", endpoint(&upstream), None, None));
    let mut replica = Replica::start_with_drain(catalog, 1, GatewayConfig::default(), Duration::from_secs(60)).await;
    let url = format!("{}/servers/team/alpha/mcp", replica.base);
    let session = legacy_session(&url).await;
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "wait_for_gate", "arguments": {}, "_meta": {"progressToken": "p1"}}});
    let request = Request::post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .body(Body::from(call.to_string()))
        .unwrap();
    let mut body = client().request(request).await.unwrap().into_body().into_data_stream();
    let mut seen = String::new();
    while !seen.contains("notifications/progress") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next()).await.unwrap().unwrap().unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    replica.stop();
    let addr = replica.base.trim_start_matches("http://").to_string();
    let refused = async {
        while tokio::net::TcpStream::connect(&addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused).await.expect("the listener closes");
    assert!(!replica.served.is_finished(), "the open stream holds the drain");
    std::fs::write(&gate.0, b"open").unwrap();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), body.next()).await.unwrap() {
        seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(seen.contains("gate opened"), "the stream finished after the stop: {seen}");
    tokio::time::timeout(Duration::from_secs(10), &mut replica.served).await.expect("drained").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_subcommand_serves_a_routes_file_and_stops_on_sigterm() {
    let gate = gate();
    let upstream = peers::python_server("alpha", &gate.0);
    let dir = std::env::temp_dir().join(format!("mcp-hangar-gateway-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let routes = dir.join("routes.yaml");
    std::fs::write(
        &routes,
        format!(
            "apiVersion: mcp-hangar.io/v1alpha1\nkind: MCPServer\nmetadata: {{name: alpha, namespace: team}}\n\
             spec:\n  mode: remote\n  endpoint: {}\n  tools:\n    allowList: [echo, fail]\n",
            endpoint(&upstream)
        ),
    )
    .unwrap();
    let key = dir.join("session-key");
    std::fs::write(&key, "k".repeat(40)).unwrap();
    let (port, admin) = (peers::free_port(), peers::free_port());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-hangar"))
        .args(["gateway", "--log-format", "json", "--shutdown-delay", "0s", "--auth", "none"])
        .args(["--addr", &format!("127.0.0.1:{port}"), "--admin-addr", &format!("127.0.0.1:{admin}")])
        .arg("--routes-file")
        .arg(&routes)
        .arg("--session-key-file")
        .arg(&key)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    peers::listening(port).await;
    let seen =
        peers::python_client(&format!("http://127.0.0.1:{port}/servers/team/alpha/mcp"), "legacy", "policy").await;
    assert_eq!(seen["tools"], json!(["echo", "fail"]));
    assert_eq!(seen["denied"]["code"], -32602);
    let get = |path: &str| {
        let uri = format!("http://127.0.0.1:{admin}{path}");
        async move {
            let response = client().request(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
            let status = response.status();
            (status, String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
        }
    };
    assert_eq!(get("/readyz").await.0, StatusCode::OK);
    let (_, metrics) = get("/metrics").await;
    assert!(
        metrics.contains(
            r#"mcp_hangar_tool_calls_total{namespace="team",outcome="denied",server="alpha",tool="(not allowed)"} 1"#
        ),
        "{metrics}"
    );
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("gateway request") && logs.contains("\"tool\":\"echo\""), "access logs: {logs}");
    assert!(logs.contains("--auth none: every caller"), "an open gateway says so: {logs}");
    assert!(!logs.contains("alpha: hi") && !logs.contains("\"text\""), "no tool arguments or results in logs");
    assert!(!logs.contains(&"k".repeat(40)), "no key in logs");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_typescript_sdk_client_and_server_meet_through_the_gateway() {
    let upstream = peers::ts_server("tsalpha");
    let catalog = Arc::new(StaticCatalog::default());
    let tools = ToolsConfig { allow_list: Some(vec!["echo".into(), "fail".into()]), deny_list: None, rate_limit: None };
    catalog.put_server(server("tsalpha", endpoint(&upstream), Some(tools), None));
    let replica = Replica::start(catalog, 1, GatewayConfig::default()).await;
    let seen = peers::ts_client(&format!("{}/servers/team/tsalpha/mcp", replica.base)).await;
    assert_eq!(seen["protocol"], "2025-11-25", "{seen}");
    assert_eq!(seen["tools"], json!(["echo", "fail"]));
    assert_eq!(seen["echo"], json!(["tsalpha: hi"]));
    assert_eq!(seen["fail_is_error"], true);
    assert_eq!(seen["denied"]["code"], -32602, "{seen}");
    let ended = replica.metric("mcp_hangar_gateway_request_duration_seconds", &[("method", "DELETE")]);
    assert_eq!(ended, 1.0, "terminateSession went through the gateway");
}

/// A 2026-07-28 `tools/list`; the tool names answered, or the HTTP status.
async fn modern_list(url: &str) -> Result<Vec<String>, StatusCode> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
                  "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"}}}});
    let (status, _, answer) = post(url, &[("mcp-protocol-version", MODERN), ("mcp-method", "tools/list")], &body).await;
    if status != StatusCode::OK {
        return Err(status);
    }
    let tools = message(&answer)["result"]["tools"].as_array().cloned().unwrap_or_default();
    Ok(tools.iter().map(|t| t["name"].as_str().unwrap().to_string()).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_follow_the_mcpservers_of_the_cluster() {
    let gate = gate();
    let upstream = peers::python_server("alpha", &gate.0);
    let fake = fake_api::FakeApi::start().await;
    fake.register_kind("mcp-hangar.io/v1alpha1", "mcpservers", "MCPServer");
    fake.register_kind("mcp-hangar.io/v1alpha1", "mcpservergroups", "MCPServerGroup");
    let path = "/apis/mcp-hangar.io/v1alpha1/namespaces/team/mcpservers/alpha";
    let mut object = serde_json::to_value(server("alpha", endpoint(&upstream), None, None)).unwrap();
    fake.put(path, object.clone());
    let catalog = StoreCatalog::watch(fake.client()).await;
    let replica = Replica::start(Arc::new(catalog), 1, GatewayConfig::default()).await;
    let url = format!("{}/servers/team/alpha/mcp", replica.base);
    assert_eq!(modern_list(&url).await.unwrap().len(), 6, "every tool before an allow list");

    object["spec"]["tools"] = json!({"allowList": ["whoami"]});
    fake.put(path, object);
    let filtered = async {
        loop {
            if modern_list(&url).await == Ok(vec!["whoami".to_string()]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), filtered).await.expect("an edited allow list applies at once");

    fake.delete(path);
    let gone = async {
        while modern_list(&url).await != Err(StatusCode::NOT_FOUND) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), gone).await.expect("a deleted server is no longer routed");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let catalog = Arc::new(StaticCatalog::default());
    catalog.put_server(server("alpha", "http://127.0.0.1:9/mcp".into(), None, None));
    let config = GatewayConfig {
        header_read_timeout: Duration::from_millis(300),
        request_body_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let replica = Replica::start(catalog, 1, config).await;
    let addr = replica.base.trim_start_matches("http://").to_string();

    let mut slow_headers = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow_headers.write_all(b"POST /servers/team/alpha/mcp HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow_headers.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "headers that never end close the connection");

    let mut slow_body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = "POST /servers/team/alpha/mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    slow_body.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), slow_body.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "a body that never arrives: {answer}");
}
