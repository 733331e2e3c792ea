//! The server state machine and circuit breaker, as pure functions of the spec, the stored
//! status, what the Deployment reports, the health check just made (if any) and the time.
//!
//! Nothing is remembered between reconciles except what the status holds, so a new leader
//! continues exactly where the old one stopped:
//!
//! - `consecutiveFailures` counts failed health checks since the last success;
//! - `lastHealthCheck` is when the last check ran. While the breaker is open no check runs,
//!   so `lastHealthCheck` is also the time the breaker (re)opened.
//!
//! The breaker opens when `consecutiveFailures` reaches `circuitBreaker.failureThreshold`.
//! After `resetTimeout` it half-opens: one trial check runs. A failed trial means the
//! breaker stayed open past `resetTimeout` (failures above the threshold): the server is
//! Dead, and a new trial follows every `resetTimeout`. A passed check closes it.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{MCPServerStatus, ServerInfo, ServerState};
use crate::mcp::HealthReport;
pub use crate::policy::defaults::Settings;
use crate::policy::tools::ToolPolicy;

/// Marks the last health-check error in condition messages; it always ends the message,
/// so a later reconcile without a new check can quote it again.
const LAST_ERROR: &str = "last error: ";
/// Longest health-check error kept in a condition message, in characters.
pub const MAX_ERROR_LEN: usize = 512;
/// Shortest requeue: a floor against busy loops whatever the spec's durations.
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);
/// Longest requeue: a periodic resync when nothing is scheduled sooner.
pub const RESYNC: Duration = Duration::from_secs(300);

/// Condition type: the server serves tools.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: at least part of the server can serve.
pub const CONDITION_AVAILABLE: &str = "Available";
/// Condition type: a rollout or start is under way.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: the server is unhealthy.
pub const CONDITION_DEGRADED: &str = "Degraded";
/// The condition types the controller writes. `status.conditions` is a map by type: the others
/// (the gateway's `CircuitBreakerOpen`) belong to other field managers and are left alone.
pub const CONDITION_TYPES: [&str; 4] =
    [CONDITION_READY, CONDITION_AVAILABLE, CONDITION_PROGRESSING, CONDITION_DEGRADED];

/// A stored status as the controller owns it: without other writers' conditions, so that they
/// neither count as a change nor are applied back.
pub fn owned(status: Option<&MCPServerStatus>) -> MCPServerStatus {
    let mut status = status.cloned().unwrap_or_default();
    status.conditions.retain(|c| CONDITION_TYPES.contains(&c.type_.as_str()));
    status
}

/// Why the server is in its state; used as condition and event reasons.
pub mod reason {
    /// Cold: `spec.replicas` is 0.
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    /// Initializing: replicas are starting.
    pub const STARTING: &str = "Starting";
    /// Initializing: the endpoint has not answered an MCP health check yet.
    pub const AWAITING_HEALTH_CHECK: &str = "AwaitingHealthCheck";
    /// Ready: the last MCP health check passed.
    pub const HEALTH_CHECK_PASSED: &str = "HealthCheckPassed";
    /// Ready: health checks are disabled; readiness is the Deployment's alone.
    pub const HEALTH_CHECK_DISABLED: &str = "HealthCheckDisabled";
    /// Degraded: fewer ready replicas than desired.
    pub const REPLICAS_UNAVAILABLE: &str = "ReplicasUnavailable";
    /// Degraded: health checks failed `failureThreshold` times in a row.
    pub const HEALTH_CHECK_FAILING: &str = "HealthCheckFailing";
    /// Degraded: the circuit breaker is open; checks pause until `resetTimeout`.
    pub const CIRCUIT_OPEN: &str = "CircuitOpen";
    /// Dead: the breaker's trial after `resetTimeout` failed.
    pub const CIRCUIT_OPEN_TOO_LONG: &str = "CircuitOpenTooLong";
    /// Dead: no replica became ready within `startupTimeout`.
    pub const STARTUP_TIMEOUT: &str = "StartupTimeout";
    /// Dead: the spec breaks the admission rules (the webhook was bypassed).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Dead: the spec asks for something this controller cannot run.
    pub const UNSUPPORTED_SPEC: &str = "UnsupportedSpec";
    /// Dead: the permission profile does not exist or cannot be read.
    pub const PROFILE_UNAVAILABLE: &str = "ProfileUnavailable";
    /// Dead: the API server refused a child object.
    pub const APPLY_REJECTED: &str = "ApplyRejected";
    /// Progressing: replicas are being created or updated.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Progressing false: every replica is updated and ready.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// Progressing false: remote servers have no workload.
    pub const NO_WORKLOAD: &str = "NoWorkload";
    /// Available: replicas are ready and healthy.
    pub const REPLICAS_AVAILABLE: &str = "ReplicasAvailable";
    /// Available false: no replica is ready.
    pub const NO_READY_REPLICAS: &str = "NoReadyReplicas";
    /// Available: the remote endpoint answered.
    pub const ENDPOINT_RESPONDING: &str = "EndpointResponding";
    /// Degraded false.
    pub const AS_EXPECTED: &str = "AsExpected";
}

