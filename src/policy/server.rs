//! Rules of `MCPServer`: the whole object, or a partial spec (a discovery template).

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{EnvVar, SecurityContext};

use super::Findings;
use super::checks::{ALLOWED_VOLUME_SOURCES, check_duration, volume_sources};
use super::field::{FieldError, FieldPath};
use super::format::{
    Cidr, blocked_host_reason, dns1035_label_error, host_matches, is_dns1123_subdomain, is_env_var_name,
    is_in_cluster_host, parse_image, parse_quantity, path_within,
};
use super::profile::{EffectiveProfile, ProfileRef};
use super::state::PolicyState;
use crate::crd::{DenyOrWarn, LatestTagAction, MCPServer, MCPServerSpec, ProfileSource, ServerMode, ToolsConfig};

pub use crate::crd::MAX_SERVER_NAME_LEN;
/// Longest endpoint URL.
pub const MAX_ENDPOINT_LEN: usize = 2048;
/// Words that mark an environment variable as a credential.
pub const SECRET_ENV_MARKERS: [&str; 8] =
    ["TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "APIKEY", "PRIVATE_KEY", "CREDENTIAL"];

/// Checks a whole MCPServer; `old` is the stored object on UPDATE.
pub fn validate_server(server: &MCPServer, old: Option<&MCPServer>, state: &PolicyState, findings: &mut Findings) {
    if let Some(name) = server.metadata.name.as_deref()
        && let Some(detail) = dns1035_label_error(name, MAX_SERVER_NAME_LEN)
    {
        let detail = format!("{detail}; the name also names the Deployment and Service, so keep it short");
        findings.errors.push(FieldError::invalid(&FieldPath::new("metadata").child("name"), name, detail));
    }
    let spec_path = FieldPath::new("spec");
    validate_spec(&server.spec, &spec_path, false, state, findings);
    if let Some(old) = old
        && let (Some(before), Some(after)) = (old.spec.mode, server.spec.mode)
        && before != after
    {
        findings.errors.push(FieldError::invalid(
            &spec_path.child("mode"),
            after.as_str(),
            format!(
                "field is immutable (was {:?}): delete and recreate the MCPServer to change its mode",
                before.as_str()
            ),
        ));
    }
}

/// Checks an MCPServer spec. A `partial` spec (a discovery template) need not name its mode,
/// image or endpoint; every field it does set must obey the same rules.
pub fn validate_spec(
    spec: &MCPServerSpec,
    path: &FieldPath,
    partial: bool,
    state: &PolicyState,
    findings: &mut Findings,
) {
    check_mode(spec, path, partial, findings);
    // A field the mode forbids is reported once, as forbidden, not also for its format.
    if let Some(image) = &spec.image
        && spec.mode != Some(ServerMode::Remote)
    {
        check_image(image, &path.child("image"), state, findings);
    }
    if let Some(endpoint) = &spec.endpoint
        && spec.mode != Some(ServerMode::Container)
    {
        check_endpoint(endpoint, &path.child("endpoint"), state, findings);
    }
    check_durations(spec, path, findings);
    if let Some(tools) = &spec.tools {
        check_tool_lists(tools, &path.child("tools"), findings);
    }
    if let Some(env) = &spec.env {
        check_env(env, &path.child("env"), state, findings);
    }
    if let Some(sc) = &spec.security_context {
        check_security_context(sc, &path.child("securityContext"), findings);
    }
    check_volumes(spec, path, findings);
    check_resources(spec, &path.child("resources"), findings);
    check_permission_profile(spec, &path.child("permissionProfile"), state, findings);
    check_profile_constraints(spec, path, state, findings);
    check_limits(spec, path, state, findings);
    if let Some(sa) = &spec.service_account_name
        && !is_dns1123_subdomain(sa)
    {
        findings.errors.push(FieldError::invalid(
            &path.child("serviceAccountName"),
            sa.as_str(),
            "must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')",
        ));
    }
}

fn check_mode(spec: &MCPServerSpec, path: &FieldPath, partial: bool, findings: &mut Findings) {
    let errors = &mut findings.errors;
    match spec.mode {
        None if !partial => errors.push(FieldError::required(
            &path.child("mode"),
            "set spec.mode to \"container\" (the operator runs spec.image) or \"remote\" (an existing spec.endpoint)",
        )),
        None => {}
        Some(ServerMode::Container) => {
            if spec.image.is_none() {
                errors.push(FieldError::required(
                    &path.child("image"),
                    "container mode needs an image, e.g. ghcr.io/org/server:1.0.0",
                ));
            }
            if spec.endpoint.is_some() {
                errors.push(FieldError::forbidden(
                    &path.child("endpoint"),
                    "container mode serves from its own Service: remove spec.endpoint, or use mode remote",
                ));
            }
        }
        Some(ServerMode::Remote) => {
            if spec.endpoint.is_none() {
                errors.push(FieldError::required(
                    &path.child("endpoint"),
                    "remote mode needs the server's URL, e.g. https://mcp.example.com/mcp",
                ));
            }
            let container_only = [
                ("image", spec.image.is_some()),
                ("volumes", spec.volumes.is_some()),
                ("volumeMounts", spec.volume_mounts.is_some()),
                ("securityContext", spec.security_context.is_some()),
            ];
            for (field, set) in container_only {
                if set {
                    errors.push(FieldError::forbidden(
                        &path.child(field),
                        format!("remote mode runs no container: remove spec.{field}, or use mode container"),
                    ));
                }
            }
        }
    }
}

fn check_image(image: &str, path: &FieldPath, state: &PolicyState, findings: &mut Findings) {
    let reference = match parse_image(image) {
        Ok(reference) => reference,
        Err(detail) => {
            findings.errors.push(FieldError::invalid(
                path,
                image,
                format!("{detail}; expected registry/repository:tag or registry/repository@sha256:<digest>"),
            ));
            return;
        }
    };
    let registries = state.allowed_registries();
    if !registries.is_empty() && !registries.iter().any(|prefix| image.starts_with(prefix.as_str())) {
        findings.errors.push(FieldError::forbidden(
            path,
            format!("the admission policy allows images only from: {}", registries.join(", ")),
        ));
    }
    if reference.digest.is_none() && state.require_digest() {
        findings.errors.push(FieldError::invalid(
            path,
            image,
            "the admission policy requires images pinned by digest: append @sha256:<digest>",
        ));
    }
    let mutable = match (reference.digest, reference.tag) {
        (Some(_), _) => None,
        (None, None) => Some(format!("image {image:?} has no tag and resolves to \"latest\"")),
        (None, Some("latest")) => Some("image tag \"latest\" is mutable".to_string()),
        (None, Some(_)) => None,
    };
    if let Some(problem) = mutable {
        match state.latest_tag() {
            LatestTagAction::Allow => {}
            LatestTagAction::Warn => {
                findings.warnings.push(format!("{path}: {problem}; pin a version tag or an @sha256 digest"))
            }
            LatestTagAction::Deny => findings.errors.push(FieldError::invalid(
                path,
                image,
                format!("{problem}, which the admission policy denies: pin a version tag or an @sha256 digest"),
            )),
        }
    }
}

fn check_endpoint(endpoint: &str, path: &FieldPath, state: &PolicyState, findings: &mut Findings) {
    let errors = &mut findings.errors;
    if endpoint.len() > MAX_ENDPOINT_LEN {
        errors.push(FieldError::too_long(path, MAX_ENDPOINT_LEN));
        return;
    }
    let url = match url::Url::parse(endpoint) {
        Ok(url) if url.has_host() => url,
        _ => {
            errors.push(FieldError::invalid(
                path,
                endpoint,
                "must be an absolute URL such as https://mcp.example.com/mcp",
            ));
            return;
        }
    };
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" => {}
        "http" if is_in_cluster_host(host) && state.allow_http_in_cluster() => {}
        "http" if is_in_cluster_host(host) => errors.push(FieldError::invalid(
            path,
            endpoint,
            "the admission policy does not allow plain http, even in the cluster: use https",
        )),
        "http" => errors.push(FieldError::invalid(
            path,
            endpoint,
            "plain http is allowed only for in-cluster hosts ending in .svc or .svc.cluster.local: use https",
        )),
        other => {
            errors.push(FieldError::invalid(path, endpoint, format!("scheme {other:?} is not supported: use https")))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        errors.push(FieldError::forbidden(
            path,
            "credentials in the URL are not allowed: remove the user-info and pass credentials from a Secret",
        ));
    }
    if url.fragment().is_some() {
        errors.push(FieldError::invalid(path, endpoint, "must not contain a fragment (#...): remove it"));
    }
    if let Some(host) = url.host()
        && let Some(reason) = blocked_host_reason(&host)
    {
        errors.push(FieldError::forbidden(
            path,
            format!("host {host} {reason}: point the endpoint at the server's real address"),
        ));
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = ip
        && let Some(cidr) = state.blocked_cidrs().iter().find(|c| Cidr::parse(c).is_ok_and(|c| c.contains(ip)))
    {
        errors.push(FieldError::forbidden(path, format!("host {ip} is in {cidr}, which the admission policy blocks")));
    }
    let allowed = state.allowed_hosts();
    if !allowed.is_empty() && !allowed.iter().any(|pattern| host_matches(pattern, host)) {
        errors.push(FieldError::forbidden(
            path,
            format!("host {host:?} is not allowed by the admission policy; allowed hosts: {}", allowed.join(", ")),
        ));
    }
}

fn check_durations(spec: &MCPServerSpec, path: &FieldPath, findings: &mut Findings) {
    check_duration(spec.idle_ttl.as_deref(), &path.child("idleTTL"), findings);
    check_duration(spec.startup_timeout.as_deref(), &path.child("startupTimeout"), findings);
    if let Some(hc) = &spec.health_check {
        let hc_path = path.child("healthCheck");
        let interval = check_duration(hc.interval.as_deref(), &hc_path.child("interval"), findings);
        let timeout = check_duration(hc.timeout.as_deref(), &hc_path.child("timeout"), findings);
        if let (Some(interval), Some(timeout)) = (interval, timeout)
            && timeout >= interval
        {
            findings.errors.push(FieldError::invalid(
                &hc_path.child("timeout"),
                hc.timeout.clone().unwrap_or_default(),
                format!("must be shorter than healthCheck.interval ({})", hc.interval.clone().unwrap_or_default()),
            ));
        }
    }
    if let Some(cb) = &spec.circuit_breaker {
        check_duration(cb.reset_timeout.as_deref(), &path.child("circuitBreaker").child("resetTimeout"), findings);
    }
}

/// Most tool names one warning lists.
const MAX_NAMES_WARNED: usize = 5;

/// `allowList` and `denyList`: valid, unique names; a name on both is denied (a warning).
fn check_tool_lists(tools: &ToolsConfig, path: &FieldPath, findings: &mut Findings) {
    if let Some(allow) = &tools.allow_list {
        check_tool_names(allow, &path.child("allowList"), findings);
    }
    if let Some(deny) = &tools.deny_list {
        check_tool_names(deny, &path.child("denyList"), findings);
        // A set, not a scan per name: both lists may be long (hostile input).
        let allowed: HashSet<&str> = tools.allow_list.iter().flatten().map(String::as_str).collect();
        let both: Vec<&str> = deny.iter().map(String::as_str).filter(|t| allowed.contains(t)).collect();
        if !both.is_empty() {
            // At most a few names: a warning travels in a response header.
            let mut names = both.iter().take(MAX_NAMES_WARNED).copied().collect::<Vec<_>>().join(", ");
            if both.len() > MAX_NAMES_WARNED {
                names.push_str(&format!(" and {} more", both.len() - MAX_NAMES_WARNED));
            }
            findings.warnings.push(format!(
                "{}: {names} also in allowList: denyList wins, the tool is not exposed",
                path.child("denyList"),
            ));
        }
    }
}

fn check_tool_names(names: &[String], path: &FieldPath, findings: &mut Findings) {
    let mut seen = HashSet::new();
    for (i, tool) in names.iter().enumerate() {
        let item = path.index(i);
        let valid_chars = tool.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if tool.is_empty() || tool.len() > 128 || !valid_chars {
            findings.errors.push(FieldError::invalid(
                &item,
                tool.as_str(),
                "a tool name must be 1 to 128 characters of letters, digits, '_', '.' or '-'",
            ));
        } else if !seen.insert(tool.as_str()) {
            findings.errors.push(FieldError::duplicate(&item, tool.as_str()));
        }
    }
}

/// True when an environment variable name looks like it holds a credential.
pub fn is_secret_env_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_ENV_MARKERS.iter().any(|marker| upper.contains(marker))
}

fn check_env(env: &[EnvVar], path: &FieldPath, state: &PolicyState, findings: &mut Findings) {
    let mut seen = HashSet::new();
    for (i, var) in env.iter().enumerate() {
        let item = path.index(i);
        if var.name.is_empty() {
            findings.errors.push(FieldError::required(&item.child("name"), "every environment variable needs a name"));
        } else if !is_env_var_name(&var.name) {
            findings.errors.push(FieldError::invalid(
                &item.child("name"),
                var.name.as_str(),
                "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit",
            ));
        } else if !seen.insert(var.name.as_str()) {
            findings.errors.push(FieldError::duplicate(&item.child("name"), var.name.as_str()));
        }
        if var.value.is_some() && var.value_from.is_some() {
            findings.errors.push(FieldError::invalid(
                &item.child("valueFrom"),
                "",
                "may not be specified when `value` is not empty: set one of value or valueFrom",
            ));
        }
        if var.value.is_some() && is_secret_env_name(&var.name) {
            let detail = format!(
                "{:?} looks like a credential and must not be a literal value: store it in a Secret and use valueFrom.secretKeyRef",
                var.name
            );
            match state.plaintext_secrets() {
                DenyOrWarn::Deny => findings.errors.push(FieldError::forbidden(&item.child("value"), detail)),
                DenyOrWarn::Warn => findings.warnings.push(format!("{}: {detail}", item.child("value"))),
            }
        }
    }
}

fn check_security_context(sc: &SecurityContext, path: &FieldPath, findings: &mut Findings) {
    let errors = &mut findings.errors;
    let mut forbid = |field: FieldPath, detail: &str| errors.push(FieldError::forbidden(&field, detail));
    if sc.privileged == Some(true) {
        forbid(path.child("privileged"), "privileged containers are not allowed: remove it or set it to false");
    }
    if sc.allow_privilege_escalation == Some(true) {
        forbid(
            path.child("allowPrivilegeEscalation"),
            "privilege escalation is not allowed: remove it or set it to false",
        );
    }
    if sc.run_as_non_root == Some(false) {
        forbid(path.child("runAsNonRoot"), "servers must run as non-root: remove it or set it to true");
    }
    if let Some(uid) = sc.run_as_user
        && uid < 1
    {
        let field = path.child("runAsUser");
        errors.push(FieldError::invalid(&field, uid, "must be at least 1: servers may not run as root (uid 0)"));
    }
    if let Some(drop) = sc.capabilities.as_ref().and_then(|c| c.drop.as_ref())
        && !drop.iter().any(|c| c == "ALL")
    {
        errors.push(FieldError::forbidden(
            &path.child("capabilities").child("drop"),
            "must include \"ALL\": remove the field to keep the secure default",
        ));
    }
    if let Some(seccomp) = &sc.seccomp_profile
        && seccomp.type_ == "Unconfined"
    {
        errors.push(FieldError::forbidden(
            &path.child("seccompProfile").child("type"),
            "Unconfined seccomp is not allowed: use RuntimeDefault or Localhost",
        ));
    }
    if let Some(apparmor) = &sc.app_armor_profile
        && apparmor.type_ == "Unconfined"
    {
        errors.push(FieldError::forbidden(
            &path.child("appArmorProfile").child("type"),
            "Unconfined AppArmor is not allowed: use RuntimeDefault or Localhost",
        ));
    }
    if sc.proc_mount.as_deref() == Some("Unmasked") {
        errors.push(FieldError::forbidden(&path.child("procMount"), "an unmasked /proc is not allowed: use Default"));
    }
    if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
        errors.push(FieldError::forbidden(
            &path.child("windowsOptions").child("hostProcess"),
            "host processes are not allowed: remove it or set it to false",
        ));
    }
}

