//! Every default of every field, in one place: written into stored objects on JSON (so that
//! nothing the user wrote is reformatted; the admission answer is the JSON Patch between the
//! two), and read back typed by [`Settings`] for the controller and the gateway.

use std::time::Duration;

use serde_json::{Value, json};

use super::format::{format_duration, parse_positive_duration};
use crate::crd::{Kind, LoadBalancingStrategy, MCPServerGroupSpec, MCPServerSpec};

/// Default replicas of a container-mode server.
pub const DEFAULT_REPLICAS: i64 = 1;
/// Default idle time before scaling to zero.
pub const DEFAULT_IDLE_TTL: &str = "5m";
/// Default startup timeout.
pub const DEFAULT_STARTUP_TIMEOUT: &str = "30s";
/// Default health-check interval.
pub const DEFAULT_HEALTH_INTERVAL: &str = "30s";
/// Default health-check timeout.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Default consecutive failures before Degraded.
pub const DEFAULT_HEALTH_FAILURE_THRESHOLD: i64 = 3;
/// Default consecutive failures that open the circuit breaker.
pub const DEFAULT_BREAKER_FAILURE_THRESHOLD: i64 = 5;
/// Default time the circuit breaker stays open.
pub const DEFAULT_BREAKER_RESET_TIMEOUT: &str = "30s";
/// Default transport.
pub const DEFAULT_TRANSPORT: &str = "streamable-http";
/// Default MCP port.
pub const DEFAULT_PORT: i64 = 8080;
/// Unprivileged uid the secure defaults run as (`nobody`).
pub const DEFAULT_RUN_AS_USER: i64 = 65534;
/// Default load-balancing strategy of a group.
pub const DEFAULT_STRATEGY: LoadBalancingStrategy = LoadBalancingStrategy::RoundRobin;
/// Whether a group retries a failed call on another member by default.
pub const DEFAULT_FAILOVER_ENABLED: bool = true;
/// Default number of other members a failed call is retried on.
pub const DEFAULT_FAILOVER_MAX_RETRIES: i64 = 2;
/// Default pause before such a retry.
pub const DEFAULT_FAILOVER_RETRY_DELAY: &str = "100ms";

/// The secure container securityContext, merged field by field under what the user set.
pub fn secure_security_context() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": DEFAULT_RUN_AS_USER,
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// Returns the object with every default of its kind applied; `default_profile` is the
/// profile a server gets when it names none. Idempotent.
pub fn apply_defaults(kind: Kind, object: &Value, default_profile: &str) -> Value {
    let mut object = object.clone();
    apply_defaults_in_place(kind, &mut object, default_profile);
    object
}

/// [`apply_defaults`] on the object itself, without a copy.
pub fn apply_defaults_in_place(kind: Kind, object: &mut Value, default_profile: &str) {
    match kind {
        Kind::Server => default_server(object, default_profile),
        Kind::DiscoverySource => {
            set_default(object, &["spec", "mode"], json!("Additive"));
        }
        Kind::ServerGroup => {
            set_default(object, &["spec", "strategy"], json!(DEFAULT_STRATEGY));
            set_default(object, &["spec", "failover", "enabled"], json!(DEFAULT_FAILOVER_ENABLED));
            set_default(object, &["spec", "failover", "maxRetries"], json!(DEFAULT_FAILOVER_MAX_RETRIES));
            set_default(object, &["spec", "failover", "retryDelay"], json!(DEFAULT_FAILOVER_RETRY_DELAY));
        }
        Kind::PermissionProfile | Kind::AdmissionPolicy => {}
    }
}

/// The JSON Patch that applies the defaults of its kind to an object.
pub fn defaults_patch(kind: Kind, object: &Value, default_profile: &str) -> json_patch::Patch {
    json_patch::diff(object, &apply_defaults(kind, object, default_profile))
}

