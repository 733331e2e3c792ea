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
    /// How often the source is read again besides the watches, as a Go duration of at least `10s`. Defaults to 5m.
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
    /// The servers this source manages (`namespace/name`), sorted; the first 100 when there are more.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Entries that could not be turned into servers, with why; the first 20.
    #[serde(default)]
    pub errors: Vec<DiscoveryEntryError>,
    /// When a sync last found something different (a sync that changes nothing writes nothing,
    /// so an idle source costs no API writes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// The generation this status describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (Ready, Synced).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One entry of a source that did not become a server.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryEntryError {
    /// The entry: `namespace/name` of the server it would create, or its place in the source.
    pub entry: String,
    /// Why, e.g. the admission webhook's own message.
    pub message: String,
}

/// Label on every server a source created: `<namespace>.<name>` of the source (shortened with a
/// hash when longer than a label value may be).
pub const DISCOVERY_SOURCE_LABEL: &str = "mcp-hangar.io/discovery-source";
/// Annotation on every server a source created: `<namespace>/<name>` of the source; a server is
/// managed by a source exactly when it carries this annotation with the source's name.
pub const DISCOVERY_SOURCE_ANNOTATION: &str = "mcp-hangar.io/discovery-source";
/// Annotation holding the hash of what the source last applied to a server.
pub const DISCOVERY_HASH_ANNOTATION: &str = "mcp-hangar.io/discovery-hash";
/// Service annotation that opts a Service into discovery when `"true"`.
pub const SERVICE_ENABLED_ANNOTATION: &str = "mcp-hangar.io/enabled";
/// Service annotation naming the port (number or port name) of the MCP endpoint.
pub const SERVICE_PORT_ANNOTATION: &str = "mcp-hangar.io/port";
/// Service annotation with the HTTP path of the MCP endpoint; defaults to `/mcp`.
pub const SERVICE_PATH_ANNOTATION: &str = "mcp-hangar.io/path";
/// Service annotation with the MCP transport (`streamable-http` or `sse`).
pub const SERVICE_TRANSPORT_ANNOTATION: &str = "mcp-hangar.io/transport";
/// Key of a discovery ConfigMap holding the YAML list of server definitions.
pub const CONFIG_MAP_KEY: &str = "servers.yaml";
