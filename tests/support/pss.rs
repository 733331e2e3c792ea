//! A checker of the Pod Security Standards `restricted` level (which includes `baseline`),
//! as of Kubernetes v1.37, over a Pod as JSON. It is held to the upstream conformance
//! fixtures in `../shared/psa-fixtures` by the tests that use it.

#![allow(dead_code)]

use serde_json::Value;

/// Capabilities `baseline` lets a container add.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
/// Sysctls `baseline` allows.
const SAFE_SYSCTLS: [&str; 14] = [
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
    "net.ipv4.tcp_notsent_lowat",
    "net.ipv4.tcp_slow_start_after_idle",
];
/// SELinux types `baseline` allows.
const SELINUX_TYPES: [&str; 5] = [
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];
/// Volume types `restricted` allows.
const RESTRICTED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

fn containers(spec: &Value) -> Vec<&Value> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|field| spec.get(*field).and_then(Value::as_array))
        .flatten()
        .collect()
}

fn name(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or("?")
}

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn flag(value: &Value, pointer: &str) -> Option<bool> {
    value.pointer(pointer).and_then(Value::as_bool)
}

/// Everything in the Pod that the `restricted` level forbids; empty when it passes.
pub fn restricted_violations(pod: &Value) -> Vec<String> {
    let mut violations = Vec::new();
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    let pod_sc = spec.get("securityContext").cloned().unwrap_or(Value::Null);
    let all = containers(&spec);
    let windows = text(&spec, "/os/name") == Some("windows");
    let mut violation = |text: String| violations.push(text);

    // baseline: host namespaces
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec.get(field).and_then(Value::as_bool) == Some(true) {
            violation(format!("{field}=true"));
        }
    }
    for c in &all {
        let sc = c.get("securityContext").cloned().unwrap_or(Value::Null);
        // baseline: privileged
        if flag(&sc, "/privileged") == Some(true) {
            violation(format!("{}: privileged", name(c)));
        }
        // baseline: capabilities
        for cap in sc
            .pointer("/capabilities/add")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let cap = cap.as_str().unwrap_or_default();
            if !BASELINE_CAPABILITIES.contains(&cap) {
                violation(format!("{}: adds capability {cap}", name(c)));
            }
        }
        // baseline: host ports
        for port in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if port.get("hostPort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                violation(format!("{}: hostPort", name(c)));
            }
        }
        // baseline: probes and lifecycle handlers may not name a host
        for handler in [
            "/livenessProbe",
            "/readinessProbe",
            "/startupProbe",
            "/lifecycle/postStart",
            "/lifecycle/preStop",
        ] {
            for action in ["httpGet", "tcpSocket"] {
                if let Some(host) = c.pointer(&format!("{handler}/{action}/host"))
                    && host.as_str().is_some_and(|h| !h.is_empty())
                {
                    violation(format!("{}: {handler} {action} names a host", name(c)));
                }
            }
        }
        // baseline: AppArmor
        if let Some(kind) = text(&sc, "/appArmorProfile/type")
            && !matches!(kind, "RuntimeDefault" | "Localhost")
        {
            violation(format!("{}: appArmorProfile {kind}", name(c)));
        }
        // baseline: SELinux
        selinux(&sc, name(c), &mut violation);
        // baseline: /proc mount
        if let Some(mount) = text(&sc, "/procMount")
            && mount != "Default"
        {
            violation(format!("{}: procMount {mount}", name(c)));
        }
        // baseline: seccomp
        if text(&sc, "/seccompProfile/type") == Some("Unconfined") {
            violation(format!("{}: seccomp Unconfined", name(c)));
        }
        // baseline: Windows host processes
        if flag(&sc, "/windowsOptions/hostProcess") == Some(true) {
            violation(format!("{}: hostProcess", name(c)));
        }
        // restricted: privilege escalation, capabilities
        if !windows {
            if flag(&sc, "/allowPrivilegeEscalation") != Some(false) {
                violation(format!(
                    "{}: allowPrivilegeEscalation is not false",
                    name(c)
                ));
            }
            let drops_all = sc
                .pointer("/capabilities/drop")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|c| c == "ALL"));
            if !drops_all {
                violation(format!("{}: does not drop ALL capabilities", name(c)));
            }
            for cap in sc
                .pointer("/capabilities/add")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if cap != "NET_BIND_SERVICE" {
                    violation(format!("{}: adds {cap} beyond NET_BIND_SERVICE", name(c)));
                }
            }
        }
        // restricted: non-root
        if flag(&sc, "/runAsNonRoot") == Some(false) {
            violation(format!("{}: runAsNonRoot=false", name(c)));
        }
        if flag(&sc, "/runAsNonRoot") != Some(true) && flag(&pod_sc, "/runAsNonRoot") != Some(true)
        {
            violation(format!("{}: runAsNonRoot not set", name(c)));
        }
        if sc.pointer("/runAsUser").and_then(Value::as_i64) == Some(0) {
            violation(format!("{}: runAsUser=0", name(c)));
        }
        // restricted: seccomp
        if !windows {
            let own = text(&sc, "/seccompProfile/type");
            let inherited = text(&pod_sc, "/seccompProfile/type");
            match own.or(inherited) {
                Some("RuntimeDefault" | "Localhost") => {}
                other => violation(format!("{}: seccompProfile {other:?}", name(c))),
            }
        }
    }
    // baseline: pod-level settings
    if flag(&pod_sc, "/runAsNonRoot") == Some(false) {
        violation("pod: runAsNonRoot=false".into());
    }
    if pod_sc.pointer("/runAsUser").and_then(Value::as_i64) == Some(0) {
        violation("pod: runAsUser=0".into());
    }
    if text(&pod_sc, "/seccompProfile/type") == Some("Unconfined") {
        violation("pod: seccomp Unconfined".into());
    }
    if let Some(kind) = text(&pod_sc, "/appArmorProfile/type")
        && !matches!(kind, "RuntimeDefault" | "Localhost")
    {
        violation(format!("pod: appArmorProfile {kind}"));
    }
    selinux(&pod_sc, "pod", &mut violation);
    if flag(&pod_sc, "/windowsOptions/hostProcess") == Some(true) {
        violation("pod: hostProcess".into());
    }
    for sysctl in pod_sc
        .get("sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let sysctl = text(sysctl, "/name").unwrap_or_default();
        if !SAFE_SYSCTLS.contains(&sysctl) {
            violation(format!("pod: sysctl {sysctl}"));
        }
    }
    if let Some(annotations) = pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for (key, value) in annotations {
            let value = value.as_str().unwrap_or_default();
            if key.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && value != "runtime/default"
                && !value.starts_with("localhost/")
            {
                violation(format!("annotation {key}={value}"));
            }
        }
    }
    // baseline: hostPath; restricted: volume types
    for volume in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(fields) = volume.as_object() else {
            continue;
        };
        for (field, _) in fields.iter().filter(|(k, v)| *k != "name" && !v.is_null()) {
            if !RESTRICTED_VOLUMES.contains(&field.as_str()) {
                violation(format!("volume {field}"));
            }
        }
    }
    violations
}

fn selinux(sc: &Value, who: &str, violation: &mut impl FnMut(String)) {
    let Some(options) = sc.get("seLinuxOptions") else {
        return;
    };
    let kind = text(options, "/type").unwrap_or("");
    if !SELINUX_TYPES.contains(&kind) {
        violation(format!("{who}: seLinux type {kind}"));
    }
    for field in ["user", "role"] {
        if text(options, &format!("/{field}")).is_some_and(|v| !v.is_empty()) {
            violation(format!("{who}: seLinux {field}"));
        }
    }
}
