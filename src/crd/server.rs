//! `MCPServer`: one MCP server, run in the cluster (container) or reached remotely.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, SecurityContext, Toleration, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Longest MCPServer name: it names the Deployment and Service, whose pods add suffixes. The CRD's
/// CEL rule and the webhook's rule both use it.
pub const MAX_SERVER_NAME_LEN: usize = 52;

/// Desired state of an MCP server.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mcp-hangar.io",
    version = "v1alpha1",
    kind = "MCPServer",
    plural = "mcpservers",
    shortname = "mcps",
    category = "mcp",
    namespaced,
    status = "MCPServerStatus",
    doc = "MCPServer declares one MCP server: a container the operator runs, or a remote endpoint it watches.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "MODE", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "STATE", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "READY", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "TOOLS", type_ = "integer", json_path = ".status.toolsCount"),
    printcolumn(name = "GATEWAY", type_ = "string", json_path = ".status.gatewayURL"),
    printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.mode)").message("spec.mode is required: container or remote").field_path(".spec.mode").reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(oldSelf.spec.mode) || !has(self.spec.mode) || self.spec.mode == oldSelf.spec.mode").message("spec.mode is immutable: delete and recreate the MCPServer to change it").field_path(".spec.mode"),
    validation = Rule::new(format!("self.metadata.name.size() <= {MAX_SERVER_NAME_LEN} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")).message(Message::Message(format!("metadata.name must be a DNS-1035 label of at most {MAX_SERVER_NAME_LEN} characters")))
)]
#[x_kube(
    validation = Rule::new("!has(self.mode) || self.mode != 'container' || has(self.image)").message("container mode needs spec.image").field_path(".image").reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.mode) || self.mode != 'container' || !has(self.endpoint)").message("spec.endpoint is only for remote mode").field_path(".endpoint").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.mode) || self.mode != 'remote' || has(self.endpoint)").message("remote mode needs spec.endpoint").field_path(".endpoint").reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.mode) || self.mode != 'remote' || (!has(self.image) && !has(self.volumes) && !has(self.securityContext))").message("remote mode runs no container: remove spec.image, spec.volumes and spec.securityContext").reason(Reason::FieldValueForbidden)
)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerSpec {
    /// How the server runs: `container` (the operator runs the image) or `remote` (an existing endpoint). Immutable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerMode>,
    /// Container image (container mode), e.g. `ghcr.io/org/server:1.2.3` or pinned by `@sha256:` digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// HTTPS URL of the MCP endpoint (remote mode). Plain http only for in-cluster `.svc` hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub endpoint: Option<String>,
    /// Desired replicas, 0 to 10; 0 keeps the server cold. Defaults to 1. Also set through the scale subresource.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub replicas: Option<i32>,
    /// Idle time after which the server is scaled to zero, as a Go duration (`5m`). Defaults to 5m.
    #[serde(rename = "idleTTL", skip_serializing_if = "Option::is_none")]
    pub idle_ttl: Option<String>,
    /// Time a starting server may take to become ready, as a Go duration. Defaults to 30s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_timeout: Option<String>,
    /// MCP health checks (`initialize` + `tools/list`). Enabled by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<Box<HealthCheck>>,
    /// CPU and memory requests and limits of the server container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Box<ResourceRequirements>>,
    /// Environment variables. Secrets must come from `valueFrom.secretKeyRef`, never a literal value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// Volumes of the server pod (configMap, secret, emptyDir, persistentVolumeClaim, projected, downwardAPI, csi, ephemeral).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    /// Where the volumes are mounted in the server container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
    /// Overrides of the secure container defaults; only runAsUser (>= 1), runAsGroup and readOnlyRootFilesystem may be relaxed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_context: Option<Box<SecurityContext>>,
    /// ServiceAccount the server pod runs as; the operator creates one per server when empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Node labels the server pod must be scheduled on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the server pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Which tools are exposed, and how often they may be called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Box<ToolsConfig>>,
    /// Stops calling a failing server for a while. Enabled by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<Box<CircuitBreaker>>,
    /// MCP transport the server speaks: stdio, streamable-http or sse. Defaults to streamable-http.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// Port the server listens on, 1 to 65535. Defaults to 8080.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Arguments passed to the server container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// The permission profile limiting what the server pod may do. Defaults to the builtin `none` profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission_profile: Option<Box<PermissionProfileRef>>,
}

/// How an MCP server is run.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServerMode {
    /// The operator runs the image as a Deployment.
    Container,
    /// The server already runs elsewhere; the operator health-checks its endpoint.
    Remote,
}

impl ServerMode {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerMode::Container => "container",
            ServerMode::Remote => "remote",
        }
    }
}

/// MCP transport.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// JSON-RPC over the process's standard streams.
    Stdio,
    /// Streamable HTTP (JSON-RPC over POST, JSON or SSE answers).
    StreamableHttp,
    /// The older HTTP + server-sent events transport.
    Sse,
}

