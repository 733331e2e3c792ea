//! Permission profiles: which profile a server uses (the one resolution, [`ProfileRef::of`]
//! then [`resolve_named`] or [`resolve_configmap`]), the effective settings of a profile, the
//! rules a profile object must obey, and the translation of ToolHive JSON profiles. What a
//! profile compiles into (NetworkPolicy, ServiceAccount, Role, RoleBinding) is built with
//! the server's other children in `controller::resources`.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

use super::Findings;
use super::checks::check_selector;
use super::field::{FieldError, FieldPath};
use super::format::{Cidr, is_host_pattern};
use super::selector;
use super::state::PolicyState;
use crate::crd::{
    EgressPermissions, EgressRule, FilesystemPermissions, MCPPermissionProfileSpec, MCPServerSpec, NetworkPermissions,
    PodPermissions, PodSecurityLevel, PortRule, ProfileSource, Protocol, ServiceAccountPermissions,
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

    /// Whether callers from a namespace with these labels may reach the server: the rule its
    /// NetworkPolicy states for direct traffic (`controller::resources` puts
    /// [`Self::ingress_from`] into the peer's `namespaceSelector`), and the gateway for
    /// proxied traffic.
    pub fn admits_namespace(&self, namespace_labels: &BTreeMap<String, String>) -> bool {
        selector::matches(&self.ingress_from, namespace_labels)
    }

    /// Capabilities a container may really add: the profile's list, limited by the level.
    pub fn addable_capabilities(&self) -> Vec<&str> {
        let level_allows = level_capabilities(self.level);
        self.allowed_capabilities.iter().map(String::as_str).filter(|c| level_allows.contains(c)).collect()
    }
}

/// The capabilities a Pod Security Standards level lets a container add.
pub fn level_capabilities(level: PodSecurityLevel) -> &'static [&'static str] {
    match level {
        PodSecurityLevel::Restricted => &RESTRICTED_CAPABILITIES,
        PodSecurityLevel::Baseline => &BASELINE_CAPABILITIES,
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
    let allowed = level_capabilities(pod.level.unwrap_or_default());
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

/// Where a server's profile comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileRef {
    /// A profile of the policy, by name.
    Named(String),
    /// A ToolHive JSON profile in a ConfigMap of the server's namespace.
    ConfigMap {
        /// Name of the ConfigMap.
        name: String,
        /// Key holding the JSON.
        key: String,
    },
}

impl ProfileRef {
    /// Which profile a server uses — the one place this is decided: the profile it names
    /// (`type: builtin`, or no type), the policy's default when it names none, or the
    /// ToolHive JSON at `key` of ConfigMap `name` (`type: configmap`).
    pub fn of(spec: &MCPServerSpec, state: &PolicyState) -> Result<ProfileRef, ProfileError> {
        let reference = spec.permission_profile.clone().unwrap_or_default();
        match reference.source.unwrap_or(ProfileSource::Builtin) {
            ProfileSource::Builtin => {
                Ok(ProfileRef::Named(reference.name.unwrap_or_else(|| state.default_profile().to_string())))
            }
            ProfileSource::Configmap => match (reference.name, reference.key) {
                (Some(name), Some(key)) => Ok(ProfileRef::ConfigMap { name, key }),
                _ => Err(ProfileError::Incomplete),
            },
        }
    }

    /// The name the profile is known by: the policy's name, or `configmap:<name>/<key>`.
    pub fn name(&self) -> String {
        match self {
            ProfileRef::Named(name) => name.clone(),
            ProfileRef::ConfigMap { name, key } => configmap_profile_name(name, key),
        }
    }

    /// The profile's ingress settings: a named profile's own; a ConfigMap profile's are the
    /// defaults, because a ToolHive profile has no ingress part ([`from_toolhive_json`] never
    /// writes one), so the ConfigMap need not be read.
    pub fn ingress(&self, state: &PolicyState) -> Result<EffectiveProfile, ProfileError> {
        self.resolve_offline(state).map(|resolved| EffectiveProfile::of(&resolved.spec))
    }

    /// The profile as far as it can be known without reading the cluster: a named profile
    /// of the policy, or for a ConfigMap profile the floor every ToolHive translation
    /// keeps to (restricted level, no mounts, no egress, no token), which is what
    /// admission holds such servers to.
    pub fn resolve_offline(&self, state: &PolicyState) -> Result<ResolvedProfile, ProfileError> {
        match self {
            ProfileRef::Named(name) => resolve_named(name, state),
            ProfileRef::ConfigMap { .. } => {
                Ok(ResolvedProfile { name: self.name(), spec: MCPPermissionProfileSpec::default() })
            }
        }
    }
}

/// A profile ready to compile.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedProfile {
    /// The profile's name (`configmap:<name>/<key>` for ConfigMap profiles).
    pub name: String,
    /// What it allows.
    pub spec: MCPPermissionProfileSpec,
}

/// Why a profile could not be resolved; permanent until the spec, the policy or the
/// ConfigMap changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// No profile of that name in the policy.
    #[error("permission profile {name:?} does not exist: use one of {known}, or create the MCPPermissionProfile")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names that exist, comma-separated.
        known: String,
    },
    /// A ConfigMap profile without a name or key.
    #[error("a configmap permission profile needs both name and key")]
    Incomplete,
    /// The ConfigMap or its key is missing.
    #[error("ConfigMap {name:?} has no key {key:?} holding a permission profile")]
    Missing {
        /// Name of the ConfigMap.
        name: String,
        /// The key.
        key: String,
    },
    /// The ConfigMap's JSON is not a usable ToolHive profile.
    #[error("ConfigMap {name:?} key {key:?}: {detail}")]
    Invalid {
        /// Name of the ConfigMap.
        name: String,
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
    },
}

