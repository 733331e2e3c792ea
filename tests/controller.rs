//! The controller against an in-memory Kubernetes API (a real `kube::Client` talking to a
//! fake apiserver) and a tiny real MCP server: children, drift, updates, deletion, health,
//! the circuit breaker, events, metrics and leader election.

#[path = "support/fake_api.rs"]
mod fake_api;
#[path = "support/mcp_server.rs"]
mod mcp_server;

use std::sync::Arc;
use std::time::Duration;

use fake_api::FakeApi;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use mcp_hangar::controller::leader::{LeaderElector, LeaseTiming};
use mcp_hangar::controller::{self, Context, ControllerConfig};
use mcp_hangar::crd::MCPServer;
use mcp_hangar::mcp::McpClient;
use mcp_hangar::metrics::Metrics;
use mcp_hangar::policy::Engine;
use mcp_server::{Answer, McpTestServer};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const NS: &str = "tools";
const WAIT: Duration = Duration::from_secs(20);
/// A remote endpoint name that passes the admission rules (plain http for `.svc` hosts);
/// the health client resolves it to the test MCP server.
const REMOTE_HOST: &str = "remote-mcp.tools.svc";

fn server_path(name: &str) -> String {
    format!("/apis/mcp-hangar.io/v1alpha1/namespaces/{NS}/mcpservers/{name}")
}

fn child_paths(name: &str) -> [(&'static str, String); 6] {
    [
        ("ServiceAccount", format!("/api/v1/namespaces/{NS}/serviceaccounts/{name}")),
        ("Role", format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles/{name}")),
        ("RoleBinding", format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings/{name}")),
        ("NetworkPolicy", format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/{name}")),
        ("Service", format!("/api/v1/namespaces/{NS}/services/{name}")),
        ("Deployment", format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}")),
    ]
}

fn deployment_path(name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}")
}

fn service_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/services/{name}")
}

/// The fake apiserver with the controller running against it.
struct Harness {
    fake: FakeApi,
    metrics: Metrics,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

fn health_client(mcp: Option<&McpTestServer>) -> McpClient {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let overrides = mcp.map(|m| (REMOTE_HOST.to_string(), m.addr().ip()));
    McpClient::with_host_overrides(tls, overrides)
}

fn context(fake: &FakeApi, metrics: &Metrics, mcp: Option<&McpTestServer>, instance: &str) -> Arc<Context> {
    Arc::new(Context::new(
        fake.client(),
        Arc::new(Engine::new().unwrap()),
        metrics.clone(),
        health_client(mcp),
        ControllerConfig::default(),
        instance,
    ))
}

impl Harness {
    async fn start(mcp: Option<&McpTestServer>) -> Harness {
        Harness::start_with(mcp, ControllerConfig::default()).await
    }

    async fn start_with(mcp: Option<&McpTestServer>, config: ControllerConfig) -> Harness {
        let fake = FakeApi::start().await;
        fake.register_operator_kinds();
        let metrics = Metrics::new();
        let ctx = Arc::new(Context::new(
            fake.client(),
            Arc::new(Engine::new().unwrap()),
            metrics.clone(),
            health_client(mcp),
            config,
            "test-replica",
        ));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(controller::run(ctx, None, stopped));
        Harness { fake, metrics, stop, task: Some(task) }
    }

    fn servers(&self) -> Api<MCPServer> {
        Api::namespaced(self.fake.client(), NS)
    }

    async fn create(&self, name: &str, spec: Value) -> MCPServer {
        let server: MCPServer = serde_json::from_value(json!({
            "apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer",
            "metadata": {"name": name, "namespace": NS}, "spec": spec,
        }))
        .unwrap();
        self.servers().create(&PostParams::default(), &server).await.unwrap()
    }

    /// Waits until the object at `path` satisfies `condition`; panics with its last state.
    async fn wait(&self, path: &str, what: &str, condition: impl Fn(Option<&Value>) -> bool) -> Option<Value> {
        let (last, met) = self.fake.wait_for(path, WAIT, condition).await;
        assert!(met, "timed out waiting for {what}; last state: {last:#?}");
        last
    }

    async fn wait_state(&self, name: &str, state: &str) -> Value {
        self.wait(&server_path(name), &format!("{name} to be {state}"), |s| {
            s.is_some_and(|s| s["status"]["state"] == state)
        })
        .await
        .unwrap()
    }

    /// Plays the Deployment controller: all replicas updated, `ready` of them ready.
    fn set_ready_replicas(&self, name: &str, ready: i64) {
        let path = deployment_path(name);
        let mut deployment = self.fake.get(&path).expect("deployment exists");
        let replicas = deployment["spec"]["replicas"].clone();
        deployment["status"] = json!({
            "observedGeneration": deployment["metadata"]["generation"].clone(),
            "replicas": replicas.clone(),
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
        });
        self.fake.put(&path, deployment);
    }

    /// Plays the Service IP allocator.
    fn set_cluster_ip(&self, name: &str, ip: &str) {
        let path = service_path(name);
        let mut service = self.fake.get(&path).expect("service exists");
        service["spec"]["clusterIP"] = json!(ip);
        self.fake.put(&path, service);
    }

    fn events(&self) -> Vec<Value> {
        self.fake.list(&format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"))
    }

    fn event_reasons(&self, name: &str) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e["regarding"]["name"] == name)
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task).await.expect("the controller stops").unwrap();
        }
    }
}