fn check_volumes(spec: &MCPServerSpec, path: &FieldPath, findings: &mut Findings) {
    let mut names = HashSet::new();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let item = path.child("volumes").index(i);
        if !names.insert(volume.name.as_str()) {
            findings.errors.push(FieldError::duplicate(&item.child("name"), volume.name.as_str()));
        }
        for source in volume_sources(volume) {
            if !ALLOWED_VOLUME_SOURCES.contains(&source.as_str()) {
                findings.errors.push(FieldError::forbidden(
                    &item.child(&source),
                    format!("{source} volumes are not allowed: use one of {}", ALLOWED_VOLUME_SOURCES.join(", ")),
                ));
            }
        }
    }
    let declared: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    for (i, mount) in spec.volume_mounts.iter().flatten().enumerate() {
        if !names.contains(mount.name.as_str()) {
            findings.errors.push(FieldError::not_supported(
                &path.child("volumeMounts").index(i).child("name"),
                mount.name.as_str(),
                &declared,
            ));
        }
    }
}

fn check_resources(spec: &MCPServerSpec, path: &FieldPath, findings: &mut Findings) {
    let Some(resources) = &spec.resources else { return };
    let empty = BTreeMap::new();
    let limits = resources.limits.as_ref().unwrap_or(&empty);
    for (kind, quantities) in [("requests", resources.requests.as_ref()), ("limits", resources.limits.as_ref())] {
        for (name, quantity) in quantities.into_iter().flatten() {
            if parse_quantity(&quantity.0).is_none() {
                findings.errors.push(FieldError::invalid(
                    &path.child(kind).key(name),
                    quantity.0.as_str(),
                    "must be a quantity such as 100m, 0.5, 128Mi or 1Gi",
                ));
            }
        }
    }
    for (name, request) in resources.requests.iter().flatten() {
        let Some(limit) = limits.get(name) else { continue };
        if let (Some(r), Some(l)) = (parse_quantity(&request.0), parse_quantity(&limit.0))
            && r > l
        {
            findings.errors.push(FieldError::invalid(
                &path.child("requests").key(name),
                request.0.as_str(),
                format!("must be less than or equal to {name} limit of {}", limit.0),
            ));
        }
    }
}