fn default_server(object: &mut Value, default_profile: &str) {
    let mode = object.pointer("/spec/mode").and_then(Value::as_str).map(str::to_owned);
    match mode.as_deref() {
        Some("container") => {
            set_default(object, &["spec", "replicas"], json!(DEFAULT_REPLICAS));
            set_default(object, &["spec", "idleTTL"], json!(DEFAULT_IDLE_TTL));
            set_default(object, &["spec", "startupTimeout"], json!(DEFAULT_STARTUP_TIMEOUT));
            default_health_and_breaker(object);
            set_default(object, &["spec", "transport"], json!(DEFAULT_TRANSPORT));
            set_default(object, &["spec", "port"], json!(DEFAULT_PORT));
            set_default(object, &["spec", "permissionProfile", "type"], json!("builtin"));
            if object.pointer("/spec/permissionProfile/type").and_then(Value::as_str) == Some("builtin") {
                set_default(object, &["spec", "permissionProfile", "name"], json!(default_profile));
            }
            merge_defaults(object, &["spec", "securityContext"], &secure_security_context());
        }
        Some("remote") => default_health_and_breaker(object),
        _ => {}
    }
}

fn default_health_and_breaker(object: &mut Value) {
    set_default(object, &["spec", "healthCheck", "enabled"], json!(true));
    set_default(object, &["spec", "healthCheck", "interval"], json!(DEFAULT_HEALTH_INTERVAL));
    let interval = object.pointer("/spec/healthCheck/interval").and_then(Value::as_str);
    let timeout = match interval.map(parse_positive_duration) {
        Some(Ok(interval)) => health_timeout(interval),
        _ => DEFAULT_HEALTH_TIMEOUT,
    };
    set_default(object, &["spec", "healthCheck", "timeout"], json!(format_duration(timeout)));
    set_default(object, &["spec", "healthCheck", "failureThreshold"], json!(DEFAULT_HEALTH_FAILURE_THRESHOLD));
    set_default(object, &["spec", "circuitBreaker", "enabled"], json!(true));
    set_default(object, &["spec", "circuitBreaker", "failureThreshold"], json!(DEFAULT_BREAKER_FAILURE_THRESHOLD));
    set_default(object, &["spec", "circuitBreaker", "resetTimeout"], json!(DEFAULT_BREAKER_RESET_TIMEOUT));
    if let Some(rpm) = object.pointer("/spec/tools/rateLimit/requestsPerMinute").and_then(Value::as_i64) {
        set_default(object, &["spec", "tools", "rateLimit", "burstSize"], json!(default_burst_size(rpm)));
    }
}

/// Largest `tools.rateLimit.burstSize` (the schema's bound).
pub const MAX_BURST_SIZE: i64 = 100_000;

/// Default `tools.rateLimit.burstSize`: a minute's worth of calls, so that `requestsPerMinute`
/// alone means what it says for a client that calls in bursts; kept in the field's range so a
/// bad `requestsPerMinute` is the only error reported.
pub fn default_burst_size(requests_per_minute: i64) -> i64 {
    requests_per_minute.clamp(1, MAX_BURST_SIZE)
}

/// `tools.rateLimit` read back typed: `(requestsPerMinute, burstSize)`, both at least 1, the
/// burst defaulted; `None` without a rate.
pub fn rate_limit(spec: &MCPServerSpec) -> Option<(u32, u32)> {
    let rate = spec.tools.as_ref()?.rate_limit.as_ref()?;
    let per_minute = i64::from(rate.requests_per_minute?).max(1);
    let burst = rate.burst_size.map_or_else(|| default_burst_size(per_minute), i64::from).max(1);
    Some((u32::try_from(per_minute).unwrap_or(u32::MAX), u32::try_from(burst).unwrap_or(u32::MAX)))
}

/// The default health-check timeout for an interval: 10s, or half the interval when it is
/// 10s or less, so that the timeout always stays shorter than the interval.
pub fn health_timeout(interval: Duration) -> Duration {
    if interval <= DEFAULT_HEALTH_TIMEOUT { interval / 2 } else { DEFAULT_HEALTH_TIMEOUT }
}

