//! Groups through the gateway with real members (servers of the official Python MCP SDK, from
//! `.ci/peers.sh`): the strategies, failover retries, `unhealthyThreshold`, and the breaker's
//! condition on the MCPServer (in the fake API). A member that answers HTTP 500 is a tiny stub:
//! no SDK server fails that way on demand.

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
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use mcp_hangar::crd::{
    CircuitBreaker, FailoverConfig, HealthPolicy, LoadBalancingStrategy, MCPServer, MCPServerGroup, MCPServerGroupSpec,
    MCPServerSpec, MCPServerStatus, ServerMode, ServerState,
};
use mcp_hangar::gateway::condition::{KubeWriter, Publisher};
use mcp_hangar::gateway::metrics::GatewayMetrics;
use mcp_hangar::gateway::{self, Gateway, GatewayConfig, SessionKey, StaticCatalog};
use peers::message;
use prometheus::Registry;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const MODERN: &str = "2026-07-28";
const NS: &str = "team";

/// A gateway on 127.0.0.1 over `catalog`, writing breaker conditions through `publisher`.
async fn start_gateway(catalog: Arc<StaticCatalog>, publisher: Option<Publisher>) -> String {
    let metrics = GatewayMetrics::new(&Registry::new()).unwrap();
    let mut gateway = Gateway::new(catalog, SessionKey::new(&[3; 32]).unwrap(), GatewayConfig::default(), metrics);
    if let Some(publisher) = publisher {
        gateway = gateway.with_breaker_conditions(publisher);
    }
    let gateway = Arc::new(gateway);
    gateway.set_ready(true);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gateway::server::serve(
        listener,
        gateway::router(gateway),
        Duration::from_secs(10),
        std::future::pending(),
        Duration::from_secs(1),
    ));
    base
}

fn member(name: &str, endpoint: String, state: ServerState) -> MCPServer {
    let mut server = MCPServer::new(
        name,
        MCPServerSpec { mode: Some(ServerMode::Remote), endpoint: Some(endpoint), ..Default::default() },
    );
    server.metadata.namespace = Some(NS.into());
    server.metadata.labels = Some(BTreeMap::from([("pool".to_string(), "py".to_string())]));
    server.status = Some(MCPServerStatus { state: Some(state), ..Default::default() });
    server
}

fn group(strategy: LoadBalancingStrategy, failover: Option<FailoverConfig>, threshold: Option<i32>) -> MCPServerGroup {
    let mut group = MCPServerGroup::new(
        "pool",
        MCPServerGroupSpec {
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("pool".to_string(), "py".to_string())])),
                ..Default::default()
            }),
            strategy: Some(strategy),
            failover,
            health_policy: threshold.map(|t| HealthPolicy { unhealthy_threshold: Some(t), ..Default::default() }),
        },
    );
    group.metadata.namespace = Some(NS.into());
    group
}

fn failover(enabled: bool, max_retries: i32) -> Option<FailoverConfig> {
    Some(FailoverConfig { enabled: Some(enabled), max_retries: Some(max_retries), retry_delay: Some("10ms".into()) })
}

fn endpoint(peer: &peers::Peer) -> String {
    format!("http://{}/mcp", peer.addr)
}

/// Two Ready members, `alpha` and `beta` (Python SDK servers), in `group`, behind a gateway.
struct Pool {
    alpha: peers::Peer,
    /// Kept running while the pool lives.
    _beta: peers::Peer,
    gate_a: Gate,
    gate_b: Gate,
    /// The group's route.
    url: String,
}

async fn pool(group: MCPServerGroup) -> Pool {
    let (gate_a, gate_b) = (Gate::new(), Gate::new());
    let alpha = peers::python_server("alpha", &gate_a.0);
    let beta = peers::python_server("beta", &gate_b.0);
    let catalog = Arc::new(StaticCatalog::default());
    catalog.put_server(member("alpha", endpoint(&alpha), ServerState::Ready));
    catalog.put_server(member("beta", endpoint(&beta), ServerState::Ready));
    catalog.put_group(group);
    let url = format!("{}/groups/{NS}/pool/mcp", start_gateway(catalog, None).await);
    Pool { alpha, _beta: beta, gate_a, gate_b, url }
}

