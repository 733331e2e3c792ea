//! Rules of the `MCPAdmissionPolicy` object itself.

use super::Findings;
use super::field::{FieldError, FieldPath};
use super::format::{Cidr, is_host_pattern};
use super::state::PolicyState;
use crate::crd::{ADMISSION_POLICY_NAME, MCPAdmissionPolicy};

/// Checks an admission policy against the profiles the cluster knows.
pub fn validate_admission_policy(policy: &MCPAdmissionPolicy, state: &PolicyState, findings: &mut Findings) {
    let errors = &mut findings.errors;
    if let Some(name) = policy.metadata.name.as_deref()
        && name != ADMISSION_POLICY_NAME
    {
        errors.push(FieldError::invalid(
            &FieldPath::new("metadata").child("name"),
            name,
            "the admission policy is a singleton: name it \"default\" (objects with other names would be ignored)",
        ));
    }
    let spec = &policy.spec;
    let path = FieldPath::new("spec");
    if let Some(images) = &spec.images {
        for (i, prefix) in images.allowed_registries.iter().flatten().enumerate() {
            if prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c.is_ascii_uppercase()) {
                errors.push(FieldError::invalid(
                    &path.child("images").child("allowedRegistries").index(i),
                    prefix.as_str(),
                    "must be a lowercase image prefix such as ghcr.io/my-org/",
                ));
            }
        }
    }
    if let Some(endpoints) = &spec.endpoints {
        for (i, host) in endpoints.allowed_hosts.iter().flatten().enumerate() {
            if !is_host_pattern(host) {
                errors.push(FieldError::invalid(
                    &path.child("endpoints").child("allowedHosts").index(i),
                    host.as_str(),
                    "must be a host name such as mcp.example.com or *.example.com",
                ));
            }
        }
        for (i, cidr) in endpoints.blocked_cidrs.iter().flatten().enumerate() {
            if let Err(detail) = Cidr::parse(cidr) {
                errors.push(FieldError::invalid(
                    &path.child("endpoints").child("blockedCIDRs").index(i),
                    cidr.as_str(),
                    detail,
                ));
            }
        }
    }
    if let Some(profile) = spec.default_profile.as_deref()
        && state.profile(profile).is_none()
    {
        errors.push(FieldError::not_supported(&path.child("defaultProfile"), profile, &state.profile_names()));
    }
}
