//! Permission profiles as the controller sees them: what a server pod may reach and do,
//! and the four objects that enforce it (ServiceAccount, Role, RoleBinding, NetworkPolicy).
//!
//! This module is the one boundary between the controller and permission profiles:
//! [`resolve`] turns `spec.permissionProfile` into a [`ProfileView`], and
//! [`profile_children`] compiles a view into objects. Both are pure. Only the builtin
//! profiles are known here; ConfigMap profiles are refused with a clear reason until the
//! policy layer's profile compilers take over behind these two functions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::resources::{ChildSet, Owner};
use crate::crd::{MCPServer, ProfileSource};
use crate::policy::mutate::DEFAULT_PROFILE;

/// Label of the namespaces whose pods may call MCP servers (the mcp-hangar core).
pub const CORE_NAMESPACE_LABEL: &str = "mcp-hangar.io/core";
/// Builtin profile without network access beyond DNS.
pub const PROFILE_NONE: &str = "none";
/// Builtin profile with unrestricted egress.
pub const PROFILE_NETWORK: &str = "network";
/// Namespace of the cluster DNS service.
pub const DNS_NAMESPACE: &str = "kube-system";
/// Pod label of the cluster DNS pods (CoreDNS keeps the kube-dns label).
pub const DNS_POD_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
/// Port of the cluster DNS service.
pub const DNS_PORT: i32 = 53;

/// Where a server pod may open connections to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Only the cluster DNS (UDP and TCP 53).
    DnsOnly,
    /// Anywhere.
    Unrestricted,
}

/// A permission profile resolved for one server.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileView {
    /// The profile's name, for messages and annotations.
    pub name: String,
    /// Outbound connections the pod may open.
    pub egress: Egress,
    /// Whether the pod gets a Kubernetes API token mounted.
    pub mount_service_account_token: bool,
    /// Kubernetes API permissions granted to the pod's ServiceAccount, in its namespace.
    pub rules: Vec<PolicyRule>,
}

/// Why a profile could not be resolved; every variant is permanent until the spec changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// A builtin name this operator does not know.
    #[error("unknown builtin permission profile {0:?}: use \"none\" or \"network\"")]
    UnknownBuiltin(String),
    /// A ConfigMap profile, which this controller cannot compile yet.
    #[error(
        "permission profile from ConfigMap {0:?} is not supported by this controller yet: use a builtin profile (\"none\" or \"network\")"
    )]
    ConfigMapUnsupported(String),
}

/// Resolves `spec.permissionProfile` (after defaults) to a view; no profile means `none`.
pub fn resolve(server: &MCPServer) -> Result<ProfileView, ProfileError> {
    let reference = server.spec.permission_profile.clone().unwrap_or_default();
    let name = reference
        .name
        .unwrap_or_else(|| DEFAULT_PROFILE.to_string());
    match reference.source.unwrap_or(ProfileSource::Builtin) {
        ProfileSource::Builtin => builtin(&name).ok_or(ProfileError::UnknownBuiltin(name)),
        ProfileSource::Configmap => Err(ProfileError::ConfigMapUnsupported(name)),
    }
}

/// The builtin profile of that name.
pub fn builtin(name: &str) -> Option<ProfileView> {
    let egress = match name {
        PROFILE_NONE => Egress::DnsOnly,
        PROFILE_NETWORK => Egress::Unrestricted,
        _ => return None,
    };
    Some(ProfileView {
        name: name.to_string(),
        egress,
        mount_service_account_token: false,
        rules: Vec::new(),
    })
}

/// The objects that enforce a profile: a ServiceAccount (unless the server names its own),
/// a Role with exactly the profile's rules, its RoleBinding, and a NetworkPolicy.
pub fn profile_children(owner: &Owner, profile: &ProfileView) -> ChildSet {
    let service_account = owner
        .own_service_account()
        .then(|| service_account(owner, profile));
    ChildSet {
        service_account,
        role: Some(role(owner, profile)),
        role_binding: Some(role_binding(owner)),
        network_policy: Some(network_policy(owner, profile)),
        ..ChildSet::default()
    }
}

fn service_account(owner: &Owner, profile: &ProfileView) -> ServiceAccount {
    ServiceAccount {
        metadata: owner.child_meta(),
        automount_service_account_token: Some(profile.mount_service_account_token),
        ..ServiceAccount::default()
    }
}

fn role(owner: &Owner, profile: &ProfileView) -> Role {
    Role {
        metadata: owner.child_meta(),
        rules: Some(profile.rules.clone()),
    }
}

fn role_binding(owner: &Owner) -> RoleBinding {
    RoleBinding {
        metadata: owner.child_meta(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: owner.name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: owner.service_account_name(),
            namespace: Some(owner.namespace.clone()),
            ..Subject::default()
        }]),
    }
}

fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..LabelSelector::default()
    }
}

fn port(number: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.into()),
        ..NetworkPolicyPort::default()
    }
}

