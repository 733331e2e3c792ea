//! `MCPServerGroup`: a load-balanced set of MCP servers chosen by label.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A group of MCPServers selected by label, balanced with one strategy.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "mcp-hangar.io",
    version = "v1alpha1",
    kind = "MCPServerGroup",
    plural = "mcpservergroups",
    shortname = "mcpg",
    category = "mcp",
    namespaced,
    status = "MCPServerGroupStatus",
    doc = "MCPServerGroup balances requests over the MCPServers its selector matches.",
    printcolumn(name = "STRATEGY", type_ = "string", json_path = ".spec.strategy"),
    printcolumn(name = "MEMBERS", type_ = "integer", json_path = ".status.members"),
    printcolumn(name = "HEALTHY", type_ = "integer", json_path = ".status.healthyMembers"),
    printcolumn(name = "READY", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerGroupSpec {
    /// Label selector choosing the member MCPServers (in the group's namespace). Required and non-empty.
    #[schemars(required)]
    pub selector: Option<LabelSelector>,
    /// Load-balancing strategy: RoundRobin (default), LeastConnections, Random or Failover (the
    /// first member by name that is in rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<LoadBalancingStrategy>,
    /// Retry of a failed call on another member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverConfig>,
    /// When the group counts as healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_policy: Option<HealthPolicy>,
}

/// How a group spreads calls over its members.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LoadBalancingStrategy {
    /// Each member in turn.
    RoundRobin,
    /// The member with the fewest open calls.
    LeastConnections,
    /// A member at random.
    Random,
    /// The first healthy member, the next one when it fails.
    Failover,
}

/// Failover settings of a group.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverConfig {
    /// Whether a failed call is retried on another member (default true): only when it never
    /// reached its member, or only reads (`*/list`, `resources/read`, `prompts/get`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// How many other members are tried, 0 to 10 (default 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub max_retries: Option<i32>,
    /// Pause before a retry, as a Go duration (default `100ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<String>,
}

/// Health requirements of a group.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthPolicy {
    /// Share of members that must be healthy for the group to be Ready, 0 to 100; at least one
    /// healthy member is always needed. Defaults to 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub min_healthy_percentage: Option<i32>,
    /// Consecutive failures after which a Ready member counts as unhealthy, at least 1: failed
    /// health checks (the status), and on each gateway replica failed requests (out of rotation
    /// until a probe request is answered). Unset: a member is healthy exactly while its state is Ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub unhealthy_threshold: Option<i32>,
}

/// Observed state of a group.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerGroupStatus {
    /// Number of MCPServers the selector matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<i32>,
    /// Number of matched MCPServers that are healthy (state Ready, under `unhealthyThreshold`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_members: Option<i32>,
    /// The members by name with their state, sorted by name; the first 100 when there are more.
    #[serde(default)]
    pub servers: Vec<GroupMemberStatus>,
    /// URL of the group on the gateway, when a gateway is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The generation this status describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: Ready, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One member of a group as its status lists it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupMemberStatus {
    /// Name of the MCPServer.
    pub name: String,
    /// Its state; empty until the controller has reported one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::crd::ServerState>,
    /// Whether it counts as healthy.
    pub healthy: bool,
}
