//! The webhook registrations: the `MutatingWebhookConfiguration` and
//! `ValidatingWebhookConfiguration` that send requests to this webhook, built from the same
//! constants the router serves ([`MUTATE_PATH`], [`VALIDATE_PATH`], the webhook names) and from
//! [`Kind::ALL`]. Pure: `mcp-hangar webhooks` writes them to `webhooks/`, and the chart's
//! templates are tested against them.
//!
//! - `mutate.mcp-hangar.io`: every mcp-hangar kind, CREATE and UPDATE.
//! - `validate.mcp-hangar.io`: every mcp-hangar kind, CREATE, UPDATE and DELETE (a permission
//!   profile may not be deleted while MCPServers use it).
//! - `pods.validate.mcp-hangar.io`: the pod-level check, Pods (v1) and Deployments (apps/v1)
//!   labelled `mcp-hangar.io/mcp-server: "true"`, CREATE and UPDATE.
//!
//! Every entry fails closed (`failurePolicy: Fail`), has no side effects, speaks
//! `admission.k8s.io/v1`, times out after [`TIMEOUT_SECONDS`] and matches equivalent versions.
//! The entries for mcp-hangar kinds cover every namespace: no recovery of the cluster or of the
//! operator writes those kinds, so a webhook that is down cannot deadlock anything, and an
//! excluded namespace would be a way around the rules. Only the pod-level check never sees
//! `kube-system` or the webhook's own namespace, where the operator's own pods must start while
//! the webhook is down. No entry carries a `caBundle`: the pods inject it (self-managed TLS) or
//! cert-manager's cainjector does.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};

use super::{MUTATE_PATH, MUTATING_WEBHOOK_NAME, POD_VALIDATING_WEBHOOK_NAME, VALIDATE_PATH, VALIDATING_WEBHOOK_NAME};
use crate::crd::{GROUP, Kind, SERVER_POD_LABEL, VERSION};

/// Seconds the apiserver waits for an answer before the request fails.
pub const TIMEOUT_SECONDS: i32 = 5;
/// `failurePolicy` of every entry: a webhook that cannot be reached denies.
pub const FAILURE_POLICY: &str = "Fail";
/// `sideEffects` of every entry: answering changes nothing elsewhere, so dry runs are reviewed too.
pub const SIDE_EFFECTS: &str = "None";
/// `matchPolicy` of every entry: a request through another version of a matched resource is sent too.
pub const MATCH_POLICY: &str = "Equivalent";
/// The only AdmissionReview version spoken.
pub const ADMISSION_REVIEW_VERSION: &str = "v1";
/// The label the apiserver sets on every namespace to its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Namespaces never sent to the pod-level check, besides the webhook's own.
pub const ALWAYS_EXCLUDED_NAMESPACES: [&str; 1] = ["kube-system"];
/// Port of the webhook Service (which forwards to the pods' HTTPS listener).
pub const SERVICE_PORT: i32 = 443;
/// Default name of both configurations (`serve --mutating-webhook-config` and `--validating-webhook-config`).
pub const DEFAULT_CONFIGURATION_NAME: &str = "mcp-hangar";
/// Default name of the webhook Service (`serve --tls-service-name`).
pub const DEFAULT_SERVICE_NAME: &str = "mcp-hangar-webhook";
/// Default namespace the operator is installed in.
pub const DEFAULT_NAMESPACE: &str = "mcp-system";

/// Where the webhook runs and what its configurations are called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `metadata.name` of both configurations.
    pub configuration_name: String,
    /// Namespace of the webhook Service (the operator's namespace).
    pub namespace: String,
    /// Name of the webhook Service.
    pub service_name: String,
    /// Port of the webhook Service.
    pub service_port: i32,
    /// Namespaces the pod-level check never sees, beyond `kube-system` and [`Registration::namespace`].
    pub extra_excluded_namespaces: Vec<String>,
    /// Labels of both configurations.
    pub labels: BTreeMap<String, String>,
}

impl Default for Registration {
    fn default() -> Self {
        Registration::new(DEFAULT_CONFIGURATION_NAME, DEFAULT_NAMESPACE, DEFAULT_SERVICE_NAME)
    }
}

impl Registration {
    /// The registration of a webhook behind Service `namespace/service_name`, port 443.
    pub fn new(configuration_name: &str, namespace: &str, service_name: &str) -> Self {
        Registration {
            configuration_name: configuration_name.to_string(),
            namespace: namespace.to_string(),
            service_name: service_name.to_string(),
            service_port: SERVICE_PORT,
            extra_excluded_namespaces: Vec::new(),
            labels: BTreeMap::from([
                ("app.kubernetes.io/name".to_string(), "mcp-hangar".to_string()),
                ("app.kubernetes.io/component".to_string(), "webhook".to_string()),
            ]),
        }
    }

