//! Rules of `MCPServerGroup`.

use super::Findings;
use super::field::{FieldError, FieldPath};
use super::server::check_duration;
use crate::crd::MCPServerGroup;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Checks an MCPServerGroup.
pub fn validate_group(group: &MCPServerGroup, findings: &mut Findings) {
    let spec = FieldPath::new("spec");
    match &group.spec.selector {
        Some(selector) => check_selector(selector, &spec.child("selector"), findings),
        None => findings.errors.push(FieldError::required(
            &spec.child("selector"),
            "select the member MCPServers by label, e.g. matchLabels: {mcp-hangar.io/category: database}",
        )),
    }
    if let Some(failover) = &group.spec.failover {
        check_duration(failover.retry_delay.as_deref(), &spec.child("failover").child("retryDelay"), findings);
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
