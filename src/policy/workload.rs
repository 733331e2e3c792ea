//! The pod-level check: Pods and Deployments that belong to an MCPServer must stay within
//! that server's permission profile, so a generated Deployment cannot be hand-edited into
//! a privileged one.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;

use super::Findings;
use super::field::{FieldError, FieldPath};
use super::format::path_within;
use super::pod_security::check_pod;
use super::profile::{EffectiveProfile, level_capabilities, resolve_named};
use super::state::PolicyState;
use crate::crd::{INSTANCE_LABEL, PodSecurityLevel, SERVER_POD_LABEL};

/// The workload kinds the pod-level check handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// `v1/Pod`
    Pod,
    /// `apps/v1/Deployment`
    Deployment,
}

impl WorkloadKind {
    /// Looks a workload kind up by group, version and kind.
    pub fn from_gvk(group: &str, version: &str, kind: &str) -> Option<Self> {
        match (group, version, kind) {
            ("", "v1", "Pod") => Some(WorkloadKind::Pod),
            ("apps", "v1", "Deployment") => Some(WorkloadKind::Deployment),
            _ => None,
        }
    }

    /// The `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Pod => "Pod",
            WorkloadKind::Deployment => "Deployment",
        }
    }
}

/// A pod template as the checks see it, with where it sits in its object.
pub struct PodTemplate {
    /// Labels and annotations of the pod.
    pub meta: ObjectMeta,
    /// The pod spec.
    pub spec: PodSpec,
    /// Path of the pod's metadata.
    pub meta_path: FieldPath,
    /// Path of the pod's spec.
    pub spec_path: FieldPath,
    /// Namespace of the object.
    pub namespace: String,
}

/// Reads the pod template of a Pod or Deployment.
pub fn pod_template(kind: WorkloadKind, object: &Value) -> Result<PodTemplate, String> {
    match kind {
        WorkloadKind::Pod => {
            let pod = Pod::deserialize(object).map_err(|e| format!("not a valid Pod: {e}"))?;
            Ok(PodTemplate {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                meta: pod.metadata,
                spec: pod.spec.unwrap_or_default(),
                meta_path: FieldPath::new("metadata"),
                spec_path: FieldPath::new("spec"),
            })
        }
        WorkloadKind::Deployment => {
            let deployment = Deployment::deserialize(object).map_err(|e| format!("not a valid Deployment: {e}"))?;
            Ok(PodTemplate::of_deployment(deployment))
        }
    }
}

impl PodTemplate {
    /// The pod template of a typed Deployment.
    pub fn of_deployment(deployment: Deployment) -> PodTemplate {
        let template = deployment.spec.map(|s| s.template).unwrap_or_default();
        let base = FieldPath::new("spec").child("template");
        PodTemplate {
            namespace: deployment.metadata.namespace.unwrap_or_default(),
            meta: template.metadata.unwrap_or_default(),
            spec: template.spec.unwrap_or_default(),
            meta_path: base.child("metadata"),
            spec_path: base.child("spec"),
        }
    }
}

/// True when the pod carries the label of an MCP server pod.
pub fn belongs_to_server(template: &PodTemplate) -> bool {
    template.meta.labels.as_ref().and_then(|l| l.get(SERVER_POD_LABEL)).is_some_and(|v| v == "true")
}

/// Checks a pod template against a Pod Security Standards level only.
pub fn check_level(template: &PodTemplate, level: PodSecurityLevel, findings: &mut Findings) {
    findings.errors.extend(check_pod(&template.meta, &template.spec, &template.meta_path, &template.spec_path, level));
}

/// Checks a server's pod against its profile: the profile's level, added capabilities,
/// mounts and ServiceAccount token.
pub fn check_server_pod(template: &PodTemplate, state: &PolicyState, findings: &mut Findings) {
    let server = template.meta.labels.as_ref().and_then(|l| l.get(INSTANCE_LABEL)).cloned().unwrap_or_default();
    let key = format!("{}/{server}", template.namespace);
    let name = state.server_profiles.get(&key).cloned().unwrap_or_else(|| state.default_profile().to_string());
    // A profile that cannot be resolved offline (unknown, or a ConfigMap's) is held to the floor.
    let profile = EffectiveProfile::of(&resolve_named(&name, state).map(|p| p.spec).unwrap_or_default());
    check_level(template, profile.level, findings);
    let addable = profile.addable_capabilities();
    let spec = &template.spec;
    let path = &template.spec_path;
    let all = spec
        .containers
        .iter()
        .map(|c| ("containers", c))
        .chain(spec.init_containers.iter().flatten().map(|c| ("initContainers", c)));
    let mut index = std::collections::HashMap::new();
    for (list, container) in all {
        let i = index.entry(list).or_insert(0usize);
        let item = path.child(list).index(*i);
        *i += 1;
        let caps = container.security_context.as_ref().and_then(|sc| sc.capabilities.as_ref());
        for (j, cap) in caps.and_then(|c| c.add.as_ref()).into_iter().flatten().enumerate() {
            // Capabilities the level itself forbids are already reported by the level check.
            let level_allows = level_capabilities(profile.level).contains(&cap.as_str());
            if level_allows && !addable.contains(&cap.as_str()) {
                findings.errors.push(FieldError::forbidden(
                    &item.child("securityContext").child("capabilities").child("add").index(j),
                    format!("capability {cap:?} is not allowed by profile {name:?}"),
                ));
            }
        }
        for (j, mount) in container.volume_mounts.iter().flatten().enumerate() {
            let writable = profile.write_paths.iter().any(|p| path_within(&mount.mount_path, p));
            let readable = writable || profile.read_paths.iter().any(|p| path_within(&mount.mount_path, p));
            if !readable {
                findings.errors.push(FieldError::forbidden(
                    &item.child("volumeMounts").index(j).child("mountPath"),
                    format!("profile {name:?} allows no mount at {}", mount.mount_path),
                ));
            } else if !writable && mount.read_only != Some(true) {
                findings.errors.push(FieldError::required(
                    &item.child("volumeMounts").index(j).child("readOnly"),
                    format!("profile {name:?} allows only read-only mounts at {}", mount.mount_path),
                ));
            }
        }
    }
    if !profile.automount_token && spec.automount_service_account_token != Some(false) {
        findings.errors.push(FieldError::forbidden(
            &path.child("automountServiceAccountToken"),
            format!(
                "profile {name:?} does not mount the ServiceAccount token: set automountServiceAccountToken: false"
            ),
        ));
    }
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let projects_token = volume
            .projected
            .as_ref()
            .is_some_and(|p| p.sources.iter().flatten().any(|s| s.service_account_token.is_some()));
        if projects_token && !profile.automount_token {
            findings.errors.push(FieldError::forbidden(
                &path.child("volumes").index(i).child("projected"),
                format!("profile {name:?} does not allow ServiceAccount tokens in the pod"),
            ));
        }
    }
}
