//! Readiness of the process: named conditions that must all hold before traffic may be sent
//! here. Components set their own condition; `/readyz` reports the ones that do not hold.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Shared, cheap to clone. With no condition recorded the process is ready.
#[derive(Clone, Default)]
pub struct Readiness {
    /// Condition name → `None` when it holds, `Some(reason)` when it does not.
    conditions: Arc<RwLock<BTreeMap<String, Option<String>>>>,
}

impl Readiness {
    /// A readiness with no conditions.
    pub fn new() -> Self {
        Readiness::default()
    }

    /// Records that `condition` holds.
    pub fn set_met(&self, condition: &str) {
        self.write(condition, None);
    }

    /// Records that `condition` does not hold, and why.
    pub fn set_unmet(&self, condition: &str, reason: impl Into<String>) {
        self.write(condition, Some(reason.into()));
    }

    fn write(&self, condition: &str, state: Option<String>) {
        let mut conditions = self.conditions.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        conditions.insert(condition.to_string(), state);
    }

    /// The conditions that do not hold, with their reasons, sorted by name.
    pub fn unmet(&self) -> Vec<(String, String)> {
        let conditions = self.conditions.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        conditions
            .iter()
            .filter_map(|(name, state)| state.as_ref().map(|reason| (name.clone(), reason.clone())))
            .collect()
    }

    /// True when every condition holds.
    pub fn is_ready(&self) -> bool {
        self.unmet().is_empty()
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness").field("unmet", &self.unmet()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_condition_holds() {
        let readiness = Readiness::new();
        assert!(readiness.is_ready());
        readiness.set_unmet("certificate", "no certificate yet");
        readiness.set_unmet("bundle", "not injected");
        assert_eq!(
            readiness.unmet(),
            vec![
                ("bundle".to_string(), "not injected".to_string()),
                ("certificate".to_string(), "no certificate yet".to_string())
            ]
        );
        readiness.clone().set_met("certificate");
        assert!(!readiness.is_ready());
        readiness.set_met("bundle");
        assert!(readiness.is_ready());
    }
}
