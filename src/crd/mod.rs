//! Typed custom resources of the `mcp-hangar.io/v1alpha1` API group.
//!
//! Only types live here: no I/O, no rules beyond the CEL invariants the apiserver
//! enforces even when the webhook is down. The same structs are used by the webhook
//! (`policy`, `admission`) and by the controller.

// Repeated `type_ = "string"` inside different `printcolumn(...)` entries is not a duplicate.
#![allow(clippy::duplicated_attributes)]

mod admission_policy;
mod discovery;
mod group;
mod profile;
mod server;

pub use admission_policy::{
    ADMISSION_POLICY_NAME, DenyOrWarn, EndpointRules, EnvRules, ImageRules, LatestTagAction, Limits,
    MCPAdmissionPolicy, MCPAdmissionPolicySpec,
};
pub use profile::{
    EgressPermissions, EgressRule, FilesystemPermissions, IngressPermissions, MCPPermissionProfile,
    MCPPermissionProfileSpec, NetworkPermissions, PodPermissions, PodSecurityLevel, PortRule, Protocol,
    ServiceAccountPermissions,
};

pub use discovery::{
    CONFIG_MAP_KEY, ConfigMapRef, DISCOVERY_HASH_ANNOTATION, DISCOVERY_SOURCE_ANNOTATION, DISCOVERY_SOURCE_LABEL,
    DiscoveryEntryError, DiscoveryMode, DiscoveryType, MCPDiscoverySource, MCPDiscoverySourceSpec,
    MCPDiscoverySourceStatus, ProviderTemplate, SERVICE_ENABLED_ANNOTATION, SERVICE_PATH_ANNOTATION,
    SERVICE_PORT_ANNOTATION, SERVICE_TRANSPORT_ANNOTATION,
};
pub use group::{
    FailoverConfig, GroupMemberStatus, HealthPolicy, LoadBalancingStrategy, MCPServerGroup, MCPServerGroupSpec,
    MCPServerGroupStatus,
};
pub use server::{
    CircuitBreaker, HealthCheck, INSTANCE_LABEL, MANAGER, MAX_SERVER_NAME_LEN, MCPServer, MCPServerSpec,
    MCPServerStatus, PermissionProfileRef, ProfileSource, RateLimit, SERVER_POD_LABEL, ServerInfo, ServerMode,
    ServerState, ToolsConfig, Transport,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every mcp-hangar resource.
pub const GROUP: &str = "mcp-hangar.io";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every mcp-hangar resource.
pub const API_VERSION: &str = "mcp-hangar.io/v1alpha1";
/// Category that `kubectl get mcp` lists.
pub const CATEGORY: &str = "mcp";

/// The kinds this crate defines, in the order their CRDs are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `MCPServer`
    Server,
    /// `MCPServerGroup`
    ServerGroup,
    /// `MCPDiscoverySource`
    DiscoverySource,
    /// `MCPPermissionProfile` (cluster-scoped)
    PermissionProfile,
    /// `MCPAdmissionPolicy` (cluster-scoped)
    AdmissionPolicy,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 5] =
        [Kind::Server, Kind::ServerGroup, Kind::DiscoverySource, Kind::PermissionProfile, Kind::AdmissionPolicy];

    /// The `kind` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Server => "MCPServer",
            Kind::ServerGroup => "MCPServerGroup",
            Kind::DiscoverySource => "MCPDiscoverySource",
            Kind::PermissionProfile => "MCPPermissionProfile",
            Kind::AdmissionPolicy => "MCPAdmissionPolicy",
        }
    }

    /// The lowercase plural resource name (`mcpservers`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Server => "mcpservers",
            Kind::ServerGroup => "mcpservergroups",
            Kind::DiscoverySource => "mcpdiscoverysources",
            Kind::PermissionProfile => "mcppermissionprofiles",
            Kind::AdmissionPolicy => "mcpadmissionpolicies",
        }
    }

    /// Looks a kind up by its wire name.
    pub fn from_kind(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The generated CustomResourceDefinition of this kind.
    pub fn crd(self) -> CustomResourceDefinition {
        match self {
            Kind::Server => MCPServer::crd(),
            Kind::ServerGroup => MCPServerGroup::crd(),
            Kind::DiscoverySource => MCPDiscoverySource::crd(),
            Kind::PermissionProfile => MCPPermissionProfile::crd(),
            Kind::AdmissionPolicy => MCPAdmissionPolicy::crd(),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every CRD of the group, in a stable order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    Kind::ALL.into_iter().map(Kind::crd).collect()
}
