//! `MCPPermissionProfile`: what an MCP server pod may do. Cluster-scoped, owned by policy authors.

use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A permission profile: pod security level, filesystem, network and API access of a server.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "mcp-hangar.io",
    version = "v1alpha1",
    kind = "MCPPermissionProfile",
    plural = "mcppermissionprofiles",
    shortname = "mcpprofile",
    category = "mcp",
    doc = "MCPPermissionProfile says what the pods of the MCPServers that use it may do.",
    printcolumn(name = "LEVEL", type_ = "string", json_path = ".spec.pod.level"),
    printcolumn(name = "EGRESS-ALL", type_ = "boolean", json_path = ".spec.network.egress.allowAll"),
    printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPPermissionProfileSpec {
    /// Pod security: the Pod Security Standards level and the capabilities a container may add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodPermissions>,
    /// Paths volumes may be mounted at, read-only or read-write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemPermissions>,
    /// Egress and ingress, compiled into the server's NetworkPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkPermissions>,
    /// The server's own ServiceAccount: token mounting and the RBAC rules of its Role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountPermissions>,
}

/// Pod Security Standards level.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    /// Heavily restricted, current hardening best practice.
    #[default]
    Restricted,
    /// Prevents known privilege escalations.
    Baseline,
}

impl PodSecurityLevel {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurityLevel::Restricted => "restricted",
            PodSecurityLevel::Baseline => "baseline",
        }
    }
}

/// Pod-level permissions.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodPermissions {
    /// The Pod Security Standards level pods must meet: restricted (default) or baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<PodSecurityLevel>,
    /// Capabilities a container may add (the level limits them further). Defaults to NET_BIND_SERVICE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_capabilities: Option<Vec<String>>,
}

/// Filesystem permissions: where volumes may be mounted.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemPermissions {
    /// Absolute paths (and everything below them) where volumes may be mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Vec<String>>,
    /// Absolute paths (and everything below them) where volumes may be mounted read-write;
    /// a mount anywhere else must set readOnly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<Vec<String>>,
}

/// Network permissions.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPermissions {
    /// Outbound traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressPermissions>,
    /// Inbound traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressPermissions>,
}

/// Outbound traffic: everything, or a list of rules.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressPermissions {
    /// Allow all outbound traffic. Excludes `rules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_all: Option<bool>,
    /// Allowed destinations: a CIDR, or a host name (accepted, but NetworkPolicy cannot enforce it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<EgressRule>>,
    /// Allow DNS lookups (UDP and TCP port 53). Defaults to true.
    #[serde(rename = "allowDNS", default, skip_serializing_if = "Option::is_none")]
    pub allow_dns: Option<bool>,
}

/// One allowed outbound destination.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Destination network, e.g. `0.0.0.0/0` or `10.20.0.0/16`. Set this or `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// Destination host name. NetworkPolicy cannot match names: such rules are reported, not enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Destination ports; all ports when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortRule>>,
}

/// A port and protocol.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortRule {
    /// Port number, 1 to 65535.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// TCP (default), UDP or SCTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

/// Transport protocol of a port rule.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Protocol {
    /// TCP
    #[default]
    TCP,
    /// UDP
    UDP,
    /// SCTP
    SCTP,
}

impl Protocol {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::TCP => "TCP",
            Protocol::UDP => "UDP",
            Protocol::SCTP => "SCTP",
        }
    }
}

/// Inbound traffic.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressPermissions {
    /// Namespaces whose pods may connect; defaults to namespaces labelled `mcp-hangar.io/core: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// The server's own ServiceAccount.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountPermissions {
    /// Mount the ServiceAccount token into the pod. Defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_token: Option<bool>,
    /// RBAC rules the server's Role grants in its namespace. Defaults to none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<PolicyRule>>,
}
