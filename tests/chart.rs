//! The Helm chart, rendered by the real helm binaries (v3 and v4): the webhook registrations
//! equal the code's, the flags name the rendered objects, RBAC is what the README lists, the
//! shipped policy is valid, and values.schema.json refuses typos.
//!
//! Needs helm: `.ci/tools.sh` installs `.tools/bin/helm3` and `.tools/bin/helm4`; `HELM_BINARIES`
//! (colon-separated paths) overrides. Ignored by a plain `cargo test`; CI runs
//! `cargo test --test chart -- --ignored`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use mcp_hangar::admission::registration::Registration;
use serde_json::{Value, json};

const CHART: &str = "charts/mcp-hangar";
const ALL_FEATURES: &str = "charts/mcp-hangar/ci/all-features-values.yaml";
const FILES_MODE: &str = "charts/mcp-hangar/ci/files-values.yaml";

fn helms() -> Vec<PathBuf> {
    let list = std::env::var("HELM_BINARIES").unwrap_or_else(|_| ".tools/bin/helm3:.tools/bin/helm4".into());
    let helms: Vec<PathBuf> = list.split(':').filter(|p| !p.is_empty()).map(|p| common::repo().join(p)).collect();
    for helm in &helms {
        assert!(helm.exists(), "{} is missing: run .ci/tools.sh", helm.display());
    }
    assert!(!helms.is_empty());
    helms
}

