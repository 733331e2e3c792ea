//! Which permission profile a server runs under, resolved against the policy in force.
//!
//! A server names a profile (`type: builtin`, resolved among the profiles of the
//! [`PolicyState`]: the builtins overlaid with live `MCPPermissionProfile` objects), names
//! none (the policy's default profile), or points at a ToolHive JSON profile in a ConfigMap
//! of its namespace, which the controller reads and translates. What a profile compiles
//! into is [`crate::policy::profile::compile`]'s business.

use crate::crd::{MCPPermissionProfileSpec, MCPServer, ProfileSource};
use crate::policy::PolicyState;
use crate::policy::profile::from_toolhive_json;

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

/// Where the (defaulted) server's profile comes from; no profile means the policy's default.
pub fn profile_ref(server: &MCPServer, state: &PolicyState) -> Result<ProfileRef, ProfileError> {
    let reference = server.spec.permission_profile.clone().unwrap_or_default();
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
    Ok(ResolvedProfile { name: format!("configmap:{name}/{key}"), spec })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MCPServerSpec, PermissionProfileRef};

    fn server(profile: Option<PermissionProfileRef>) -> MCPServer {
        MCPServer::new("fetch", MCPServerSpec { permission_profile: profile, ..MCPServerSpec::default() })
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
        assert_eq!(profile_ref(&server(None), &state), Ok(ProfileRef::Named("none".into())));
        let named = server(reference(ProfileSource::Builtin, Some("network"), None));
        assert_eq!(profile_ref(&named, &state), Ok(ProfileRef::Named("network".into())));
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
        assert_eq!(profile_ref(&incomplete, &PolicyState::builtin()), Err(ProfileError::Incomplete));
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
}
