//! Who may call through the gateway: ServiceAccount tokens checked with a real TokenReview
//! request (the fake API answers it as the apiserver does), matched against the permission
//! profile of each server, with the official Python and TypeScript SDK clients sending the
//! token and a Python SDK server upstream. Routes, namespaces and profiles come from the
//! gateway's reflectors, so edits apply while it runs.

#[path = "support/fake_api.rs"]
mod fake_api;
#[path = "support/peers.rs"]
mod peers;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use fake_api::FakeApi;
use http_body_util::BodyExt;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mcp_hangar::gateway::auth::{AUDIENCE, Access, Authenticator, KubeReviewer};
use mcp_hangar::gateway::metrics::GatewayMetrics;
use mcp_hangar::gateway::wake::LeaseDemand;
use mcp_hangar::gateway::{self, Gateway, GatewayConfig, SessionKey, StoreCatalog};
use prometheus::Registry;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const MODERN: &str = "2026-07-28";
const API: &str = "/apis/mcp-hangar.io/v1alpha1";
const SERVERS: &str = "/apis/mcp-hangar.io/v1alpha1/namespaces/tools/mcpservers";
const PROFILES: &str = "/apis/mcp-hangar.io/v1alpha1/mcppermissionprofiles";

/// Tokens the fake's TokenReview knows.
const TEAM_A: &str = "token-team-a";
const TEAM_B: &str = "token-team-b";
const OWN_NAMESPACE: &str = "token-mcp-system";
const FOR_THE_APISERVER: &str = "token-team-a-apiserver";

/// A cluster: namespaces `tools` (the servers), `team-a` (labelled core, which the default
/// profile admits), `team-b` and `mcp-system` (not labelled), and one token for each.
async fn cluster() -> FakeApi {
    let fake = FakeApi::start().await;
    for (api, resource, kind) in [
        ("mcp-hangar.io/v1alpha1", "mcpservers", "MCPServer"),
        ("mcp-hangar.io/v1alpha1", "mcpservergroups", "MCPServerGroup"),
        ("mcp-hangar.io/v1alpha1", "mcppermissionprofiles", "MCPPermissionProfile"),
        ("mcp-hangar.io/v1alpha1", "mcpadmissionpolicies", "MCPAdmissionPolicy"),
        ("v1", "namespaces", "Namespace"),
    ] {
        fake.register_kind(api, resource, kind);
    }
    namespace(&fake, "tools", json!({}));
    namespace(&fake, "team-a", json!({"mcp-hangar.io/core": "true"}));
    namespace(&fake, "team-b", json!({}));
    namespace(&fake, "mcp-system", json!({}));
    fake.add_token(TEAM_A, "team-a", "client", &[AUDIENCE]);
    fake.add_token(TEAM_B, "team-b", "client", &[AUDIENCE]);
    fake.add_token(OWN_NAMESPACE, "mcp-system", "mcp-hangar-gateway", &[AUDIENCE]);
    fake.add_token(FOR_THE_APISERVER, "team-a", "client", &["https://kubernetes.default.svc"]);
    fake
}

/// Stores a Namespace with these labels plus `kubernetes.io/metadata.name`, as the apiserver does.
fn namespace(fake: &FakeApi, name: &str, mut labels: Value) {
    labels["kubernetes.io/metadata.name"] = json!(name);
    let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}});
    fake.put(&format!("/api/v1/namespaces/{name}"), object);
}

fn server(name: &str, upstream: &peers::Peer, profile: Option<&str>) -> Value {
    let mut spec = json!({"mode": "remote", "endpoint": format!("http://{}/mcp", upstream.addr)});
    if let Some(profile) = profile {
        spec["permissionProfile"] = json!({"name": profile});
    }
    json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer",
           "metadata": {"name": name, "namespace": "tools", "labels": {"pool": "py"}}, "spec": spec})
}

