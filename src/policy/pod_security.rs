//! The Kubernetes Pod Security Standards (v1.37), baseline and restricted, as field errors.
//! Conformance is tested against the upstream fixtures vendored in `tests/fixtures/psa`.

use k8s_openapi::api::core::v1::{Capabilities, ContainerPort, Lifecycle, PodSpec, Probe, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::checks::{ALLOWED_VOLUME_SOURCES, volume_sources};
use super::field::{FieldError, FieldPath};
use super::profile::level_capabilities;
use crate::crd::PodSecurityLevel;

/// SELinux types the baseline level allows.
const SELINUX_TYPES: [&str; 5] = ["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"];
/// Sysctls the baseline level allows.
const SAFE_SYSCTLS: [&str; 15] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_notsent_lowat",
    "net.ipv4.ip_default_ttl",
];
const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// The fields the checks read from any kind of container.
struct ContainerView<'a> {
    path: FieldPath,
    security_context: Option<&'a SecurityContext>,
    ports: Option<&'a Vec<ContainerPort>>,
    probes: [(&'static str, Option<&'a Probe>); 3],
    lifecycle: Option<&'a Lifecycle>,
}

/// Builds the view of a `Container` or an `EphemeralContainer`: distinct types, same fields.
macro_rules! container_view {
    ($container:expr, $path:expr) => {{
        let c = $container;
        ContainerView {
            path: $path,
            security_context: c.security_context.as_ref(),
            ports: c.ports.as_ref(),
            probes: [
                ("livenessProbe", c.liveness_probe.as_ref()),
                ("readinessProbe", c.readiness_probe.as_ref()),
                ("startupProbe", c.startup_probe.as_ref()),
            ],
            lifecycle: c.lifecycle.as_ref(),
        }
    }};
}

impl ContainerView<'_> {
    fn sc_path(&self, field: &str) -> FieldPath {
        self.path.child("securityContext").child(field)
    }
}

fn containers<'a>(spec: &'a PodSpec, path: &FieldPath) -> Vec<ContainerView<'a>> {
    let mut out = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        out.push(container_view!(c, path.child("containers").index(i)));
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        out.push(container_view!(c, path.child("initContainers").index(i)));
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        out.push(container_view!(c, path.child("ephemeralContainers").index(i)));
    }
    out
}

/// Checks a pod against a level. `meta_path`/`spec_path` are where the pod's metadata and
/// spec sit (`metadata`/`spec` for a Pod, `spec.template.metadata`/`spec.template.spec` for a Deployment).
pub fn check_pod(
    meta: &ObjectMeta,
    spec: &PodSpec,
    meta_path: &FieldPath,
    spec_path: &FieldPath,
    level: PodSecurityLevel,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let views = containers(spec, spec_path);
    // The restricted capability rule is stricter than the baseline one, except on Windows pods it exempts.
    let windows = spec.os.as_ref().is_some_and(|os| os.name == "windows");
    let baseline_capabilities = level == PodSecurityLevel::Baseline || windows;
    check_baseline(meta, spec, meta_path, spec_path, &views, baseline_capabilities, &mut errors);
    if level == PodSecurityLevel::Restricted {
        check_restricted(spec, spec_path, &views, &mut errors);
    }
    errors
}

fn forbidden(errors: &mut Vec<FieldError>, path: FieldPath, level: &str, detail: &str) {
    errors.push(FieldError::forbidden(&path, format!("{detail} (Pod Security Standards, {level})")));
}

