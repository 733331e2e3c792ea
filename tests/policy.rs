//! Permission profiles and the admission policy: every field changes a verdict (or a compiled
//! object), deletion of a used profile is refused, ToolHive profiles translate, and the
//! offline `policy check` / `validate --policy` tools report what a policy author needs.

mod common;

use mcp_hangar::controller::resources::{ChildSet, DEFAULT_OPERATOR_NAMESPACE, desired_children};
use mcp_hangar::crd::{MCPPermissionProfileSpec, MCPServer};
use mcp_hangar::policy::profile::{ResolvedProfile, from_toolhive_json};
use mcp_hangar::policy::{Engine, Operation, PolicyState, Verdict, WorkloadKind};
use serde_json::{Value, json};

fn server(spec: Value) -> Value {
    json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer", "metadata": {"name": "s", "namespace": "team"}, "spec": spec})
}

fn container(extra: Value) -> Value {
    let mut spec = json!({"mode": "container", "image": "ghcr.io/org/server:1.0.0"});
    spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    server(spec)
}

fn remote(endpoint: &str) -> Value {
    server(json!({"mode": "remote", "endpoint": endpoint}))
}

fn profile(spec: Value) -> MCPPermissionProfileSpec {
    serde_json::from_value(spec).unwrap()
}

/// An engine whose state has the builtins, the extra profile `custom`, and policy overrides.
fn engine_with(custom: Value, policy: Value) -> Engine {
    let base = PolicyState::builtin();
    let mut admission = base.admission.clone();
    let mut merged = serde_json::to_value(&admission).unwrap();
    json_patch::merge(&mut merged, &policy);
    admission = serde_json::from_value(merged).unwrap();
    let state = base.overlay([("custom".to_string(), profile(custom))], [("default".to_string(), admission)]);
    Engine::with_state(state).unwrap()
}

fn review(engine: &Engine, object: &Value) -> Verdict {
    engine.review(mcp_hangar::crd::Kind::Server, Operation::Create, object, None)
}

fn fields(verdict: &Verdict) -> Vec<String> {
    verdict.errors.iter().map(|e| e.field.clone()).collect()
}

