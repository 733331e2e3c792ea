//! Hot reload: the webhook's policy follows the watched cluster objects. An edit changes the
//! next admission; a broken stored object is ignored while its last good version stays.

#[path = "support/fake_api.rs"]
mod fake_api;

use std::sync::Arc;
use std::time::Duration;

use fake_api::FakeApi;
use mcp_hangar::admission::live_policy::{self, POLICY_CONDITION};
use mcp_hangar::crd::Kind;
use mcp_hangar::policy::{Engine, Operation, PolicyState};
use mcp_hangar::readiness::Readiness;
use serde_json::{Value, json};

const PROFILES: &str = "/apis/mcp-hangar.io/v1alpha1/mcppermissionprofiles";
const POLICIES: &str = "/apis/mcp-hangar.io/v1alpha1/mcpadmissionpolicies";
const SERVERS: &str = "/apis/mcp-hangar.io/v1alpha1/namespaces/team/mcpservers";

fn server(name: &str, image: &str, profile: &str) -> Value {
    json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer", "metadata": {"name": name, "namespace": "team"},
        "spec": {"mode": "container", "image": image, "permissionProfile": {"type": "builtin", "name": profile}}})
}

fn profile(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPPermissionProfile", "metadata": {"name": name}, "spec": spec})
}

/// Waits until the engine's verdict on `object` is `allowed`.
async fn eventually(engine: &Engine, object: &Value, allowed: bool) -> bool {
    for _ in 0..100 {
        if engine.review(Kind::Server, Operation::Create, object, None).allowed() == allowed {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn wait_ready(readiness: &Readiness) {
    for _ in 0..100 {
        if readiness.is_ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("policy never synced: {:?}", readiness.unmet());
}

#[tokio::test]
async fn edits_take_effect_on_the_next_admission_and_broken_ones_are_ignored() {
    let fake = FakeApi::start().await;
    let engine = Arc::new(Engine::with_state(PolicyState::builtin()).unwrap());
    let readiness = Readiness::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(live_policy::run(fake.client(), engine.clone(), readiness.clone(), async {
        let _ = stopped.await;
    }));
    wait_ready(&readiness).await;
    assert!(readiness.unmet().iter().all(|(c, _)| c != POLICY_CONDITION));

    // A server naming a profile that does not exist yet is refused...
    let uses_custom = server("a", "ghcr.io/org/a:1.0.0", "custom");
    assert!(!engine.review(Kind::Server, Operation::Create, &uses_custom, None).allowed());
    // ...and admitted once a policy author creates it, with no restart.
    fake.put(&format!("{PROFILES}/custom"), profile("custom", json!({"network": {"egress": {"allowAll": true}}})));
    assert!(eventually(&engine, &uses_custom, true).await, "new profile not picked up");

    // The admission policy: latest tags go from a warning to a denial.
    let latest = server("b", "ghcr.io/org/b:latest", "none");
    assert!(engine.review(Kind::Server, Operation::Create, &latest, None).allowed());
    fake.put(
        &format!("{POLICIES}/default"),
        json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPAdmissionPolicy", "metadata": {"name": "default"},
            "spec": {"images": {"latestTag": "Deny"}}}),
    );
    assert!(eventually(&engine, &latest, false).await, "policy edit not picked up");

    // A broken edit stored behind the webhook's back is ignored: the last good profile stays.
    fake.put(
        &format!("{PROFILES}/custom"),
        profile("custom", json!({"network": {"egress": {"rules": [{"cidr": "not-a-cidr"}]}}})),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state = engine.state();
    assert_eq!(
        state.profile("custom").unwrap().network.as_ref().unwrap().egress.as_ref().unwrap().allow_all,
        Some(true)
    );

    // Usage is tracked from the watched servers, so deleting a used profile is refused.
    fake.put(&format!("{SERVERS}/a"), uses_custom.clone());
    let old = profile("custom", json!({}));
    let mut refused = false;
    for _ in 0..100 {
        if !engine.review(Kind::PermissionProfile, Operation::Delete, &Value::Null, Some(&old)).allowed() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "usage of profile custom not tracked");

    // Deleting the profile object makes it unknown again.
    fake.delete(&format!("{PROFILES}/custom"));
    assert!(eventually(&engine, &uses_custom, false).await, "deleted profile still in force");

    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn readiness_waits_for_the_first_sync_and_names_the_failure() {
    let fake = FakeApi::start().await;
    fake.fail_next(1000, None, "mcpadmissionpolicies", 500);
    let engine = Arc::new(Engine::with_state(PolicyState::builtin()).unwrap());
    let readiness = Readiness::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(live_policy::run(fake.client(), engine, readiness.clone(), async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let unmet = readiness.unmet();
    assert!(!readiness.is_ready());
    assert!(
        unmet.iter().any(|(c, reason)| c == POLICY_CONDITION && reason.contains("MCPAdmissionPolicies")),
        "{unmet:?}"
    );
    let _ = stop.send(());
    task.await.unwrap();
}