/// Waits until `check` holds: events and metrics follow the status write by a moment.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn condition<'a>(server: &'a Value, type_: &str) -> &'a Value {
    server["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn create_makes_owned_children_and_honest_status() {
    let harness = Harness::start(None).await;
    let server = harness
        .create(
            "fetch",
            json!({"mode": "container", "image": "ghcr.io/example/fetch:1.0.0", "args": ["--port", "8080"]}),
        )
        .await;
    let uid = server.metadata.uid.clone().unwrap();
    for (kind, path) in child_paths("fetch") {
        let child = harness.wait(&path, kind, |o| o.is_some()).await.unwrap();
        let owner = &child["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], uid.as_str(), "{kind}");
        assert_eq!(owner["controller"], true, "{kind}");
        assert_eq!(owner["blockOwnerDeletion"], true, "{kind}");
        assert_eq!(child["metadata"]["labels"]["app.kubernetes.io/managed-by"], "mcp-hangar", "{kind}");
    }
    let deployment = harness.fake.get(&deployment_path("fetch")).unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], "ghcr.io/example/fetch:1.0.0");
    assert_eq!(pod["containers"][0]["args"], json!(["--port", "8080"]));
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["containers"][0]["securityContext"]["runAsUser"], 65534);
    assert_eq!(deployment["spec"]["replicas"], 1);
    let requests = harness.fake.requests();
    let applies = requests
        .iter()
        .filter(|r| r.content_type.as_deref() == Some("application/apply-patch+yaml"))
        .filter(|r| r.query.contains("fieldManager=mcp-hangar") && r.query.contains("force=true"))
        .count();
    assert!(applies >= 6, "children are server-side applied by mcp-hangar with force");

    let stored = harness.wait_state("fetch", "Initializing").await;
    let status = &stored["status"];
    assert_eq!(status["url"], "http://fetch.tools.svc.cluster.local:8080/mcp");
    assert_eq!(status["selector"], "app.kubernetes.io/instance=fetch,mcp-hangar.io/mcp-server=true");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["readyReplicas"], 0);
    assert!(status["lastStartedAt"].is_string());
    assert_eq!(condition(&stored, "Ready")["status"], "False");
    assert_eq!(condition(&stored, "Ready")["reason"], "Starting");
    assert_eq!(condition(&stored, "Progressing")["status"], "True");
    assert_eq!(condition(&stored, "Available")["reason"], "NoReadyReplicas");
    assert_eq!(condition(&stored, "Degraded")["status"], "False");
    eventually("a Starting event", || harness.event_reasons("fetch").contains(&"Starting".to_string())).await;
    eventually("the state metric", || {
        harness
            .metrics
            .render()
            .contains(r#"mcp_operator_provider_state{name="fetch",namespace="tools",state="Initializing"} 1"#)
    })
    .await;
    let metrics = harness.metrics.render();
    assert!(
        !metrics.contains(r#"mcp_operator_provider_state{name="fetch",namespace="tools",state="Ready"}"#),
        "one series per server, for its current state"
    );
    assert!(metrics.contains(r#"mcp_operator_reconcile_total{result="success"}"#));
    assert!(metrics.contains("mcp_operator_reconcile_duration_seconds_count"));
    harness.stop().await;
}

#[tokio::test]
async fn deleted_and_hand_edited_children_are_put_back() {
    let harness = Harness::start(None).await;
    harness.create("fetch", json!({"mode": "container", "image": "ghcr.io/example/fetch:1.0.0"})).await;
    let service_path = service_path("fetch");
    let original = harness.wait(&service_path, "the Service", |o| o.is_some()).await.unwrap();
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(harness.fake.client(), NS);
    services.delete("fetch", &DeleteParams::default()).await.unwrap();
    let restored = harness
        .wait(&service_path, "the Service to come back", |o| {
            o.is_some_and(|o| o["metadata"]["uid"] != original["metadata"]["uid"])
        })
        .await
        .unwrap();
    assert_eq!(restored["spec"]["ports"][0]["port"], 8080);

    let path = deployment_path("fetch");
    let mut edited = harness.fake.get(&path).unwrap();
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil/miner:latest");
    edited["spec"]["template"]["spec"]["automountServiceAccountToken"] = json!(true);
    harness.fake.put(&path, edited);
    let repaired = harness
        .wait(&path, "the Deployment to be repaired", |o| {
            o.is_some_and(|o| o["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/example/fetch:1.0.0")
        })
        .await
        .unwrap();
    assert_eq!(repaired["spec"]["template"]["spec"]["automountServiceAccountToken"], false);
    harness.stop().await;
}

/// Write requests (anything but GET) received so far.
fn writes(fake: &FakeApi) -> usize {
    fake.requests().iter().filter(|r| r.method != axum::http::Method::GET).count()
}

/// Waits until neither the write requests nor the resourceVersion have moved for `quiet`.
async fn settled(fake: &FakeApi, quiet: Duration) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = (writes(fake), fake.resource_version());
    let mut since = tokio::time::Instant::now();
    while since.elapsed() < quiet {
        assert!(tokio::time::Instant::now() < deadline, "the controller kept writing");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = (writes(fake), fake.resource_version());
        if now != last {
            (last, since) = (now, tokio::time::Instant::now());
        }
    }
}

#[tokio::test]
async fn an_unchanged_server_costs_no_writes_over_resyncs_and_drift_is_still_repaired() {
    let resync = Duration::from_secs(1);
    let harness = Harness::start_with(None, ControllerConfig { resync, ..ControllerConfig::default() }).await;
    harness.create("fetch", json!({"mode": "container", "image": "ghcr.io/example/fetch:1.0.0", "replicas": 0})).await;
    for (kind, path) in child_paths("fetch") {
        harness.wait(&path, kind, |o| o.is_some()).await;
    }
    harness.wait_state("fetch", "Cold").await;
    settled(&harness.fake, Duration::from_millis(1500)).await;

    let reconciles = || harness.metrics.reconcile_total.with_label_values(&["success"]).get();
    let (before, rv, reconciled) = (writes(&harness.fake), harness.fake.resource_version(), reconciles());
    let path = deployment_path("fetch");
    let mut churned = harness.fake.get(&path).unwrap();
    churned["status"] = json!({"observedGeneration": churned["metadata"]["generation"].clone(), "replicas": 0});
    harness.fake.put(&path, churned);
    tokio::time::sleep(resync * 4).await;
    assert!(reconciles() >= reconciled + 3, "the resyncs ran: {} reconciles", reconciles() - reconciled);
    assert_eq!(
        writes(&harness.fake),
        before,
        "no write while nothing changed: {:#?}",
        &harness.fake.requests()[before..]
    );
    assert_eq!(harness.fake.resource_version(), rv + 1, "only the Deployment's own status moved");

    let role_path = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles/fetch");
    let rules = harness.fake.get(&role_path).unwrap()["rules"].clone();
    let mut role = harness.fake.get(&role_path).unwrap();
    role["rules"] = json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]);
    harness.fake.put(&role_path, role);
    harness.wait(&role_path, "the Role's rules to be put back", |o| o.is_some_and(|o| o["rules"] == rules)).await;

    let mut relabelled = harness.fake.get(&path).unwrap();
    relabelled["metadata"]["labels"].as_object_mut().unwrap().remove("app.kubernetes.io/managed-by");
    harness.fake.put(&path, relabelled);
    harness
        .wait(&path, "the Deployment's label to be put back", |o| {
            o.is_some_and(|o| o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mcp-hangar")
        })
        .await;
    harness.stop().await;
}

#[tokio::test]
async fn spec_changes_reach_the_deployment() {
    let harness = Harness::start(None).await;
    harness.create("fetch", json!({"mode": "container", "image": "ghcr.io/example/fetch:1.0.0"})).await;
    let path = deployment_path("fetch");
    harness.wait(&path, "the Deployment", |o| o.is_some()).await;
    harness
        .servers()
        .patch(
            "fetch",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "ghcr.io/example/fetch:1.1.0", "replicas": 3}})),
        )
        .await
        .unwrap();
    let updated = harness
        .wait(&path, "the new image", |o| {
            o.is_some_and(|o| o["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/example/fetch:1.1.0")
        })
        .await
        .unwrap();
    assert_eq!(updated["spec"]["replicas"], 3);
    harness
        .wait(&server_path("fetch"), "status of generation 2", |s| {
            s.is_some_and(|s| s["status"]["observedGeneration"] == 2)
        })
        .await;

    harness
        .servers()
        .patch("fetch", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}})))
        .await
        .unwrap();
    let cold = harness.wait_state("fetch", "Cold").await;
    assert_eq!(condition(&cold, "Ready")["reason"], "ScaledToZero");
    assert_eq!(harness.fake.get(&path).unwrap()["spec"]["replicas"], 0);
    harness.stop().await;
}