fn custom_profile(extra: Value) -> Value {
    json!({"permissionProfile": {"type": "builtin", "name": "custom"}})
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .chain(extra.as_object().unwrap().clone())
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[test]
fn allowed_capabilities_and_level_decide_what_may_be_added() {
    let add = |cap: &str| container(custom_profile(json!({"securityContext": {"capabilities": {"add": [cap]}}})));
    let baseline = engine_with(
        json!({"pod": {"level": "baseline", "allowedCapabilities": ["CHOWN", "NET_BIND_SERVICE"]}}),
        json!({}),
    );
    assert!(review(&baseline, &add("CHOWN")).allowed());
    let restricted =
        engine_with(json!({"pod": {"level": "restricted", "allowedCapabilities": ["NET_BIND_SERVICE"]}}), json!({}));
    assert_eq!(fields(&review(&restricted, &add("CHOWN"))), ["spec.securityContext.capabilities.add[0]"]);
    assert!(review(&restricted, &add("NET_BIND_SERVICE")).allowed());
    let nothing = engine_with(json!({"pod": {"allowedCapabilities": []}}), json!({}));
    assert_eq!(fields(&review(&nothing, &add("NET_BIND_SERVICE"))), ["spec.securityContext.capabilities.add[0]"]);
}

#[test]
fn filesystem_paths_decide_where_and_how_volumes_mount() {
    let engine = engine_with(json!({"filesystem": {"read": ["/config"], "write": ["/data"]}}), json!({}));
    let mount = |path: &str, read_only: bool| {
        container(custom_profile(json!({
            "volumes": [{"name": "v", "emptyDir": {}}],
            "volumeMounts": [{"name": "v", "mountPath": path, "readOnly": read_only}],
        })))
    };
    assert!(review(&engine, &mount("/data/cache", false)).allowed());
    assert!(review(&engine, &mount("/config", true)).allowed());
    assert_eq!(fields(&review(&engine, &mount("/config", false))), ["spec.volumeMounts[0].readOnly"]);
    assert_eq!(fields(&review(&engine, &mount("/etc", true))), ["spec.volumeMounts[0].mountPath"]);
}

#[test]
fn host_rules_are_accepted_with_a_warning_on_profile_and_server() {
    let custom = json!({"network": {"egress": {"rules": [{"host": "api.github.com", "ports": [{"port": 443}]}]}}});
    let engine = engine_with(custom.clone(), json!({}));
    let verdict = review(&engine, &container(custom_profile(json!({}))));
    assert!(verdict.allowed());
    assert!(
        verdict.warnings.iter().any(|w| w.contains("api.github.com") && w.contains("cannot enforce")),
        "{:?}",
        verdict.warnings
    );
    let object = json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPPermissionProfile", "metadata": {"name": "gh"}, "spec": custom});
    let verdict = engine.review(mcp_hangar::crd::Kind::PermissionProfile, Operation::Create, &object, None);
    assert!(verdict.allowed(), "{:?}", verdict.errors);
    assert!(verdict.warnings[0].contains("spec.network.egress.rules[0].host"));
}

/// What a profile compiles into for a server: its children as `controller::resources` builds them.
fn compile(server: &MCPServer, spec: &MCPPermissionProfileSpec) -> ChildSet {
    let profile = ResolvedProfile { name: "p".into(), spec: spec.clone() };
    desired_children(server, &profile, DEFAULT_OPERATOR_NAMESPACE, false).unwrap()
}

fn typed_server() -> MCPServer {
    let mut object = container(json!({"port": 9000}));
    object["metadata"]["uid"] = json!("5e4c1d2a-7b6f-4e3d-9c8b-1a2b3c4d5e6f");
    serde_json::from_value(object).unwrap()
}

#[test]
fn network_fields_compile_into_the_network_policy() {
    let s = typed_server();
    let none = compile(&s, &profile(json!({})));
    let np = serde_json::to_value(&none.network_policy).unwrap();
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"], "s");
    assert_eq!(
        np["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"],
        json!({"mcp-hangar.io/core": "true"})
    );
    assert_eq!(np["spec"]["ingress"][0]["ports"][0], json!({"port": 9000, "protocol": "TCP"}));
    assert_eq!(
        np["spec"]["egress"],
        json!([{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}])
    );

    let all =
        serde_json::to_value(compile(&s, &profile(json!({"network": {"egress": {"allowAll": true}}}))).network_policy)
            .unwrap();
    assert_eq!(all["spec"]["egress"], json!([{}]));

    let rules = profile(json!({"network": {
        "egress": {"allowDNS": false, "rules": [{"cidr": "10.0.0.0/8", "ports": [{"port": 5432}]}, {"host": "x.example.com"}]},
        "ingress": {"namespaceSelector": {"matchLabels": {"team": "a"}}},
    }}));
    let np = serde_json::to_value(compile(&s, &rules).network_policy).unwrap();
    assert_eq!(
        np["spec"]["egress"],
        json!([{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 5432, "protocol": "TCP"}]}])
    );
    assert_eq!(np["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"], json!({"team": "a"}));
}