fn check_permission_profile(spec: &MCPServerSpec, path: &FieldPath, state: &PolicyState, findings: &mut Findings) {
    let Some(profile) = &spec.permission_profile else { return };
    let errors = &mut findings.errors;
    match profile.source {
        None => errors.push(FieldError::required(&path.child("type"), "set type to \"builtin\" or \"configmap\"")),
        Some(ProfileSource::Builtin) => match profile.name.as_deref() {
            None => errors.push(FieldError::required(
                &path.child("name"),
                format!("name a permission profile: {}", state.profile_names().join(", ")),
            )),
            Some(name) if state.profile(name).is_none() => {
                errors.push(FieldError::not_supported(&path.child("name"), name, &state.profile_names()))
            }
            Some(_) => {
                if profile.key.is_some() {
                    errors.push(FieldError::forbidden(
                        &path.child("key"),
                        "key is only for configmap profiles: remove it",
                    ));
                }
            }
        },
        Some(ProfileSource::Configmap) => {
            match profile.name.as_deref() {
                None => {
                    errors.push(FieldError::required(&path.child("name"), "name the ConfigMap that holds the profile"))
                }
                Some(name) if !is_dns1123_subdomain(name) => errors.push(FieldError::invalid(
                    &path.child("name"),
                    name,
                    "must be a valid ConfigMap name (a DNS-1123 subdomain)",
                )),
                Some(_) => {}
            }
            if profile.key.as_deref().is_none_or(str::is_empty) {
                errors.push(FieldError::required(
                    &path.child("key"),
                    "name the ConfigMap key that holds the profile JSON",
                ));
            }
        }
    }
}