/// Runs `helm template` and returns (exit success, stdout, stderr).
fn try_render(helm: &PathBuf, release: &str, namespace: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(helm)
        .args(["template", release, CHART, "--namespace", namespace])
        .args(args)
        .current_dir(common::repo())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Every object `helm template --include-crds` renders.
fn render(helm: &PathBuf, release: &str, namespace: &str, args: &[&str]) -> Vec<Value> {
    let args = [&["--include-crds"], args].concat();
    let (ok, stdout, stderr) = try_render(helm, release, namespace, &args);
    assert!(ok, "{} template {args:?} failed: {stderr}", helm.display());
    let docs: Vec<Value> = serde_saphyr::from_multiple(&stdout).unwrap();
    docs.into_iter().filter(|d| d.is_object()).collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn all_of<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The operator container's flags, as `flag -> value`.
fn flags(objects: &[Value], deployment: &str) -> BTreeMap<String, String> {
    let args = &find(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]["args"];
    args.as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix("--")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Webhook entries without what the pods or cainjector manage.
fn webhooks(config: &Value) -> Value {
    let mut hooks = config["webhooks"].clone();
    for hook in hooks.as_array_mut().unwrap() {
        if let Some(client) = hook["clientConfig"].as_object_mut() {
            client.remove("caBundle");
        }
    }
    hooks
}

fn expected(registration: &Registration) -> (Value, Value) {
    let mutating: MutatingWebhookConfiguration = registration.mutating();
    let validating: ValidatingWebhookConfiguration = registration.validating();
    (
        serde_json::to_value(mutating).unwrap()["webhooks"].clone(),
        serde_json::to_value(validating).unwrap()["webhooks"].clone(),
    )
}

#[test]
#[ignore = "needs helm: .ci/tools.sh, then cargo test --test chart -- --ignored"]
fn rendered_webhooks_equal_the_registration_in_code_and_in_webhooks_dir() {
    let generated: Vec<Value> = ["mutatingwebhookconfiguration.yaml", "validatingwebhookconfiguration.yaml"]
        .iter()
        .map(|f| {
            serde_saphyr::from_str(&std::fs::read_to_string(common::repo().join("webhooks").join(f)).unwrap()).unwrap()
        })
        .collect();
    for helm in helms() {
        // Defaults: the release the README installs, which webhooks/ describes.
        let objects = render(&helm, "mcp-hangar", "mcp-system", &[]);
        let (mutating, validating) = expected(&Registration::default());
        assert_eq!(webhooks(find(&objects, "MutatingWebhookConfiguration", "mcp-hangar")), mutating);
        assert_eq!(webhooks(find(&objects, "ValidatingWebhookConfiguration", "mcp-hangar")), validating);
        assert_eq!(webhooks(find(&objects, "MutatingWebhookConfiguration", "mcp-hangar")), generated[0]["webhooks"]);
        assert_eq!(webhooks(find(&objects, "ValidatingWebhookConfiguration", "mcp-hangar")), generated[1]["webhooks"]);
        for config in all_of(&objects, "MutatingWebhookConfiguration")
            .into_iter()
            .chain(all_of(&objects, "ValidatingWebhookConfiguration"))
        {
            for hook in config["webhooks"].as_array().unwrap() {
                assert!(hook["clientConfig"].get("caBundle").is_none(), "self-managed: the pods inject the caBundle");
            }
        }

        // Another release, namespace and excluded namespace: names follow the release.
        let objects = render(&helm, "hangar", "ops", &["--set", "webhook.excludeNamespaces={monitoring,ops}"]);
        let mut registration = Registration::new("hangar-mcp-hangar", "ops", "hangar-mcp-hangar-webhook");
        registration.extra_excluded_namespaces = vec!["monitoring".into()];
        let (mutating, validating) = expected(&registration);
        assert_eq!(webhooks(find(&objects, "MutatingWebhookConfiguration", "hangar-mcp-hangar")), mutating);
        assert_eq!(webhooks(find(&objects, "ValidatingWebhookConfiguration", "hangar-mcp-hangar")), validating);
    }
}

#[test]
#[ignore = "needs helm: .ci/tools.sh, then cargo test --test chart -- --ignored"]
fn flags_name_the_rendered_service_configurations_and_secret() {
    for helm in helms() {
        let objects = render(&helm, "mcp-hangar", "mcp-system", &[]);
        let flags = flags(&objects, "mcp-hangar");
        assert_eq!(flags["tls-mode"], "self-managed");
        assert_eq!(flags["policy-source"], "cluster");
        let service = find(&objects, "Service", &flags["tls-service-name"]);
        assert_eq!(service["spec"]["ports"][0]["port"], 443);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "webhook");
        find(&objects, "MutatingWebhookConfiguration", &flags["mutating-webhook-config"]);
        find(&objects, "ValidatingWebhookConfiguration", &flags["validating-webhook-config"]);
        let role = find(&objects, "Role", "mcp-hangar");
        assert!(role["rules"].as_array().unwrap().iter().any(|r| r["resourceNames"][0] == flags["tls-secret-name"]));
        let cluster_role = find(&objects, "ClusterRole", "mcp-hangar");
        assert!(
            cluster_role["rules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["resourceNames"][0] == flags["mutating-webhook-config"])
        );
        let pod = &find(&objects, "Deployment", "mcp-hangar")["spec"]["template"]["spec"];
        let env: Vec<&str> =
            pod["containers"][0]["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert!(env.contains(&"POD_NAMESPACE") && env.contains(&"POD_NAME"));
        let gateway_url =
            pod["containers"][0]["env"].as_array().unwrap().iter().find(|e| e["name"] == "MCP_HANGAR_GATEWAY_URL");
        let gateway_service = find(&objects, "Service", "mcp-hangar-gateway");
        assert_eq!(
            gateway_url.map(|e| e["value"].clone()),
            Some(json!(format!(
                "http://{}.{}.svc",
                gateway_service["metadata"]["name"].as_str().unwrap(),
                gateway_service["metadata"]["namespace"].as_str().unwrap()
            ))),
            "groups report the URL of the release's gateway Service"
        );
        assert_eq!(pod["containers"][0]["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(pod["containers"][0]["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(pod["containers"][0]["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(find(&objects, "Deployment", "mcp-hangar")["spec"]["replicas"], 2);

        // cert-manager: files mode on the Certificate's Secret, no injection by the pods.
        let objects = render(&helm, "mcp-hangar", "mcp-system", &["-f", ALL_FEATURES]);
        let flags = self::flags(&objects, "mcp-hangar");
        assert_eq!(flags["tls-mode"], "files");
        assert_eq!(flags["mutating-webhook-config"], "");
        assert_eq!(flags["validating-webhook-config"], "");
        let certificate = find(&objects, "Certificate", "mcp-hangar-webhook");
        let volume = &find(&objects, "Deployment", "mcp-hangar")["spec"]["template"]["spec"]["volumes"][0];
        assert_eq!(volume["secret"]["secretName"], certificate["spec"]["secretName"]);
        assert!(
            certificate["spec"]["dnsNames"]
                .as_array()
                .unwrap()
                .contains(&Value::from("mcp-hangar-webhook.mcp-system.svc"))
        );
        for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
            assert_eq!(
                find(&objects, kind, "mcp-hangar")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
                "mcp-system/mcp-hangar-webhook"
            );
        }
        let cluster_role = find(&objects, "ClusterRole", "mcp-hangar");
        assert!(!cluster_role.to_string().contains("webhookconfigurations"), "no injection, no patch rights");

        // Provided certificates: the chart writes the caBundle.
        let objects = render(&helm, "mcp-hangar", "mcp-system", &["-f", FILES_MODE]);
        let config = find(&objects, "ValidatingWebhookConfiguration", "mcp-hangar");
        assert!(config["webhooks"].as_array().unwrap().iter().all(|h| h["clientConfig"]["caBundle"].is_string()));
        let budgets = all_of(&objects, "PodDisruptionBudget");
        assert!(budgets.iter().all(|b| b["metadata"]["name"] != "mcp-hangar"), "one replica: no PodDisruptionBudget");
    }
}

/// The RBAC rows of the README: (role, apiGroup, resource, verbs, resourceNames).
fn readme_rbac() -> BTreeSet<(String, String, String, String, String)> {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let table = readme
        .split("<!-- rbac-table:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- rbac-table:end -->").next())
        .expect("README.md has the RBAC table between its markers");
    let cell = |s: &str| s.trim().replace('`', "");
    table
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| role"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').collect();
            (cell(cells[0]), cell(cells[1]), cell(cells[2]), cell(cells[3]), cell(cells[4]))
        })
        .collect()
}

/// The rules of the rendered Roles and ClusterRoles in the README's shape.
fn rendered_rbac(objects: &[Value]) -> BTreeSet<(String, String, String, String, String)> {
    let mut rows = BTreeSet::new();
    for role in objects.iter().filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role") {
        let label = format!("{} {}", role["kind"].as_str().unwrap(), role["metadata"]["name"].as_str().unwrap());
        for rule in role["rules"].as_array().unwrap() {
            let list = |key: &str| {
                rule[key]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    let group = if group.is_empty() { "core".to_string() } else { group.clone() };
                    rows.insert((
                        label.clone(),
                        group,
                        resource,
                        list("verbs").join(", "),
                        list("resourceNames").join(", "),
                    ));
                }
            }
        }
    }
    rows
}

#[test]
#[ignore = "needs helm: .ci/tools.sh, then cargo test --test chart -- --ignored"]
fn rbac_has_no_wildcard_and_is_exactly_the_readme_table() {
    for helm in helms() {
        let objects = render(&helm, "mcp-hangar", "mcp-system", &[]);
        let rows = rendered_rbac(&objects);
        for row in &rows {
            assert!(![&row.1, &row.2, &row.3].iter().any(|c| c.contains('*')), "wildcard in {row:?}");
        }
        assert_eq!(rows, readme_rbac(), "the README's RBAC table and the chart differ");
        let bind = rows.iter().filter(|r| r.3.contains("bind") || r.3.contains("escalate")).collect::<Vec<_>>();
        assert_eq!(bind.len(), 1, "{bind:?}");
        assert_eq!((bind[0].1.as_str(), bind[0].2.as_str()), ("rbac.authorization.k8s.io", "roles"));
    }
}

#[test]
#[ignore = "needs helm: .ci/tools.sh, then cargo test --test chart -- --ignored"]
fn metrics_service_monitor_rule_and_dashboard_are_wired() {
    let known: BTreeSet<String> = [
        mcp_hangar::metrics::ADMISSION_REQUESTS,
        mcp_hangar::metrics::ADMISSION_DURATION,
        mcp_hangar::metrics::WEBHOOK_CERTIFICATE_EXPIRY,
        mcp_hangar::metrics::WEBHOOK_CERTIFICATE_ROTATIONS,
        // The controller's metrics, named by the reference docs.
        "mcp_operator_reconcile_total",
        "mcp_operator_reconcile_duration_seconds",
        "mcp_operator_provider_state",
        "mcp_operator_provider_tools_count",
        "mcp_operator_provider_health_check_failures_total",
        mcp_hangar::metrics::WATCH_ERRORS,
        mcp_hangar::metrics::WATCH_UP,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let metric_names = |text: &str| -> BTreeSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("mcp_"))
            .map(|w| w.trim_end_matches("_bucket").to_string())
            .collect()
    };
    for helm in helms() {
        let objects = render(&helm, "mcp-hangar", "mcp-system", &["-f", ALL_FEATURES]);
        let monitor = find(&objects, "ServiceMonitor", "mcp-hangar");
        let selector = monitor["spec"]["selector"]["matchLabels"].as_object().unwrap();
        let services: Vec<&Value> = all_of(&objects, "Service")
            .into_iter()
            .filter(|s| selector.iter().all(|(k, v)| s["metadata"]["labels"][k] == *v))
            .collect();
        assert_eq!(services.len(), 1, "the ServiceMonitor selects exactly the metrics Service");
        let port = &services[0]["spec"]["ports"][0];
        assert_eq!(port["name"], monitor["spec"]["endpoints"][0]["port"]);
        assert_eq!(port["name"], "metrics");
        let container = &find(&objects, "Deployment", "mcp-hangar")["spec"]["template"]["spec"]["containers"][0];
        let admin = container["ports"].as_array().unwrap().iter().find(|p| p["name"] == port["targetPort"]).unwrap();
        assert_eq!(admin["containerPort"], 8080, "/metrics is served on the admin port");

        let rule = find(&objects, "PrometheusRule", "mcp-hangar");
        let alerts: BTreeMap<&str, &str> = rule["spec"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["alert"].as_str().unwrap(), r["expr"].as_str().unwrap()))
            .collect();
        assert_eq!(alerts["MCPServerDegraded"], "mcp_operator_provider_state{state=\"Degraded\"} == 1");
        assert_eq!(alerts["MCPServerDead"], "mcp_operator_provider_state{state=\"Dead\"} == 1");
        assert_eq!(alerts["MCPHangarWatchFailing"], "mcp_hangar_watch_up == 0");
        let summary = rule["spec"]["groups"][0]["rules"][0]["annotations"]["summary"].as_str().unwrap();
        assert!(summary.contains("{{ $labels.name }}"), "Prometheus templates survive Helm: {summary}");

        let dashboard = all_of(&objects, "ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
            .unwrap();
        assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
        let json: Value = serde_json::from_str(dashboard["data"]["mcp-hangar.json"].as_str().unwrap()).unwrap();
        let exprs: Vec<String> = json["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
            .collect();
        assert!(exprs.len() >= 6);
        let used: BTreeSet<String> = exprs
            .iter()
            .chain(alerts.values().map(|e| e.to_string()).collect::<Vec<_>>().iter())
            .flat_map(|e| metric_names(e))
            .collect();
        let unknown: Vec<&String> = used.difference(&known).collect();
        assert!(unknown.is_empty(), "queries name metrics nobody exports: {unknown:?}");
        for metric in [
            mcp_hangar::metrics::ADMISSION_REQUESTS,
            mcp_hangar::metrics::ADMISSION_DURATION,
            mcp_hangar::metrics::WEBHOOK_CERTIFICATE_EXPIRY,
            "mcp_operator_provider_state",
        ] {
            assert!(used.contains(metric), "the dashboard shows {metric}");
        }
    }
}

/// The policy objects of the rendered ConfigMap, written to a directory as the Job sees them.
fn policy_dir(objects: &[Value], dir: &std::path::Path) -> usize {
    let config_map = find(objects, "ConfigMap", "mcp-hangar-policy");
    std::fs::create_dir_all(dir).unwrap();
    let data = config_map["data"].as_object().unwrap();
    for (file, text) in data {
        std::fs::write(dir.join(file), text.as_str().unwrap()).unwrap();
    }
    data.len()
}

#[test]
#[ignore = "needs helm: .ci/tools.sh, then cargo test --test chart -- --ignored"]
fn the_policy_job_applies_a_valid_policy_with_the_chosen_default_profile() {
    let tmp = std::env::temp_dir().join(format!("mcp-hangar-chart-policy-{}", std::process::id()));
    for (n, helm) in helms().into_iter().enumerate() {
        for (values, default_profile, profiles) in [(None, "none", 4), (Some(ALL_FEATURES), "readonly-api", 5)] {
            let args: Vec<&str> = values.map(|v| vec!["-f", v]).unwrap_or_default();
            let objects = render(&helm, "mcp-hangar", "mcp-system", &args);
            let dir = tmp.join(format!("{n}-{default_profile}"));
            assert_eq!(policy_dir(&objects, &dir), profiles);
            let (state, report) = mcp_hangar::cli::policy::check_policy_dir(&dir);
            let problems: Vec<String> = report.problems.iter().map(|p| format!("{}: {}", p.file, p.error)).collect();
            assert!(problems.is_empty() && report.unreadable.is_empty(), "{problems:?} {:?}", report.unreadable);
            assert_eq!(report.checked, profiles);
            assert_eq!(state.admission.default_profile.as_deref(), Some(default_profile));
            let job = find(&objects, "Job", "mcp-hangar-policy");
            assert_eq!(job["metadata"]["annotations"]["helm.sh/hook"], "post-install,post-upgrade");
            let pod = &job["spec"]["template"]["spec"];
            assert_eq!(pod["volumes"][0]["configMap"]["name"], "mcp-hangar-policy");
            let args: Vec<&str> =
                pod["containers"][0]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
            assert_eq!(&args[..3], ["policy", "apply", "--filename=/etc/mcp-hangar/policy"]);
            // The Job's pods are not selected by the operator's Services.
            let labels = &job["spec"]["template"]["metadata"]["labels"];
            for service in all_of(&objects, "Service") {
                let selector = service["spec"]["selector"].as_object().unwrap();
                assert!(!selector.iter().all(|(k, v)| labels[k] == *v));
            }
        }
        let (ok, _, stderr) =
            try_render(&helm, "mcp-hangar", "mcp-system", &["--set", "policy.defaultProfile=missing"]);
        assert!(!ok && stderr.contains("is not a profile"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
#[ignore = "needs helm: .ci/tools.sh, then cargo test --test chart -- --ignored"]
fn values_schema_refuses_typos_and_bad_values() {
    for helm in helms() {
        for bad in [
            "replicaCont=3",
            "tls.mode=self-manged",
            "metrics.serviceMonitor.enable=true",
            "replicaCount=0",
            "tls.selfManaged.certValidity=90days",
        ] {
            let (ok, _, stderr) = try_render(&helm, "mcp-hangar", "mcp-system", &["--set", bad]);
            assert!(!ok, "{bad} was accepted");
            assert!(stderr.contains("values don't meet the specifications of the schema"), "{bad}: {stderr}");
        }
        let (ok, _, stderr) = try_render(&helm, "mcp-hangar", "mcp-system", &["--set", "tls.mode=files"]);
        assert!(!ok && stderr.contains("secretName"), "files mode without a Secret: {stderr}");
    }
}

#[test]
#[ignore = "needs helm: .ci/tools.sh, then cargo test --test chart -- --ignored"]
fn crds_come_from_crds_dir_or_from_templates_never_both() {
    for helm in helms() {
        let count = |objects: &[Value]| all_of(objects, "CustomResourceDefinition").len();
        let objects = render(&helm, "mcp-hangar", "mcp-system", &[]);
        assert_eq!(count(&objects), 5, "--include-crds renders crds/");
        let (ok, stdout, _) = try_render(&helm, "mcp-hangar", "mcp-system", &["--skip-crds"]);
        assert!(ok && !stdout.contains("kind: CustomResourceDefinition"));
        let (ok, stdout, stderr) =
            try_render(&helm, "mcp-hangar", "mcp-system", &["--skip-crds", "--set", "crds.templated=true"]);
        assert!(ok, "{stderr}");
        let objects: Vec<Value> =
            serde_saphyr::from_multiple::<Value>(&stdout).unwrap().into_iter().filter(|d| d.is_object()).collect();
        let crds = all_of(&objects, "CustomResourceDefinition");
        assert_eq!(crds.len(), 5);
        for crd in crds {
            assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
            let name = crd["metadata"]["name"].as_str().unwrap();
            let generated: Value = serde_saphyr::from_str(
                &std::fs::read_to_string(common::repo().join("crds").join(format!("{name}.yaml"))).unwrap(),
            )
            .unwrap();
            // Typed, so that `10` and `10.0` (Helm's toYaml and our YAML writer) compare equal.
            let typed = |v: &Value| serde_json::from_value::<CustomResourceDefinition>(v.clone()).unwrap().spec;
            assert_eq!(typed(crd), typed(&generated), "{name}: the templated CRD is the generated one");
        }
    }
}

#[test]
#[ignore = "needs helm: .ci/tools.sh, then cargo test --test chart -- --ignored"]
fn the_gateway_runs_apart_from_the_operator_with_its_shared_key() {
    let selects = |selector: &Value, labels: &Value| selector.as_object().unwrap().iter().all(|(k, v)| labels[k] == *v);
    for helm in helms() {
        let objects = render(&helm, "mcp-hangar", "mcp-system", &[]);
        let operator = find(&objects, "Deployment", "mcp-hangar");
        let gateway = find(&objects, "Deployment", "mcp-hangar-gateway");
        let pod_labels = &gateway["spec"]["template"]["metadata"]["labels"];
        assert_eq!(gateway["spec"]["replicas"], 2);
        assert_eq!(pod_labels["app.kubernetes.io/component"], "gateway", "every server's NetworkPolicy admits it");
        assert!(!selects(&operator["spec"]["selector"]["matchLabels"], pod_labels), "the operator never adopts them");
        let spec = &gateway["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(args[0], "gateway");
        assert!(args.contains(&"--session-key-file=/etc/mcp-hangar/gateway/session-key"));
        assert!(args.contains(&"--auth=kubernetes"), "callers are checked by default: {args:?}");
        assert_eq!(container["volumeMounts"][0]["mountPath"], "/etc/mcp-hangar/gateway");
        assert_eq!(spec["volumes"][0]["secret"]["secretName"], "mcp-hangar-gateway-session-key");
        let secret = find(&objects, "Secret", "mcp-hangar-gateway-session-key");
        let key = secret["data"]["session-key"].as_str().unwrap();
        assert!(key.len() >= 44, "a key of at least 32 bytes, base64: {key}");
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
        let service = find(&objects, "Service", "mcp-hangar-gateway");
        assert!(selects(&service["spec"]["selector"], pod_labels));
        assert!(selects(
            &find(&objects, "PodDisruptionBudget", "mcp-hangar-gateway")["spec"]["selector"]["matchLabels"],
            pod_labels
        ));

        let objects = render(&helm, "mcp-hangar", "mcp-system", &["-f", ALL_FEATURES]);
        assert!(
            objects.iter().all(|o| o["metadata"]["name"] != "mcp-hangar-gateway-session-key"),
            "an existing key is used"
        );
        let gateway = find(&objects, "Deployment", "mcp-hangar-gateway");
        assert_eq!(gateway["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"], "my-gateway-key");
        let monitor = find(&objects, "ServiceMonitor", "mcp-hangar-gateway");
        let service = find(&objects, "Service", "mcp-hangar-gateway");
        assert!(selects(&monitor["spec"]["selector"]["matchLabels"], &service["metadata"]["labels"]));

        let open = render(&helm, "mcp-hangar", "mcp-system", &["--set", "gateway.auth.enabled=false"]);
        let container = &find(&open, "Deployment", "mcp-hangar-gateway")["spec"]["template"]["spec"]["containers"][0];
        assert!(container["args"].as_array().unwrap().iter().any(|a| a == "--auth=none"));
        let rules = find(&open, "ClusterRole", "mcp-hangar-gateway")["rules"].to_string();
        assert!(!rules.contains("tokenreviews"), "no TokenReview right without the check: {rules}");

        let off = render(&helm, "mcp-hangar", "mcp-system", &["--set", "gateway.enabled=false"]);
        assert!(off.iter().all(|o| !o["metadata"]["name"].as_str().unwrap_or("").contains("gateway")));
    }
}

#[test]
#[ignore = "needs helm: .ci/tools.sh, then cargo test --test chart -- --ignored"]
fn the_gateway_may_write_demand_leases_in_the_release_namespace_and_nothing_on_deployments() {
    for helm in helms() {
        let objects = render(&helm, "mcp-hangar", "tenant-ops", &[]);
        let gateway_rows: Vec<_> =
            rendered_rbac(&objects).into_iter().filter(|row| row.0.ends_with("mcp-hangar-gateway")).collect();
        assert!(gateway_rows.iter().all(|row| row.2 != "deployments"), "the gateway never scales: {gateway_rows:?}");
        let writes: Vec<_> =
            gateway_rows.iter().filter(|row| row.3.contains("create") || row.3.contains("patch")).collect();
        let writes: Vec<(&str, &str, &str, &str)> =
            writes.iter().map(|row| (row.0.as_str(), row.1.as_str(), row.2.as_str(), row.3.as_str())).collect();
        assert_eq!(
            writes,
            [
                ("ClusterRole mcp-hangar-gateway", "authentication.k8s.io", "tokenreviews", "create"),
                ("ClusterRole mcp-hangar-gateway", "mcp-hangar.io", "mcpservers/status", "patch"),
                ("Role mcp-hangar-gateway", "coordination.k8s.io", "leases", "create, patch"),
            ],
            "demand Leases, the breaker condition on MCPServer status and reviews of callers' tokens \
             (which store nothing): nothing else"
        );
        let role = find(&objects, "Role", "mcp-hangar-gateway");
        assert_eq!(role["metadata"]["namespace"], "tenant-ops", "Leases of the operator's namespace only");
        let binding = find(&objects, "RoleBinding", "mcp-hangar-gateway");
        assert_eq!(binding["roleRef"]["name"], "mcp-hangar-gateway");
        assert_eq!(binding["subjects"][0]["name"], "mcp-hangar-gateway");
        let gateway = find(&objects, "Deployment", "mcp-hangar-gateway");
        let env = gateway["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
        let field = |name: &str| {
            env.iter().find(|e| e["name"] == name).map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
        };
        assert_eq!(
            field("POD_NAMESPACE"),
            Some(json!("metadata.namespace")),
            "Leases go where the controller reads them"
        );
        assert_eq!(field("POD_NAME"), Some(json!("metadata.name")), "each replica writes as itself");
    }
}
