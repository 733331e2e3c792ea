//! Label selectors evaluated as the apiserver does: every `matchLabels` pair and every
//! `matchExpressions` requirement must hold (`In`, `NotIn`, `Exists`, `DoesNotExist`).
//! One definition for group membership, discovery and the gateway's caller check.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels a selector looks up.
pub trait Labels {
    /// The value of label `key`, if set.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// True when `labels` satisfy `selector`. An empty selector matches everything, as in the
/// API; an unknown operator matches nothing (admission refuses such selectors anyway).
pub fn matches(selector: &LabelSelector, labels: &(impl Labels + ?Sized)) -> bool {
    let pairs = selector.match_labels.iter().flatten().all(|(k, v)| labels.label(k) == Some(v.as_str()));
    pairs
        && selector.match_expressions.iter().flatten().all(|requirement| {
            let value = labels.label(&requirement.key);
            let values = requirement.values.as_deref().unwrap_or_default();
            let listed = |v: &str| values.iter().any(|listed| listed == v);
            match requirement.operator.as_str() {
                "In" => value.is_some_and(listed),
                "NotIn" => value.is_none_or(|v| !listed(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selector(value: serde_json::Value) -> LabelSelector {
        serde_json::from_value(value).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selectors_match_like_the_apiserver() {
        let team = labels(&[("team", "a"), ("tier", "db")]);
        assert!(matches(&selector(json!({})), &team), "empty matches all");
        assert!(matches(&selector(json!({"matchLabels": {"team": "a"}})), &team));
        assert!(!matches(&selector(json!({"matchLabels": {"team": "b"}})), &team));
        let expr = |op: &str, values: &[&str]| {
            selector(json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]}))
        };
        assert!(matches(&expr("In", &["db", "cache"]), &team));
        assert!(!matches(&expr("NotIn", &["db"]), &team));
        assert!(matches(&expr("NotIn", &["web"]), &labels(&[])), "NotIn holds for a missing key");
        assert!(matches(&expr("Exists", &[]), &team));
        assert!(!matches(&expr("DoesNotExist", &[]), &team));
        assert!(!matches(&expr("Near", &["db"]), &team), "unknown operators match nothing");
        let both = selector(
            json!({"matchLabels": {"team": "a"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}),
        );
        assert!(!matches(&both, &team), "every requirement must hold");
    }
}
