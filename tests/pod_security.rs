//! Every pod the controller renders passes the Pod Security Standards `restricted` level,
//! judged by a checker that agrees with the upstream conformance fixtures.

#[path = "support/pss.rs"]
mod pss;

use std::path::{Path, PathBuf};

use mcp_hangar::cli::render::render_paths;
use mcp_hangar::controller::resources::desired_children;
use mcp_hangar::crd::MCPServer;
use mcp_hangar::policy::Engine;
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/psa-fixtures/restricted/v1.37")
}

fn read_pods(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the fixtures live in ../shared)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let pod: Value = serde_saphyr::from_str(&text).unwrap();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                pod,
            )
        })
        .collect()
}

#[test]
fn the_checker_agrees_with_every_upstream_fixture() {
    let passing = read_pods(&fixtures().join("pass"));
    let failing = read_pods(&fixtures().join("fail"));
    assert!(
        passing.len() >= 20 && failing.len() >= 70,
        "fixtures are missing"
    );
    for (file, pod) in &passing {
        let violations = pss::restricted_violations(pod);
        assert!(violations.is_empty(), "pass/{file}: {violations:?}");
    }
    for (file, pod) in &failing {
        assert!(
            !pss::restricted_violations(pod).is_empty(),
            "fail/{file} was not caught"
        );
    }
}

/// The pod of the Deployment in a set of rendered objects.
fn pods(objects: &[Value]) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .map(|d| {
            let template = &d["spec"]["template"];
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"], "spec": template["spec"]})
        })
        .collect()
}

#[test]
fn every_example_renders_a_restricted_pod() {
    let engine = Engine::new().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let rendered = render_paths(&engine, &[examples], false, "default");
    assert_eq!(rendered.exit_code, 0, "{}", rendered.diagnostics);
    let objects: Vec<Value> = serde_saphyr::from_multiple(&rendered.yaml).unwrap();
    let pods = pods(&objects);
    assert!(pods.len() >= 6);
    for pod in pods {
        let violations = pss::restricted_violations(&pod);
        assert!(violations.is_empty(), "{violations:?}\n{pod:#}");
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
            "volumeMounts": [{"name": "a", "mountPath": "/tmp"}],
            "permissionProfile": {"type": "builtin", "name": "network"},
        },
    });
    let verdict = engine.review(
        mcp_hangar::crd::Kind::Server,
        mcp_hangar::policy::Operation::Create,
        &object,
        None,
    );
    assert!(verdict.allowed(), "{:?}", verdict.errors);
    let server: MCPServer = serde_json::from_value(object).unwrap();
    let deployment = desired_children(&server).unwrap().deployment.unwrap();
    let objects = vec![serde_json::to_value(deployment).unwrap()];
    for pod in pods(&objects) {
        let violations = pss::restricted_violations(&pod);
        assert!(violations.is_empty(), "{violations:?}");
    }
}

#[test]
fn the_checker_would_catch_a_pod_without_the_secure_defaults() {
    let server: MCPServer = serde_json::from_value(json!({
        "apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer",
        "metadata": {"name": "plain", "namespace": "tools"},
        "spec": {"mode": "container", "image": "ghcr.io/org/plain:1.0.0"},
    }))
    .unwrap();
    let deployment = desired_children(&server).unwrap().deployment.unwrap();
    let mut pod = pods(&[serde_json::to_value(deployment).unwrap()]).remove(0);
    assert!(pss::restricted_violations(&pod).is_empty());
    pod["spec"]["securityContext"] = json!({});
    pod["spec"]["containers"][0]["securityContext"] = json!({});
    let violations = pss::restricted_violations(&pod);
    assert!(violations.len() >= 4, "{violations:?}");
}
