//! Checks shared by several kinds: Go durations, label selectors and volume sources.

use std::time::Duration;

use k8s_openapi::api::core::v1::Volume;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use super::Findings;
use super::field::{FieldError, FieldPath};
use super::format::parse_positive_duration;

/// Volume sources a server pod may use: the restricted Pod Security Standards list. It is the
/// one list both the MCPServer rules and the restricted level check read, so `hostPath` and
/// every other node-bound source are refused by it (the baseline level's own hostPath control,
/// in `pod_security`, is the standard's rule for Pods that are not ours).
pub const ALLOWED_VOLUME_SOURCES: [&str; 8] =
    ["configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected", "downwardAPI", "csi", "ephemeral"];

/// Checks an optional Go duration and returns it when it is valid.
pub fn check_duration(text: Option<&str>, path: &FieldPath, findings: &mut Findings) -> Option<Duration> {
    let text = text?;
    match parse_positive_duration(text) {
        Ok(d) => Some(d),
        Err(detail) => {
            findings.errors.push(FieldError::invalid(path, text, detail));
            None
        }
    }
}

/// The source fields a volume sets (`hostPath`, `configMap`, …), by their JSON names.
pub fn volume_sources(volume: &Volume) -> Vec<String> {
    match serde_json::to_value(volume) {
        Ok(Value::Object(map)) => {
            map.into_iter().filter(|(k, v)| k != "name" && !v.is_null()).map(|(k, _)| k).collect()
        }
        _ => Vec::new(),
    }
}

/// Operators a label selector requirement may use.
const SELECTOR_OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// Checks that a label selector is non-empty and well formed.
pub fn check_selector(selector: &LabelSelector, path: &FieldPath, findings: &mut Findings) {
    let labels = selector.match_labels.as_ref().map_or(0, |m| m.len());
    let expressions = selector.match_expressions.as_ref().map_or(0, |e| e.len());
    if labels + expressions == 0 {
        findings.errors.push(FieldError::required(
            path,
            "an empty selector would match everything: set matchLabels or matchExpressions",
        ));
    }
    for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        let item = path.child("matchExpressions").index(i);
        let has_values = requirement.values.as_ref().is_some_and(|v| !v.is_empty());
        match requirement.operator.as_str() {
            "In" | "NotIn" if !has_values => findings.errors.push(FieldError::required(
                &item.child("values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if has_values => findings.errors.push(FieldError::forbidden(
                &item.child("values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                findings.errors.push(FieldError::not_supported(&item.child("operator"), other, &SELECTOR_OPERATORS))
            }
        }
    }
}
