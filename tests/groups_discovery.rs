//! The MCPServerGroup and MCPDiscoverySource controllers against the in-memory Kubernetes API
//! (a real `kube::Client` talking to the fake apiserver): membership and health conditions,
//! discovery from Services and ConfigMaps, Additive vs Authoritative, user edits, conflicts,
//! refused entries, deletion, and silence when nothing changes.

#[path = "support/controllers.rs"]
mod controllers;
#[path = "support/fake_api.rs"]
mod fake_api;

use std::time::Duration;

use axum::http::Method;
use fake_api::FakeApi;
use mcp_hangar::controller::{self, ControllerConfig};
use mcp_hangar::crd::Kind;
use mcp_hangar::policy::{Engine, Operation};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(20);
const GATEWAY: &str = "http://mcp-hangar-gateway.mcp-hangar.svc";
const API: &str = "/apis/mcp-hangar.io/v1alpha1";

fn server_path(ns: &str, name: &str) -> String {
    format!("{API}/namespaces/{ns}/mcpservers/{name}")
}

fn group_path(ns: &str, name: &str) -> String {
    format!("{API}/namespaces/{ns}/mcpservergroups/{name}")
}

fn source_path(ns: &str, name: &str) -> String {
    format!("{API}/namespaces/{ns}/mcpdiscoverysources/{name}")
}

fn config_map_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps/{name}")
}

/// The fake apiserver with the group and discovery controllers running against it.
struct Harness {
    fake: FakeApi,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Harness {
    async fn start() -> Harness {
        let fake = FakeApi::start().await;
        fake.register_operator_kinds();
        let config = ControllerConfig { gateway_url: Some(GATEWAY.into()), ..ControllerConfig::default() };
        let ctx = controllers::context(fake.client(), config);
        let (stop, stopped) = watch::channel(false);
        let until = |mut stopped: watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let tasks = vec![
            tokio::spawn(controller::group::run(
                ctx.clone(),
                controller::group::ServerFeed::watch(&ctx),
                until(stopped.clone()),
            )),
            tokio::spawn(controller::discovery::run(ctx, until(stopped))),
        ];
        Harness { fake, stop, tasks }
    }

    fn server(&self, ns: &str, name: &str, labels: Value, state: Option<&str>) {
        let mut object = json!({
            "apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"mode": "container", "image": "ghcr.io/modelcontextprotocol/mcp-sqlite:latest"},
        });
        if let Some(state) = state {
            object["status"] = json!({"state": state});
        }
        self.fake.put(&server_path(ns, name), object);
    }

    /// Plays the server controller: sets a server's state.
    fn set_state(&self, ns: &str, name: &str, state: &str) {
        let path = server_path(ns, name);
        let mut server = self.fake.get(&path).expect("server exists");
        server["status"] = json!({"state": state});
        self.fake.put(&path, server);
    }

    fn namespace(&self, name: &str, labels: Value) {
        self.fake.put(&format!("/api/v1/namespaces/{name}"), json!({"metadata": {"name": name, "labels": labels}}));
    }

    fn service(&self, ns: &str, name: &str, annotations: Value, ports: Value) {
        self.fake.put(
            &format!("/api/v1/namespaces/{ns}/services/{name}"),
            json!({"metadata": {"name": name, "namespace": ns, "annotations": annotations}, "spec": {"ports": ports}}),
        );
    }

    fn config_map(&self, ns: &str, name: &str, servers_yaml: &str) {
        self.fake.put(
            &config_map_path(ns, name),
            json!({"metadata": {"name": name, "namespace": ns}, "data": {"servers.yaml": servers_yaml}}),
        );
    }

    fn source(&self, ns: &str, name: &str, spec: Value) {
        self.fake.put(
            &source_path(ns, name),
            json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPDiscoverySource",
                   "metadata": {"name": name, "namespace": ns}, "spec": spec}),
        );
    }

    /// Waits until the object at `path` satisfies `condition`; panics with its last state.
    async fn wait(&self, path: &str, what: &str, condition: impl Fn(Option<&Value>) -> bool) -> Option<Value> {
        let (last, met) = self.fake.wait_for(path, WAIT, condition).await;
        assert!(met, "timed out waiting for {what}; last state: {last:#?}");
        last
    }

    fn events(&self, ns: &str, regarding: &str) -> Vec<Value> {
        self.fake
            .list(&format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"))
            .into_iter()
            .filter(|e| e["regarding"]["name"] == regarding)
            .collect()
    }

    /// Writes by the controllers since the request log was last cleared (events excluded).
    fn writes(&self) -> Vec<String> {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.method != Method::GET && !r.path.contains("/events"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            tokio::time::timeout(WAIT, task).await.expect("the controllers stop").unwrap();
        }
    }
}

