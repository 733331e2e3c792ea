//! Every pod the controller renders passes the Pod Security Standards `restricted` level
//! and its server's profile, judged by the same checks the webhook runs on workloads.

use std::path::Path;

use mcp_hangar::cli::render::render_paths;
use mcp_hangar::controller::resources::{DEFAULT_OPERATOR_NAMESPACE, desired_children};
use mcp_hangar::crd::{Kind, MCPServer, PodSecurityLevel};
use mcp_hangar::policy::profile::resolve_named;
use mcp_hangar::policy::{Engine, Operation, WorkloadKind};
use serde_json::{Value, json};

/// Both checks on a rendered Deployment: the restricted level, and the profile (the
/// webhook's pod-level check).
fn assert_admissible(engine: &Engine, deployment: &Value) {
    let level = engine.check_pod_security(WorkloadKind::Deployment, deployment, PodSecurityLevel::Restricted);
    assert!(level.allowed(), "{:?}\n{deployment:#}", level.errors);
    let profile = engine.review_workload(WorkloadKind::Deployment, Operation::Create, deployment);
    assert!(profile.allowed(), "{:?}\n{deployment:#}", profile.errors);
}

#[test]
fn every_example_renders_an_admissible_restricted_pod() {
    let engine = Engine::new().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let rendered = render_paths(&engine, &[examples], false, "default");
    assert_eq!(rendered.exit_code, 0, "{}", rendered.diagnostics);
    let objects: Vec<Value> = serde_saphyr::from_multiple(&rendered.yaml).unwrap();
    let deployments: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Deployment").collect();
    assert!(deployments.len() >= 6);
    for deployment in deployments {
        assert_admissible(&engine, deployment);
    }
}

#[test]
fn the_most_relaxed_server_the_webhook_admits_is_still_restricted() {
    let engine = Engine::new().unwrap();
    let object = json!({
        "apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer",
        "metadata": {"name": "relaxed", "namespace": "tools", "uid": "u-1"},
        "spec": {
            "mode": "container", "image": "ghcr.io/org/relaxed:1.0.0", "port": 80,
            "securityContext": {
                "runAsUser": 1000, "runAsGroup": 1000, "readOnlyRootFilesystem": false,
                "capabilities": {"add": ["NET_BIND_SERVICE"]},
            },
            "volumes": [
                {"name": "a", "emptyDir": {}},
                {"name": "b", "configMap": {"name": "cm"}},
                {"name": "c", "secret": {"secretName": "s"}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "pvc"}},
                {"name": "e", "projected": {"sources": []}},
                {"name": "f", "downwardAPI": {}},
            ],
            "volumeMounts": [
                {"name": "a", "mountPath": "/tmp"},
                {"name": "b", "mountPath": "/etc/config", "readOnly": true},
            ],
        },
    });
    let verdict = engine.review(Kind::Server, Operation::Create, &object, None);
    assert!(verdict.allowed(), "{:?}", verdict.errors);
    let server: MCPServer = serde_json::from_value(object).unwrap();
    let server = engine.review_server(&server).unwrap();
    let profile = resolve_named("none", &engine.state()).unwrap();
    let deployment =
        desired_children(&server, &profile, DEFAULT_OPERATOR_NAMESPACE, false).unwrap().deployment.unwrap();
    assert_admissible(&engine, &serde_json::to_value(deployment).unwrap());
}

#[test]
fn the_checks_would_catch_a_pod_without_the_secure_defaults() {
    let engine = Engine::new().unwrap();
    let server: MCPServer = serde_json::from_value(json!({
        "apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer",
        "metadata": {"name": "plain", "namespace": "tools"},
        "spec": {"mode": "container", "image": "ghcr.io/org/plain:1.0.0"},
    }))
    .unwrap();
    let server = engine.review_server(&server).unwrap();
    let profile = resolve_named("none", &engine.state()).unwrap();
    let deployment =
        desired_children(&server, &profile, DEFAULT_OPERATOR_NAMESPACE, false).unwrap().deployment.unwrap();
    let mut deployment = serde_json::to_value(deployment).unwrap();
    assert_admissible(&engine, &deployment);
    let pod = &mut deployment["spec"]["template"]["spec"];
    pod["securityContext"] = json!({});
    pod["containers"][0]["securityContext"] = json!({});
    pod["automountServiceAccountToken"] = json!(true);
    let level = engine.check_pod_security(WorkloadKind::Deployment, &deployment, PodSecurityLevel::Restricted);
    assert!(level.errors.len() >= 3, "{:?}", level.errors);
    let profile = engine.review_workload(WorkloadKind::Deployment, Operation::Create, &deployment);
    assert!(!profile.allowed());
}
