//! The policy the rules consult: permission profiles, the admission policy, and which
//! servers use which profile. A snapshot is immutable; the live copy is swapped whole.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::crd::{
    ADMISSION_POLICY_NAME, DenyOrWarn, LatestTagAction, MCPAdmissionPolicySpec, MCPPermissionProfileSpec,
};

/// The shipped profile `none`, also built into the binary.
pub const PROFILE_NONE_YAML: &str = include_str!("../../policy/profile-none.yaml");
/// The shipped profile `network`, also built into the binary.
pub const PROFILE_NETWORK_YAML: &str = include_str!("../../policy/profile-network.yaml");
/// The shipped profile `restricted-egress`.
pub const PROFILE_RESTRICTED_EGRESS_YAML: &str = include_str!("../../policy/profile-restricted-egress.yaml");
/// The shipped admission policy.
pub const ADMISSION_POLICY_YAML: &str = include_str!("../../policy/admission-policy.yaml");

/// Name of the profile servers get when neither they nor the policy name one.
pub const FALLBACK_PROFILE: &str = "none";

/// One immutable view of the policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyState {
    /// The effective admission policy.
    pub admission: MCPAdmissionPolicySpec,
    /// Profiles by name.
    pub profiles: BTreeMap<String, MCPPermissionProfileSpec>,
    /// Which profile each known MCPServer uses, keyed `namespace/name`.
    pub server_profiles: BTreeMap<String, String>,
}

fn parse_spec<T: serde::de::DeserializeOwned>(yaml: &str) -> (String, T) {
    let object: Value = serde_saphyr::from_str(yaml).expect("shipped policy manifests are valid YAML");
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let spec = serde_json::from_value(object["spec"].clone()).expect("shipped policy manifests match the types");
    (name, spec)
}

impl PolicyState {
    /// What every cluster has, installed or not: the profiles `none` and `network` and the default policy.
    pub fn builtin() -> Self {
        let mut state = PolicyState { admission: parse_spec(ADMISSION_POLICY_YAML).1, ..Default::default() };
        for yaml in [PROFILE_NONE_YAML, PROFILE_NETWORK_YAML] {
            let (name, spec) = parse_spec(yaml);
            state.profiles.insert(name, spec);
        }
        state
    }

    /// Everything shipped in `policy/`: the builtins plus `restricted-egress`.
    pub fn shipped() -> Self {
        let mut state = Self::builtin();
        let (name, spec) = parse_spec(PROFILE_RESTRICTED_EGRESS_YAML);
        state.profiles.insert(name, spec);
        state
    }

    /// The builtins overlaid with live objects (profiles by name; the policy named `default`).
    pub fn overlay(
        &self,
        profiles: impl IntoIterator<Item = (String, MCPPermissionProfileSpec)>,
        policies: impl IntoIterator<Item = (String, MCPAdmissionPolicySpec)>,
    ) -> Self {
        let mut state = self.clone();
        state.profiles.extend(profiles);
        if let Some((_, policy)) = policies.into_iter().find(|(name, _)| name == ADMISSION_POLICY_NAME) {
            state.admission = policy;
        }
        state
    }

    /// The profile of a name.
    pub fn profile(&self, name: &str) -> Option<&MCPPermissionProfileSpec> {
        self.profiles.get(name)
    }

    /// Names of every known profile, sorted.
    pub fn profile_names(&self) -> Vec<&str> {
        self.profiles.keys().map(String::as_str).collect()
    }

    /// The profile servers get when they name none.
    pub fn default_profile(&self) -> &str {
        self.admission.default_profile.as_deref().unwrap_or(FALLBACK_PROFILE)
    }

    /// What to do with a `latest` or missing image tag.
    pub fn latest_tag(&self) -> LatestTagAction {
        self.admission.images.as_ref().and_then(|i| i.latest_tag).unwrap_or_default()
    }

    /// Whether images must be pinned by digest.
    pub fn require_digest(&self) -> bool {
        self.admission.images.as_ref().and_then(|i| i.require_digest).unwrap_or(false)
    }

    /// Allowed image prefixes (empty: any).
    pub fn allowed_registries(&self) -> &[String] {
        self.admission.images.as_ref().and_then(|i| i.allowed_registries.as_deref()).unwrap_or_default()
    }

    /// Allowed endpoint hosts (empty: any).
    pub fn allowed_hosts(&self) -> &[String] {
        self.admission.endpoints.as_ref().and_then(|e| e.allowed_hosts.as_deref()).unwrap_or_default()
    }

    /// Whether plain http is allowed for in-cluster hosts.
    pub fn allow_http_in_cluster(&self) -> bool {
        self.admission.endpoints.as_ref().and_then(|e| e.allow_http_in_cluster).unwrap_or(true)
    }

    /// Extra blocked networks for endpoints.
    pub fn blocked_cidrs(&self) -> &[String] {
        self.admission.endpoints.as_ref().and_then(|e| e.blocked_cidrs.as_deref()).unwrap_or_default()
    }

    /// What to do with a literal credential in an environment variable.
    pub fn plaintext_secrets(&self) -> DenyOrWarn {
        self.admission.env.as_ref().and_then(|e| e.plaintext_secrets).unwrap_or_default()
    }

    /// Most replicas a server may ask for.
    pub fn max_replicas(&self) -> i32 {
        self.admission.limits.as_ref().and_then(|l| l.max_replicas).unwrap_or(10)
    }

    /// Highest requests per minute a rate limit may allow.
    pub fn max_requests_per_minute(&self) -> i32 {
        self.admission.limits.as_ref().and_then(|l| l.max_requests_per_minute).unwrap_or(100_000)
    }

    /// The servers (`namespace/name`) that use a profile.
    pub fn servers_using(&self, profile: &str) -> Vec<&str> {
        self.server_profiles.iter().filter(|(_, p)| p.as_str() == profile).map(|(s, _)| s.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_and_shipped_profiles() {
        let builtin = PolicyState::builtin();
        assert_eq!(builtin.profile_names(), ["network", "none"]);
        assert_eq!(builtin.default_profile(), "none");
        assert_eq!(builtin.latest_tag(), LatestTagAction::Warn);
        assert_eq!(builtin.plaintext_secrets(), DenyOrWarn::Deny);
        assert_eq!(PolicyState::shipped().profile_names(), ["network", "none", "restricted-egress"]);
    }

    #[test]
    fn live_objects_overlay_the_builtins() {
        let live = MCPPermissionProfileSpec::default();
        let policy = MCPAdmissionPolicySpec { default_profile: Some("custom".into()), ..Default::default() };
        let state = PolicyState::builtin().overlay(
            [("custom".to_string(), live)],
            [("other".to_string(), MCPAdmissionPolicySpec::default()), ("default".to_string(), policy)],
        );
        assert_eq!(state.profile_names(), ["custom", "network", "none"]);
        assert_eq!(state.default_profile(), "custom");
    }
}