fn condition<'a>(object: &'a Value, type_: &str) -> &'a Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

fn is(object: Option<&Value>, type_: &str, status: &str, reason: &str) -> bool {
    object.is_some_and(|o| condition(o, type_)["status"] == status && condition(o, type_)["reason"] == reason)
}

/// Waits until `check` holds: events follow the status write by a moment.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits a moment in which the controllers could act, then returns what they wrote.
async fn writes_during(harness: &Harness, window: Duration) -> Vec<String> {
    harness.fake.clear_requests();
    tokio::time::sleep(window).await;
    harness.writes()
}

const DB: &str = "mcp-servers";

/// The seed's "High Availability Group" and its two labelled servers.
fn seed_group(harness: &Harness) {
    harness.fake.put(
        &group_path(DB, "database-tools-ha"),
        json!({
            "apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServerGroup",
            "metadata": {"name": "database-tools-ha", "namespace": DB},
            "spec": {
                "selector": {"matchLabels": {"mcp-hangar.io/category": "database"}},
                "strategy": "LeastConnections",
                "failover": {"enabled": true, "maxRetries": 2, "retryDelay": "500ms"},
                "healthPolicy": {"minHealthyPercentage": 50, "unhealthyThreshold": 3},
            },
        }),
    );
}

#[tokio::test]
async fn seed_group_reports_members_health_and_crossing_the_threshold() {
    let harness = Harness::start().await;
    let db = json!({"mcp-hangar.io/category": "database", "mcp-hangar.io/tier": "primary"});
    harness.server(DB, "sqlite-primary", db.clone(), Some("Ready"));
    harness.server(DB, "sqlite-replica", json!({"mcp-hangar.io/category": "database"}), Some("Initializing"));
    harness.server(DB, "web", json!({"mcp-hangar.io/category": "web"}), Some("Ready"));
    harness.server("elsewhere", "sqlite-other", db.clone(), Some("Ready"));
    seed_group(&harness);
    let path = group_path(DB, "database-tools-ha");

    let group =
        harness.wait(&path, "1 of 2 healthy", |g| is(g, "Ready", "True", "EnoughHealthyMembers")).await.unwrap();
    let status = &group["status"];
    assert_eq!((status["members"].clone(), status["healthyMembers"].clone()), (json!(2), json!(1)));
    assert_eq!(
        status["servers"],
        json!([
            {"name": "sqlite-primary", "state": "Ready", "healthy": true},
            {"name": "sqlite-replica", "state": "Initializing", "healthy": false},
        ])
    );
    assert_eq!(status["url"], format!("{GATEWAY}/groups/{DB}/database-tools-ha/mcp"));
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(condition(&group, "Degraded")["status"], "False");
    assert_eq!(condition(&group, "Ready")["message"], "1 of 2 members healthy (at least 50% needed)");

    // A third member joins by label: 1 of 3 is below 50%.
    harness.server(DB, "sqlite-cache", json!({"mcp-hangar.io/category": "database"}), Some("Dead"));
    let group = harness.wait(&path, "Degraded", |g| is(g, "Degraded", "True", "TooFewHealthyMembers")).await.unwrap();
    assert_eq!(condition(&group, "Ready")["status"], "False");
    assert_eq!(
        condition(&group, "Ready")["message"],
        "1 of 3 members healthy, 2 needed for 50%: 1 more must become healthy"
    );
    eventually("a Warning event on crossing below the threshold", || {
        harness
            .events(DB, "database-tools-ha")
            .iter()
            .any(|e| e["type"] == "Warning" && e["reason"] == "TooFewHealthyMembers")
    })
    .await;

    // State changes are picked up: the replica becomes Ready.
    harness.set_state(DB, "sqlite-replica", "Ready");
    let group = harness.wait(&path, "Ready again", |g| is(g, "Ready", "True", "EnoughHealthyMembers")).await.unwrap();
    assert_eq!(group["status"]["healthyMembers"], 2);

    // Membership changes: a label removed, a server deleted.
    let mut cache = harness.fake.get(&server_path(DB, "sqlite-cache")).unwrap();
    cache["metadata"]["labels"] = json!({});
    harness.fake.put(&server_path(DB, "sqlite-cache"), cache);
    harness.wait(&path, "2 members", |g| g.is_some_and(|g| g["status"]["members"] == 2)).await;
    harness.fake.delete(&server_path(DB, "sqlite-primary"));
    let group = harness.wait(&path, "1 member", |g| g.is_some_and(|g| g["status"]["members"] == 1)).await.unwrap();
    assert_eq!(group["status"]["servers"], json!([{"name": "sqlite-replica", "state": "Ready", "healthy": true}]));

    // Nothing changes: nothing is written, not even when an unrelated server moves.
    harness.set_state(DB, "web", "Degraded");
    assert_eq!(writes_during(&harness, Duration::from_secs(2)).await, Vec::<String>::new());
    harness.stop().await;
}