/// Capabilities, mounts and network rules checked against the server's profile, as far as
/// admission can know it ([`ProfileRef::resolve_offline`]). A reference that names no usable
/// profile is reported by [`check_permission_profile`] alone.
fn check_profile_constraints(spec: &MCPServerSpec, path: &FieldPath, state: &PolicyState, findings: &mut Findings) {
    let Ok(resolved) = ProfileRef::of(spec, state).and_then(|r| r.resolve_offline(state)) else { return };
    let name = resolved.name;
    let profile = EffectiveProfile::of(&resolved.spec);
    let addable = profile.addable_capabilities();
    let caps = spec.security_context.as_ref().and_then(|sc| sc.capabilities.as_ref());
    for (i, cap) in caps.and_then(|c| c.add.as_ref()).into_iter().flatten().enumerate() {
        if !addable.contains(&cap.trim_start_matches("CAP_")) {
            let allowed = if addable.is_empty() { "none".to_string() } else { addable.join(", ") };
            findings.errors.push(FieldError::forbidden(
                &path.child("securityContext").child("capabilities").child("add").index(i),
                format!("capability {cap:?} may not be added under profile {name:?}: allowed {allowed}"),
            ));
        }
    }
    for (i, mount) in spec.volume_mounts.iter().flatten().enumerate() {
        let item = path.child("volumeMounts").index(i);
        let writable = profile.write_paths.iter().any(|p| path_within(&mount.mount_path, p));
        let readable = writable || profile.read_paths.iter().any(|p| path_within(&mount.mount_path, p));
        if !readable {
            findings.errors.push(FieldError::forbidden(
                &item.child("mountPath"),
                format!(
                    "profile {name:?} allows mounts only under {} (read-only) and {} (read-write)",
                    list_or_nothing(&profile.read_paths),
                    list_or_nothing(&profile.write_paths)
                ),
            ));
        } else if !writable && mount.read_only != Some(true) {
            findings.errors.push(FieldError::required(
                &item.child("readOnly"),
                format!(
                    "profile {name:?} allows writing only under {}: set readOnly: true",
                    list_or_nothing(&profile.write_paths)
                ),
            ));
        }
    }
    if !profile.host_rules.is_empty() {
        findings.warnings.push(format!(
            "{}: profile {name:?} has host-name egress rules ({}) that NetworkPolicy cannot enforce; that traffic stays blocked",
            path.child("permissionProfile"),
            profile.host_rules.join(", ")
        ));
    }
}