#[test]
fn service_account_fields_compile_into_account_role_and_binding() {
    let s = typed_server();
    let default = compile(&s, &profile(json!({})));
    let sa = default.service_account.clone().unwrap();
    assert_eq!(sa.automount_service_account_token, Some(false));
    let (role, binding) = (default.role.clone().unwrap(), default.role_binding.clone().unwrap());
    assert_eq!(role.rules, Some(vec![]));
    assert_eq!(binding.role_ref.name, "s");
    assert_eq!(binding.subjects.as_ref().unwrap()[0].name, "s");
    for owned in [&sa.metadata, &role.metadata, &default.network_policy.as_ref().unwrap().metadata] {
        assert_eq!(owned.owner_references.as_ref().map(Vec::len), Some(1));
    }
    let granted = compile(
        &s,
        &profile(
            json!({"serviceAccount": {"automountToken": true, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}}),
        ),
    );
    assert_eq!(granted.service_account.unwrap().automount_service_account_token, Some(true));
    assert_eq!(granted.role.unwrap().rules.unwrap()[0].verbs, ["get"]);
    let own: MCPServer = serde_json::from_value(container(json!({"serviceAccountName": "mine"}))).unwrap();
    let objects = compile(&own, &profile(json!({})));
    assert!(objects.service_account.is_none(), "a named account belongs to the user");
    assert_eq!(objects.role_binding.unwrap().subjects.unwrap()[0].name, "mine");
}

#[test]
fn image_rules_of_the_policy() {
    let latest = container(json!({"image": "ghcr.io/org/server:latest"}));
    let allow = engine_with(json!({}), json!({"images": {"latestTag": "Allow"}}));
    assert!(review(&allow, &latest).warnings.is_empty());
    let warn = engine_with(json!({}), json!({"images": {"latestTag": "Warn"}}));
    assert_eq!(review(&warn, &latest).warnings.len(), 1);
    let deny = engine_with(json!({}), json!({"images": {"latestTag": "Deny"}}));
    assert_eq!(fields(&review(&deny, &latest)), ["spec.image"]);
    let registries = engine_with(json!({}), json!({"images": {"allowedRegistries": ["registry.internal/"]}}));
    assert_eq!(fields(&review(&registries, &container(json!({})))), ["spec.image"]);
    assert!(review(&registries, &container(json!({"image": "registry.internal/team/s:1.0"}))).allowed());
    let digest = engine_with(json!({}), json!({"images": {"requireDigest": true}}));
    assert_eq!(fields(&review(&digest, &container(json!({})))), ["spec.image"]);
    let pinned = format!("ghcr.io/org/server@sha256:{}", "b".repeat(64));
    assert!(review(&digest, &container(json!({"image": pinned}))).allowed());
}

#[test]
fn endpoint_rules_of_the_policy() {
    let hosts = engine_with(json!({}), json!({"endpoints": {"allowedHosts": ["*.example.com"]}}));
    assert!(review(&hosts, &remote("https://mcp.example.com/mcp")).allowed());
    assert_eq!(fields(&review(&hosts, &remote("https://mcp.other.org/mcp"))), ["spec.endpoint"]);
    let in_cluster = remote("http://tools.mcp.svc.cluster.local:8080/mcp");
    assert!(review(&Engine::new().unwrap(), &in_cluster).allowed());
    let no_http = engine_with(json!({}), json!({"endpoints": {"allowHTTPInCluster": false}}));
    assert_eq!(fields(&review(&no_http, &in_cluster)), ["spec.endpoint"]);
    let blocked = engine_with(json!({}), json!({"endpoints": {"blockedCIDRs": ["10.0.0.0/8"]}}));
    assert_eq!(fields(&review(&blocked, &remote("https://10.1.2.3/mcp"))), ["spec.endpoint"]);
    assert!(review(&blocked, &remote("https://11.1.2.3/mcp")).allowed());
}

