//! Label selectors evaluated as the apiserver does: every `matchLabels` pair and every
//! `matchExpressions` requirement must hold (`In`, `NotIn`, `Exists`, `DoesNotExist`).
//! One definition for group membership, discovery and the gateway's caller check.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// True when `labels` satisfy `selector`. An empty selector matches everything, as in the
/// API; an unknown operator matches nothing (admission refuses such selectors anyway).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    pairs
        && selector.match_expressions.iter().flatten().all(|requirement| {
            let value = labels.get(&requirement.key);
            let values = requirement.values.as_deref().unwrap_or_default();
            match requirement.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
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
