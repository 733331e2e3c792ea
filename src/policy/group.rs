//! Rules of `MCPServerGroup`.

use super::Findings;
use super::checks::{check_duration, check_selector};
use super::field::{FieldError, FieldPath};
use crate::crd::MCPServerGroup;

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