#[tokio::test]
async fn a_group_without_members_is_a_condition_not_an_error_loop() {
    let harness = Harness::start().await;
    seed_group(&harness);
    let path = group_path(DB, "database-tools-ha");
    let group = harness.wait(&path, "NoMembers", |g| is(g, "Ready", "False", "NoMembers")).await.unwrap();
    assert_eq!(group["status"]["members"], 0);
    assert_eq!(group["status"]["servers"], json!([]));
    assert_eq!(condition(&group, "Degraded")["status"], "False");
    assert_eq!(writes_during(&harness, Duration::from_secs(2)).await, Vec::<String>::new());
    harness.server(DB, "sqlite-primary", json!({"mcp-hangar.io/category": "database"}), Some("Ready"));
    harness.wait(&path, "a member", |g| is(g, "Ready", "True", "EnoughHealthyMembers")).await;
    harness.stop().await;
}

const SYSTEM: &str = "mcp-system";

/// The seed's "Namespace Discovery" source.
fn seed_namespace_source(harness: &Harness) {
    harness.source(
        SYSTEM,
        "team-mcp-servers",
        json!({
            "type": "Namespace",
            "mode": "Authoritative",
            "refreshInterval": "5m",
            "namespaceSelector": {"matchLabels": {"mcp-hangar.io/enabled": "true"}},
            "providerTemplate": {"spec": {"idleTTL": "5m", "resources": {"requests": {"memory": "64Mi", "cpu": "50m"}}}},
        }),
    );
}