    /// Every namespace the pod-level check never sees, without duplicates, in a stable order:
    /// `kube-system`, the webhook's own, then the extra ones.
    pub fn excluded_namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let all = ALWAYS_EXCLUDED_NAMESPACES
            .iter()
            .map(|n| n.to_string())
            .chain([self.namespace.clone()])
            .chain(self.extra_excluded_namespaces.iter().cloned());
        for name in all {
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// The pod-level check's `kubernetes.io/metadata.name NotIn [excluded…]`.
    pub fn workload_namespace_selector(&self) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.to_string(),
                operator: "NotIn".to_string(),
                values: Some(self.excluded_namespaces()),
            }]),
            match_labels: None,
        }
    }

    fn client_config(&self, path: &str) -> WebhookClientConfig {
        WebhookClientConfig {
            ca_bundle: None,
            service: Some(ServiceReference {
                name: self.service_name.clone(),
                namespace: self.namespace.clone(),
                path: Some(path.to_string()),
                port: Some(self.service_port),
            }),
            url: None,
        }
    }

    fn metadata(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.configuration_name.clone()),
            labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
            ..ObjectMeta::default()
        }
    }

    /// The MutatingWebhookConfiguration: defaults for every mcp-hangar kind.
    pub fn mutating(&self) -> MutatingWebhookConfiguration {
        MutatingWebhookConfiguration {
            metadata: self.metadata(),
            webhooks: Some(vec![MutatingWebhook {
                name: MUTATING_WEBHOOK_NAME.to_string(),
                admission_review_versions: vec![ADMISSION_REVIEW_VERSION.to_string()],
                client_config: self.client_config(MUTATE_PATH),
                failure_policy: Some(FAILURE_POLICY.to_string()),
                match_policy: Some(MATCH_POLICY.to_string()),
                namespace_selector: Some(every_namespace()),
                reinvocation_policy: Some("Never".to_string()),
                rules: Some(vec![own_kinds_rule(&["CREATE", "UPDATE"])]),
                side_effects: SIDE_EFFECTS.to_string(),
                timeout_seconds: Some(TIMEOUT_SECONDS),
                ..MutatingWebhook::default()
            }]),
        }
    }

    /// The ValidatingWebhookConfiguration: every mcp-hangar kind, and the pod-level check.
    pub fn validating(&self) -> ValidatingWebhookConfiguration {
        let entry = |name: &str,
                     rules: Vec<RuleWithOperations>,
                     namespace_selector: LabelSelector,
                     object_selector: Option<LabelSelector>| ValidatingWebhook {
            name: name.to_string(),
            admission_review_versions: vec![ADMISSION_REVIEW_VERSION.to_string()],
            client_config: self.client_config(VALIDATE_PATH),
            failure_policy: Some(FAILURE_POLICY.to_string()),
            match_policy: Some(MATCH_POLICY.to_string()),
            namespace_selector: Some(namespace_selector),
            object_selector,
            rules: Some(rules),
            side_effects: SIDE_EFFECTS.to_string(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            ..ValidatingWebhook::default()
        };
        let server_pods = LabelSelector {
            match_labels: Some(BTreeMap::from([(SERVER_POD_LABEL.to_string(), "true".to_string())])),
            match_expressions: None,
        };
        ValidatingWebhookConfiguration {
            metadata: self.metadata(),
            webhooks: Some(vec![
                entry(
                    VALIDATING_WEBHOOK_NAME,
                    vec![own_kinds_rule(&["CREATE", "UPDATE", "DELETE"])],
                    every_namespace(),
                    None,
                ),
                entry(
                    POD_VALIDATING_WEBHOOK_NAME,
                    workload_rules(),
                    self.workload_namespace_selector(),
                    Some(server_pods),
                ),
            ]),
        }
    }
}

/// The empty selector: every namespace (the apiserver's default, written out). A
/// namespaceSelector does not apply to cluster-scoped objects, which are always sent.
fn every_namespace() -> LabelSelector {
    LabelSelector::default()
}

fn strings(items: &[&str]) -> Option<Vec<String>> {
    Some(items.iter().map(|s| s.to_string()).collect())
}

/// One rule for every mcp-hangar kind, namespaced and cluster-scoped alike.
fn own_kinds_rule(operations: &[&str]) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: strings(&[GROUP]),
        api_versions: strings(&[VERSION]),
        operations: strings(operations),
        resources: Some(Kind::ALL.iter().map(|k| k.plural().to_string()).collect()),
        scope: Some("*".to_string()),
    }
}