#[tokio::test]
async fn deleting_the_server_removes_its_children_and_metrics() {
    let harness = Harness::start(None).await;
    harness.create("fetch", json!({"mode": "container", "image": "ghcr.io/example/fetch:1.0.0"})).await;
    harness.wait_state("fetch", "Initializing").await;
    harness.servers().delete("fetch", &DeleteParams::default()).await.unwrap();
    for (kind, path) in child_paths("fetch") {
        harness.wait(&path, &format!("{kind} to go"), |o| o.is_none()).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while harness.metrics.render().contains(r#"name="fetch""#) {
        assert!(tokio::time::Instant::now() < deadline, "metrics of a deleted server remain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    harness.stop().await;
}

#[tokio::test]
async fn a_ready_container_is_health_checked_through_its_service() {
    let mcp = McpTestServer::start(&["search", "fetch", "delete_everything"]).await;
    let harness = Harness::start(None).await;
    harness
        .create(
            "search",
            json!({
                "mode": "container", "image": "ghcr.io/example/search:2.0.0",
                "port": mcp.addr().port(),
                "tools": {"allowList": ["search", "fetch", "not-offered"]},
            }),
        )
        .await;
    harness.wait(&service_path("search"), "the Service", |o| o.is_some()).await;
    harness.wait_state("search", "Initializing").await;
    harness.set_cluster_ip("search", "127.0.0.1");
    harness.set_ready_replicas("search", 1);
    let ready = harness.wait_state("search", "Ready").await;
    let status = &ready["status"];
    assert_eq!(status["tools"], json!(["search", "fetch"]));
    assert_eq!(status["toolsCount"], 2);
    assert_eq!(status["protocolVersion"], mcp_server::SERVER_PROTOCOL);
    assert_eq!(status["serverInfo"], json!({"name": "test-mcp", "version": "1.0.0"}));
    assert_eq!(status["consecutiveFailures"], 0);
    assert!(status["lastHealthCheck"].is_string());
    assert_eq!(status["readyReplicas"], 1);
    assert_eq!(condition(&ready, "Ready")["reason"], "HealthCheckPassed");
    assert_eq!(condition(&ready, "Available")["status"], "True");
    assert_eq!(condition(&ready, "Progressing")["reason"], "RolloutComplete");
    assert!(mcp.methods().contains(&"tools/list".to_string()));
    eventually("the tools metric", || {
        harness.metrics.render().contains(r#"mcp_operator_provider_tools_count{name="search",namespace="tools"} 2"#)
    })
    .await;

    harness.set_ready_replicas("search", 0);
    harness
        .servers()
        .patch("search", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .unwrap();
    harness.wait(&deployment_path("search"), "two replicas", |o| o.is_some_and(|o| o["spec"]["replicas"] == 2)).await;
    harness.set_ready_replicas("search", 1);
    // Between the two edits the server may be seen with no ready replica (Degraded,
    // NoReadyReplicas): wait for the state of one ready replica out of two.
    let partial = harness
        .wait(&server_path("search"), "Degraded with 1 of 2 replicas ready", |s| {
            s.is_some_and(|s| s["status"]["state"] == "Degraded" && s["status"]["readyReplicas"] == 1)
        })
        .await
        .unwrap();
    assert_eq!(condition(&partial, "Degraded")["reason"], "ReplicasUnavailable");
    assert_eq!(condition(&partial, "Available")["status"], "True");
    harness.stop().await;
}

#[tokio::test]
async fn a_failing_remote_degrades_dies_and_recovers() {
    let mcp = McpTestServer::start(&["lookup"]).await;
    let harness = Harness::start(Some(&mcp)).await;
    let endpoint = format!("http://{REMOTE_HOST}:{}/mcp", mcp.addr().port());
    harness
        .create(
            "remote",
            json!({
                "mode": "remote", "endpoint": endpoint,
                "healthCheck": {"interval": "1s", "timeout": "500ms", "failureThreshold": 2},
                "circuitBreaker": {"failureThreshold": 3, "resetTimeout": "1s"},
            }),
        )
        .await;
    let ready = harness.wait_state("remote", "Ready").await;
    assert_eq!(ready["status"]["url"], endpoint.as_str());
    assert_eq!(ready["status"]["tools"], json!(["lookup"]));
    assert_eq!(condition(&ready, "Progressing")["reason"], "NoWorkload");
    for (kind, path) in child_paths("remote") {
        assert!(harness.fake.get(&path).is_none(), "remote servers own no {kind}");
    }

    mcp.set_answer(Answer::Status(503));
    let degraded = harness.wait_state("remote", "Degraded").await;
    let reason = condition(&degraded, "Degraded")["reason"].as_str().unwrap().to_string();
    assert!(["HealthCheckFailing", "CircuitOpen"].contains(&reason.as_str()), "{reason}");
    assert!(condition(&degraded, "Degraded")["message"].as_str().unwrap().contains("HTTP 503"));
    let dead = harness.wait_state("remote", "Dead").await;
    assert_eq!(condition(&dead, "Ready")["reason"], "CircuitOpenTooLong");
    assert!(dead["status"]["consecutiveFailures"].as_i64().unwrap() >= 4);
    eventually("the Dead metric", || {
        harness
            .metrics
            .render()
            .contains(r#"mcp_operator_provider_state{name="remote",namespace="tools",state="Dead"} 1"#)
    })
    .await;
    let metrics = harness.metrics.render();
    assert!(metrics.contains(r#"mcp_operator_provider_health_check_failures_total{name="remote",namespace="tools"}"#));

    mcp.set_answer(Answer::Json);
    let recovered = harness.wait_state("remote", "Ready").await;
    assert_eq!(recovered["status"]["consecutiveFailures"], 0);
    assert_eq!(condition(&recovered, "Degraded")["status"], "False");
    for expected in ["HealthCheckPassed", "CircuitOpenTooLong"] {
        eventually(&format!("a {expected} event"), || harness.event_reasons("remote").contains(&expected.to_string()))
            .await;
    }
    let warnings =
        harness.events().iter().filter(|e| e["regarding"]["name"] == "remote" && e["type"] == "Warning").count();
    assert!(warnings >= 2, "Degraded and Dead are warnings");
    harness.stop().await;
}

#[tokio::test]
async fn the_gateways_breaker_condition_survives_the_controllers_status_writes() {
    use mcp_hangar::gateway::condition::{BreakerCondition, ConditionWriter, KubeWriter};
    let mcp = McpTestServer::start(&["lookup"]).await;
    let harness = Harness::start(Some(&mcp)).await;
    let endpoint = format!("http://{REMOTE_HOST}:{}/mcp", mcp.addr().port());
    let spec = json!({"mode": "remote", "endpoint": endpoint, "healthCheck": {"interval": "1s", "timeout": "500ms", "failureThreshold": 1}});
    harness.create("remote", spec).await;
    harness.wait_state("remote", "Ready").await;
    let gateway = KubeWriter::new(harness.fake.client());
    let at = k8s_openapi::jiff::Timestamp::now();
    gateway.write(NS, "remote", &BreakerCondition::opened("gw-0", Duration::from_secs(30), at)).await.unwrap();
    let stored = harness.fake.get(&server_path("remote")).unwrap();
    assert_eq!(condition(&stored, "CircuitBreakerOpen")["status"], "True");
    assert_eq!(condition(&stored, "Ready")["status"], "True", "the gateway's write keeps the controller's");

    // A server whose status is settled: the gateway's write is no reason for the controller to
    // write status again (its own part did not change).
    let quiet = json!({"mode": "remote", "endpoint": endpoint, "healthCheck": {"interval": "1h"}});
    harness.create("quiet", quiet).await;
    harness.wait_state("quiet", "Ready").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    harness.fake.clear_requests();
    gateway.write(NS, "quiet", &BreakerCondition::opened("gw-0", Duration::from_secs(30), at)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status_writes = harness.fake.requests().iter().filter(|r| r.path.ends_with("/mcpservers/quiet/status")).count();
    assert_eq!(status_writes, 1, "only the gateway's own write");

    mcp.set_answer(Answer::Status(503));
    let degraded = harness.wait_state("remote", "Degraded").await;
    assert_eq!(condition(&degraded, "Ready")["status"], "False");
    let breaker = condition(&degraded, "CircuitBreakerOpen");
    assert_eq!(breaker["status"], "True", "the controller's write keeps the gateway's: {degraded:#}");
    assert!(breaker["message"].as_str().unwrap().contains("gw-0"));
    let managers: Vec<&str> = degraded["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"mcp-hangar-gateway") && managers.contains(&"mcp-hangar"), "{managers:?}");
    let controller =
        degraded["metadata"]["managedFields"].as_array().unwrap().iter().find(|m| m["manager"] == "mcp-hangar");
    let owned = controller.unwrap()["fieldsV1"]["f:status"]["f:conditions"].as_object().unwrap();
    assert_eq!(owned.len(), 4, "the controller applies its four conditions: {owned:?}");
    assert!(!owned.keys().any(|k| k.contains("CircuitBreakerOpen")), "and never the gateway's back as its own");

    harness.stop().await;
}

#[tokio::test]
async fn a_named_service_account_replaces_the_owned_one() {
    let harness = Harness::start(None).await;
    harness.create("fetch", json!({"mode": "container", "image": "ghcr.io/example/fetch:1.0.0"})).await;
    let account_path = format!("/api/v1/namespaces/{NS}/serviceaccounts/fetch");
    harness.wait(&account_path, "the owned ServiceAccount", |o| o.is_some()).await;
    harness
        .servers()
        .patch("fetch", &PatchParams::default(), &Patch::Merge(json!({"spec": {"serviceAccountName": "team"}})))
        .await
        .unwrap();
    harness.wait(&account_path, "the owned ServiceAccount to be pruned", |o| o.is_none()).await;
    let binding_path = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings/fetch");
    harness
        .wait(&binding_path, "the binding to name the account", |o| {
            o.is_some_and(|o| o["subjects"][0]["name"] == "team")
        })
        .await;
    let deployment = harness
        .wait(&deployment_path("fetch"), "the pod to run as the account", |o| {
            o.is_some_and(|o| o["spec"]["template"]["spec"]["serviceAccountName"] == "team")
        })
        .await
        .unwrap();
    assert_eq!(deployment["spec"]["template"]["spec"]["automountServiceAccountToken"], false);
    harness.stop().await;
}

#[tokio::test]
async fn configmap_profiles_are_read_from_the_server_namespace() {
    let harness = Harness::start(None).await;
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(harness.fake.client(), NS);
    let profile: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "toolhive", "namespace": NS},
        "data": {"profile.json": r#"{"read": ["/"], "write": ["/tmp"], "network": {"outbound": {"insecure_allow_all": true}}}"#},
    }))
    .unwrap();
    maps.create(&PostParams::default(), &profile).await.unwrap();
    let spec = |name: &str| {
        json!({
            "mode": "container", "image": "ghcr.io/example/fetch:1.0.0",
            "permissionProfile": {"type": "configmap", "name": name, "key": "profile.json"},
        })
    };
    harness.create("open", spec("toolhive")).await;
    let policy = harness
        .wait(&format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/open"), "the NetworkPolicy", |o| {
            o.is_some()
        })
        .await
        .unwrap();
    assert_eq!(policy["spec"]["egress"], json!([{}]), "insecure_allow_all opens egress");
    let deployment = harness.wait(&deployment_path("open"), "the Deployment", |o| o.is_some()).await.unwrap();
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["mcp-hangar.io/permission-profile"],
        "configmap:toolhive/profile.json"
    );

    harness.create("lost", spec("missing")).await;
    let dead = harness.wait_state("lost", "Dead").await;
    assert_eq!(condition(&dead, "Ready")["reason"], "ProfileUnavailable");
    assert!(condition(&dead, "Ready")["message"].as_str().unwrap().contains("\"missing\""));
    assert!(harness.fake.get(&deployment_path("lost")).is_none());
    harness.stop().await;
}

#[tokio::test]
async fn servers_that_bypassed_the_webhook_are_refused() {
    let harness = Harness::start(None).await;
    harness
        .create(
            "privileged",
            json!({"mode": "container", "image": "ghcr.io/example/x:1.0.0", "securityContext": {"privileged": true}}),
        )
        .await;
    let dead = harness.wait_state("privileged", "Dead").await;
    let ready = condition(&dead, "Ready");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(ready["message"].as_str().unwrap().contains("spec.securityContext.privileged"));
    for (kind, path) in child_paths("privileged") {
        assert!(harness.fake.get(&path).is_none(), "no {kind} for a refused server");
    }
    eventually("an InvalidSpec event", || harness.event_reasons("privileged").contains(&"InvalidSpec".to_string()))
        .await;
    harness.stop().await;
}

#[tokio::test]
async fn rejected_children_are_reported_and_retryable_failures_retried() {
    let harness = Harness::start(None).await;
    harness.fake.fail_next(2, None, "/networkpolicies/flaky", 500);
    harness.create("flaky", json!({"mode": "container", "image": "ghcr.io/example/x:1.0.0"})).await;
    harness.wait_state("flaky", "Initializing").await;
    eventually("an ApplyFailed event", || harness.event_reasons("flaky").contains(&"ApplyFailed".to_string())).await;
    assert!(harness.metrics.render().contains(r#"mcp_operator_reconcile_total{result="error"}"#));

    harness.fake.fail_next(100, None, "/deployments/rejected", 422);
    harness.create("rejected", json!({"mode": "container", "image": "ghcr.io/example/x:1.0.0"})).await;
    let dead = harness.wait_state("rejected", "Dead").await;
    assert_eq!(condition(&dead, "Ready")["reason"], "ApplyRejected");
    harness.stop().await;
}

fn lease_api(fake: &FakeApi) -> Api<Lease> {
    Api::namespaced(fake.client(), "mcp-system")
}

fn quick_timing() -> LeaseTiming {
    LeaseTiming {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(100),
    }
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_released_lease_moves_on() {
    let fake = FakeApi::start().await;
    fake.register_operator_kinds();
    let metrics = Metrics::new();
    let (stop_a, stopped_a) = watch::channel(false);
    let (stop_b, stopped_b) = watch::channel(false);
    let elector_a = LeaderElector::new(lease_api(&fake), "lease", "replica-a", quick_timing());
    let run_a = tokio::spawn(controller::run(context(&fake, &metrics, None, "replica-a"), Some(elector_a), stopped_a));
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/mcp-system/leases/lease";
    let (lease, held) =
        fake.wait_for(lease_path, WAIT, |l| l.is_some_and(|l| l["spec"]["holderIdentity"] == "replica-a")).await;
    assert!(held, "{lease:?}");
    let elector_b = LeaderElector::new(lease_api(&fake), "lease", "replica-b", quick_timing());
    let run_b =
        tokio::spawn(controller::run(context(&fake, &Metrics::new(), None, "replica-b"), Some(elector_b), stopped_b));

    let servers: Api<MCPServer> = Api::namespaced(fake.client(), NS);
    let server: MCPServer = serde_json::from_value(json!({
        "apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer",
        "metadata": {"name": "fetch", "namespace": NS},
        "spec": {"mode": "container", "image": "ghcr.io/example/fetch:1.0.0"},
    }))
    .unwrap();
    servers.create(&PostParams::default(), &server).await.unwrap();
    let (_, reconciled) =
        fake.wait_for(&server_path("fetch"), WAIT, |s| s.is_some_and(|s| s["status"]["state"] == "Initializing")).await;
    assert!(reconciled);
    let events_path = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events");
    eventually("an event", || !fake.list(&events_path).is_empty()).await;
    let events = fake.list(&events_path);
    assert!(events.iter().all(|e| e["reportingInstance"] == "replica-a"), "{events:#?}");

    let _ = stop_a.send(true);
    tokio::time::timeout(WAIT, run_a).await.unwrap().unwrap();
    let (lease, moved) = fake
        .wait_for(lease_path, Duration::from_secs(5), |l| l.is_some_and(|l| l["spec"]["holderIdentity"] == "replica-b"))
        .await;
    assert!(moved, "the released lease goes to the other replica at once: {lease:?}");
    assert_eq!(lease.unwrap()["spec"]["leaseTransitions"], 1);

    servers.patch("fetch", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}}))).await.unwrap();
    let (_, cold) =
        fake.wait_for(&server_path("fetch"), WAIT, |s| s.is_some_and(|s| s["status"]["state"] == "Cold")).await;
    assert!(cold, "the new leader reconciles");
    let _ = stop_b.send(true);
    tokio::time::timeout(WAIT, run_b).await.unwrap().unwrap();
    let released = fake.get(lease_path).unwrap();
    assert!(released["spec"]["holderIdentity"].is_null());
}

#[tokio::test]
async fn a_silent_leader_is_replaced_after_the_lease_duration() {
    let fake = FakeApi::start().await;
    fake.register_operator_kinds();
    let mut silent = LeaderElector::new(lease_api(&fake), "lease", "silent", quick_timing());
    assert!(silent.try_acquire_or_renew().await.unwrap());
    let mut candidate = LeaderElector::new(lease_api(&fake), "lease", "candidate", quick_timing());
    assert!(!candidate.try_acquire_or_renew().await.unwrap(), "a fresh lease is respected");
    assert!(silent.try_acquire_or_renew().await.unwrap(), "the holder renews");
    assert!(!candidate.try_acquire_or_renew().await.unwrap(), "a renewed lease is respected");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(candidate.try_acquire_or_renew().await.unwrap(), "an unrenewed lease is taken over");
    assert!(!silent.try_acquire_or_renew().await.unwrap(), "the old holder now follows");
    let lease = lease_api(&fake).get("lease").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("candidate"));
}

/// Fault drill: conflicts, server errors, slow answers and watches answered 410 Gone on the
/// way; the controller backs off, retries and converges to the same children and state.
#[tokio::test]
async fn api_faults_are_survived_and_the_state_converges() {
    use axum::http::Method;
    let harness = Harness::start(None).await;
    harness.fake.fail_next(2, Some(Method::PATCH), "/deployments/", 409);
    harness.fake.fail_next(1, Some(Method::PATCH), "/services/", 500);
    harness.fake.fail_next(1, Some(Method::PATCH), "/mcpservers/faulty/status", 500);
    harness.fake.delay_next(2, Some(Method::PATCH), "/networkpolicies/", Duration::from_secs(2));
    harness.fake.expire_next_watches(3, "deployments");
    harness.create("faulty", json!({"mode": "container", "image": "ghcr.io/example/fetch:1.0.0"})).await;
    // Four failed reconciles back off 1 s, 2 s, 4 s and 8 s before the fifth succeeds.
    let converged = Duration::from_secs(60);
    let (last, met) = harness
        .fake
        .wait_for(&server_path("faulty"), converged, |s| s.is_some_and(|s| s["status"]["state"] == "Initializing"))
        .await;
    assert!(met, "never converged after the faults: {last:#?}");
    for (kind, path) in child_paths("faulty") {
        assert!(harness.fake.get(&path).is_some(), "{kind} missing after convergence");
    }

    // A spec edit after the faults still reaches the Deployment.
    let patch = json!({"spec": {"image": "ghcr.io/example/fetch:2.0.0"}});
    harness.servers().patch("faulty", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let (last, met) = harness
        .fake
        .wait_for(&deployment_path("faulty"), converged, |d| {
            d.is_some_and(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/example/fetch:2.0.0")
        })
        .await;
    assert!(met, "an edit after the faults never reached the Deployment: {last:#?}");
    let metrics = harness.metrics.render();
    let errors = metrics
        .lines()
        .find(|l| l.starts_with(r#"mcp_operator_reconcile_total{result="error"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(errors >= 4, "each injected fault failed one reconcile: {metrics}");
    harness.stop().await;
}

/// Fault drill: the server is deleted while its children are still being applied; nothing
/// it owned is left behind.
#[tokio::test]
async fn deleting_a_server_mid_reconcile_leaves_no_orphans() {
    use axum::http::Method;
    let harness = Harness::start(None).await;
    harness.fake.delay_next(6, Some(Method::PATCH), "namespaces/tools/", Duration::from_millis(400));
    harness.create("brief", json!({"mode": "container", "image": "ghcr.io/example/fetch:1.0.0"})).await;
    harness.wait(&child_paths("brief")[0].1, "the first child", |o| o.is_some()).await;
    harness.servers().delete("brief", &DeleteParams::default()).await.unwrap();
    harness.wait(&server_path("brief"), "the server gone", |o| o.is_none()).await;
    // Let any reconcile that was under way finish, then look for leftovers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (kind, path) in child_paths("brief") {
        assert!(harness.fake.get(&path).is_none(), "{kind} orphaned after the server was deleted mid-reconcile");
    }
    harness.stop().await;
}

/// The collections the controller watches.
const WATCHED: [&str; 8] = [
    "/apis/mcp-hangar.io/v1alpha1/mcpservers",
    "/apis/coordination.k8s.io/v1/namespaces/mcp-system/leases",
    "/apis/apps/v1/deployments",
    "/api/v1/services",
    "/api/v1/serviceaccounts",
    "/apis/rbac.authorization.k8s.io/v1/roles",
    "/apis/rbac.authorization.k8s.io/v1/rolebindings",
    "/apis/networking.k8s.io/v1/networkpolicies",
];

/// Restarts the fake apiserver over a compacted etcd, waits out the outage, creates `name`
/// and returns how long the controller took to give it its children and status; then waits
/// until every watch has re-listed.
async fn restart_then_create(harness: &Harness, name: &str, bound: Duration) -> Duration {
    // Other writes in the cluster put every watch's resourceVersion below the compacted one.
    harness.fake.put("/api/v1/namespaces/default/configmaps/elsewhere", json!({"data": {"for": name}}));
    let outage = Duration::from_secs(3);
    harness.fake.restart(outage);
    harness.fake.clear_requests();
    tokio::time::sleep(outage).await;
    let started = std::time::Instant::now();
    harness.create(name, json!({"mode": "container", "image": "ghcr.io/example/fetch:1.0.0"})).await;
    let (last, met) = harness
        .fake
        .wait_for(&server_path(name), bound, |s| s.is_some_and(|s| s["status"]["state"] == "Initializing"))
        .await;
    assert!(met, "{name}, created after the restart, was not reconciled within {bound:?}: {last:#?}");
    let took = started.elapsed();
    for (kind, path) in child_paths(name) {
        assert!(harness.fake.get(&path).is_some(), "{kind} of {name} missing");
    }
    // Listed again, or watched from resourceVersion 0 (the fake's answer to a list made before
    // any write, from which a watch starts with the current objects, as a list would).
    let relisted = |collection: &str| {
        harness.fake.requests().iter().any(|r| {
            r.method == axum::http::Method::GET
                && r.path == collection
                && (!r.is_watch() || r.query.contains("resourceVersion=0&") || r.query.ends_with("resourceVersion=0"))
        })
    };
    for collection in WATCHED {
        eventually(&format!("{collection} listed again after the restart"), || relisted(collection)).await;
    }
    eprintln!("{name}: every watch re-listed within {:?} of the apiserver coming back", started.elapsed());
    took
}

/// Fault drill: etcd compacted and the apiserver restarted (every connection dropped, none
/// accepted for 3 s, then every watch answered 410 Expired), twice within a minute. Each watch
/// re-lists on its own: a server created after each restart is reconciled within seconds,
/// existing servers follow edits, and the watch metrics show what happened.
#[tokio::test]
async fn after_an_apiserver_restart_over_a_compacted_etcd_new_servers_are_reconciled_promptly() {
    const BOUND: Duration = Duration::from_secs(10);
    let harness = Harness::start(None).await;
    harness.create("before", json!({"mode": "container", "image": "ghcr.io/example/fetch:1.0.0"})).await;
    harness.wait_state("before", "Initializing").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let first = restart_then_create(&harness, "after", BOUND).await;
    eprintln!("first restart: the new server was reconciled {first:?} after its creation");
    let second = restart_then_create(&harness, "later", BOUND).await;
    eprintln!("second restart: the new server was reconciled {second:?} after its creation");

    let edited = std::time::Instant::now();
    let patch = json!({"spec": {"image": "ghcr.io/example/fetch:2.0.0"}});
    harness.servers().patch("before", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let (last, met) = harness
        .fake
        .wait_for(&deployment_path("before"), BOUND, |d| {
            d.is_some_and(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/example/fetch:2.0.0")
        })
        .await;
    assert!(met, "an edit after the restarts never reached the Deployment: {last:#?}");
    eprintln!("an edit of an existing server was applied {:?} after it", edited.elapsed());

    let metrics = harness.metrics.render();
    for resource in [
        "mcpservers",
        "leases",
        "deployments",
        "services",
        "serviceaccounts",
        "roles",
        "rolebindings",
        "networkpolicies",
    ] {
        let up = format!(r#"mcp_hangar_watch_up{{resource="{resource}"}} 1"#);
        eventually(&format!("the {resource} watch reported up"), || harness.metrics.render().contains(&up)).await;
        let errors = metrics
            .lines()
            .find(|l| l.starts_with(&format!(r#"mcp_hangar_watch_errors_total{{resource="{resource}"}}"#)))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(errors >= 2, "each restart broke the {resource} watch: {metrics}");
    }
    let handle = harness.metrics.clone();
    harness.stop().await;
    assert!(!handle.render().contains("mcp_hangar_watch_up{"), "no watch is reported once the controller stopped");
}

#[tokio::test]
async fn a_repeated_event_is_one_event_with_a_series() {
    use k8s_openapi::api::core::v1::ObjectReference;
    use kube::runtime::events::{Event, EventType};
    use mcp_hangar::controller::events::Recorder;

    let fake = FakeApi::start().await;
    fake.register_operator_kinds();
    let recorder = Recorder::new(fake.client(), "mcp-hangar", "replica-a");
    let regarding = |name: &str| ObjectReference {
        api_version: Some("mcp-hangar.io/v1alpha1".into()),
        kind: Some("MCPServer".into()),
        namespace: Some(NS.into()),
        name: Some(name.into()),
        ..ObjectReference::default()
    };
    let failed = Event {
        type_: EventType::Warning,
        reason: "ApplyFailed".into(),
        note: Some("the apiserver refused the Deployment".into()),
        action: "Apply".into(),
        secondary: None,
    };
    for _ in 0..3 {
        recorder.publish(&failed, &regarding("fetch")).await.unwrap();
    }
    recorder.publish(&failed, &regarding("other")).await.unwrap();
    let events = fake.list(&format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"));
    assert_eq!(events.len(), 2, "one per object: {events:#?}");
    let fetch = events.iter().find(|e| e["regarding"]["name"] == "fetch").unwrap();
    assert_eq!(fetch["series"]["count"], 3);
    assert_eq!(
        (&fetch["reason"], &fetch["type"], &fetch["reportingInstance"]),
        (&json!("ApplyFailed"), &json!("Warning"), &json!("replica-a"))
    );
    let other = events.iter().find(|e| e["regarding"]["name"] == "other").unwrap();
    assert!(other["series"].is_null(), "a first occurrence has no series");
}

/// The operator runs the group controller on the MCPServer controller's store: a group follows
/// its members' states and their deletion, with no watch of MCPServers of its own.
#[tokio::test]
async fn a_group_follows_the_server_controllers_states_and_deletions() {
    let harness = Harness::start(None).await;
    let server: MCPServer = serde_json::from_value(json!({
        "apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer",
        "metadata": {"name": "fetch", "namespace": NS, "labels": {"pool": "a"}},
        "spec": {"mode": "container", "image": "ghcr.io/example/fetch:1.0.0", "replicas": 0},
    }))
    .unwrap();
    harness.servers().create(&PostParams::default(), &server).await.unwrap();
    let group_path = format!("/apis/mcp-hangar.io/v1alpha1/namespaces/{NS}/mcpservergroups/pool");
    harness.fake.put(
        &group_path,
        json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServerGroup",
               "metadata": {"name": "pool", "namespace": NS},
               "spec": {"selector": {"matchLabels": {"pool": "a"}}}}),
    );
    let member_state =
        |state: &'static str| move |g: Option<&Value>| g.is_some_and(|g| g["status"]["servers"][0]["state"] == state);
    harness.wait(&group_path, "the member listed Cold", member_state("Cold")).await;
    harness
        .servers()
        .patch("fetch", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}})))
        .await
        .unwrap();
    harness.wait(&group_path, "the member listed Initializing", member_state("Initializing")).await;
    harness.servers().delete("fetch", &DeleteParams::default()).await.unwrap();
    let emptied = harness.wait(&group_path, "no member left", |g| g.is_some_and(|g| g["status"]["members"] == 0)).await;
    assert_eq!(emptied.unwrap()["status"]["healthyMembers"], 0);
    harness.stop().await;
}