#[tokio::test]
async fn seed_namespace_discovery_creates_remote_servers_and_prunes_when_the_label_goes() {
    let harness = Harness::start().await;
    harness.namespace(SYSTEM, json!({}));
    harness.namespace("team-a", json!({"mcp-hangar.io/enabled": "true"}));
    harness.namespace("team-b", json!({}));
    let on = json!({"mcp-hangar.io/enabled": "true"});
    harness.service(
        "team-a",
        "weather",
        on.clone(),
        json!([{"name": "http", "port": 80}, {"name": "mcp", "port": 9000}]),
    );
    harness.service(
        "team-a",
        "search",
        json!({"mcp-hangar.io/enabled": "true", "mcp-hangar.io/path": "/v1/mcp", "mcp-hangar.io/transport": "sse"}),
        json!([{"port": 8080}]),
    );
    harness.service("team-a", "plain", json!({}), json!([{"port": 80}]));
    harness.service("team-b", "hidden", on.clone(), json!([{"port": 80}]));
    seed_namespace_source(&harness);

    let weather = harness.wait(&server_path("team-a", "weather"), "weather", |s| s.is_some()).await.unwrap();
    assert_eq!(weather["spec"], json!({"mode": "remote", "endpoint": "http://weather.team-a.svc:9000/mcp"}));
    assert_eq!(weather["metadata"]["labels"]["mcp-hangar.io/discovery-source"], "mcp-system.team-mcp-servers");
    assert_eq!(weather["metadata"]["annotations"]["mcp-hangar.io/discovery-source"], "mcp-system/team-mcp-servers");
    let search = harness.wait(&server_path("team-a", "search"), "search", |s| s.is_some()).await.unwrap();
    assert_eq!(search["spec"]["endpoint"], "http://search.team-a.svc:8080/v1/mcp");
    assert_eq!(search["spec"]["transport"], "sse");
    assert!(harness.fake.get(&server_path("team-a", "plain")).is_none());
    assert!(harness.fake.get(&server_path("team-b", "hidden")).is_none());

    let path = source_path(SYSTEM, "team-mcp-servers");
    let source = harness.wait(&path, "Ready", |s| is(s, "Ready", "True", "AllEntriesApplied")).await.unwrap();
    assert_eq!(source["status"]["discovered"], 2);
    assert_eq!(source["status"]["servers"], json!(["team-a/search", "team-a/weather"]));
    assert!(source["status"]["lastSyncTime"].is_string());
    assert_eq!(condition(&source, "Synced")["status"], "True");
    let ignored = condition(&source, "TemplateFieldsIgnored");
    assert_eq!(ignored["status"], "True");
    assert_eq!(ignored["message"], "ignored for remote servers: idleTTL, resources");
    assert_eq!(source["metadata"]["finalizers"], json!(["mcp-hangar.io/discovery-cleanup"]));
    let created = |reason: &str| {
        let mut related: Vec<String> = harness
            .events(SYSTEM, "team-mcp-servers")
            .iter()
            .filter(|e| e["reason"] == reason)
            .map(|e| {
                format!(
                    "{}/{}",
                    e["related"]["namespace"].as_str().unwrap_or(""),
                    e["related"]["name"].as_str().unwrap_or("")
                )
            })
            .collect();
        related.sort();
        related
    };
    assert_eq!(created("Created"), ["team-a/search", "team-a/weather"]);

    // A sync that finds nothing new writes nothing (a namespace event triggers one).
    harness.namespace("team-c", json!({}));
    assert_eq!(writes_during(&harness, Duration::from_secs(2)).await, Vec::<String>::new());

    // A newly annotated Service is picked up by the watch.
    harness.service("team-a", "plain", on.clone(), json!([{"port": 80}]));
    harness.wait(&server_path("team-a", "plain"), "plain", |s| s.is_some()).await;

    // The namespace loses its label: an Authoritative source deletes what it created there.
    harness.namespace("team-a", json!({}));
    for name in ["weather", "search", "plain"] {
        harness.wait(&server_path("team-a", name), &format!("{name} to be pruned"), |s| s.is_none()).await;
    }
    let source = harness.wait(&path, "nothing listed", |s| s.is_some_and(|s| s["status"]["discovered"] == 0)).await;
    assert_eq!(source.unwrap()["status"]["servers"], json!([]));
    eventually("three Deleted events", || created("Deleted").len() == 3).await;
    assert_eq!(created("Deleted"), ["team-a/plain", "team-a/search", "team-a/weather"]);
    harness.stop().await;
}