fn check_baseline(
    meta: &ObjectMeta,
    spec: &PodSpec,
    meta_path: &FieldPath,
    path: &FieldPath,
    views: &[ContainerView<'_>],
    check_capabilities: bool,
    errors: &mut Vec<FieldError>,
) {
    const LEVEL: &str = "baseline";
    let pod_sc = spec.security_context.as_ref();
    if pod_sc.and_then(|sc| sc.windows_options.as_ref()).and_then(|w| w.host_process) == Some(true) {
        let p = path.child("securityContext").child("windowsOptions").child("hostProcess");
        forbidden(errors, p, LEVEL, "host processes are not allowed");
    }
    for (field, set) in [("hostNetwork", spec.host_network), ("hostPID", spec.host_pid), ("hostIPC", spec.host_ipc)] {
        if set == Some(true) {
            forbidden(errors, path.child(field), LEVEL, "host namespaces are not allowed");
        }
    }
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        if volume.host_path.is_some() {
            forbidden(
                errors,
                path.child("volumes").index(i).child("hostPath"),
                LEVEL,
                "hostPath volumes are not allowed",
            );
        }
    }
    if let Some(sc) = pod_sc {
        check_selinux(sc.se_linux_options.as_ref(), &path.child("securityContext"), errors);
        check_unconfined(
            sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            sc.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
            &path.child("securityContext"),
            errors,
        );
        for (i, sysctl) in sc.sysctls.iter().flatten().enumerate() {
            if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
                let p = path.child("securityContext").child("sysctls").index(i).child("name");
                forbidden(errors, p, LEVEL, &format!("sysctl {:?} is not in the safe set", sysctl.name));
            }
        }
    }
    for (key, value) in meta.annotations.iter().flatten() {
        if key.starts_with(APPARMOR_ANNOTATION_PREFIX)
            && !(value.is_empty() || value == "runtime/default" || value.starts_with("localhost/"))
        {
            forbidden(
                errors,
                meta_path.child("annotations").key(key),
                LEVEL,
                "AppArmor profiles other than runtime/default or localhost/* are not allowed",
            );
        }
    }
    let user_namespaced = spec.host_users == Some(false);
    for view in views {
        if let Some(sc) = view.security_context {
            if sc.privileged == Some(true) {
                forbidden(errors, view.sc_path("privileged"), LEVEL, "privileged containers are not allowed");
            }
            if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
                forbidden(
                    errors,
                    view.sc_path("windowsOptions").child("hostProcess"),
                    LEVEL,
                    "host processes are not allowed",
                );
            }
            if check_capabilities {
                check_added_capabilities(
                    sc.capabilities.as_ref(),
                    view,
                    level_capabilities(PodSecurityLevel::Baseline),
                    LEVEL,
                    errors,
                );
            }
            check_selinux(sc.se_linux_options.as_ref(), &view.path.child("securityContext"), errors);
            if !user_namespaced && sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
                forbidden(
                    errors,
                    view.sc_path("procMount"),
                    LEVEL,
                    "an unmasked /proc is allowed only with hostUsers: false",
                );
            }
            check_unconfined(
                sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
                sc.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
                &view.path.child("securityContext"),
                errors,
            );
        }
        for (i, port) in view.ports.into_iter().flatten().enumerate() {
            if port.host_port.is_some_and(|p| p != 0) {
                forbidden(
                    errors,
                    view.path.child("ports").index(i).child("hostPort"),
                    LEVEL,
                    "host ports are not allowed",
                );
            }
        }
        for (name, probe) in view.probes {
            if let Some(probe) = probe {
                let http_host = probe.http_get.as_ref().and_then(|h| h.host.as_deref());
                let tcp_host = probe.tcp_socket.as_ref().and_then(|t| t.host.as_deref());
                check_handler_host(http_host, tcp_host, &view.path.child(name), errors);
            }
        }
        if let Some(lifecycle) = view.lifecycle {
            for (name, handler) in
                [("postStart", lifecycle.post_start.as_ref()), ("preStop", lifecycle.pre_stop.as_ref())]
            {
                if let Some(handler) = handler {
                    let http_host = handler.http_get.as_ref().and_then(|h| h.host.as_deref());
                    let tcp_host = handler.tcp_socket.as_ref().and_then(|t| t.host.as_deref());
                    check_handler_host(http_host, tcp_host, &view.path.child("lifecycle").child(name), errors);
                }
            }
        }
    }
}

/// Seccomp and AppArmor may not be Unconfined, in a pod or a container securityContext.
fn check_unconfined(seccomp: Option<&str>, apparmor: Option<&str>, sc_path: &FieldPath, errors: &mut Vec<FieldError>) {
    if seccomp == Some("Unconfined") {
        forbidden(
            errors,
            sc_path.child("seccompProfile").child("type"),
            "baseline",
            "Unconfined seccomp is not allowed",
        );
    }
    if apparmor == Some("Unconfined") {
        forbidden(
            errors,
            sc_path.child("appArmorProfile").child("type"),
            "baseline",
            "Unconfined AppArmor is not allowed",
        );
    }
}

fn check_handler_host(http: Option<&str>, tcp: Option<&str>, path: &FieldPath, errors: &mut Vec<FieldError>) {
    if http.is_some_and(|h| !h.is_empty()) {
        forbidden(errors, path.child("httpGet").child("host"), "baseline", "probes and hooks may not name a host");
    }
    if tcp.is_some_and(|h| !h.is_empty()) {
        forbidden(errors, path.child("tcpSocket").child("host"), "baseline", "probes and hooks may not name a host");
    }
}

fn check_selinux(
    options: Option<&k8s_openapi::api::core::v1::SELinuxOptions>,
    sc_path: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let Some(options) = options else { return };
    let path = sc_path.child("seLinuxOptions");
    if !SELINUX_TYPES.contains(&options.type_.as_deref().unwrap_or_default()) {
        forbidden(errors, path.child("type"), "baseline", "this SELinux type is not allowed");
    }
    if options.user.as_deref().is_some_and(|u| !u.is_empty()) {
        forbidden(errors, path.child("user"), "baseline", "a custom SELinux user is not allowed");
    }
    if options.role.as_deref().is_some_and(|r| !r.is_empty()) {
        forbidden(errors, path.child("role"), "baseline", "a custom SELinux role is not allowed");
    }
}