/// Health-check, breaker and startup settings of one server, typed, with every default
/// filled in; what the controller's state machine and the gateway act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Whether MCP health checks run.
    pub health_enabled: bool,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Consecutive failures before Degraded.
    pub failure_threshold: i32,
    /// Whether the circuit breaker is used.
    pub breaker_enabled: bool,
    /// Consecutive failures that open the breaker.
    pub breaker_threshold: i32,
    /// Time the breaker stays open before a trial.
    pub reset_timeout: Duration,
    /// Time a starting server may take to get a ready replica.
    pub startup_timeout: Duration,
    /// Time without requests before a server is scaled to zero.
    pub idle_ttl: Duration,
}

impl Settings {
    /// Reads the settings of a spec; unset or unreadable values take the defaults above.
    pub fn of(spec: &MCPServerSpec) -> Settings {
        let health = spec.health_check.clone().unwrap_or_default();
        let breaker = spec.circuit_breaker.clone().unwrap_or_default();
        let interval = duration_or(health.interval.as_deref(), DEFAULT_HEALTH_INTERVAL);
        let timeout = health
            .timeout
            .as_deref()
            .and_then(|t| parse_positive_duration(t).ok())
            .unwrap_or_else(|| health_timeout(interval));
        Settings {
            health_enabled: health.enabled.unwrap_or(true),
            interval,
            timeout,
            failure_threshold: health.failure_threshold.unwrap_or(DEFAULT_HEALTH_FAILURE_THRESHOLD as i32).max(1),
            breaker_enabled: breaker.enabled.unwrap_or(true),
            breaker_threshold: breaker.failure_threshold.unwrap_or(DEFAULT_BREAKER_FAILURE_THRESHOLD as i32).max(1),
            reset_timeout: duration_or(breaker.reset_timeout.as_deref(), DEFAULT_BREAKER_RESET_TIMEOUT),
            startup_timeout: duration_or(spec.startup_timeout.as_deref(), DEFAULT_STARTUP_TIMEOUT),
            idle_ttl: duration_or(spec.idle_ttl.as_deref(), DEFAULT_IDLE_TTL),
        }
    }

    /// True when `failures` consecutive failures hold the breaker open.
    pub fn breaker_open(&self, failures: i32) -> bool {
        self.breaker_enabled && failures >= self.breaker_threshold
    }
}

/// How a group balances and retries, typed, with every default filled in (the gateway's view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    /// The load-balancing strategy.
    pub strategy: LoadBalancingStrategy,
    /// Other members a failed call may be retried on; 0 when failover is disabled.
    pub max_retries: u32,
    /// Pause before each retry.
    pub retry_delay: Duration,
    /// Consecutive failed requests that take a member out of rotation; `None`: never.
    pub unhealthy_threshold: Option<u32>,
}

impl GroupSettings {
    /// Reads the settings of a group; unset or unreadable values take the defaults above.
    pub fn of(spec: &MCPServerGroupSpec) -> GroupSettings {
        let failover = spec.failover.clone().unwrap_or_default();
        let enabled = failover.enabled.unwrap_or(DEFAULT_FAILOVER_ENABLED);
        let retries = failover.max_retries.map_or(DEFAULT_FAILOVER_MAX_RETRIES, i64::from).clamp(0, 10);
        let threshold = spec.health_policy.as_ref().and_then(|p| p.unhealthy_threshold);
        GroupSettings {
            strategy: spec.strategy.unwrap_or(DEFAULT_STRATEGY),
            max_retries: if enabled { u32::try_from(retries).unwrap_or(0) } else { 0 },
            retry_delay: duration_or(failover.retry_delay.as_deref(), DEFAULT_FAILOVER_RETRY_DELAY),
            unhealthy_threshold: threshold.map(|t| u32::try_from(t.max(1)).unwrap_or(1)),
        }
    }
}