/// The named profile of the policy.
pub fn resolve_named(name: &str, state: &PolicyState) -> Result<ResolvedProfile, ProfileError> {
    match state.profile(name) {
        Some(spec) => Ok(ResolvedProfile { name: name.to_string(), spec: spec.clone() }),
        None => Err(ProfileError::Unknown { name: name.to_string(), known: state.profile_names().join(", ") }),
    }
}

/// The profile held at `key` of a ConfigMap, given the ConfigMap's data at that key.
pub fn resolve_configmap(name: &str, key: &str, json: Option<&str>) -> Result<ResolvedProfile, ProfileError> {
    let json = json.ok_or_else(|| ProfileError::Missing { name: name.to_string(), key: key.to_string() })?;
    let spec = from_toolhive_json(json).map_err(|detail| ProfileError::Invalid {
        name: name.to_string(),
        key: key.to_string(),
        detail,
    })?;
    Ok(ResolvedProfile { name: configmap_profile_name(name, key), spec })
}

fn configmap_profile_name(name: &str, key: &str) -> String {
    format!("configmap:{name}/{key}")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PermissionProfileRef;

    fn server(profile: Option<PermissionProfileRef>) -> MCPServerSpec {
        MCPServerSpec { permission_profile: profile.map(Box::new), ..MCPServerSpec::default() }
    }

    fn reference(source: ProfileSource, name: Option<&str>, key: Option<&str>) -> Option<PermissionProfileRef> {
        Some(PermissionProfileRef {
            source: Some(source),
            name: name.map(str::to_string),
            key: key.map(str::to_string),
        })
    }

    #[test]
    fn no_profile_means_the_policy_default() {
        let state = PolicyState::builtin();
        assert_eq!(ProfileRef::of(&server(None), &state), Ok(ProfileRef::Named("none".into())));
        let named = server(reference(ProfileSource::Builtin, Some("network"), None));
        assert_eq!(ProfileRef::of(&named, &state), Ok(ProfileRef::Named("network".into())));
    }

    #[test]
    fn named_profiles_come_from_the_policy() {
        let state = PolicyState::builtin();
        let network = resolve_named("network", &state).unwrap();
        assert_eq!(network.name, "network");
        assert_eq!(&network.spec, state.profile("network").unwrap());
        assert_eq!(
            resolve_named("root", &state),
            Err(ProfileError::Unknown { name: "root".into(), known: "network, none".into() })
        );
    }

    #[test]
    fn configmap_profiles_are_translated_from_toolhive_json() {
        let incomplete = server(reference(ProfileSource::Configmap, Some("p"), None));
        assert_eq!(ProfileRef::of(&incomplete, &PolicyState::builtin()), Err(ProfileError::Incomplete));
        let json = r#"{"read": ["/data"], "write": ["/tmp"], "network": {"outbound": {"insecure_allow_all": true}}}"#;
        let resolved = resolve_configmap("p", "profile.json", Some(json)).unwrap();
        assert_eq!(resolved.name, "configmap:p/profile.json");
        let egress = resolved.spec.network.unwrap().egress.unwrap();
        assert_eq!(egress.allow_all, Some(true));
        assert!(matches!(resolve_configmap("p", "k", None), Err(ProfileError::Missing { .. })));
        assert!(matches!(
            resolve_configmap("p", "k", Some(r#"{"privileged": true}"#)),
            Err(ProfileError::Invalid { .. })
        ));
    }

    #[test]
    fn offline_resolution_holds_configmap_profiles_to_the_floor() {
        let state = PolicyState::builtin();
        let reference = ProfileRef::ConfigMap { name: "p".into(), key: "k".into() };
        let floor = reference.resolve_offline(&state).unwrap();
        assert_eq!(floor.name, "configmap:p/k");
        let effective = EffectiveProfile::of(&floor.spec);
        assert!(effective.read_paths.is_empty() && !effective.egress_all && !effective.automount_token);
        assert!(ProfileRef::Named("root".into()).resolve_offline(&state).is_err());
    }

    #[test]
    fn ingress_is_known_without_reading_configmaps() {
        let state = PolicyState::builtin();
        let json = r#"{"network": {"outbound": {"insecure_allow_all": true}}}"#;
        let translated = EffectiveProfile::of(&resolve_configmap("p", "k", Some(json)).unwrap().spec);
        let reference = ProfileRef::ConfigMap { name: "p".into(), key: "k".into() };
        assert_eq!(reference.ingress(&state).unwrap().ingress_from, translated.ingress_from);
        let core = BTreeMap::from([(CORE_NAMESPACE_LABEL.to_string(), "true".to_string())]);
        assert!(translated.admits_namespace(&core));
        assert!(!translated.admits_namespace(&BTreeMap::new()), "only core namespaces by default");
        let open = EffectiveProfile::of(&MCPPermissionProfileSpec {
            network: Some(NetworkPermissions {
                egress: None,
                ingress: Some(crate::crd::IngressPermissions { namespace_selector: Some(LabelSelector::default()) }),
            }),
            ..Default::default()
        });
        assert!(
            open.admits_namespace(&BTreeMap::new()),
            "an empty selector admits every namespace, as in a NetworkPolicy"
        );
        assert!(ProfileRef::Named("root".into()).ingress(&state).is_err());
    }
}
