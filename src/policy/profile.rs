//! Permission profiles: the rules a profile object must obey, the pure compilers that turn
//! a profile into a server's NetworkPolicy, ServiceAccount, Role and RoleBinding, and the
//! translation of ToolHive JSON profiles.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde::Deserialize;

use super::Findings;
use super::field::{FieldError, FieldPath};
use super::format::{Cidr, is_host_pattern};
use super::group::check_selector;
use crate::crd::{
    EgressPermissions, EgressRule, FilesystemPermissions, MCPPermissionProfileSpec, MCPServer, NetworkPermissions,
    PodPermissions, PodSecurityLevel, PortRule, Protocol, ServiceAccountPermissions,
};

/// The one capability the restricted level lets a container add.
pub const RESTRICTED_CAPABILITIES: [&str; 1] = ["NET_BIND_SERVICE"];
/// Capabilities the baseline level lets a container add.
pub const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
/// Label of the namespaces allowed to reach MCP servers when a profile names none.
pub const CORE_NAMESPACE_LABEL: &str = "mcp-hangar.io/core";

/// The effective settings of a profile, with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveProfile {
    /// Pod Security Standards level.
    pub level: PodSecurityLevel,
    /// Capabilities a container may add.
    pub allowed_capabilities: Vec<String>,
    /// Read-only mount roots.
    pub read_paths: Vec<String>,
    /// Read-write mount roots.
    pub write_paths: Vec<String>,
    /// All egress allowed.
    pub egress_all: bool,
    /// CIDR egress rules.
    pub egress_rules: Vec<EgressRule>,
    /// Host-name egress rules (not enforceable).
    pub host_rules: Vec<String>,
    /// DNS allowed.
    pub allow_dns: bool,
    /// Namespaces allowed in.
    pub ingress_from: LabelSelector,
    /// Token mounted.
    pub automount_token: bool,
    /// Role rules.
    pub rules: Vec<PolicyRule>,
}

impl EffectiveProfile {
    /// Fills in every default of a profile spec.
    pub fn of(spec: &MCPPermissionProfileSpec) -> Self {
        let pod = spec.pod.clone().unwrap_or_default();
        let fs = spec.filesystem.clone().unwrap_or_default();
        let network = spec.network.clone().unwrap_or_default();
        let egress = network.egress.unwrap_or_default();
        let rules = egress.rules.unwrap_or_default();
        let sa = spec.service_account.clone().unwrap_or_default();
        EffectiveProfile {
            level: pod.level.unwrap_or_default(),
            allowed_capabilities: pod.allowed_capabilities.unwrap_or_else(|| vec!["NET_BIND_SERVICE".into()]),
            read_paths: fs.read.unwrap_or_default(),
            write_paths: fs.write.unwrap_or_default(),
            egress_all: egress.allow_all.unwrap_or(false),
            host_rules: rules.iter().filter_map(|r| r.host.clone()).collect(),
            egress_rules: rules.into_iter().filter(|r| r.cidr.is_some()).collect(),
            allow_dns: egress.allow_dns.unwrap_or(true),
            ingress_from: network.ingress.and_then(|i| i.namespace_selector).unwrap_or_else(core_namespaces),
            automount_token: sa.automount_token.unwrap_or(false),
            rules: sa.rules.unwrap_or_default(),
        }
    }

    /// Capabilities a container may really add: the profile's list, limited by the level.
    pub fn addable_capabilities(&self) -> Vec<&str> {
        let level_allows: &[&str] = match self.level {
            PodSecurityLevel::Restricted => &RESTRICTED_CAPABILITIES,
            PodSecurityLevel::Baseline => &BASELINE_CAPABILITIES,
        };
        self.allowed_capabilities.iter().map(String::as_str).filter(|c| level_allows.contains(c)).collect()
    }
}

fn core_namespaces() -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(CORE_NAMESPACE_LABEL.to_string(), "true".to_string())])),
        ..Default::default()
    }
}

/// Checks a profile object. Warnings say what NetworkPolicy cannot enforce.
pub fn validate_profile(spec: &MCPPermissionProfileSpec, findings: &mut Findings) {
    let path = FieldPath::new("spec");
    if let Some(pod) = &spec.pod {
        check_pod_permissions(pod, &path.child("pod"), findings);
    }
    if let Some(fs) = &spec.filesystem {
        check_filesystem(fs, &path.child("filesystem"), findings);
    }
    if let Some(network) = &spec.network {
        check_network(network, &path.child("network"), findings);
    }
    if let Some(sa) = &spec.service_account {
        check_service_account(sa, &path.child("serviceAccount"), findings);
    }
}

fn check_pod_permissions(pod: &PodPermissions, path: &FieldPath, findings: &mut Findings) {
    let level = pod.level.unwrap_or_default();
    let allowed: &[&str] = match level {
        PodSecurityLevel::Restricted => &RESTRICTED_CAPABILITIES,
        PodSecurityLevel::Baseline => &BASELINE_CAPABILITIES,
    };
    for (i, cap) in pod.allowed_capabilities.iter().flatten().enumerate() {
        if !allowed.contains(&cap.as_str()) {
            findings.errors.push(FieldError::not_supported(
                &path.child("allowedCapabilities").index(i),
                cap.as_str(),
                allowed,
            ));
        }
    }
}

