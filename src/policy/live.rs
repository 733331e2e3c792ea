//! The policy in force, built from the stored profiles and admission policies: the builtins
//! overlaid with every stored object the rules accept. A stored object that fails them (the
//! webhook was down, or the rules got stricter) is not used: its last good version stays.
//! One definition for the webhook, the controller and the gateway.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Engine, Operation, PolicyState};
use crate::crd::{Kind, MCPAdmissionPolicy, MCPAdmissionPolicySpec, MCPPermissionProfile, MCPPermissionProfileSpec};

/// The last good version of every policy object, by name.
#[derive(Debug, Default)]
pub struct LastGood {
    profiles: BTreeMap<String, MCPPermissionProfileSpec>,
    policies: BTreeMap<String, MCPAdmissionPolicySpec>,
}

/// A stored object the rules refuse, kept out of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Every violation, in the field-error style.
    pub errors: Vec<String>,
}

/// The violations of a stored object, if the rules refuse it.
fn violations(engine: &Engine, kind: Kind, object: &impl serde::Serialize) -> Option<Vec<String>> {
    let value = serde_json::to_value(object).unwrap_or(Value::Null);
    let verdict = engine.review(kind, Operation::Update, &value, None);
    (!verdict.allowed()).then(|| verdict.errors.iter().map(ToString::to_string).collect())
}

impl LastGood {
    /// The policy from these stored objects (deleted ones are forgotten), and the objects left
    /// out because the rules refuse them. `engine` checks the profiles; the admission policies
    /// are checked against the profiles just taken in.
    pub fn rebuild<'a>(
        &mut self,
        engine: &Engine,
        profiles: impl IntoIterator<Item = &'a MCPPermissionProfile>,
        policies: impl IntoIterator<Item = &'a MCPAdmissionPolicy>,
    ) -> (PolicyState, Vec<Ignored>) {
        let mut ignored = Vec::new();
        let profiles: Vec<_> = profiles.into_iter().collect();
        self.profiles.retain(|name, _| profiles.iter().any(|p| p.metadata.name.as_deref() == Some(name)));
        for profile in profiles {
            let name = profile.metadata.name.clone().unwrap_or_default();
            match violations(engine, Kind::PermissionProfile, profile) {
                None => _ = self.profiles.insert(name, profile.spec.clone()),
                Some(errors) => ignored.push(Ignored { kind: Kind::PermissionProfile, name, errors }),
            }
        }
        let with_profiles = PolicyState::builtin().overlay(self.profiles.clone(), []);
        let checker = Engine::with_state(with_profiles.clone()).expect("generated schemas compile");
        let policies: Vec<_> = policies.into_iter().collect();
        self.policies.retain(|name, _| policies.iter().any(|p| p.metadata.name.as_deref() == Some(name)));
        for policy in policies {
            let name = policy.metadata.name.clone().unwrap_or_default();
            match violations(&checker, Kind::AdmissionPolicy, policy) {
                None => _ = self.policies.insert(name, policy.spec.clone()),
                Some(errors) => ignored.push(Ignored { kind: Kind::AdmissionPolicy, name, errors }),
            }
        }
        (with_profiles.overlay([], self.policies.clone()), ignored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str, spec: Value) -> MCPPermissionProfile {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPPermissionProfile", "metadata": {"name": name}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn invalid_objects_keep_their_last_good_version_and_deleted_ones_go() {
        let engine = Engine::new().unwrap();
        let mut last_good = LastGood::default();
        let good = profile("team", serde_json::json!({"network": {"egress": {"allowAll": true}}}));
        let (state, ignored) = last_good.rebuild(&engine, [&good], []);
        assert!(ignored.is_empty());
        assert!(state.profile("team").is_some());
        let broken = profile("team", serde_json::json!({"filesystem": {"read": ["relative"]}}));
        let (state, ignored) = last_good.rebuild(&engine, [&broken], []);
        assert_eq!(ignored.len(), 1);
        assert_eq!(state.profile("team"), Some(&good.spec), "the last good version stays");
        let (state, _) = last_good.rebuild(&engine, [], []);
        assert!(state.profile("team").is_none(), "a deleted profile goes");
        assert!(state.profile("none").is_some(), "the builtins stay");
    }
}