/// What runs the server, as far as the state machine needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Container mode: the desired replicas and what the Deployment reports.
    Container {
        /// `spec.replicas`.
        desired: i32,
        /// Pods the Deployment has.
        replicas: i32,
        /// Pods that are ready.
        ready: i32,
        /// Pods running the current template.
        updated: i32,
    },
    /// Remote mode: nothing runs in the cluster.
    Remote,
}

impl Workload {
    /// True when there is something to health-check.
    fn reachable(self) -> bool {
        match self {
            Workload::Container { desired, ready, .. } => desired > 0 && ready > 0,
            Workload::Remote => true,
        }
    }
}

/// Result of a health check made in this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The server answered; its revision, identity and tool names.
    Passed(HealthReport),
    /// The check failed, with a message fit for a person.
    Failed(String),
}

/// Everything [`evaluate`] looks at.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// `metadata.generation` of the server.
    pub generation: Option<i64>,
    /// The status as stored.
    pub previous: &'a MCPServerStatus,
    /// The server's settings.
    pub settings: &'a Settings,
    /// What runs the server.
    pub workload: Workload,
    /// The health check made now, if one was due.
    pub check: Option<Check>,
    /// Which tools are exposed (`spec.tools.allowList` and `denyList`).
    pub tools: &'a ToolPolicy,
    /// The URL clients use.
    pub url: String,
    /// The server's URL on the gateway, when there is one.
    pub gateway_url: Option<String>,
    /// The pod selector, in container mode.
    pub selector: Option<String>,
    /// The current time.
    pub now: Timestamp,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The status to store.
    pub status: MCPServerStatus,
    /// When to look again.
    pub requeue_after: Duration,
    /// Why the server is in its state.
    pub reason: &'static str,
    /// The same, for a person.
    pub message: String,
}

impl Evaluation {
    /// The new state.
    pub fn state(&self) -> Option<ServerState> {
        self.status.state
    }
}

/// The name of a state as it appears in status, metrics and events.
pub fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Cold => "Cold",
        ServerState::Initializing => "Initializing",
        ServerState::Ready => "Ready",
        ServerState::Degraded => "Degraded",
        ServerState::Dead => "Dead",
    }
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}

fn until(now: Timestamp, t: Timestamp) -> Duration {
    let d = now.duration_until(t);
    if d.is_negative() { Duration::ZERO } else { d.unsigned_abs() }
}

/// When the next health check is due, given the last one and the failures since a success;
/// `None` when none ran yet (due at once).
fn next_check_at(settings: &Settings, last: Option<&Time>, failures: i32) -> Option<Timestamp> {
    let last = last?.0;
    let wait = if settings.breaker_open(failures) { settings.reset_timeout } else { settings.interval };
    Some(after(last, wait))
}

/// True when a health check should run now.
pub fn check_due(settings: &Settings, previous: &MCPServerStatus, workload: Workload, now: Timestamp) -> bool {
    if !settings.health_enabled || !workload.reachable() {
        return false;
    }
    let failures = previous.consecutive_failures.unwrap_or(0);
    next_check_at(settings, previous.last_health_check.as_ref(), failures).is_none_or(|due| now >= due)
}

struct Verdict {
    state: ServerState,
    reason: &'static str,
    message: String,
}