/// A duration field's value, else its default (the defaults above always parse).
fn duration_or(text: Option<&str>, default: &str) -> Duration {
    text.and_then(|t| parse_positive_duration(t).ok())
        .or_else(|| parse_positive_duration(default).ok())
        .unwrap_or(Duration::from_secs(1))
}

/// Sets `path` to `value` when it is absent or null, creating missing parent objects.
/// Leaves the object alone when a parent exists but is not an object (validation reports that).
fn set_default(object: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = object;
    for key in parents {
        if !node.is_object() {
            return;
        }
        let child = &mut node[*key];
        if child.is_null() {
            *child = json!({});
        }
        node = child;
    }
    if let Value::Object(map) = node
        && map.get(*last).is_none_or(Value::is_null)
    {
        map.insert((*last).to_string(), value);
    }
}

/// Merges `defaults` into the object at `path` field by field: whatever is already set wins.
fn merge_defaults(object: &mut Value, path: &[&str], defaults: &Value) {
    let Value::Object(fields) = defaults else { return };
    for (key, value) in fields {
        let mut child_path = path.to_vec();
        child_path.push(key);
        if value.is_object() {
            merge_defaults(object, &child_path, value);
        } else {
            set_default(object, &child_path, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_get_round_robin_and_failover_and_read_them_back_typed() {
        let group = json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServerGroup", "metadata": {"name": "g"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "failover": {"maxRetries": 5}}});
        let defaulted = apply_defaults(Kind::ServerGroup, &group, "restricted");
        assert_eq!(defaulted["spec"]["strategy"], "RoundRobin");
        assert_eq!(defaulted["spec"]["failover"], json!({"enabled": true, "maxRetries": 5, "retryDelay": "100ms"}));
        let spec: MCPServerGroupSpec = serde_json::from_value(defaulted["spec"].clone()).unwrap();
        let typed = GroupSettings::of(&spec);
        assert_eq!(typed, GroupSettings::of(&serde_json::from_value(group["spec"].clone()).unwrap()), "one default");
        assert_eq!(typed.max_retries, 5);
        assert_eq!(typed.retry_delay, Duration::from_millis(100));
        assert_eq!(typed.unhealthy_threshold, None);
        let off: MCPServerGroupSpec =
            serde_json::from_value(json!({"failover": {"enabled": false}, "strategy": "Failover",
            "healthPolicy": {"unhealthyThreshold": 3}}))
            .unwrap();
        let off = GroupSettings::of(&off);
        assert_eq!(
            (off.max_retries, off.strategy, off.unhealthy_threshold),
            (0, LoadBalancingStrategy::Failover, Some(3))
        );
    }

    fn container(spec: Value) -> Value {
        let mut spec = spec;
        spec["mode"] = json!("container");
        json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer", "metadata": {"name": "x"}, "spec": spec})
    }

    #[test]
    fn a_rate_limit_gets_a_burst_of_one_minute() {
        let rated = container(json!({"image": "a/b:1", "tools": {"rateLimit": {"requestsPerMinute": 30}}}));
        let out = apply_defaults(Kind::Server, &rated, "none");
        assert_eq!(out["spec"]["tools"]["rateLimit"], json!({"requestsPerMinute": 30, "burstSize": 30}));
        let huge = container(json!({"image": "a/b:1", "tools": {"rateLimit": {"requestsPerMinute": 1_000_000}}}));
        let out = apply_defaults(Kind::Server, &huge, "none");
        assert_eq!(out["spec"]["tools"]["rateLimit"]["burstSize"], MAX_BURST_SIZE, "a valid default");
        let unrated = apply_defaults(Kind::Server, &container(json!({"image": "a/b:1"})), "none");
        assert_eq!(unrated["spec"].get("tools"), None, "no rate limit, no burst");
    }

    #[test]
    fn container_defaults_are_complete() {
        let out = apply_defaults(Kind::Server, &container(json!({"image": "a/b:1"})), "none");
        let spec = &out["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["idleTTL"], "5m");
        assert_eq!(spec["startupTimeout"], "30s");
        assert_eq!(
            spec["healthCheck"],
            json!({"enabled": true, "interval": "30s", "timeout": "10s", "failureThreshold": 3})
        );
        assert_eq!(spec["circuitBreaker"], json!({"enabled": true, "failureThreshold": 5, "resetTimeout": "30s"}));
        assert_eq!(spec["transport"], "streamable-http");
        assert_eq!(spec["port"], 8080);
        assert_eq!(spec["permissionProfile"], json!({"type": "builtin", "name": "none"}));
        assert_eq!(spec["securityContext"], secure_security_context());
    }

    #[test]
    fn user_values_win_field_by_field() {
        let input = container(json!({
            "image": "a/b:1", "replicas": 0,
            "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": false, "capabilities": {"add": ["NET_BIND_SERVICE"]}},
            "healthCheck": {"interval": "4s"},
        }));
        let spec = apply_defaults(Kind::Server, &input, "none")["spec"].clone();
        assert_eq!(spec["replicas"], 0);
        assert_eq!(spec["securityContext"]["runAsUser"], 1000);
        assert_eq!(spec["securityContext"]["readOnlyRootFilesystem"], false);
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(spec["securityContext"]["capabilities"], json!({"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}));
        assert_eq!(spec["healthCheck"]["timeout"], "2s");
    }

    #[test]
    fn remote_gets_health_and_breaker_only() {
        let input = json!({"spec": {"mode": "remote", "endpoint": "https://x.example.com"}});
        let spec = apply_defaults(Kind::Server, &input, "none")["spec"].clone();
        let mut keys: Vec<_> = spec.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["circuitBreaker", "endpoint", "healthCheck", "mode"]);
    }

    #[test]
    fn mutation_is_idempotent() {
        let once = apply_defaults(Kind::Server, &container(json!({"image": "a/b:1"})), "none");
        assert!(defaults_patch(Kind::Server, &once, "none").0.is_empty());
        assert!(!defaults_patch(Kind::Server, &container(json!({"image": "a/b:1"})), "none").0.is_empty());
    }

    #[test]
    fn wrong_shapes_are_left_for_validation() {
        let input = container(json!({"image": "a/b:1", "securityContext": "yes", "healthCheck": 3}));
        let spec = apply_defaults(Kind::Server, &input, "none")["spec"].clone();
        assert_eq!(spec["securityContext"], "yes");
        assert_eq!(spec["healthCheck"], 3);
    }

    #[test]
    fn typed_settings_use_the_same_defaults() {
        let spec = |interval: &str| MCPServerSpec {
            health_check: Some(Box::new(crate::crd::HealthCheck {
                interval: Some(interval.into()),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(Settings::of(&spec("15s")).timeout, Duration::from_secs(10));
        assert_eq!(Settings::of(&spec("4s")).timeout, Duration::from_secs(2));
        let defaulted = apply_defaults(
            Kind::Server,
            &container(json!({"image": "a/b:1", "healthCheck": {"interval": "15s"}})),
            "none",
        );
        assert_eq!(defaulted["spec"]["healthCheck"]["timeout"], "10s");
        let unset = Settings::of(&MCPServerSpec::default());
        assert_eq!((unset.interval, unset.timeout), (Duration::from_secs(30), Duration::from_secs(10)));
        assert_eq!(unset.idle_ttl, Duration::from_secs(300));
    }

    #[test]
    fn unknown_mode_gets_no_defaults() {
        let input = json!({"spec": {"mode": "vm"}});
        assert_eq!(apply_defaults(Kind::Server, &input, "none"), input);
        let discovery = apply_defaults(Kind::DiscoverySource, &json!({"spec": {"type": "Namespace"}}), "none");
        assert_eq!(discovery["spec"]["mode"], "Additive");
    }
}