fn network_policy(owner: &Owner, profile: &ProfileView) -> NetworkPolicy {
    let ingress = NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(match_labels(&[(CORE_NAMESPACE_LABEL, "true")])),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![port(owner.port, "TCP")]),
    };
    let egress = match profile.egress {
        Egress::DnsOnly => NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(match_labels(&[(
                    "kubernetes.io/metadata.name",
                    DNS_NAMESPACE,
                )])),
                pod_selector: Some(match_labels(&[DNS_POD_LABEL])),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![port(DNS_PORT, "UDP"), port(DNS_PORT, "TCP")]),
        },
        Egress::Unrestricted => NetworkPolicyEgressRule::default(),
    };
    NetworkPolicy {
        metadata: owner.child_meta(),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(owner.selector_labels()),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![ingress]),
            egress: Some(vec![egress]),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MCPServerSpec, PermissionProfileRef, ServerMode};

    fn server(profile: Option<PermissionProfileRef>) -> MCPServer {
        let mut server = MCPServer::new(
            "fetch",
            MCPServerSpec {
                mode: Some(ServerMode::Container),
                image: Some("ghcr.io/example/fetch:1.0.0".into()),
                permission_profile: profile,
                ..MCPServerSpec::default()
            },
        );
        server.metadata.namespace = Some("tools".into());
        server
    }

    fn reference(source: ProfileSource, name: &str) -> Option<PermissionProfileRef> {
        Some(PermissionProfileRef {
            source: Some(source),
            name: Some(name.into()),
            key: None,
        })
    }

    #[test]
    fn missing_profile_resolves_to_none() {
        let view = resolve(&server(None)).unwrap();
        assert_eq!(view.name, PROFILE_NONE);
        assert_eq!(view.egress, Egress::DnsOnly);
        assert!(!view.mount_service_account_token);
        assert!(view.rules.is_empty());
    }

    #[test]
    fn builtin_network_allows_all_egress() {
        let view = resolve(&server(reference(ProfileSource::Builtin, "network"))).unwrap();
        assert_eq!(view.egress, Egress::Unrestricted);
    }

    #[test]
    fn unknown_and_configmap_profiles_are_refused() {
        let unknown = resolve(&server(reference(ProfileSource::Builtin, "root")));
        assert_eq!(unknown, Err(ProfileError::UnknownBuiltin("root".into())));
        let configmap = resolve(&server(reference(ProfileSource::Configmap, "custom")));
        assert_eq!(
            configmap,
            Err(ProfileError::ConfigMapUnsupported("custom".into()))
        );
    }

    #[test]
    fn none_profile_allows_only_dns_egress_and_core_ingress() {
        let server = server(None);
        let owner = Owner::of(&server).unwrap();
        let children = profile_children(&owner, &builtin(PROFILE_NONE).unwrap());
        let policy = serde_json::to_value(children.network_policy.unwrap()).unwrap();
        let spec = &policy["spec"];
        assert_eq!(
            spec["policyTypes"],
            serde_json::json!(["Ingress", "Egress"])
        );
        assert_eq!(
            spec["ingress"],
            serde_json::json!([{
                "from": [{"namespaceSelector": {"matchLabels": {"mcp-hangar.io/core": "true"}}}],
                "ports": [{"port": 8080, "protocol": "TCP"}],
            }])
        );
        assert_eq!(
            spec["egress"],
            serde_json::json!([{
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
            }])
        );
        assert_eq!(
            spec["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
            "fetch"
        );
    }

    #[test]
    fn network_profile_egress_rule_allows_everything() {
        let server = server(None);
        let owner = Owner::of(&server).unwrap();
        let children = profile_children(&owner, &builtin(PROFILE_NETWORK).unwrap());
        let policy = serde_json::to_value(children.network_policy.unwrap()).unwrap();
        assert_eq!(policy["spec"]["egress"], serde_json::json!([{}]));
    }

    #[test]
    fn rbac_objects_grant_nothing_and_bind_the_pod_account() {
        let server = server(None);
        let owner = Owner::of(&server).unwrap();
        let children = profile_children(&owner, &builtin(PROFILE_NONE).unwrap());
        let account = children.service_account.unwrap();
        assert_eq!(account.automount_service_account_token, Some(false));
        assert_eq!(children.role.unwrap().rules, Some(vec![]));
        let binding = children.role_binding.unwrap();
        assert_eq!(binding.role_ref.name, "fetch");
        let subjects = binding.subjects.unwrap();
        assert_eq!(subjects[0].name, "fetch");
        assert_eq!(subjects[0].namespace.as_deref(), Some("tools"));
    }

    #[test]
    fn own_service_account_is_bound_but_not_created() {
        let mut server = server(None);
        server.spec.service_account_name = Some("team-account".into());
        let owner = Owner::of(&server).unwrap();
        let children = profile_children(&owner, &builtin(PROFILE_NONE).unwrap());
        assert!(children.service_account.is_none());
        let subjects = children.role_binding.unwrap().subjects.unwrap();
        assert_eq!(subjects[0].name, "team-account");
    }
}