fn check_filesystem(fs: &FilesystemPermissions, path: &FieldPath, findings: &mut Findings) {
    for (field, paths) in [("read", &fs.read), ("write", &fs.write)] {
        for (i, p) in paths.iter().flatten().enumerate() {
            let clean = p.starts_with('/') && !p.split('/').any(|segment| segment == ".." || segment == ".");
            if !clean {
                findings.errors.push(FieldError::invalid(
                    &path.child(field).index(i),
                    p.as_str(),
                    "must be an absolute path without '.' or '..' segments, e.g. /data",
                ));
            }
        }
    }
}

fn check_network(network: &NetworkPermissions, path: &FieldPath, findings: &mut Findings) {
    if let Some(egress) = &network.egress {
        check_egress(egress, &path.child("egress"), findings);
    }
    if let Some(selector) = network.ingress.as_ref().and_then(|i| i.namespace_selector.as_ref()) {
        check_selector(selector, &path.child("ingress").child("namespaceSelector"), findings);
    }
}

fn check_egress(egress: &EgressPermissions, path: &FieldPath, findings: &mut Findings) {
    let rules = egress.rules.as_deref().unwrap_or_default();
    if egress.allow_all == Some(true) && !rules.is_empty() {
        findings.errors.push(FieldError::forbidden(
            &path.child("rules"),
            "allowAll already allows every destination: remove the rules, or set allowAll to false",
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        let item = path.child("rules").index(i);
        match (&rule.cidr, &rule.host) {
            (None, None) => findings.errors.push(FieldError::required(&item.child("cidr"), "set cidr (or host)")),
            (Some(_), Some(_)) => findings.errors.push(FieldError::forbidden(
                &item.child("host"),
                "a rule matches either a cidr or a host: split it into two rules",
            )),
            (Some(cidr), None) => {
                if let Err(detail) = Cidr::parse(cidr) {
                    findings.errors.push(FieldError::invalid(&item.child("cidr"), cidr.as_str(), detail));
                }
            }
            (None, Some(host)) => {
                if is_host_pattern(host) {
                    findings.warnings.push(format!(
                        "{}: host-name rules cannot be enforced by NetworkPolicy; traffic to {host} stays blocked unless a cidr rule allows it",
                        item.child("host")
                    ));
                } else {
                    findings.errors.push(FieldError::invalid(
                        &item.child("host"),
                        host.as_str(),
                        "must be a DNS name such as api.example.com or *.example.com",
                    ));
                }
            }
        }
    }
}

fn check_service_account(sa: &ServiceAccountPermissions, path: &FieldPath, findings: &mut Findings) {
    for (i, rule) in sa.rules.iter().flatten().enumerate() {
        let item = path.child("rules").index(i);
        if rule.verbs.is_empty() {
            findings
                .errors
                .push(FieldError::required(&item.child("verbs"), "list the verbs the rule grants, e.g. [get, list]"));
        }
        if rule.non_resource_urls.is_some() {
            findings.errors.push(FieldError::forbidden(
                &item.child("nonResourceURLs"),
                "a namespaced Role cannot grant non-resource URLs",
            ));
        }
        if rule.resources.as_ref().is_none_or(Vec::is_empty) {
            findings.errors.push(FieldError::required(&item.child("resources"), "list the resources the rule grants"));
        }
        let lists = [
            ("verbs", Some(&rule.verbs)),
            ("resources", rule.resources.as_ref()),
            ("apiGroups", rule.api_groups.as_ref()),
        ];
        for (field, values) in lists {
            for (j, value) in values.into_iter().flatten().enumerate() {
                if value.contains('*') {
                    findings.errors.push(FieldError::forbidden(
                        &item.child(field).index(j),
                        "wildcards are not allowed: grant explicit verbs, resources and API groups (least privilege)",
                    ));
                }
            }
        }
    }
}

/// The objects a profile compiles into for one server.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileObjects {
    /// Ingress only from the allowed namespaces to the MCP port; egress per profile.
    pub network_policy: NetworkPolicy,
    /// The server's own account; `None` when the server names an account of its own.
    pub service_account: Option<ServiceAccount>,
    /// The rules the profile grants (possibly none).
    pub role: Role,
    /// Binds the Role to the server's account.
    pub role_binding: RoleBinding,
}

fn child_meta(server: &MCPServer) -> ObjectMeta {
    ObjectMeta {
        name: server.metadata.name.clone(),
        namespace: server.metadata.namespace.clone(),
        labels: Some(server.child_labels()),
        owner_references: server.controller_owner_ref(&()).map(|r| vec![r]),
        ..Default::default()
    }
}

/// The account the server's pod runs as.
pub fn service_account_name(server: &MCPServer) -> String {
    server.spec.service_account_name.clone().or_else(|| server.metadata.name.clone()).unwrap_or_default()
}

fn port(rule: &PortRule) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(rule.port)),
        protocol: Some(rule.protocol.unwrap_or_default().as_str().to_string()),
        end_port: None,
    }
}