const TOOLS: &str = "tools";

const TWO_SERVERS: &str = "
- name: weather
  labels: {team: a}
  spec: {mode: remote, endpoint: 'https://weather.example.com/mcp'}
- name: fetch
  spec: {mode: container, image: 'ghcr.io/org/fetch:1.0.0'}
";

const ONE_SERVER: &str = "
- name: weather
  labels: {team: a}
  spec: {mode: remote, endpoint: 'https://weather.example.com/mcp'}
";

fn config_map_source(harness: &Harness, name: &str, mode: &str) {
    harness.source(
        TOOLS,
        name,
        json!({"type": "ConfigMap", "mode": mode, "refreshInterval": "1m", "configMapRef": {"name": "mcp-server-definitions"}}),
    );
}

#[tokio::test]
async fn additive_keeps_unlisted_servers_authoritative_prunes_them() {
    let harness = Harness::start().await;
    harness.config_map(TOOLS, "mcp-server-definitions", TWO_SERVERS);
    config_map_source(&harness, "defs", "Additive");
    let fetch = harness.wait(&server_path(TOOLS, "fetch"), "fetch", |s| s.is_some()).await.unwrap();
    assert_eq!(fetch["spec"], json!({"mode": "container", "image": "ghcr.io/org/fetch:1.0.0"}));
    let weather = harness.wait(&server_path(TOOLS, "weather"), "weather", |s| s.is_some()).await.unwrap();
    assert_eq!(weather["metadata"]["labels"]["team"], "a");
    let path = source_path(TOOLS, "defs");
    let source = harness.wait(&path, "Ready", |s| is(s, "Ready", "True", "AllEntriesApplied")).await.unwrap();
    assert!(source["metadata"]["finalizers"].is_null(), "an Additive source needs no finalizer");

    // Additive: an entry leaves the ConfigMap (picked up by the watch), its server stays.
    harness.config_map(TOOLS, "mcp-server-definitions", ONE_SERVER);
    harness.wait(&path, "1 discovered", |s| s.is_some_and(|s| s["status"]["discovered"] == 1)).await;
    assert!(harness.fake.get(&server_path(TOOLS, "fetch")).is_some(), "Additive never deletes");

    // Authoritative: the same source now prunes what it no longer lists, and holds a finalizer.
    let mut source = harness.fake.get(&path).unwrap();
    source["spec"]["mode"] = json!("Authoritative");
    harness.fake.put(&path, source);
    harness.wait(&server_path(TOOLS, "fetch"), "fetch to be pruned", |s| s.is_none()).await;
    harness
        .wait(&path, "the finalizer", |s| {
            s.is_some_and(|s| s["metadata"]["finalizers"][0] == "mcp-hangar.io/discovery-cleanup")
        })
        .await;

    // An unreadable source deletes nothing.
    harness.fake.delete(&config_map_path(TOOLS, "mcp-server-definitions"));
    harness.wait(&path, "ConfigMapNotFound", |s| is(s, "Synced", "False", "ConfigMapNotFound")).await;
    assert!(harness.fake.get(&server_path(TOOLS, "weather")).is_some());

    // Deleting the Authoritative source deletes its servers, then the source goes.
    harness.fake.delete(&path);
    harness.wait(&server_path(TOOLS, "weather"), "weather to be deleted", |s| s.is_none()).await;
    harness.wait(&path, "the source to go", |s| s.is_none()).await;
    harness.stop().await;
}