#[test]
fn env_and_limit_rules_of_the_policy() {
    let secret = container(json!({"env": [{"name": "API_KEY", "value": "sk-123"}]}));
    assert_eq!(fields(&review(&Engine::new().unwrap(), &secret)), ["spec.env[0].value"]);
    let warn = engine_with(json!({}), json!({"env": {"plaintextSecrets": "Warn"}}));
    let verdict = review(&warn, &secret);
    assert!(verdict.allowed() && verdict.warnings[0].starts_with("spec.env[0].value:"));
    let limits = engine_with(json!({}), json!({"limits": {"maxReplicas": 2, "maxRequestsPerMinute": 60}}));
    let big = container(json!({"replicas": 3, "tools": {"rateLimit": {"requestsPerMinute": 61}}}));
    assert_eq!(fields(&review(&limits, &big)), ["spec.replicas", "spec.tools.rateLimit.requestsPerMinute"]);
    assert!(
        review(&limits, &container(json!({"replicas": 2, "tools": {"rateLimit": {"requestsPerMinute": 60}}})))
            .allowed()
    );
}

#[test]
fn default_profile_of_the_policy_is_what_mutation_writes() {
    let engine = engine_with(json!({}), json!({"defaultProfile": "network"}));
    let patch =
        serde_json::to_value(engine.defaults(mcp_hangar::crd::Kind::Server, Operation::Create, &container(json!({}))))
            .unwrap();
    let profile_op = patch.as_array().unwrap().iter().find(|op| op["path"] == "/spec/permissionProfile").unwrap();
    assert_eq!(profile_op["value"], json!({"type": "builtin", "name": "network"}));
    let unknown = container(json!({"permissionProfile": {"type": "builtin", "name": "ghost"}}));
    let verdict = review(&engine, &unknown);
    assert_eq!(fields(&verdict), ["spec.permissionProfile.name"]);
    assert!(verdict.errors[0].detail.contains("\"custom\""), "lists the known profiles: {}", verdict.errors[0]);
}

#[test]
fn a_profile_in_use_cannot_be_deleted() {
    let mut state = PolicyState::shipped();
    state.server_profiles.insert("team/a".into(), "restricted-egress".into());
    state.server_profiles.insert("team/b".into(), "restricted-egress".into());
    let engine = Engine::with_state(state).unwrap();
    let old = json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPPermissionProfile", "metadata": {"name": "restricted-egress"}, "spec": {}});
    let verdict = engine.review(mcp_hangar::crd::Kind::PermissionProfile, Operation::Delete, &Value::Null, Some(&old));
    assert!(!verdict.allowed());
    assert!(verdict.errors[0].detail.contains("team/a, team/b"), "{}", verdict.errors[0]);
    let unused = json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPPermissionProfile", "metadata": {"name": "network"}, "spec": {}});
    assert!(
        engine
            .review(mcp_hangar::crd::Kind::PermissionProfile, Operation::Delete, &Value::Null, Some(&unused))
            .allowed()
    );
}

#[test]
fn server_pods_are_held_to_their_profile() {
    let mut state = PolicyState::builtin().overlay(
        [("custom".to_string(), profile(json!({"pod": {"level": "baseline", "allowedCapabilities": ["CHOWN"]}, "serviceAccount": {"automountToken": true}})))],
        [],
    );
    state.server_profiles.insert("team/s".into(), "custom".into());
    let engine = Engine::with_state(state).unwrap();
    let pod = |server: &str, sc: Value, automount: bool| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team",
            "labels": {"mcp-hangar.io/mcp-server": "true", "app.kubernetes.io/instance": server}},
            "spec": {"automountServiceAccountToken": automount, "containers": [{"name": "c", "image": "x", "securityContext": sc}]}})
    };
    // baseline profile with CHOWN: a root pod adding CHOWN passes
    assert!(
        engine
            .review_workload(
                WorkloadKind::Pod,
                Operation::Create,
                &pod("s", json!({"capabilities": {"add": ["CHOWN"]}}), true)
            )
            .allowed()
    );
    // another server (default profile none: restricted, no token) does not
    let verdict = engine.review_workload(
        WorkloadKind::Pod,
        Operation::Create,
        &pod("other", json!({"capabilities": {"add": ["CHOWN"]}}), true),
    );
    assert!(fields(&verdict).contains(&"spec.automountServiceAccountToken".to_string()));
    assert!(fields(&verdict).contains(&"spec.containers[0].securityContext.capabilities.add[0]".to_string()));
    // unlabelled pods are not ours to judge
    let mut plain = pod("s", json!({"privileged": true}), true);
    plain["metadata"]["labels"] = json!({});
    assert!(engine.review_workload(WorkloadKind::Pod, Operation::Create, &plain).allowed());
    // a Deployment hand-edited into a privileged one
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "s", "namespace": "team"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"mcp-hangar.io/mcp-server": "true", "app.kubernetes.io/instance": "s"}},
        "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": true}}]}}}});
    let verdict = engine.review_workload(WorkloadKind::Deployment, Operation::Update, &deployment);
    assert_eq!(fields(&verdict), ["spec.template.spec.containers[0].securityContext.privileged"]);
}

