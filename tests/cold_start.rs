//! Cold start, controller side, against the in-memory API: a `replicas: 0` server stays at zero
//! until its demand Lease records a request; then its Deployment runs one replica and the
//! server goes Cold → Initializing → Ready; `idleTTL` after the last request it is scaled back
//! to zero and is Cold again.

#[path = "support/controllers.rs"]
mod controllers;
#[path = "support/fake_api.rs"]
mod fake_api;

use std::time::Duration;

use fake_api::FakeApi;
use k8s_openapi::jiff::Timestamp;
use mcp_hangar::controller::{self, ControllerConfig};
use mcp_hangar::policy::demand;
use serde_json::{Value, json};
use tokio::sync::watch;

const NS: &str = "tools";
const OPERATOR_NS: &str = "mcp-system";
const WAIT: Duration = Duration::from_secs(20);

fn lease_path(name: &str) -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{OPERATOR_NS}/leases/{}", demand::lease_name(NS, name))
}

async fn wait(fake: &FakeApi, path: &str, what: &str, condition: impl Fn(Option<&Value>) -> bool) -> Value {
    let (last, met) = fake.wait_for(path, WAIT, condition).await;
    assert!(met, "timed out waiting for {what}; last state: {last:#?}");
    last.unwrap_or(Value::Null)
}

/// Records a request to the server at `at`, as the gateway does.
fn request_at(fake: &FakeApi, name: &str, at: Timestamp) {
    let lease = demand::demand_lease(OPERATOR_NS, NS, name, "gateway-0", at);
    fake.put(&lease_path(name), serde_json::to_value(lease).unwrap());
}

/// Reports the Deployment's pods as the kubelet and the Deployment controller would.
fn set_ready(fake: &FakeApi, deployment: &str, ready: i64) {
    let mut object = fake.get(deployment).expect("the Deployment exists");
    object["status"] = json!({
        "observedGeneration": object["metadata"]["generation"],
        "replicas": ready, "readyReplicas": ready, "updatedReplicas": ready, "availableReplicas": ready,
    });
    fake.put(deployment, object);
}

#[tokio::test]
async fn a_request_wakes_a_cold_server_and_idle_time_puts_it_back_to_zero() {
    let fake = FakeApi::start().await;
    fake.register_operator_kinds();
    let ctx = controllers::context(
        fake.client(),
        ControllerConfig {
            operator_namespace: OPERATOR_NS.into(),
            gateway_url: Some("http://mcp-hangar-gateway.mcp-system.svc".into()),
            ..ControllerConfig::default()
        },
    );
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(controller::run(ctx, None, stopped));

    let server = "cold";
    let server_path = format!("/apis/mcp-hangar.io/v1alpha1/namespaces/{NS}/mcpservers/{server}");
    let deployment = format!("/apis/apps/v1/namespaces/{NS}/deployments/{server}");
    fake.put(
        &server_path,
        json!({
            "apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer",
            "metadata": {"name": server, "namespace": NS},
            // Health checks off: the pod is simulated, so readiness alone decides Ready.
            "spec": {"mode": "container", "image": "ghcr.io/org/server:1.0.0", "replicas": 0,
                     "idleTTL": "3s", "healthCheck": {"enabled": false}},
        }),
    );
    let state = |s: &'static str| move |o: Option<&Value>| o.is_some_and(|o| o["status"]["state"] == s);
    let cold_server = wait(&fake, &server_path, "Cold", state("Cold")).await;
    assert_eq!(
        cold_server["status"]["gatewayURL"], "http://mcp-hangar-gateway.mcp-system.svc/servers/tools/cold/mcp",
        "clients reach a cold server through the gateway, which wakes it"
    );
    let cold = wait(&fake, &deployment, "a Deployment at zero", |d| d.is_some()).await;
    assert_eq!(cold["spec"]["replicas"], 0);

    // A request arrives: the gateway renews the demand Lease; the controller wakes the server.
    request_at(&fake, server, Timestamp::now());
    wait(&fake, &deployment, "one replica", |d| d.is_some_and(|d| d["spec"]["replicas"] == 1)).await;
    wait(&fake, &server_path, "Initializing", state("Initializing")).await;
    set_ready(&fake, &deployment, 1);
    wait(&fake, &server_path, "Ready", state("Ready")).await;

    // No request for idleTTL (3s): back to zero, Cold.
    wait(&fake, &deployment, "back to zero", |d| d.is_some_and(|d| d["spec"]["replicas"] == 0)).await;
    set_ready(&fake, &deployment, 0);
    let back = wait(&fake, &server_path, "Cold again", state("Cold")).await;
    assert_eq!(back["spec"]["replicas"], 0, "the user's spec is never changed");

    // An old request (older than idleTTL) does not wake it.
    request_at(&fake, server, Timestamp::now().checked_sub(Duration::from_secs(60)).unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.get(&deployment).unwrap()["spec"]["replicas"], 0);

    let _ = stop.send(true);
    let _ = task.await;
}