#[tokio::test]
async fn an_authoritative_source_sees_its_servers_across_list_pages() {
    // More servers than one page of the sync's list (100): a server only a later page returns
    // is still known as the source's, so leaving the ConfigMap prunes it.
    let harness = Harness::start().await;
    let entries = |count: usize| -> String {
        (0..count)
            .map(|i| format!("- {{name: s{i:03}, spec: {{mode: container, image: 'ghcr.io/org/s:1.0.0'}}}}\n"))
            .collect()
    };
    harness.config_map(TOOLS, "mcp-server-definitions", &entries(250));
    config_map_source(&harness, "defs", "Authoritative");
    let path = source_path(TOOLS, "defs");
    harness.wait(&path, "250 discovered", |s| s.is_some_and(|s| s["status"]["discovered"] == 250)).await;
    harness.config_map(TOOLS, "mcp-server-definitions", &entries(240));
    for i in 240..250 {
        harness.wait(&server_path(TOOLS, &format!("s{i:03}")), "a pruned server", |s| s.is_none()).await;
    }
    harness.wait(&path, "240 discovered", |s| s.is_some_and(|s| s["status"]["discovered"] == 240)).await;
    assert!(harness.fake.get(&server_path(TOOLS, "s239")).is_some());
    let writes = writes_during(&harness, Duration::from_millis(500)).await;
    assert!(writes.iter().all(|w| !w.contains("mcpservers/s")), "listed servers are left alone: {writes:?}");
    harness.stop().await;
}