fn profile(name: &str, namespace_selector: Value) -> Value {
    json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPPermissionProfile", "metadata": {"name": name},
           "spec": {"network": {"ingress": {"namespaceSelector": namespace_selector}}}})
}

/// A gateway over the fake cluster, checking callers with its TokenReview API and waking
/// scale-to-zero servers with demand Leases in `mcp-system`.
async fn gateway(fake: &FakeApi) -> String {
    let catalog = StoreCatalog::watch(fake.client()).await;
    let access = Access::ServiceAccounts(Authenticator::new(KubeReviewer::new(fake.client())));
    let metrics = GatewayMetrics::new(&Registry::new()).unwrap();
    let key = SessionKey::new(&[7; 32]).unwrap();
    let demand = Arc::new(LeaseDemand::new(fake.client(), "mcp-system", "gateway-0"));
    let gateway = Gateway::new(Arc::new(catalog), key, GatewayConfig::default(), metrics);
    let gateway = Arc::new(gateway.with_access(access).with_demand(demand));
    gateway.set_ready(true);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let timeout = GatewayConfig::default().header_read_timeout;
    tokio::spawn(gateway::server::serve(
        listener,
        gateway::router(gateway),
        timeout,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    base
}

/// A 2026-07-28 `tools/list` with `Authorization: Bearer <token>` when given: the whole answer.
async fn list(url: &str, token: Option<&str>) -> (StatusCode, HeaderMap, Bytes) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
                  "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"}}}});
    let mut request = Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/list");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

async fn status(url: &str, token: Option<&str>) -> StatusCode {
    list(url, token).await.0
}

/// Asserts a refusal: its status, its challenge, and a JSON-RPC error body; the message.
fn refused(answer: (StatusCode, HeaderMap, Bytes), want: StatusCode, challenge: &str) -> String {
    let (status, headers, body) = answer;
    let text = String::from_utf8_lossy(&body).to_string();
    assert_eq!(status, want, "{text}");
    assert_eq!(headers.get("www-authenticate").map(|v| v.to_str().unwrap()), Some(challenge));
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((error["jsonrpc"].as_str(), error["id"].is_null()), (Some("2.0"), true), "{text}");
    assert_eq!(error["error"]["code"], -32600, "{text}");
    error["error"]["message"].as_str().unwrap().to_string()
}

/// Waits until `url` answers `want` to `token`'s `tools/list`.
async fn eventually(url: &str, token: &str, want: StatusCode, what: &str) {
    let waited = async {
        while status(url, Some(token)).await != want {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), waited).await.unwrap_or_else(|_| panic!("{what}"));
}

/// Server `alpha` of namespace `tools` (a Python SDK peer, the default profile) behind a gateway
/// over the fake cluster; `gate` names the peer's gate file.
struct Alpha {
    upstream: peers::Peer,
    fake: FakeApi,
    /// The gateway's base URL.
    base: String,
    /// `alpha`'s route.
    url: String,
}

async fn alpha_behind_gateway(gate: &str) -> Alpha {
    let gate = std::env::temp_dir().join(format!("mcp-hangar-auth-{gate}-{}", std::process::id()));
    let upstream = peers::python_server("alpha", &gate);
    let fake = cluster().await;
    fake.put(&format!("{SERVERS}/alpha"), server("alpha", &upstream, None));
    let base = gateway(&fake).await;
    let url = format!("{base}/servers/tools/alpha/mcp");
    Alpha { upstream, fake, base, url }
}

