//! `MCPAdmissionPolicy`: the cluster-wide admission rules, a singleton named `default`.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The name of the one MCPAdmissionPolicy that counts.
pub const ADMISSION_POLICY_NAME: &str = "default";

/// Cluster-wide rules for images, endpoints, environment variables and limits.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mcp-hangar.io",
    version = "v1alpha1",
    kind = "MCPAdmissionPolicy",
    plural = "mcpadmissionpolicies",
    shortname = "mcpap",
    category = "mcp",
    doc = "MCPAdmissionPolicy holds the cluster-wide admission rules; only the one named `default` is used.",
    printcolumn(name = "LATEST-TAG", type_ = "string", json_path = ".spec.images.latestTag"),
    printcolumn(name = "DEFAULT-PROFILE", type_ = "string", json_path = ".spec.defaultProfile"),
    printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name == 'default'").message("the admission policy is a singleton: name it default")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPAdmissionPolicySpec {
    /// Rules for container images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<ImageRules>,
    /// Rules for remote endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<EndpointRules>,
    /// Rules for environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvRules>,
    /// Upper limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Profile given to servers that name none. Defaults to `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
}

/// What happens to an image with a `latest` (or missing) tag.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum LatestTagAction {
    /// Admit silently.
    Allow,
    /// Admit with a warning (default).
    #[default]
    Warn,
    /// Refuse.
    Deny,
}

/// Deny or warn.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum DenyOrWarn {
    /// Refuse (default).
    #[default]
    Deny,
    /// Admit with a warning.
    Warn,
}

/// Image rules.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageRules {
    /// Image prefixes allowed, e.g. `ghcr.io/my-org/`; any image when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_registries: Option<Vec<String>>,
    /// What to do with a `latest` or missing tag: Allow, Warn (default) or Deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_tag: Option<LatestTagAction>,
    /// Require images pinned by `@sha256:` digest. Defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_digest: Option<bool>,
}

/// Endpoint rules.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRules {
    /// Hosts remote endpoints may use (`mcp.example.com`, or `*.example.com` for subdomains); any when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hosts: Option<Vec<String>>,
    /// Allow plain http for in-cluster hosts (`.svc`, `.svc.cluster.local`). Defaults to true.
    #[serde(rename = "allowHTTPInCluster", default, skip_serializing_if = "Option::is_none")]
    pub allow_http_in_cluster: Option<bool>,
    /// Networks endpoints may not point into, in addition to loopback, link-local and metadata addresses.
    #[serde(rename = "blockedCIDRs", default, skip_serializing_if = "Option::is_none")]
    pub blocked_cidrs: Option<Vec<String>>,
}

/// Environment variable rules.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvRules {
    /// A literal value on a credential-like name (TOKEN, SECRET, PASSWORD, …): Deny (default) or Warn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext_secrets: Option<DenyOrWarn>,
}

/// Upper limits.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Most replicas a server may ask for, 0 to 10. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub max_replicas: Option<i32>,
    /// Highest tools.rateLimit.requestsPerMinute, 1 to 100000. Defaults to 100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_requests_per_minute: Option<i32>,
}