/// A path for a gate file that does not exist yet, removed on drop.
struct Gate(std::path::PathBuf);

impl Gate {
    fn new() -> Gate {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Gate(std::env::temp_dir().join(format!("mcp-hangar-groups-gate-{}-{n}", std::process::id())))
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A member that answers every request with HTTP 500, counting them.
async fn failing_stub() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            (StatusCode::INTERNAL_SERVER_ERROR, "upstream broke")
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

/// An endpoint where nothing listens: connections are refused.
fn refused_endpoint() -> String {
    format!("http://127.0.0.1:{}/mcp", peers::free_port())
}

fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A 2026-07-28 request with its headers.
fn modern(method: &str, name: Option<&str>, url: &str) -> Request<Body> {
    let meta = json!({"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
                      "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"}, "progressToken": "p1"});
    let params = match name {
        Some(name) => json!({"name": name, "arguments": {}, "_meta": meta}),
        None => json!({"_meta": meta}),
    };
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let mut request = Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method);
    if let Some(name) = name {
        request = request.header("mcp-name", name);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

async fn send(request: Request<Body>) -> (StatusCode, Bytes) {
    let response = client().request(request).await.unwrap();
    let status = response.status();
    (status, response.into_body().collect().await.unwrap().to_bytes())
}

/// Which member answered a `whoami` call.
async fn whoami(url: &str) -> String {
    let (status, body) = send(modern("tools/call", Some("whoami"), url)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    message(&body)["result"]["content"][0]["text"].as_str().unwrap().to_string()
}

async fn tools_list(url: &str) -> (StatusCode, Value) {
    let (status, body) = send(modern("tools/list", None, url)).await;
    (status, if status == StatusCode::OK { message(&body) } else { json!(String::from_utf8_lossy(&body)) })
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_alternates_over_ready_members_only() {
    let (gate_a, gate_b) = (Gate::new(), Gate::new());
    let (alpha, beta) = (peers::python_server("alpha", &gate_a.0), peers::python_server("beta", &gate_b.0));
    let (degraded_url, degraded_hits) = failing_stub().await;
    let catalog = Arc::new(StaticCatalog::default());
    catalog.put_server(member("alpha", endpoint(&alpha), ServerState::Ready));
    catalog.put_server(member("beta", endpoint(&beta), ServerState::Ready));
    catalog.put_server(member("gamma", degraded_url, ServerState::Degraded));
    catalog.put_group(group(LoadBalancingStrategy::RoundRobin, None, None));
    let url = format!("{}/groups/{NS}/pool/mcp", start_gateway(catalog, None).await);
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(whoami(&url).await);
    }
    let first = seen[0].clone();
    let second = if first == "alpha" { "beta" } else { "alpha" };
    let expected: Vec<&str> = (0..6).map(|i| if i % 2 == 0 { first.as_str() } else { second }).collect();
    assert_eq!(seen, expected);
    assert_eq!(degraded_hits.load(Ordering::SeqCst), 0, "a Degraded member gets nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_uses_the_first_member_and_moves_when_it_dies() {
    let pool = pool(group(LoadBalancingStrategy::Failover, failover(true, 1), Some(1))).await;
    let url = pool.url.clone();
    for _ in 0..3 {
        assert_eq!(whoami(&url).await, "alpha", "the first member by name takes everything");
    }
    drop(pool.alpha);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The call never reached the dead member (connection refused): retried on the next one.
    assert_eq!(whoami(&url).await, "beta");
    assert_eq!(whoami(&url).await, "beta", "out of rotation (unhealthyThreshold 1): straight to beta");
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_are_retried_on_another_member_and_calls_that_reached_a_failing_one_are_not() {
    let gate = Gate::new();
    let beta = peers::python_server("beta", &gate.0);
    let (broken_url, broken_hits) = failing_stub().await;
    let catalog = Arc::new(StaticCatalog::default());
    // Failover order is by name: "a-broken" (HTTP 500), "a-gone" (refused), then "beta".
    catalog.put_server(member("a-broken", broken_url, ServerState::Ready));
    catalog.put_server(member("a-gone", refused_endpoint(), ServerState::Ready));
    catalog.put_server(member("beta", endpoint(&beta), ServerState::Ready));
    catalog.put_group(group(LoadBalancingStrategy::Failover, failover(true, 2), None));
    let url = format!("{}/groups/{NS}/pool/mcp", start_gateway(catalog.clone(), None).await);

    let (status, list) = tools_list(&url).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(list["result"]["tools"].as_array().is_some_and(|t| !t.is_empty()), "beta answered: {list}");
    assert_eq!(broken_hits.load(Ordering::SeqCst), 1, "tools/list reached the 500, then went on");

    let (status, body) = send(modern("tools/call", Some("whoami"), &url)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{}", String::from_utf8_lossy(&body));
    assert_eq!(broken_hits.load(Ordering::SeqCst), 2, "a tools/call that reached its upstream is never resent");

    // Without failover the read fails with its member.
    catalog.put_group(group(LoadBalancingStrategy::Failover, failover(false, 2), None));
    let (status, _) = tools_list(&url).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(broken_hits.load(Ordering::SeqCst), 3);

    // A call that never reached its member (connection refused) moves on, even a tools/call.
    catalog.put_server(member("a-broken", refused_endpoint(), ServerState::Ready));
    catalog.put_group(group(LoadBalancingStrategy::Failover, failover(true, 2), None));
    assert_eq!(whoami(&url).await, "beta");
    catalog.put_group(group(LoadBalancingStrategy::Failover, failover(true, 1), None));
    let (status, body) = send(modern("tools/call", Some("whoami"), &url)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "maxRetries 1: two refused members, then no more tries");
    assert!(String::from_utf8_lossy(&body).contains("team/a-gone"), "{}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread")]
async fn unhealthy_threshold_takes_a_failing_member_out_of_rotation() {
    let gate = Gate::new();
    let beta = peers::python_server("beta", &gate.0);
    let (broken_url, broken_hits) = failing_stub().await;
    let catalog = Arc::new(StaticCatalog::default());
    catalog.put_server(member("alpha", broken_url, ServerState::Ready));
    catalog.put_server(member("beta", endpoint(&beta), ServerState::Ready));
    catalog.put_group(group(LoadBalancingStrategy::RoundRobin, failover(false, 0), Some(2)));
    let url = format!("{}/groups/{NS}/pool/mcp", start_gateway(catalog, None).await);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(send(modern("tools/call", Some("whoami"), &url)).await.0);
    }
    assert_eq!(broken_hits.load(Ordering::SeqCst), 2, "two failures in a row, then out: {statuses:?}");
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 8, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn least_connections_avoids_the_member_holding_a_stream() {
    let pool = pool(group(LoadBalancingStrategy::LeastConnections, None, None)).await;
    let url = pool.url.clone();
    // A call that streams progress and waits for its gate: in flight until its body ends.
    let held = client().request(modern("tools/call", Some("wait_for_gate"), &url)).await.unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(whoami(&url).await);
    }
    let busy = if seen[0] == "alpha" { "beta" } else { "alpha" };
    assert!(seen.iter().all(|s| s != busy), "nothing goes to {busy} while it holds the stream: {seen:?}");
    std::fs::write(&pool.gate_a.0, b"").unwrap();
    std::fs::write(&pool.gate_b.0, b"").unwrap();
    let body = held.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(message(&body)["result"]["content"][0]["text"], "gate opened");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut after = Vec::new();
    for _ in 0..4 {
        after.push(whoami(&url).await);
    }
    assert!(after.iter().any(|s| s == busy), "the stream ended: {busy} is back among the least busy {after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_breaker_reaches_the_mcpservers_conditions() {
    let fake = fake_api::FakeApi::start().await;
    fake.register_operator_kinds();
    let mut gone = member("gone", refused_endpoint(), ServerState::Ready);
    gone.spec.circuit_breaker = Some(Box::new(CircuitBreaker {
        enabled: Some(true),
        failure_threshold: Some(2),
        reset_timeout: Some("1h".into()),
    }));
    let path = format!("/apis/mcp-hangar.io/v1alpha1/namespaces/{NS}/mcpservers/gone");
    let mut stored = serde_json::to_value(&gone).unwrap();
    stored["status"] = json!({"state": "Ready", "conditions": [{"type": "Ready", "status": "True", "reason": "HealthCheckPassed",
        "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    fake.put(&path, stored);
    let catalog = Arc::new(StaticCatalog::default());
    catalog.put_server(gone);
    let publisher = Publisher::spawn(Arc::new(KubeWriter::new(fake.client())), "gw-test-0".into(), Duration::ZERO);
    let base = start_gateway(catalog, Some(publisher)).await;
    let url = format!("{base}/servers/{NS}/gone/mcp");
    for _ in 0..2 {
        assert_eq!(send(modern("tools/call", Some("whoami"), &url)).await.0, StatusCode::BAD_GATEWAY);
    }
    let (last, met) = fake
        .wait_for(&path, Duration::from_secs(10), |s| {
            s.and_then(|s| s["status"]["conditions"].as_array().cloned())
                .is_some_and(|c| c.iter().any(|c| c["type"] == "CircuitBreakerOpen"))
        })
        .await;
    assert!(met, "no breaker condition: {last:#?}");
    let conditions = last.unwrap()["status"]["conditions"].clone();
    let breaker = conditions.as_array().unwrap().iter().find(|c| c["type"] == "CircuitBreakerOpen").unwrap().clone();
    assert_eq!(breaker["status"], "True");
    assert_eq!(breaker["reason"], "FailureThresholdReached");
    assert!(breaker["message"].as_str().unwrap().contains("gw-test-0"), "{breaker}");
    assert!(conditions.as_array().unwrap().iter().any(|c| c["type"] == "Ready"), "the controller's stay: {conditions}");
    let writes = |fake: &fake_api::FakeApi| {
        fake.requests()
            .iter()
            .filter(|r| r.path.ends_with("/gone/status") && r.query.contains("mcp-hangar-gateway"))
            .count()
    };
    for _ in 0..5 {
        assert_eq!(send(modern("tools/call", Some("whoami"), &url)).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(writes(&fake), 1, "written on the transition, not per request");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_stays_on_its_member_even_when_it_fails() {
    let pool = pool(group(LoadBalancingStrategy::Failover, failover(true, 2), None)).await;
    let url = pool.url.clone();
    let legacy = |body: Value, session: Option<&str>| {
        let mut request = Request::post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25");
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.body(Body::from(body.to_string())).unwrap()
    };
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    let response = client().request(legacy(init, None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let session = response.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(send(legacy(note, Some(&session))).await.0, StatusCode::ACCEPTED);
    let call =
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}});
    let (status, body) = send(legacy(call.clone(), Some(&session))).await;
    assert_eq!((status, message(&body)["result"]["content"][0]["text"].clone()), (StatusCode::OK, json!("alpha")));
    drop(pool.alpha);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), send(legacy(list, Some(&session))))
        .await
        .expect("answered, not retried on its own member forever");
    assert_eq!(status, StatusCode::BAD_GATEWAY, "the session's member is gone; beta does not know the session");
}