fn list_or_nothing(paths: &[String]) -> String {
    if paths.is_empty() { "nowhere".to_string() } else { paths.join(", ") }
}

fn check_limits(spec: &MCPServerSpec, path: &FieldPath, state: &PolicyState, findings: &mut Findings) {
    if let Some(replicas) = spec.replicas
        && replicas > state.max_replicas()
    {
        findings.errors.push(FieldError::invalid(
            &path.child("replicas"),
            replicas,
            format!("must be at most {} (the cluster's admission policy)", state.max_replicas()),
        ));
    }
    let rate_limit = spec.tools.as_ref().and_then(|t| t.rate_limit.as_ref());
    if rate_limit.is_some_and(|r| r.burst_size.is_some() && r.requests_per_minute.is_none()) {
        findings.errors.push(FieldError::required(
            &path.child("tools").child("rateLimit").child("requestsPerMinute"),
            "burstSize needs requestsPerMinute: the bucket refills at that rate",
        ));
    }
    let rpm = rate_limit.and_then(|r| r.requests_per_minute);
    if let Some(rpm) = rpm
        && rpm > state.max_requests_per_minute()
    {
        findings.errors.push(FieldError::invalid(
            &path.child("tools").child("rateLimit").child("requestsPerMinute"),
            rpm,
            format!("must be at most {} (the cluster's admission policy)", state.max_requests_per_minute()),
        ));
    }
}