/// Health-check settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Whether health checks run. Defaults to true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Time between checks, as a Go duration. Defaults to 30s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Time one check may take; must be shorter than the interval. Defaults to 10s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Consecutive failures before the server counts as Degraded, at least 1. Defaults to 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub failure_threshold: Option<i32>,
}

/// Tool exposure settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolsConfig {
    /// Only these tools are exposed (unique names of 1 to 128 characters of `[A-Za-z0-9_.-]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_list: Option<Vec<String>>,
    /// These tools are never exposed, even when allowList names them (same name rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny_list: Option<Vec<String>>,
    /// Call rate limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// A call rate limit.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Calls allowed per minute, 1 to 100000.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub requests_per_minute: Option<i32>,
    /// Calls that may be made at once after a quiet spell (the bucket size), 1 to 100000; needs
    /// requestsPerMinute. Defaults to requestsPerMinute.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub burst_size: Option<i32>,
}

/// Circuit-breaker settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Whether the breaker is used. Defaults to true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Consecutive failures that open the breaker, at least 1. Defaults to 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub failure_threshold: Option<i32>,
    /// Time the breaker stays open before one trial call, as a Go duration. Defaults to 30s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_timeout: Option<String>,
}

/// Reference to a permission profile.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionProfileRef {
    /// Where the profile comes from: `builtin` (a named profile) or `configmap` (a ToolHive JSON profile).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub source: Option<ProfileSource>,
    /// Profile name (builtin) or ConfigMap name (configmap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Key of the ConfigMap holding the profile JSON (configmap only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Source of a permission profile.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProfileSource {
    /// A profile known by name.
    Builtin,
    /// A ToolHive-format profile read from a ConfigMap key.
    Configmap,
}

/// Lifecycle state of an MCP server.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ServerState {
    /// Scaled to zero.
    Cold,
    /// Pods are starting, within the startup timeout.
    Initializing,
    /// Healthy and serving tools.
    Ready,
    /// Failing health checks or missing replicas.
    Degraded,
    /// Never became ready, or the circuit breaker stayed open.
    Dead,
}

/// Observed state of an MCP server.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerStatus {
    /// Cold, Initializing, Ready, Degraded or Dead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<ServerState>,
    /// Current replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Label selector of the server's pods, for the scale subresource and autoscalers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Number of tools the server exposes (after the allow and deny lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools_count: Option<i32>,
    /// Names of the tools the server offers (filtered by tools.allowList and tools.denyList).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// MCP protocol revision negotiated by the last passed health check, e.g. `2026-07-28`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// Who the server said it is in the last passed health check (`serverInfo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_info: Option<Box<ServerInfo>>,
    /// When the server last started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_started_at: Option<Time>,
    /// When the server was last health-checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_health_check: Option<Time>,
    /// Consecutive failed health checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<i32>,
    /// The generation this status describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// URL clients use: the in-cluster Service URL, or the remote endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The server's URL on the MCP gateway (`<gateway>/servers/<namespace>/<name>/mcp`), where
    /// its tool policy, rate limit, circuit breaker and cold start apply; absent when the
    /// operator runs without a gateway.
    #[serde(rename = "gatewayURL", skip_serializing_if = "Option::is_none")]
    pub gateway_url: Option<String>,
    /// Standard conditions: Ready, Available, Progressing, Degraded (the controller's) and
    /// CircuitBreakerOpen (the gateway's); a map by type, so each writer owns its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The implementation an MCP server reports (`serverInfo`), as self-reported and shortened.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub struct ServerInfo {
    /// Implementation name.
    pub name: String,
    /// Implementation version, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Label every pod of an MCP server carries (the seed's NetworkPolicy selects on it).
pub const SERVER_POD_LABEL: &str = "mcp-hangar.io/mcp-server";
/// Label naming the MCPServer a child object belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Field manager and `managed-by` value of everything the operator writes.
pub const MANAGER: &str = "mcp-hangar";

impl MCPServer {
    /// Labels every child object of this server carries.
    pub fn child_labels(&self) -> BTreeMap<String, String> {
        let name = self.metadata.name.clone().unwrap_or_default();
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "mcp-server".to_string()),
            (INSTANCE_LABEL.to_string(), name),
            ("app.kubernetes.io/managed-by".to_string(), MANAGER.to_string()),
            ("app.kubernetes.io/component".to_string(), "mcp-server".to_string()),
            (SERVER_POD_LABEL.to_string(), "true".to_string()),
        ])
    }

    /// The labels that select this server's pods (a stable, minimal Deployment selector).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (INSTANCE_LABEL.to_string(), self.metadata.name.clone().unwrap_or_default()),
            (SERVER_POD_LABEL.to_string(), "true".to_string()),
        ])
    }
}
