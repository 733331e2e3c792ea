//! Rules of `MCPDiscoverySource`.

use std::time::Duration;

use super::Findings;
use super::checks::{check_duration, check_selector};
use super::field::{FieldError, FieldPath};
use super::format::is_dns1123_subdomain;
use super::server::validate_spec;
use super::state::PolicyState;
use crate::crd::{DiscoveryType, MCPDiscoverySource};

/// Shortest refresh interval: discovery must not hammer the API server.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Checks an MCPDiscoverySource.
pub fn validate_discovery(source: &MCPDiscoverySource, state: &PolicyState, findings: &mut Findings) {
    let spec = &source.spec;
    let path = FieldPath::new("spec");
    match spec.source_type {
        None => findings.errors.push(FieldError::required(&path.child("type"), "set type to Namespace or ConfigMap")),
        Some(DiscoveryType::Namespace) => {
            match &spec.namespace_selector {
                Some(selector) => check_selector(selector, &path.child("namespaceSelector"), findings),
                None => findings.errors.push(FieldError::required(
                    &path.child("namespaceSelector"),
                    "type Namespace needs a namespaceSelector choosing the namespaces to discover",
                )),
            }
            if spec.config_map_ref.is_some() {
                findings.errors.push(FieldError::forbidden(
                    &path.child("configMapRef"),
                    "only for type ConfigMap: remove it, or change type to ConfigMap",
                ));
            }
        }
        Some(DiscoveryType::ConfigMap) => {
            let name = spec.config_map_ref.as_ref().and_then(|r| r.name.as_deref());
            match name {
                None | Some("") => findings.errors.push(FieldError::required(
                    &path.child("configMapRef").child("name"),
                    "type ConfigMap needs the name of the ConfigMap holding the server definitions",
                )),
                Some(name) if !is_dns1123_subdomain(name) => findings.errors.push(FieldError::invalid(
                    &path.child("configMapRef").child("name"),
                    name,
                    "must be a valid ConfigMap name (a DNS-1123 subdomain)",
                )),
                Some(_) => {}
            }
            if spec.namespace_selector.is_some() {
                findings.errors.push(FieldError::forbidden(
                    &path.child("namespaceSelector"),
                    "only for type Namespace: remove it, or change type to Namespace",
                ));
            }
        }
    }
    let refresh_path = path.child("refreshInterval");
    if let Some(interval) = check_duration(spec.refresh_interval.as_deref(), &refresh_path, findings)
        && interval < MIN_REFRESH_INTERVAL
    {
        findings.errors.push(FieldError::invalid(
            &refresh_path,
            spec.refresh_interval.clone().unwrap_or_default(),
            "must be at least 10s so discovery does not overload the API server",
        ));
    }
    if let Some(template) = spec.provider_template.as_ref().and_then(|t| t.spec.as_ref()) {
        validate_spec(template, &path.child("providerTemplate").child("spec"), true, state, findings);
    }
}