#[tokio::test]
async fn deleting_an_additive_source_leaves_its_servers() {
    let harness = Harness::start().await;
    harness.config_map(TOOLS, "mcp-server-definitions", ONE_SERVER);
    config_map_source(&harness, "defs", "Additive");
    harness.wait(&server_path(TOOLS, "weather"), "weather", |s| s.is_some()).await;
    harness.fake.delete(&source_path(TOOLS, "defs"));
    harness.wait(&source_path(TOOLS, "defs"), "the source to go", |s| s.is_none()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let weather = harness.fake.get(&server_path(TOOLS, "weather")).expect("the server stays");
    assert_eq!(weather["metadata"]["labels"]["mcp-hangar.io/discovery-source"], "tools.defs");
    harness.stop().await;
}

#[tokio::test]
async fn user_edits_stay_until_the_source_changes_that_server() {
    let harness = Harness::start().await;
    harness.config_map(TOOLS, "mcp-server-definitions", ONE_SERVER);
    config_map_source(&harness, "defs", "Authoritative");
    let path = server_path(TOOLS, "weather");
    harness.wait(&path, "weather", |s| s.is_some()).await;
    harness.wait(&source_path(TOOLS, "defs"), "Ready", |s| is(s, "Ready", "True", "AllEntriesApplied")).await;

    // The user tunes the server: a field the source sets and one it does not.
    let mut edited = harness.fake.get(&path).unwrap();
    edited["spec"]["endpoint"] = json!("https://weather-eu.example.com/mcp");
    edited["spec"]["healthCheck"] = json!({"interval": "1m"});
    edited["metadata"]["labels"]["owner"] = json!("me");
    harness.fake.put(&path, edited);
    // A sync (the ConfigMap touched without changing the entry) leaves the edits alone.
    let mut map = harness.fake.get(&config_map_path(TOOLS, "mcp-server-definitions")).unwrap();
    map["metadata"]["labels"] = json!({"touched": "yes"});
    harness.fake.put(&config_map_path(TOOLS, "mcp-server-definitions"), map);
    let writes = writes_during(&harness, Duration::from_secs(2)).await;
    assert!(writes.iter().all(|w| !w.contains("/mcpservers/")), "{writes:?}");
    let kept = harness.fake.get(&path).unwrap();
    assert_eq!(kept["spec"]["endpoint"], "https://weather-eu.example.com/mcp");

    // The source changes this server: its fields win, the user's other fields stay.
    harness.config_map(
        TOOLS,
        "mcp-server-definitions",
        "- {name: weather, labels: {team: a}, spec: {mode: remote, endpoint: 'https://weather.example.com/v2/mcp'}}",
    );
    let updated = harness
        .wait(&path, "the source's endpoint", |s| {
            s.is_some_and(|s| s["spec"]["endpoint"] == "https://weather.example.com/v2/mcp")
        })
        .await
        .unwrap();
    assert_eq!(updated["spec"]["healthCheck"], json!({"interval": "1m"}));
    assert_eq!(updated["metadata"]["labels"]["owner"], "me");
    let applied = harness.fake.requests().iter().any(|r| {
        r.method == Method::PATCH
            && r.path.ends_with("/mcpservers/weather")
            && r.query.contains("fieldManager=mcp-hangar-discovery")
            && r.query.contains("force=true")
    });
    assert!(applied, "updates are server-side applied by the discovery field manager");
    harness.stop().await;
}

#[tokio::test]
async fn a_server_the_source_did_not_create_is_a_conflict_and_is_left_alone() {
    let harness = Harness::start().await;
    harness.server(TOOLS, "weather", json!({"owner": "someone"}), Some("Ready"));
    let before = harness.fake.get(&server_path(TOOLS, "weather")).unwrap();
    harness.config_map(TOOLS, "mcp-server-definitions", TWO_SERVERS);
    config_map_source(&harness, "defs", "Authoritative");
    let path = source_path(TOOLS, "defs");
    let source = harness.wait(&path, "EntriesFailed", |s| is(s, "Ready", "False", "EntriesFailed")).await.unwrap();
    let errors = source["status"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["entry"], "tools/weather");
    assert!(errors[0]["message"].as_str().unwrap().contains("did not create"), "{errors:?}");
    assert!(harness.fake.get(&server_path(TOOLS, "fetch")).is_some(), "the other entry proceeds");
    assert_eq!(harness.fake.get(&server_path(TOOLS, "weather")).unwrap(), before, "the user's server is untouched");

    // Authoritative pruning never reaches it either: the entry goes, the server stays.
    harness.config_map(TOOLS, "mcp-server-definitions", "[]");
    harness.wait(&server_path(TOOLS, "fetch"), "fetch to be pruned", |s| s.is_none()).await;
    assert_eq!(harness.fake.get(&server_path(TOOLS, "weather")).unwrap(), before);
    harness.stop().await;
}

#[tokio::test]
async fn an_entry_refused_by_admission_is_reported_and_the_others_proceed() {
    let harness = Harness::start().await;
    // The webhook refuses one of the two creates.
    harness.fake.fail_next(1, Some(Method::POST), &format!("/namespaces/{TOOLS}/mcpservers"), 422);
    harness.config_map(TOOLS, "mcp-server-definitions", TWO_SERVERS);
    config_map_source(&harness, "defs", "Additive");
    let path = source_path(TOOLS, "defs");
    let source = harness.wait(&path, "EntriesFailed", |s| is(s, "Ready", "False", "EntriesFailed")).await.unwrap();
    let errors = source["status"]["errors"].as_array().unwrap().clone();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["message"], "injected failure (422 Invalid)", "the API's own message is reported");
    let refused = errors[0]["entry"].as_str().unwrap().strip_prefix("tools/").unwrap().to_string();
    let other = if refused == "weather" { "fetch" } else { "weather" };
    assert_eq!(condition(&source, "Ready")["message"], "1 of 2 entries were skipped: see status.errors");
    assert_eq!(source["status"]["discovered"], 1);
    assert!(harness.fake.get(&server_path(TOOLS, other)).is_some(), "the other entry proceeds");
    assert!(harness.fake.get(&server_path(TOOLS, &refused)).is_none());
    eventually("a Warning event", || {
        harness.events(TOOLS, "defs").iter().any(|e| e["type"] == "Warning" && e["reason"] == "EntriesFailed")
    })
    .await;

    // The next sync (a ConfigMap change) creates it and clears the error.
    let mut map = harness.fake.get(&config_map_path(TOOLS, "mcp-server-definitions")).unwrap();
    map["metadata"]["labels"] = json!({"touched": "yes"});
    harness.fake.put(&config_map_path(TOOLS, "mcp-server-definitions"), map);
    let source = harness.wait(&path, "Ready", |s| is(s, "Ready", "True", "AllEntriesApplied")).await.unwrap();
    assert_eq!(source["status"]["errors"], json!([]));
    assert!(harness.fake.get(&server_path(TOOLS, &refused)).is_some());
    harness.stop().await;
}

