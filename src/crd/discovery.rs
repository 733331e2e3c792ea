//! `MCPDiscoverySource`: where MCP servers are discovered from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A source of MCP server definitions: labelled namespaces or a ConfigMap.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "mcp-hangar.io",
    version = "v1alpha1",
    kind = "MCPDiscoverySource",
    plural = "mcpdiscoverysources",
    shortname = "mcpds",
    category = "mcp",
    namespaced,
    status = "MCPDiscoverySourceStatus",
    doc = "MCPDiscoverySource discovers MCP servers in labelled namespaces or a ConfigMap.",
    printcolumn(name = "TYPE", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "MODE", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "DISCOVERED", type_ = "integer", json_path = ".status.discovered"),
    printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPDiscoverySourceSpec {
    /// Where to discover from: Namespace (labelled namespaces) or ConfigMap.
    #[serde(rename = "type")]
    #[schemars(required)]
    pub source_type: Option<DiscoveryType>,
    /// Additive keeps servers that vanish from the source; Authoritative removes them. Defaults to Additive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<DiscoveryMode>,
    /// How often the source is read again, as a Go duration of at least `10s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
    /// Namespaces to discover from (type Namespace only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// The ConfigMap holding server definitions (type ConfigMap only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapRef>,
    /// Fields applied to every discovered server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_template: Option<ProviderTemplate>,
}

/// Kind of discovery source.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DiscoveryType {
    /// Namespaces chosen by `namespaceSelector`.
    Namespace,
    /// A ConfigMap named by `configMapRef`.
    ConfigMap,
}

/// What happens to servers that disappear from the source.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DiscoveryMode {
    /// Only add; never delete.
    #[default]
    Additive,
    /// The source is the truth: servers missing from it are removed.
    Authoritative,
}

/// Reference to a ConfigMap.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapRef {
    /// Name of the ConfigMap. Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the ConfigMap; the source's own namespace when empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Template applied to discovered servers.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderTemplate {
    /// A partial MCPServer spec; its fields must obey the MCPServer rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<crate::crd::MCPServerSpec>,
}

/// Observed state of a discovery source.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPDiscoverySourceStatus {
    /// Number of servers discovered at the last sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovered: Option<i32>,
    /// When the source was last read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// The generation this status describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (Ready, Synced).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