/// What the health record alone says about a reachable server.
fn health_verdict(
    settings: &Settings,
    failures: i32,
    checked: bool,
    previous_state: Option<ServerState>,
    last_error: &str,
    next_trial: Option<Timestamp>,
) -> Verdict {
    let verdict = |state, reason, message: String| Verdict { state, reason, message };
    if !settings.health_enabled {
        return verdict(
            ServerState::Ready,
            reason::HEALTH_CHECK_DISABLED,
            "health checks are disabled; the server counts as ready when its replicas are".into(),
        );
    }
    let trial = next_trial.map(|t| t.to_string()).unwrap_or_else(|| "the next reconcile".into());
    if settings.breaker_open(failures) {
        if failures > settings.breaker_threshold {
            return verdict(
                ServerState::Dead,
                reason::CIRCUIT_OPEN_TOO_LONG,
                format!(
                    "the circuit breaker is still open: the trial check after resetTimeout {:?} failed too ({failures} consecutive failures; next trial at {trial}); {LAST_ERROR}{last_error}",
                    settings.reset_timeout
                ),
            );
        }
        return verdict(
            ServerState::Degraded,
            reason::CIRCUIT_OPEN,
            format!(
                "the circuit breaker opened after {failures} consecutive failed health checks; checks pause until a trial at {trial}; {LAST_ERROR}{last_error}"
            ),
        );
    }
    if failures >= settings.failure_threshold {
        return verdict(
            ServerState::Degraded,
            reason::HEALTH_CHECK_FAILING,
            format!(
                "{failures} consecutive MCP health checks failed (threshold {}): check the server's logs and that it answers initialize and tools/list; {LAST_ERROR}{last_error}",
                settings.failure_threshold
            ),
        );
    }
    if checked && failures == 0 {
        return verdict(
            ServerState::Ready,
            reason::HEALTH_CHECK_PASSED,
            "the server answered initialize and tools/list".into(),
        );
    }
    if failures > 0 && matches!(previous_state, Some(ServerState::Ready | ServerState::Degraded)) {
        return verdict(
            ServerState::Ready,
            reason::HEALTH_CHECK_PASSED,
            format!(
                "{failures} health check(s) failed, below the threshold of {}; {LAST_ERROR}{last_error}",
                settings.failure_threshold
            ),
        );
    }
    let message = if failures > 0 {
        format!("the server has not answered an MCP health check yet; {LAST_ERROR}{last_error}")
    } else {
        "waiting for the first MCP health check".into()
    };
    verdict(ServerState::Initializing, reason::AWAITING_HEALTH_CHECK, message)
}