#[test]
fn toolhive_profiles_translate() {
    let network = from_toolhive_json(r#"{"network": {"outbound": {"insecure_allow_all": true}}}"#).unwrap();
    assert_eq!(network.network.unwrap().egress.unwrap().allow_all, Some(true));
    let none = from_toolhive_json("{}").unwrap();
    let egress = none.network.unwrap().egress.unwrap();
    assert_eq!((egress.allow_all, egress.rules, egress.allow_dns), (Some(false), None, Some(true)));
    let custom = from_toolhive_json(
        r#"{"read": ["/var/run/mcp.sock"], "write": ["/tmp/work"],
            "network": {"outbound": {"insecure_allow_all": false, "allow_host": ["api.github.com", ".githubusercontent.com"], "allow_port": [443]}}}"#,
    )
    .unwrap();
    assert_eq!(custom.filesystem.as_ref().unwrap().read, Some(vec!["/var/run/mcp.sock".to_string()]));
    assert_eq!(custom.filesystem.as_ref().unwrap().write, Some(vec!["/tmp/work".to_string()]));
    let rules = custom.network.as_ref().unwrap().egress.as_ref().unwrap().rules.clone().unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].host.as_deref(), Some("api.github.com"));
    assert_eq!(rules[0].ports.as_ref().unwrap()[0].port, 443);
    let ports_only = from_toolhive_json(r#"{"network": {"outbound": {"allow_port": [443, 8443]}}}"#).unwrap();
    let rules = ports_only.network.unwrap().egress.unwrap().rules.unwrap();
    assert_eq!(rules.iter().map(|r| r.cidr.clone().unwrap()).collect::<Vec<_>>(), ["0.0.0.0/0", "::/0"]);
    assert!(from_toolhive_json(r#"{"privileged": true}"#).is_err());
    assert!(from_toolhive_json(r#"{"nework": {}}"#).is_err(), "typos are reported");
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-hangar"))
        .args(args)
        .current_dir(common::repo())
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn policy_check_reports_file_document_and_field() {
    let (code, out) = cli(&["policy", "check", "policy"]);
    assert_eq!(code, 0, "{out}");
    let dir = std::env::temp_dir().join(format!("mcp-hangar-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(common::repo().join("examples/invalid/profile-invalid.yaml"), dir.join("profile.yaml")).unwrap();
    std::fs::write(dir.join("policy.yaml"), "apiVersion: mcp-hangar.io/v1alpha1\nkind: MCPAdmissionPolicy\nmetadata:\n  name: default\nspec:\n  defaultProfile: too-open\n---\napiVersion: mcp-hangar.io/v1alpha1\nkind: MCPAdmissionPolicy\nmetadata:\n  name: default\nspec:\n  limits:\n    maxReplicaz: 3\n").unwrap();
    let (code, out) = cli(&["policy", "check", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("profile.yaml: document 1: MCPPermissionProfile \"too-open\": spec.network.egress.rules[0].cidr: Invalid value"), "{out}");
    assert!(out.contains("policy.yaml: document 1: MCPAdmissionPolicy \"default\": spec.defaultProfile: Unsupported value: \"too-open\""), "the broken profile is not usable: {out}");
    assert!(
        out.contains("policy.yaml: document 2: MCPAdmissionPolicy \"default\": spec.limits.maxReplicaz: Forbidden"),
        "{out}"
    );
}

#[test]
fn validate_under_a_policy_directory() {
    let dir = std::env::temp_dir().join(format!("mcp-hangar-strict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("policy.yaml"), "apiVersion: mcp-hangar.io/v1alpha1\nkind: MCPAdmissionPolicy\nmetadata:\n  name: default\nspec:\n  images:\n    latestTag: Deny\n").unwrap();
    let (code, _) = cli(&["validate", "-f", "examples/mcpserver-basic.yaml"]);
    assert_eq!(code, 0);
    let (code, out) = cli(&["validate", "--policy", dir.to_str().unwrap(), "-f", "examples/mcpserver-basic.yaml"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is invalid: spec.image: Invalid value: \"ghcr.io/modelcontextprotocol/mcp-sqlite:latest\""),
        "{out}"
    );
    // the shipped restricted-egress profile is known offline without --policy
    let (code, out) = cli(&["validate", "-f", "examples/mcpserver-transport-profile.yaml"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn validate_pod_security_checks_pods_and_deployment_templates() {
    let dir = std::env::temp_dir().join(format!("mcp-hangar-pss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("workloads.yaml");
    std::fs::write(&file, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      hostNetwork: true\n      containers:\n      - name: web\n        image: nginx\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n").unwrap();
    let (code, out) = cli(&["validate", "--pod-security", "baseline", "-f", file.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["results"][0]["kind"], "Deployment");
    assert_eq!(report["results"][0]["violations"][0]["field"], "spec.template.spec.hostNetwork");
    assert_eq!(report["skipped"][0]["kind"], "ConfigMap");
}

#[test]
fn a_burst_size_needs_a_rate_and_stays_in_range() {
    let engine = Engine::new().unwrap();
    let alone = container(json!({"tools": {"rateLimit": {"burstSize": 5}}}));
    assert_eq!(fields(&review(&engine, &alone)), ["spec.tools.rateLimit.requestsPerMinute"]);
    let zero = container(json!({"tools": {"rateLimit": {"requestsPerMinute": 60, "burstSize": 0}}}));
    assert_eq!(fields(&review(&engine, &zero)), ["spec.tools.rateLimit.burstSize"]);
    let fine = container(json!({"tools": {"rateLimit": {"requestsPerMinute": 60, "burstSize": 10}}}));
    assert!(review(&engine, &fine).errors.is_empty(), "{:?}", review(&engine, &fine).errors);
}

#[test]
fn deny_list_names_follow_the_allow_list_rules_and_a_name_on_both_is_a_warning() {
    let engine = Engine::new().unwrap();
    let bad = container(json!({"tools": {"denyList": ["drop", "drop", "x y"]}}));
    assert_eq!(fields(&review(&engine, &bad)), ["spec.tools.denyList[1]", "spec.tools.denyList[2]"]);
    let both = container(json!({"tools": {"allowList": ["echo", "drop"], "denyList": ["drop"]}}));
    let verdict = review(&engine, &both);
    assert!(verdict.allowed(), "{:?}", verdict.errors);
    assert_eq!(verdict.warnings.len(), 1);
    assert!(verdict.warnings[0].starts_with("spec.tools.denyList: drop also in allowList"), "{:?}", verdict.warnings);
    assert!(review(&engine, &container(json!({"tools": {"denyList": ["drop"]}}))).warnings.is_empty());
    let names: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
    let many = review(&engine, &container(json!({"tools": {"allowList": names, "denyList": names}})));
    assert!(many.warnings[0].contains("t0, t1, t2, t3, t4 and 45 more"), "{:?}", many.warnings);
}