#[tokio::test(flavor = "multi_thread")]
async fn admitted_namespaces_pass_others_get_403_and_no_token_401() {
    let Alpha { upstream: _upstream, fake, base, url } = alpha_behind_gateway("gate").await;

    // The official SDK clients, sending the token of an admitted namespace, in both eras.
    let seen = peers::python_client_with_token(&url, "legacy", "policy", Some(TEAM_A)).await;
    assert_eq!(seen["echo"], json!(["alpha: hi"]), "{seen}");
    let seen = peers::python_client_with_token(&url, MODERN, "policy", Some(TEAM_A)).await;
    assert_eq!(seen["protocol"], MODERN, "{seen}");
    let seen = peers::ts_client_with_token(&url, Some(TEAM_A)).await;
    assert_eq!(seen["echo"], json!(["alpha: hi"]), "{seen}");

    let realm = r#"Bearer realm="mcp-hangar-gateway""#;
    let invalid = r#"Bearer realm="mcp-hangar-gateway", error="invalid_token""#;
    let scope = r#"Bearer realm="mcp-hangar-gateway", error="insufficient_scope""#;
    let message = refused(list(&url, None).await, StatusCode::UNAUTHORIZED, realm);
    assert!(message.contains("no bearer token"), "{message}");
    refused(list(&url, Some("not-a-token")).await, StatusCode::UNAUTHORIZED, invalid);
    let message = refused(list(&url, Some(FOR_THE_APISERVER)).await, StatusCode::UNAUTHORIZED, invalid);
    assert!(message.contains("audience"), "a token for another audience: {message}");
    let message = refused(list(&url, Some(TEAM_B)).await, StatusCode::FORBIDDEN, scope);
    assert!(
        message.contains("team-b/client") && message.contains(r#"profile "none" does not admit namespace "team-b""#),
        "{message}"
    );
    let message = refused(list(&url, Some(OWN_NAMESPACE)).await, StatusCode::FORBIDDEN, scope);
    assert!(message.contains("mcp-system"), "the gateway's own namespace is no way around the profile: {message}");

    // Unknown routes are not told apart from known ones before the caller is known.
    refused(list(&format!("{base}/servers/tools/nope/mcp"), None).await, StatusCode::UNAUTHORIZED, realm);
    assert_eq!(status(&format!("{base}/servers/tools/nope/mcp"), Some(TEAM_A)).await, StatusCode::NOT_FOUND);

    // Sessions are no way around it either: GET and DELETE need the token too.
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let get = Request::get(&url).header("mcp-session-id", "anything").body(Body::empty()).unwrap();
    assert_eq!(client.request(get).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // Each token is reviewed once, then answered from the cache for a while.
    let before = fake.token_reviews();
    for _ in 0..5 {
        assert_eq!(status(&url, Some(TEAM_A)).await, StatusCode::OK);
        assert_eq!(status(&url, Some(TEAM_B)).await, StatusCode::FORBIDDEN);
    }
    assert_eq!(fake.token_reviews(), before, "both answers were cached by the earlier requests");
    fake.add_token("fresh", "team-a", "other", &[AUDIENCE]);
    for _ in 0..5 {
        assert_eq!(status(&url, Some("fresh")).await, StatusCode::OK);
    }
    assert_eq!(fake.token_reviews(), before + 1, "a new token costs one TokenReview");
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_labels_and_profile_edits_apply_while_the_gateway_runs() {
    let Alpha { upstream, fake, base: _, url } = alpha_behind_gateway("gate2").await;
    assert_eq!(status(&url, Some(TEAM_B)).await, StatusCode::FORBIDDEN);

    namespace(&fake, "team-b", json!({"mcp-hangar.io/core": "true"}));
    eventually(&url, TEAM_B, StatusCode::OK, "a namespace labelled core is admitted").await;
    namespace(&fake, "team-b", json!({}));
    eventually(&url, TEAM_B, StatusCode::FORBIDDEN, "and refused again once the label is gone").await;

    // A profile of the cluster that admits team-b only, by the name label the apiserver sets.
    let only_b = json!({"matchLabels": {"kubernetes.io/metadata.name": "team-b"}});
    fake.put(&format!("{PROFILES}/only-b"), profile("only-b", only_b));
    fake.put(&format!("{SERVERS}/alpha"), server("alpha", &upstream, Some("only-b")));
    eventually(&url, TEAM_B, StatusCode::OK, "the server's new profile admits team-b").await;
    eventually(&url, TEAM_A, StatusCode::FORBIDDEN, "and no longer team-a").await;

    let both = json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}]});
    fake.put(&format!("{PROFILES}/only-b"), profile("only-b", both));
    eventually(&url, TEAM_A, StatusCode::OK, "an edited profile applies at once").await;

    // A broken edit (the webhook bypassed) is not used: the last good version stays in force.
    let broken = json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Near"}]});
    fake.put(&format!("{PROFILES}/only-b"), profile("only-b", broken));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&url, Some(TEAM_A)).await, StatusCode::OK);

    // A profile that does not exist admits nobody.
    fake.put(&format!("{SERVERS}/alpha"), server("alpha", &upstream, Some("missing")));
    eventually(&url, TEAM_A, StatusCode::SERVICE_UNAVAILABLE, "an unknown profile fails closed").await;
    let (_, headers, body) = list(&url, Some(TEAM_A)).await;
    assert!(String::from_utf8_lossy(&body).contains(r#"permission profile \"missing\" does not exist"#));
    assert!(headers.get("www-authenticate").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_admits_a_caller_only_when_every_member_does() {
    let gate = std::env::temp_dir().join(format!("mcp-hangar-auth-gate3-{}", std::process::id()));
    let (one, two) = (peers::python_server("one", &gate), peers::python_server("two", &gate));
    let fake = cluster().await;
    fake.put(
        &format!("{PROFILES}/only-b"),
        profile("only-b", json!({"matchLabels": {"kubernetes.io/metadata.name": "team-b"}})),
    );
    fake.put(&format!("{SERVERS}/one"), server("one", &one, None));
    fake.put(&format!("{SERVERS}/two"), server("two", &two, Some("only-b")));
    let group = json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServerGroup",
                       "metadata": {"name": "pool", "namespace": "tools"}, "spec": {"selector": {"matchLabels": {"pool": "py"}}}});
    fake.put(&format!("{API}/namespaces/tools/mcpservergroups/pool"), group);
    let base = gateway(&fake).await;
    let url = format!("{base}/groups/tools/pool/mcp");

    for _ in 0..4 {
        let (status, _, body) = list(&url, Some(TEAM_A)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "whichever member would be picked");
        assert!(String::from_utf8_lossy(&body).contains("MCPServer tools/two"), "the refusing member is named");
    }
    namespace(&fake, "team-b", json!({"mcp-hangar.io/core": "true"}));
    eventually(&url, TEAM_B, StatusCode::OK, "team-b is admitted by both members now").await;
    let seen = peers::python_client_with_token(&url, "legacy", "pinned", Some(TEAM_B)).await;
    assert_eq!(seen["whoami"].as_array().unwrap().len(), 6, "a whole session through the group: {seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_caller_never_wakes_a_scale_to_zero_server() {
    let fake = cluster().await;
    fake.register_kind("coordination.k8s.io/v1", "leases", "Lease");
    let cold = json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer",
        "metadata": {"name": "cold", "namespace": "tools"},
        "spec": {"mode": "container", "image": "ghcr.io/org/server:1.0.0", "replicas": 0, "startupTimeout": "1s"}});
    fake.put(&format!("{SERVERS}/cold"), cold);
    let base = gateway(&fake).await;
    let url = format!("{base}/servers/tools/cold/mcp");
    let leases = || fake.list("/apis/coordination.k8s.io/v1/namespaces/mcp-system/leases").len();

    assert_eq!(status(&url, None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&url, Some(TEAM_B)).await, StatusCode::FORBIDDEN);
    assert_eq!(leases(), 0, "no demand is recorded for a caller the server does not admit");
    let (admitted, _, body) = list(&url, Some(TEAM_A)).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(admitted, StatusCode::SERVICE_UNAVAILABLE, "nothing makes it ready within its startupTimeout: {body}");
    assert_eq!(leases(), 1, "an admitted caller wakes it");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_token_review_fails_closed_with_503() {
    let Alpha { upstream: _upstream, fake, base: _, url } = alpha_behind_gateway("gate4").await;
    assert_eq!(status(&url, Some(TEAM_A)).await, StatusCode::OK);

    fake.fail_token_reviews(true);
    assert_eq!(status(&url, Some(TEAM_A)).await, StatusCode::OK, "a cached answer needs no review");
    let (status_code, headers, body) = list(&url, Some(TEAM_B)).await;
    assert_eq!(status_code, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    assert!(headers.get("www-authenticate").is_none(), "the token is not known to be bad");
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], -32030);
    let reviews = fake.token_reviews();
    assert_eq!(status(&url, Some(TEAM_B)).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(fake.token_reviews(), reviews + 1, "an outage is not cached");

    fake.fail_token_reviews(false);
    assert_eq!(status(&url, Some(TEAM_B)).await, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_subcommand_checks_callers_by_default_also_with_a_routes_file() {
    let gate = std::env::temp_dir().join(format!("mcp-hangar-auth-gate5-{}", std::process::id()));
    let upstream = peers::python_server("alpha", &gate);
    let fake = cluster().await;
    let dir = std::env::temp_dir().join(format!("mcp-hangar-gateway-auth-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: '{}'}}}}]\n\
             users: [{{name: u, user: {{}}}}]\ncontexts: [{{name: c, context: {{cluster: fake, user: u}}}}]\n\
             current-context: c\n",
            fake.url()
        ),
    )
    .unwrap();
    // Routes, namespaces and a profile from the file; tokens reviewed by the kubeconfig's cluster.
    let routes = dir.join("routes.yaml");
    std::fs::write(
        &routes,
        format!(
            "apiVersion: mcp-hangar.io/v1alpha1\nkind: MCPServer\nmetadata: {{name: alpha, namespace: tools}}\n\
             spec: {{mode: remote, endpoint: 'http://{}/mcp', permissionProfile: {{name: team-b-only}}}}\n---\n\
             apiVersion: mcp-hangar.io/v1alpha1\nkind: MCPPermissionProfile\nmetadata: {{name: team-b-only}}\n\
             spec: {{network: {{ingress: {{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: team-b}}}}}}}}}}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {{name: team-a, labels: {{mcp-hangar.io/core: 'true'}}}}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {{name: team-b}}\n",
            upstream.addr
        ),
    )
    .unwrap();
    let (port, admin) = (peers::free_port(), peers::free_port());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-hangar"))
        .args(["gateway", "--log-format", "json", "--shutdown-delay", "0s"])
        .args(["--addr", &format!("127.0.0.1:{port}"), "--admin-addr", &format!("127.0.0.1:{admin}")])
        .arg("--routes-file")
        .arg(&routes)
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    peers::listening(port).await;
    let url = format!("http://127.0.0.1:{port}/servers/tools/alpha/mcp");
    assert_eq!(status(&url, None).await, StatusCode::UNAUTHORIZED, "no --auth flag: callers are checked");
    assert_eq!(status(&url, Some(TEAM_B)).await, StatusCode::OK, "the file's profile admits team-b");
    let (code, _, body) = list(&url, Some(TEAM_A)).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&body));
    assert!(fake.token_reviews() >= 2, "the tokens were reviewed by the cluster");

    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{logs}");
    assert!(logs.contains("refused a caller") && logs.contains("team-a/client"), "refusals are logged: {logs}");
    assert!(!logs.contains(TEAM_A) && !logs.contains(TEAM_B), "tokens are never logged: {logs}");
    assert!(!logs.contains("--auth none"), "{logs}");
    let _ = std::fs::remove_dir_all(&dir);
}