/// The workloads of the pod-level check: Pods (v1) and Deployments (apps/v1).
fn workload_rules() -> Vec<RuleWithOperations> {
    let rule = |group: &str, resource: &str| RuleWithOperations {
        api_groups: strings(&[group]),
        api_versions: strings(&["v1"]),
        operations: strings(&["CREATE", "UPDATE"]),
        resources: strings(&[resource]),
        scope: Some("Namespaced".to_string()),
    };
    vec![rule("", "pods"), rule("apps", "deployments")]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn value(object: &impl serde::Serialize) -> Value {
        serde_json::to_value(object).unwrap()
    }

    #[test]
    fn mutating_entry_covers_every_kind_on_create_and_update() {
        let config = value(&Registration::default().mutating());
        assert_eq!(config["metadata"]["name"], "mcp-hangar");
        let webhooks = config["webhooks"].as_array().unwrap();
        assert_eq!(webhooks.len(), 1);
        let hook = &webhooks[0];
        assert_eq!(hook["name"], "mutate.mcp-hangar.io");
        assert_eq!(
            hook["clientConfig"],
            json!({"service": {"name": "mcp-hangar-webhook", "namespace": "mcp-system", "path": "/mutate", "port": 443}})
        );
        assert_eq!(
            hook["rules"],
            json!([{
                "apiGroups": ["mcp-hangar.io"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"],
                "resources": ["mcpservers", "mcpservergroups", "mcpdiscoverysources", "mcppermissionprofiles", "mcpadmissionpolicies"],
                "scope": "*",
            }])
        );
        for (field, expected) in [
            ("failurePolicy", json!("Fail")),
            ("sideEffects", json!("None")),
            ("admissionReviewVersions", json!(["v1"])),
            ("timeoutSeconds", json!(5)),
            ("matchPolicy", json!("Equivalent")),
        ] {
            assert_eq!(hook[field], expected, "{field}");
        }
    }

    #[test]
    fn validating_entries_cover_every_kind_with_delete_and_labelled_workloads() {
        let config = value(&Registration::default().validating());
        let webhooks = config["webhooks"].as_array().unwrap();
        let names: Vec<&str> = webhooks.iter().map(|w| w["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["validate.mcp-hangar.io", "pods.validate.mcp-hangar.io"]);
        assert_eq!(webhooks[0]["rules"][0]["operations"], json!(["CREATE", "UPDATE", "DELETE"]));
        assert_eq!(webhooks[0]["rules"][0]["resources"].as_array().unwrap().len(), Kind::ALL.len());
        assert!(webhooks[0].get("objectSelector").is_none());
        let pods = &webhooks[1];
        assert_eq!(pods["clientConfig"]["service"]["path"], "/validate");
        assert_eq!(pods["objectSelector"], json!({"matchLabels": {"mcp-hangar.io/mcp-server": "true"}}));
        assert_eq!(
            pods["rules"],
            json!([
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["pods"], "scope": "Namespaced"},
                {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["deployments"], "scope": "Namespaced"},
            ])
        );
        for hook in webhooks {
            assert_eq!(hook["failurePolicy"], "Fail");
            assert_eq!(hook["sideEffects"], "None");
            assert_eq!(hook["timeoutSeconds"], 5);
            assert!(hook["clientConfig"].get("caBundle").is_none(), "the pods inject the CA bundle");
        }
    }

    #[test]
    fn our_kinds_are_reviewed_in_every_namespace_and_workloads_outside_kube_system_and_our_own() {
        let mut registration = Registration::new("hangar", "ops", "hangar-webhook");
        registration.extra_excluded_namespaces = vec!["ops".into(), "monitoring".into(), String::new()];
        let excluded = json!({"matchExpressions": [{
            "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "ops", "monitoring"],
        }]});
        let mutating = value(&registration.mutating());
        let validating = value(&registration.validating());
        assert_eq!(mutating["webhooks"][0]["namespaceSelector"], json!({}), "mutate: every namespace");
        assert_eq!(validating["webhooks"][0]["namespaceSelector"], json!({}), "validate: every namespace");
        assert_eq!(validating["webhooks"][1]["name"], POD_VALIDATING_WEBHOOK_NAME);
        assert_eq!(validating["webhooks"][1]["namespaceSelector"], excluded);
        assert_eq!(validating["webhooks"][0]["clientConfig"]["service"]["namespace"], "ops");
        assert_eq!(validating["metadata"]["name"], "hangar");
    }

    /// Every registered path reaches a handler: an empty body gets the handler's 400, not the 404 of the fallback.
    #[tokio::test]
    async fn paths_are_routes_the_router_serves() {
        use tower::ServiceExt;
        let registration = Registration::default();
        let mutating = value(&registration.mutating());
        let validating = value(&registration.validating());
        let paths: Vec<String> = mutating["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .chain(validating["webhooks"].as_array().unwrap())
            .map(|w| w["clientConfig"]["service"]["path"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(paths, [MUTATE_PATH, VALIDATE_PATH, VALIDATE_PATH]);
        let state = super::super::WebhookState {
            engine: std::sync::Arc::new(crate::policy::Engine::new().unwrap()),
            metrics: crate::metrics::Metrics::new(),
        };
        for path in paths {
            let request = axum::http::Request::post(&path).body(axum::body::Body::from("{}")).unwrap();
            let response = super::super::webhook_router(state.clone()).oneshot(request).await.unwrap();
            assert_eq!(response.status(), axum::http::StatusCode::BAD_REQUEST, "{path}");
        }
        let request = axum::http::Request::post("/nowhere").body(axum::body::Body::from("{}")).unwrap();
        let response = super::super::webhook_router(state).oneshot(request).await.unwrap();
        assert_eq!(response.status(), axum::http::StatusCode::NOT_FOUND);
    }
}