fn check_added_capabilities(
    caps: Option<&Capabilities>,
    view: &ContainerView<'_>,
    allowed: &[&str],
    level: &str,
    errors: &mut Vec<FieldError>,
) {
    for (i, cap) in caps.and_then(|c| c.add.as_ref()).into_iter().flatten().enumerate() {
        if !allowed.contains(&cap.as_str()) {
            let detail = format!("capability {cap:?} may not be added");
            forbidden(errors, view.sc_path("capabilities").child("add").index(i), level, &detail);
        }
    }
}

fn check_restricted(spec: &PodSpec, path: &FieldPath, views: &[ContainerView<'_>], errors: &mut Vec<FieldError>) {
    const LEVEL: &str = "restricted";
    let windows = spec.os.as_ref().is_some_and(|os| os.name == "windows");
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let sources = volume_sources(volume);
        for source in sources.iter().filter(|s| !ALLOWED_VOLUME_SOURCES.contains(&s.as_str())) {
            if source != "hostPath" {
                forbidden(
                    errors,
                    path.child("volumes").index(i).child(source),
                    LEVEL,
                    &format!("{source} volumes are not allowed"),
                );
            }
        }
    }
    let pod_sc = spec.security_context.as_ref();
    let pod_non_root = pod_sc.and_then(|sc| sc.run_as_non_root);
    if pod_non_root == Some(false) {
        forbidden(errors, path.child("securityContext").child("runAsNonRoot"), LEVEL, "pods must run as non-root");
    }
    if pod_sc.and_then(|sc| sc.run_as_user) == Some(0) {
        forbidden(errors, path.child("securityContext").child("runAsUser"), LEVEL, "pods may not run as uid 0");
    }
    let pod_seccomp = pod_sc.and_then(|sc| sc.seccomp_profile.as_ref()).map(|p| p.type_.as_str());
    let good_seccomp = |t: Option<&str>| matches!(t, Some("RuntimeDefault") | Some("Localhost"));
    for view in views {
        let sc = view.security_context;
        match sc.and_then(|sc| sc.run_as_non_root) {
            Some(false) => forbidden(errors, view.sc_path("runAsNonRoot"), LEVEL, "containers must run as non-root"),
            None if pod_non_root != Some(true) => errors.push(FieldError::required(
                &view.sc_path("runAsNonRoot"),
                "set runAsNonRoot: true here or in the pod securityContext (Pod Security Standards, restricted)",
            )),
            _ => {}
        }
        if sc.and_then(|sc| sc.run_as_user) == Some(0) {
            forbidden(errors, view.sc_path("runAsUser"), LEVEL, "containers may not run as uid 0");
        }
        if sc.and_then(|sc| sc.proc_mount.as_deref()).is_some_and(|m| m != "Default") && spec.host_users == Some(false)
        {
            forbidden(errors, view.sc_path("procMount"), LEVEL, "an unmasked /proc is not allowed");
        }
        if windows {
            continue;
        }
        match sc.and_then(|sc| sc.allow_privilege_escalation) {
            Some(false) => {}
            Some(true) => forbidden(
                errors,
                view.sc_path("allowPrivilegeEscalation"),
                LEVEL,
                "privilege escalation is not allowed",
            ),
            None => errors.push(FieldError::required(
                &view.sc_path("allowPrivilegeEscalation"),
                "set allowPrivilegeEscalation: false (Pod Security Standards, restricted)",
            )),
        }
        let container_seccomp = sc.and_then(|sc| sc.seccomp_profile.as_ref()).map(|p| p.type_.as_str());
        if container_seccomp.is_some() && !good_seccomp(container_seccomp) {
            if container_seccomp != Some("Unconfined") {
                forbidden(
                    errors,
                    view.sc_path("seccompProfile").child("type"),
                    LEVEL,
                    "seccomp must be RuntimeDefault or Localhost",
                );
            }
        } else if container_seccomp.is_none() && !good_seccomp(pod_seccomp) {
            errors.push(FieldError::required(
                &view.sc_path("seccompProfile").child("type"),
                "set seccompProfile.type RuntimeDefault here or in the pod securityContext (Pod Security Standards, restricted)",
            ));
        }
        let caps = sc.and_then(|sc| sc.capabilities.as_ref());
        if !caps.and_then(|c| c.drop.as_ref()).is_some_and(|d| d.iter().any(|c| c == "ALL")) {
            errors.push(FieldError::required(
                &view.sc_path("capabilities").child("drop"),
                "drop ALL capabilities (Pod Security Standards, restricted)",
            ));
        }
        check_added_capabilities(caps, view, level_capabilities(PodSecurityLevel::Restricted), LEVEL, errors);
    }
    if !windows && pod_seccomp.is_some() && !good_seccomp(pod_seccomp) && pod_seccomp != Some("Unconfined") {
        forbidden(
            errors,
            path.child("securityContext").child("seccompProfile").child("type"),
            LEVEL,
            "seccomp must be RuntimeDefault or Localhost",
        );
    }
}