/// The last health-check error, from this check or, failing that, from the stored conditions.
fn last_error(check: Option<&Check>, previous: &MCPServerStatus) -> String {
    if let Some(Check::Failed(error)) = check {
        return bounded(error);
    }
    previous
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
        .and_then(|c| c.message.split_once(LAST_ERROR))
        .map(|(_, error)| error.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// At most [`MAX_ERROR_LEN`] characters of a health-check error, with `…` when cut.
fn bounded(error: &str) -> String {
    let mut text: String = error.chars().take(MAX_ERROR_LEN).collect();
    if text.len() < error.len() {
        text.push('…');
    }
    text
}

/// Computes the new status from an observation.
pub fn evaluate(observation: Observation<'_>) -> Evaluation {
    let Observation { generation, previous, settings, workload, check, tools, url, gateway_url, selector, now } =
        observation;
    let mut status = MCPServerStatus {
        url: Some(url),
        gateway_url,
        selector,
        observed_generation: generation,
        tools: previous.tools.clone(),
        tools_count: previous.tools_count,
        protocol_version: previous.protocol_version.clone(),
        server_info: previous.server_info.clone(),
        last_health_check: previous.last_health_check.clone(),
        last_started_at: previous.last_started_at.clone(),
        consecutive_failures: Some(previous.consecutive_failures.unwrap_or(0)),
        ..MCPServerStatus::default()
    };
    let error = last_error(check.as_ref(), previous);
    match &check {
        Some(Check::Passed(report)) => {
            let exposed: Vec<String> = report.tools.iter().filter(|t| tools.allows(t)).cloned().collect();
            status.protocol_version = Some(report.protocol_version.to_string());
            status.server_info = report
                .server_info
                .as_ref()
                .map(|info| Box::new(ServerInfo { name: info.name.clone(), version: info.version.clone() }));
            status.tools_count = Some(i32::try_from(exposed.len()).unwrap_or(i32::MAX));
            status.tools = exposed;
            status.consecutive_failures = Some(0);
            status.last_health_check = Some(Time(now));
        }
        Some(Check::Failed(_)) => {
            status.consecutive_failures = Some(status.consecutive_failures.unwrap_or(0).saturating_add(1));
            status.last_health_check = Some(Time(now));
        }
        None => {}
    }
    let failures = status.consecutive_failures.unwrap_or(0);
    let next_check = (settings.health_enabled && workload.reachable())
        .then(|| next_check_at(settings, status.last_health_check.as_ref(), failures))
        .flatten();
    let checked = status.last_health_check.is_some();
    let health = || health_verdict(settings, failures, checked, previous.state, &error, next_check);

    let mut startup_deadline = None;
    let generation_changed = generation.is_some() && generation != previous.observed_generation;
    let verdict = match workload {
        Workload::Container { desired: 0, replicas, ready, .. } => {
            // What is left of the pods while they stop: the gateway waits for 0 before waking it.
            status.replicas = Some(replicas);
            status.ready_replicas = Some(ready);
            status.consecutive_failures = Some(0);
            Verdict {
                state: ServerState::Cold,
                reason: reason::SCALED_TO_ZERO,
                message: "scaled to zero (spec.replicas 0): the first request through the gateway starts it, idleTTL after the last one stops it".into(),
            }
        }
        Workload::Container { desired, replicas, ready, .. } => {
            status.replicas = Some(replicas);
            status.ready_replicas = Some(ready);
            let restarted =
                matches!(previous.state, None | Some(ServerState::Cold)) || (generation_changed && ready == 0);
            let serving = matches!(previous.state, Some(ServerState::Ready | ServerState::Degraded));
            // A serving server that loses its last ready replica is in an outage, not starting:
            // the outage began now, or earlier if the last reconcile already saw no ready replica.
            let outage = ready == 0 && !restarted && serving;
            let lost_now = outage && previous.ready_replicas.unwrap_or(0) > 0;
            let started = match (&previous.last_started_at, restarted || lost_now) {
                (Some(at), false) => at.0,
                _ => now,
            };
            status.last_started_at = Some(Time(started));
            if ready == 0 {
                // A start (or rollout) and an outage both get the startup timeout, counted from
                // their own beginning; an outage of a serving server is Degraded meanwhile.
                let deadline = after(started, settings.startup_timeout);
                let timeout = settings.startup_timeout;
                if now >= deadline {
                    let pods = status.selector.clone().unwrap_or_default();
                    Verdict {
                        state: ServerState::Dead,
                        reason: reason::STARTUP_TIMEOUT,
                        message: format!(
                            "no replica became ready within the startup timeout of {timeout:?} since {started}: check `kubectl describe pods -l {pods}` for image pulls, crashes or failing probes"
                        ),
                    }
                } else if outage {
                    startup_deadline = Some(deadline);
                    Verdict {
                        state: ServerState::Degraded,
                        reason: reason::NO_READY_REPLICAS,
                        message: format!(
                            "no ready replica since {started} (0 of {desired}): a restarted pod has until {deadline} (startupTimeout {timeout:?}) to become ready"
                        ),
                    }
                } else {
                    startup_deadline = Some(deadline);
                    Verdict {
                        state: ServerState::Initializing,
                        reason: reason::STARTING,
                        message: format!(
                            "waiting for replicas to become ready: 0 of {desired} ready, startup timeout {timeout:?} ends at {deadline}"
                        ),
                    }
                }
            } else {
                let verdict = health();
                if verdict.state == ServerState::Ready && ready < desired {
                    Verdict {
                        state: ServerState::Degraded,
                        reason: reason::REPLICAS_UNAVAILABLE,
                        message: format!("{ready} of {desired} replicas are ready: check the pods that are not"),
                    }
                } else {
                    verdict
                }
            }
        }
        Workload::Remote => health(),
    };
    status.state = Some(verdict.state);
    status.conditions = conditions(&status, &verdict, workload, settings, previous, generation, now);

    let requeue_after = [next_check.map(|t| until(now, t)), startup_deadline.map(|t| until(now, t) + MIN_REQUEUE)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(RESYNC)
        .clamp(MIN_REQUEUE, RESYNC);
    Evaluation { status, requeue_after, reason: verdict.reason, message: verdict.message }
}

/// The status of a server the controller refuses to run: Dead, with the reason on every
/// condition. Health and tool records are kept as they were.
pub fn refused(
    previous: &MCPServerStatus,
    generation: Option<i64>,
    reason: &'static str,
    message: String,
    now: Timestamp,
) -> Evaluation {
    let mut status = MCPServerStatus {
        state: Some(ServerState::Dead),
        observed_generation: generation,
        conditions: Vec::new(),
        ..previous.clone()
    };
    let verdict = Verdict { state: ServerState::Dead, reason, message: message.clone() };
    status.conditions = vec![
        condition(CONDITION_READY, "False", reason, &message, generation, now, previous),
        condition(CONDITION_AVAILABLE, "False", reason, &message, generation, now, previous),
        condition(CONDITION_PROGRESSING, "False", reason, &message, generation, now, previous),
        condition(CONDITION_DEGRADED, "True", verdict.reason, &verdict.message, generation, now, previous),
    ];
    Evaluation { status, requeue_after: RESYNC, reason, message }
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
    previous: &MCPServerStatus,
) -> Condition {
    let last_transition_time = previous
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

fn conditions(
    status: &MCPServerStatus,
    verdict: &Verdict,
    workload: Workload,
    settings: &Settings,
    previous: &MCPServerStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let make = |type_: &str, value: &str, reason: &str, message: &str| {
        condition(type_, value, reason, message, generation, now, previous)
    };
    let state = verdict.state;
    let ready = if state == ServerState::Ready {
        make(CONDITION_READY, "True", verdict.reason, &verdict.message)
    } else {
        make(CONDITION_READY, "False", verdict.reason, &verdict.message)
    };
    let failures = status.consecutive_failures.unwrap_or(0);
    let health_failing =
        settings.health_enabled && (failures >= settings.failure_threshold || settings.breaker_open(failures));
    let health_reason =
        if settings.breaker_open(failures) { reason::CIRCUIT_OPEN } else { reason::HEALTH_CHECK_FAILING };
    let available = match workload {
        Workload::Container { desired: 0, .. } => {
            make(CONDITION_AVAILABLE, "False", reason::SCALED_TO_ZERO, "no replicas are wanted")
        }
        Workload::Container { ready: 0, desired, .. } => {
            make(CONDITION_AVAILABLE, "False", reason::NO_READY_REPLICAS, &format!("0 of {desired} replicas are ready"))
        }
        _ if health_failing => make(CONDITION_AVAILABLE, "False", health_reason, &verdict.message),
        Workload::Container { ready, desired, .. } => make(
            CONDITION_AVAILABLE,
            "True",
            reason::REPLICAS_AVAILABLE,
            &format!("{ready} of {desired} replicas are ready"),
        ),
        Workload::Remote if !settings.health_enabled => make(
            CONDITION_AVAILABLE,
            "Unknown",
            reason::HEALTH_CHECK_DISABLED,
            "health checks are disabled, so the endpoint is not watched",
        ),
        Workload::Remote if failures == 0 && status.last_health_check.is_some() => make(
            CONDITION_AVAILABLE,
            "True",
            reason::ENDPOINT_RESPONDING,
            "the endpoint answered the last MCP health check",
        ),
        Workload::Remote => make(CONDITION_AVAILABLE, "False", reason::AWAITING_HEALTH_CHECK, &verdict.message),
    };
    let progressing = match workload {
        Workload::Remote => {
            make(CONDITION_PROGRESSING, "False", reason::NO_WORKLOAD, "remote servers run no workload in the cluster")
        }
        Workload::Container { desired: 0, .. } => {
            make(CONDITION_PROGRESSING, "False", reason::SCALED_TO_ZERO, "no replicas are wanted")
        }
        _ if verdict.reason == reason::STARTUP_TIMEOUT => {
            make(CONDITION_PROGRESSING, "False", reason::STARTUP_TIMEOUT, &verdict.message)
        }
        Workload::Container { desired, ready, updated, .. } if ready < desired || updated < desired => make(
            CONDITION_PROGRESSING,
            "True",
            reason::ROLLING_OUT,
            &format!("{updated} of {desired} replicas updated, {ready} ready"),
        ),
        Workload::Container { desired, .. } => make(
            CONDITION_PROGRESSING,
            "False",
            reason::ROLLOUT_COMPLETE,
            &format!("all {desired} replicas are updated and ready"),
        ),
    };
    let degraded = if matches!(state, ServerState::Degraded | ServerState::Dead) {
        make(CONDITION_DEGRADED, "True", verdict.reason, &verdict.message)
    } else {
        make(CONDITION_DEGRADED, "False", reason::AS_EXPECTED, "")
    };
    vec![ready, available, progressing, degraded]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CircuitBreaker, HealthCheck, MCPServerSpec};

    const T0: i64 = 1_750_000_000;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(T0 + seconds).unwrap()
    }

    fn settings() -> Settings {
        Settings::of(&MCPServerSpec {
            health_check: Some(Box::new(HealthCheck {
                enabled: Some(true),
                interval: Some("10s".into()),
                timeout: Some("2s".into()),
                failure_threshold: Some(2),
            })),
            circuit_breaker: Some(Box::new(CircuitBreaker {
                enabled: Some(true),
                failure_threshold: Some(3),
                reset_timeout: Some("30s".into()),
            })),
            startup_timeout: Some("60s".into()),
            ..MCPServerSpec::default()
        })
    }

    fn passed(tools: &[&str]) -> Check {
        Check::Passed(HealthReport {
            protocol_version: crate::mcp::Revision::V2026_07_28,
            server_info: Some(crate::mcp::ServerInfo { name: "srv".into(), version: Some("1.0".into()) }),
            tools_listed: true,
            tools: tools.iter().map(|t| t.to_string()).collect(),
        })
    }

    #[test]
    fn a_passed_check_records_revision_and_identity_and_failures_keep_them() {
        let s = settings();
        let passed_now = step(&s, &MCPServerStatus::default(), Workload::Remote, true, at(0)).status;
        assert_eq!(passed_now.protocol_version.as_deref(), Some("2026-07-28"));
        let info = passed_now.server_info.clone().unwrap();
        assert_eq!((info.name.as_str(), info.version.as_deref()), ("srv", Some("1.0")));
        let failed = step(&s, &passed_now, Workload::Remote, false, at(20)).status;
        assert_eq!(failed.protocol_version, passed_now.protocol_version);
        assert_eq!(failed.server_info, passed_now.server_info);
    }

    #[test]
    fn long_errors_are_bounded_in_conditions() {
        let error = "e".repeat(10 * MAX_ERROR_LEN);
        let kept = last_error(Some(&Check::Failed(error)), &MCPServerStatus::default());
        assert_eq!(kept.chars().count(), MAX_ERROR_LEN + 1);
    }

    fn container(desired: i32, ready: i32) -> Workload {
        Workload::Container { desired, replicas: desired, ready, updated: desired }
    }

    /// Runs one evaluation the way reconcile does: check if due, then evaluate.
    fn step(
        settings: &Settings,
        previous: &MCPServerStatus,
        workload: Workload,
        healthy: bool,
        now: Timestamp,
    ) -> Evaluation {
        let check = check_due(settings, previous, workload, now)
            .then(|| if healthy { passed(&["a", "b"]) } else { Check::Failed("connection refused".into()) });
        evaluate(Observation {
            generation: Some(1),
            previous,
            settings,
            workload,
            check,
            tools: &ToolPolicy::default(),
            url: "http://x".into(),
            gateway_url: Some("http://gw/servers/ns/x/mcp".into()),
            selector: None,
            now,
        })
    }

    fn condition<'a>(status: &'a MCPServerStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn settings_default_when_unset() {
        let s = Settings::of(&MCPServerSpec::default());
        assert!(s.health_enabled && s.breaker_enabled);
        assert_eq!(s.interval, Duration::from_secs(30));
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!((s.failure_threshold, s.breaker_threshold), (3, 5));
        assert_eq!(s.reset_timeout, Duration::from_secs(30));
        assert_eq!(s.startup_timeout, Duration::from_secs(30));
    }

    #[test]
    fn a_cold_server_reports_the_replicas_still_stopping() {
        let s = settings();
        let ready = step(&s, &MCPServerStatus::default(), container(1, 1), true, at(0)).status;
        let stopping = Workload::Container { desired: 0, replicas: 1, ready: 1, updated: 1 };
        let cold = step(&s, &ready, stopping, true, at(10)).status;
        assert_eq!((cold.state, cold.replicas, cold.ready_replicas), (Some(ServerState::Cold), Some(1), Some(1)));
        let stopped = step(&s, &cold, container(0, 0), true, at(20)).status;
        assert_eq!((stopped.replicas, stopped.ready_replicas), (Some(0), Some(0)), "the gateway sees the pods gone");
    }

    #[test]
    fn container_lifecycle_table() {
        let s = settings();
        // (seconds, desired, ready, healthy, expected state, expected reason)
        let table = [
            (0, 1, 0, true, ServerState::Initializing, reason::STARTING),
            (20, 1, 0, true, ServerState::Initializing, reason::STARTING),
            (25, 1, 1, true, ServerState::Ready, reason::HEALTH_CHECK_PASSED),
            (30, 2, 1, true, ServerState::Degraded, reason::REPLICAS_UNAVAILABLE),
            (31, 2, 2, true, ServerState::Ready, reason::HEALTH_CHECK_PASSED),
            (40, 0, 0, true, ServerState::Cold, reason::SCALED_TO_ZERO),
            (50, 1, 0, true, ServerState::Initializing, reason::STARTING),
            (111, 1, 0, true, ServerState::Dead, reason::STARTUP_TIMEOUT),
            (120, 1, 1, true, ServerState::Ready, reason::HEALTH_CHECK_PASSED),
        ];
        let mut status = MCPServerStatus::default();
        for (seconds, desired, ready, healthy, state, why) in table {
            let eval = step(&s, &status, container(desired, ready), healthy, at(seconds));
            assert_eq!((eval.state(), eval.reason), (Some(state), why), "at {seconds}s: {}", eval.message);
            status = eval.status;
        }
        assert_eq!(status.last_started_at, Some(Time(at(50))));
        assert_eq!(status.tools, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn a_ready_server_losing_its_pods_is_degraded_not_dead() {
        let s = settings(); // startupTimeout 60s
        let day = 86_400;
        // (seconds, desired, ready, expected state, expected reason)
        let table = [
            (0, 1, 0, ServerState::Initializing, reason::STARTING),
            (5, 1, 1, ServerState::Ready, reason::HEALTH_CHECK_PASSED),
            // A pod restart after a long uptime: an outage, not a missed startup.
            (day, 1, 0, ServerState::Degraded, reason::NO_READY_REPLICAS),
            (day + 30, 1, 0, ServerState::Degraded, reason::NO_READY_REPLICAS),
            (day + 40, 1, 1, ServerState::Ready, reason::HEALTH_CHECK_PASSED),
            // A second outage that lasts past the startup timeout, counted from its own start.
            (2 * day, 1, 0, ServerState::Degraded, reason::NO_READY_REPLICAS),
            (2 * day + 59, 1, 0, ServerState::Degraded, reason::NO_READY_REPLICAS),
            (2 * day + 61, 1, 0, ServerState::Dead, reason::STARTUP_TIMEOUT),
            (2 * day + 70, 1, 1, ServerState::Ready, reason::HEALTH_CHECK_PASSED),
        ];
        let mut status = MCPServerStatus::default();
        for (seconds, desired, ready, state, why) in table {
            let eval = step(&s, &status, container(desired, ready), true, at(seconds));
            assert_eq!((eval.state(), eval.reason), (Some(state), why), "at {seconds}s: {}", eval.message);
            if why == reason::NO_READY_REPLICAS {
                assert!(eval.requeue_after <= s.startup_timeout + MIN_REQUEUE, "back by the outage deadline");
                let ready_condition = condition(&eval.status, CONDITION_READY);
                assert_eq!(ready_condition.status, "False", "no ready replica: not Ready");
            }
            status = eval.status;
        }
        assert_eq!(status.last_started_at, Some(Time(at(2 * day))), "the last outage's start is kept");
    }

    #[test]
    fn remote_failing_degrades_opens_breaker_dies_then_recovers() {
        let s = settings();
        // (seconds, healthy, state, reason, failures)
        let table = [
            (0, true, ServerState::Ready, reason::HEALTH_CHECK_PASSED, 0),
            (10, false, ServerState::Ready, reason::HEALTH_CHECK_PASSED, 1),
            (20, false, ServerState::Degraded, reason::HEALTH_CHECK_FAILING, 2),
            (30, false, ServerState::Degraded, reason::CIRCUIT_OPEN, 3),
            // Breaker open: no check before resetTimeout (30s after it opened).
            (45, true, ServerState::Degraded, reason::CIRCUIT_OPEN, 3),
            (60, false, ServerState::Dead, reason::CIRCUIT_OPEN_TOO_LONG, 4),
            (75, true, ServerState::Dead, reason::CIRCUIT_OPEN_TOO_LONG, 4),
            (90, true, ServerState::Ready, reason::HEALTH_CHECK_PASSED, 0),
        ];
        let mut status = MCPServerStatus::default();
        for (seconds, healthy, state, why, failures) in table {
            let eval = step(&s, &status, Workload::Remote, healthy, at(seconds));
            assert_eq!(
                (eval.state(), eval.reason, eval.status.consecutive_failures),
                (Some(state), why, Some(failures)),
                "at {seconds}s: {}",
                eval.message
            );
            status = eval.status;
        }
    }

    #[test]
    fn breaker_disabled_never_kills() {
        let mut s = settings();
        s.breaker_enabled = false;
        let mut status = MCPServerStatus::default();
        for i in 0..10 {
            status = step(&s, &status, Workload::Remote, false, at(i * 10)).status;
        }
        assert_eq!(status.state, Some(ServerState::Degraded));
        assert_eq!(status.consecutive_failures, Some(10));
    }

    #[test]
    fn checks_wait_for_the_interval_and_ready_replicas() {
        let s = settings();
        let fresh = MCPServerStatus::default();
        assert!(check_due(&s, &fresh, Workload::Remote, at(0)));
        assert!(!check_due(&s, &fresh, container(1, 0), at(0)));
        assert!(!check_due(&s, &fresh, container(0, 0), at(0)));
        let checked = step(&s, &fresh, Workload::Remote, true, at(0)).status;
        assert!(!check_due(&s, &checked, Workload::Remote, at(9)));
        assert!(check_due(&s, &checked, Workload::Remote, at(10)));
        let mut disabled = s.clone();
        disabled.health_enabled = false;
        assert!(!check_due(&disabled, &fresh, Workload::Remote, at(0)));
    }

    #[test]
    fn requeue_follows_interval_startup_and_breaker() {
        let s = settings();
        let fresh = MCPServerStatus::default();
        let ready = step(&s, &fresh, Workload::Remote, true, at(0));
        assert_eq!(ready.requeue_after, Duration::from_secs(10));
        let starting = step(&s, &fresh, container(1, 0), true, at(0));
        assert_eq!(starting.requeue_after, Duration::from_secs(61));
        let mut status = fresh;
        for i in 0..3 {
            status = step(&s, &status, Workload::Remote, false, at(i * 10)).status;
        }
        let open = step(&s, &status, Workload::Remote, false, at(25));
        assert_eq!(open.requeue_after, Duration::from_secs(25));
        let cold = step(&s, &MCPServerStatus::default(), container(0, 0), true, at(0));
        assert_eq!(cold.requeue_after, RESYNC);
    }

    #[test]
    fn the_tool_policy_filters_tools() {
        let s = settings();
        let allowed = ["b", "c", "zzz"].map(String::from).into();
        let policy = ToolPolicy { allow: Some(allowed), deny: ["c".to_string()].into() };
        let eval = evaluate(Observation {
            generation: Some(1),
            previous: &MCPServerStatus::default(),
            settings: &s,
            workload: Workload::Remote,
            check: Some(passed(&["a", "b", "c"])),
            tools: &policy,
            url: "u".into(),
            gateway_url: Some("http://gw/servers/ns/u/mcp".into()),
            selector: None,
            now: at(0),
        });
        assert_eq!(eval.status.tools, vec!["b".to_string()]);
        assert_eq!(eval.status.tools_count, Some(1));
        assert_eq!(
            eval.status.gateway_url.as_deref(),
            Some("http://gw/servers/ns/u/mcp"),
            "status names the gateway URL"
        );
    }

    #[test]
    fn other_writers_conditions_are_not_the_controllers() {
        let s = settings();
        let mut stored = step(&s, &MCPServerStatus::default(), container(1, 1), true, at(0)).status;
        let ours = stored.clone();
        let mut breaker = stored.conditions[0].clone();
        breaker.type_ = "CircuitBreakerOpen".into();
        stored.conditions.push(breaker);
        assert_eq!(owned(Some(&stored)), ours, "the gateway's condition is neither a change nor applied back");
        assert_eq!(owned(None), MCPServerStatus::default());
    }

    #[test]
    fn conditions_describe_the_state_and_keep_transition_times() {
        let s = settings();
        let first = step(&s, &MCPServerStatus::default(), container(1, 0), true, at(0)).status;
        assert_eq!(condition(&first, CONDITION_READY).status, "False");
        assert_eq!(condition(&first, CONDITION_PROGRESSING).status, "True");
        assert_eq!(condition(&first, CONDITION_AVAILABLE).reason, reason::NO_READY_REPLICAS);
        assert_eq!(condition(&first, CONDITION_DEGRADED).status, "False");
        let second = step(&s, &first, container(1, 0), true, at(5)).status;
        assert_eq!(condition(&second, CONDITION_READY).last_transition_time, Time(at(0)));
        let ready = step(&s, &second, container(1, 1), true, at(6)).status;
        let cond = condition(&ready, CONDITION_READY);
        assert_eq!((cond.status.as_str(), cond.last_transition_time.clone()), ("True", Time(at(6))));
        assert_eq!(condition(&ready, CONDITION_AVAILABLE).status, "True");
        assert_eq!(condition(&ready, CONDITION_PROGRESSING).reason, reason::ROLLOUT_COMPLETE);
        assert!(ready.conditions.iter().all(|c| c.observed_generation == Some(1)));
    }

    #[test]
    fn degraded_message_names_the_last_error_even_without_a_new_check() {
        let s = settings();
        let mut status = MCPServerStatus::default();
        for i in 0..2 {
            status = step(&s, &status, Workload::Remote, false, at(i * 10)).status;
        }
        let again = step(&s, &status, Workload::Remote, false, at(12));
        assert_eq!(again.reason, reason::HEALTH_CHECK_FAILING);
        assert!(again.message.contains("last error: connection refused"), "{}", again.message);
        assert_eq!(again.status, status, "nothing changed, so nothing to write");
    }

    #[test]
    fn refused_servers_are_dead_with_the_reason_everywhere() {
        let eval = refused(
            &MCPServerStatus::default(),
            Some(4),
            reason::INVALID_SPEC,
            "spec.image: Required value".into(),
            at(0),
        );
        assert_eq!(eval.state(), Some(ServerState::Dead));
        assert_eq!(eval.status.observed_generation, Some(4));
        assert_eq!(condition(&eval.status, CONDITION_READY).reason, reason::INVALID_SPEC);
        assert_eq!(condition(&eval.status, CONDITION_DEGRADED).status, "True");
        assert_eq!(eval.requeue_after, RESYNC);
    }
}