/// Compiles a profile into the NetworkPolicy, ServiceAccount, Role and RoleBinding of a server.
pub fn compile(server: &MCPServer, profile: &MCPPermissionProfileSpec) -> ProfileObjects {
    let effective = EffectiveProfile::of(profile);
    let mcp_port = server.spec.port.unwrap_or(super::mutate::DEFAULT_PORT as i32);
    let ingress = NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(effective.ingress_from.clone()),
            ..Default::default()
        }]),
        ports: Some(vec![port(&PortRule { port: mcp_port, protocol: Some(Protocol::TCP) })]),
    };
    let mut egress = Vec::new();
    if effective.egress_all {
        egress.push(NetworkPolicyEgressRule::default());
    } else {
        for rule in &effective.egress_rules {
            let ports: Vec<NetworkPolicyPort> = rule.ports.iter().flatten().map(port).collect();
            egress.push(NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    ip_block: Some(IPBlock { cidr: rule.cidr.clone().unwrap_or_default(), except: None }),
                    ..Default::default()
                }]),
                ports: (!ports.is_empty()).then_some(ports),
            });
        }
        if effective.allow_dns {
            // Port-only, so node-local DNS caches and any cluster DNS layout keep working.
            egress.push(NetworkPolicyEgressRule {
                to: None,
                ports: Some(vec![
                    port(&PortRule { port: 53, protocol: Some(Protocol::UDP) }),
                    port(&PortRule { port: 53, protocol: Some(Protocol::TCP) }),
                ]),
            });
        }
    }
    let network_policy = NetworkPolicy {
        metadata: child_meta(server),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some(server.selector_labels()), ..Default::default() }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![ingress]),
            egress: Some(egress),
        }),
    };
    let account = service_account_name(server);
    let service_account = server.spec.service_account_name.is_none().then(|| ServiceAccount {
        metadata: child_meta(server),
        automount_service_account_token: Some(effective.automount_token),
        ..Default::default()
    });
    let role = Role { metadata: child_meta(server), rules: Some(effective.rules.clone()) };
    let role_binding = RoleBinding {
        metadata: child_meta(server),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: server.metadata.name.clone().unwrap_or_default(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account,
            namespace: server.metadata.namespace.clone(),
            api_group: None,
        }]),
    };
    ProfileObjects { network_policy, service_account, role, role_binding }
}

/// A ToolHive permission profile, as its JSON is written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolHiveProfile {
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
    #[serde(default)]
    network: Option<ToolHiveNetwork>,
    #[serde(default)]
    privileged: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolHiveNetwork {
    #[serde(default)]
    outbound: Option<ToolHiveOutbound>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolHiveOutbound {
    #[serde(default)]
    insecure_allow_all: bool,
    #[serde(default)]
    allow_host: Vec<String>,
    #[serde(default)]
    allow_port: Vec<i32>,
}

/// Translates a ToolHive JSON profile (`read`, `write`, `network.outbound{insecure_allow_all,
/// allow_host, allow_port}`) into a permission profile. Ports without hosts become CIDR rules
/// to everywhere on those ports; hosts become host rules (reported as not enforceable).
pub fn from_toolhive_json(text: &str) -> Result<MCPPermissionProfileSpec, String> {
    let profile: ToolHiveProfile = serde_json::from_str(text).map_err(|e| format!("not a ToolHive profile: {e}"))?;
    if profile.privileged {
        return Err("privileged ToolHive profiles are not supported: MCP servers never run privileged".into());
    }
    let outbound = profile.network.and_then(|n| n.outbound).unwrap_or_default();
    let ports: Vec<PortRule> =
        outbound.allow_port.iter().map(|p| PortRule { port: *p, protocol: Some(Protocol::TCP) }).collect();
    let ports = (!ports.is_empty()).then_some(ports);
    let mut rules: Vec<EgressRule> = outbound
        .allow_host
        .iter()
        .map(|h| EgressRule { host: Some(h.clone()), cidr: None, ports: ports.clone() })
        .collect();
    if outbound.allow_host.is_empty() && ports.is_some() {
        for cidr in ["0.0.0.0/0", "::/0"] {
            rules.push(EgressRule { cidr: Some(cidr.into()), host: None, ports: ports.clone() });
        }
    }
    let allow_all = outbound.insecure_allow_all;
    Ok(MCPPermissionProfileSpec {
        pod: Some(PodPermissions { level: Some(PodSecurityLevel::Restricted), allowed_capabilities: None }),
        filesystem: Some(FilesystemPermissions { read: Some(profile.read), write: Some(profile.write) }),
        network: Some(NetworkPermissions {
            egress: Some(EgressPermissions {
                allow_all: Some(allow_all),
                rules: (!allow_all && !rules.is_empty()).then_some(rules),
                allow_dns: Some(true),
            }),
            ingress: None,
        }),
        service_account: None,
    })
}
