//! Property tests: arbitrary bytes and arbitrary JSON never panic the review decoder or the
//! rules, and nothing is ever allowed by accident. Fixed case budgets keep CI fast.

use mcp_hangar::admission::Endpoint;
use mcp_hangar::admission::review::answer;
use mcp_hangar::crd::MCPServer;
use mcp_hangar::policy::Engine;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::sync::LazyLock;

static ENGINE: LazyLock<Engine> = LazyLock::new(|| Engine::new().unwrap());

/// Field names and values the rules care about, so random objects reach deep code paths.
const KEYS: [&str; 24] = [
    "mode",
    "image",
    "endpoint",
    "replicas",
    "idleTTL",
    "startupTimeout",
    "healthCheck",
    "interval",
    "timeout",
    "failureThreshold",
    "env",
    "name",
    "value",
    "valueFrom",
    "securityContext",
    "capabilities",
    "add",
    "volumes",
    "hostPath",
    "tools",
    "allowList",
    "permissionProfile",
    "type",
    "resources",
];
const STRINGS: [&str; 12] = [
    "container",
    "remote",
    "https://mcp.example.com/mcp",
    "http://127.0.0.1/",
    "10s",
    "-1h",
    "ghcr.io/a/b:latest",
    "API_TOKEN",
    "builtin",
    "configmap",
    "NET_ADMIN",
    "1Gi",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        "\\PC{0,24}".prop_map(Value::String),
        prop::sample::select(STRINGS.to_vec()).prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..8).prop_map(|fields| Value::Object(
                fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>()
            )),
        ]
    })
}

fn review_of(spec: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "fuzz", "operation": "CREATE", "userInfo": {},
            "kind": {"group": "mcp-hangar.io", "version": "v1alpha1", "kind": "MCPServer"},
            "resource": {"group": "mcp-hangar.io", "version": "v1alpha1", "resource": "mcpservers"},
            "name": "fuzz", "namespace": "default",
            "object": {"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer", "metadata": {"name": "fuzz"}, "spec": spec},
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_or_allow(body in prop::collection::vec(any::<u8>(), 0..512)) {
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            let a = answer(&ENGINE, endpoint, &body);
            prop_assert_eq!(a.status, 400);
            prop_assert!(a.body.get("response").is_none());
        }
    }

    #[test]
    fn arbitrary_specs_never_panic_and_allowed_means_well_formed(spec in json_value()) {
        let body = serde_json::to_vec(&review_of(spec.clone())).unwrap();
        let validated = answer(&ENGINE, Endpoint::Validate, &body);
        let mutated = answer(&ENGINE, Endpoint::Mutate, &body);
        prop_assert!(validated.status == 200 || validated.status == 400);
        prop_assert!(mutated.status == 200 || mutated.status == 400);
        // Both endpoints reach the same verdict with the same causes; only /mutate warns.
        prop_assert_eq!(&mutated.body["response"]["allowed"], &validated.body["response"]["allowed"]);
        prop_assert_eq!(&mutated.body["response"]["status"], &validated.body["response"]["status"]);
        prop_assert!(validated.body["response"].get("warnings").is_none());
        if validated.body["response"]["allowed"] == json!(true) {
            let server: MCPServer = serde_json::from_value(json!({
                "apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer", "metadata": {"name": "fuzz"}, "spec": spec
            })).expect("an allowed object is a well-formed MCPServer");
            prop_assert!(server.spec.mode.is_some());
            prop_assert!(server.spec.image.is_some() || server.spec.endpoint.is_some());
        }
    }

    #[test]
    fn damaged_examples_never_panic(path in prop::sample::select(vec!["/spec", "/spec/env", "/spec/healthCheck", "/spec/securityContext", "/metadata", "/spec/tools"]), value in json_value()) {
        let mut review = review_of(json!({
            "mode": "container", "image": "ghcr.io/a/b:1.0.0",
            "env": [{"name": "A", "value": "b"}], "healthCheck": {"interval": "30s"},
            "securityContext": {"runAsUser": 1000}, "tools": {"allowList": ["x"]},
        }));
        if let Some(slot) = review["request"]["object"].pointer_mut(path) {
            *slot = value;
        }
        let body = serde_json::to_vec(&review).unwrap();
        let a = answer(&ENGINE, Endpoint::Validate, &body);
        prop_assert!(a.status == 200 || a.status == 400);
    }
}