#[tokio::test]
async fn a_deleted_discovered_server_comes_back() {
    let harness = Harness::start().await;
    harness.config_map(TOOLS, "mcp-server-definitions", ONE_SERVER);
    config_map_source(&harness, "defs", "Additive");
    let path = server_path(TOOLS, "weather");
    let first = harness.wait(&path, "weather", |s| s.is_some()).await.unwrap();
    harness.fake.delete(&path);
    harness
        .wait(&path, "weather to be re-created", |s| {
            s.is_some_and(|s| s["metadata"]["uid"] != first["metadata"]["uid"])
        })
        .await;
    harness.stop().await;
}

#[tokio::test]
async fn a_broken_config_map_is_a_condition() {
    let harness = Harness::start().await;
    harness.config_map(TOOLS, "mcp-server-definitions", "name: not-a-list");
    config_map_source(&harness, "defs", "Authoritative");
    let path = source_path(TOOLS, "defs");
    let source = harness.wait(&path, "InvalidSource", |s| is(s, "Synced", "False", "InvalidSource")).await.unwrap();
    assert!(condition(&source, "Synced")["message"].as_str().unwrap().contains("not a YAML list"));
    assert_eq!(condition(&source, "Ready")["reason"], "SourceUnavailable");
    harness.stop().await;
}

/// One manifest of the repository's examples.
fn example(path: &str) -> Value {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(path);
    serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap()
}

/// The admission rules' verdict on a stored server, as the webhook would give it on create.
fn admitted(server: &Value) -> Result<(), String> {
    let engine = Engine::new().unwrap();
    let verdict = engine.review(Kind::Server, Operation::Create, server, None);
    if verdict.allowed() { Ok(()) } else { Err(format!("{:?}", verdict.errors)) }
}

#[tokio::test]
async fn the_shipped_examples_are_discovered_into_admissible_servers() {
    let harness = Harness::start().await;
    // ConfigMap discovery: the seed source (given a namespace) and the shipped ConfigMap.
    let map = example("discovery/mcp-server-definitions.yaml");
    harness.fake.put(&config_map_path("mcp-config", "mcp-server-definitions"), map);
    let mut source = example("mcpdiscoverysource-configmap.yaml");
    source["metadata"]["namespace"] = json!(SYSTEM);
    harness.fake.put(&source_path(SYSTEM, "config-mcp-servers"), source);
    for name in ["weather", "fetch"] {
        let server = harness.wait(&server_path(SYSTEM, name), name, |s| s.is_some()).await.unwrap();
        admitted(&server).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let weather = harness.fake.get(&server_path(SYSTEM, "weather")).unwrap();
    assert_eq!(weather["metadata"]["labels"]["mcp-hangar.io/category"], "weather");
    assert_eq!(weather["spec"]["healthCheck"]["interval"], "1m");
    harness
        .wait(&source_path(SYSTEM, "config-mcp-servers"), "Ready", |s| is(s, "Ready", "True", "AllEntriesApplied"))
        .await;

    // Namespace discovery: the seed source and the shipped annotated Service.
    harness.namespace("team-a", json!({"mcp-hangar.io/enabled": "true"}));
    harness.fake.put("/api/v1/namespaces/team-a/services/weather", example("discovery/annotated-service.yaml"));
    harness.fake.put(&source_path(SYSTEM, "team-mcp-servers"), example("mcpdiscoverysource-namespace.yaml"));
    let server = harness.wait(&server_path("team-a", "weather"), "team-a/weather", |s| s.is_some()).await.unwrap();
    assert_eq!(server["spec"]["endpoint"], "http://weather.team-a.svc:9000/mcp");
    admitted(&server).unwrap();
    harness.stop().await;
}
