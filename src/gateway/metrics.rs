//! The gateway's Prometheus metrics, registered into the process registry.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Tool calls by namespace, server, tool and outcome.
pub const TOOL_CALLS: &str = "mcp_hangar_tool_calls_total";
/// Time to answer (response headers) per route.
pub const REQUEST_DURATION: &str = "mcp_hangar_gateway_request_duration_seconds";
/// Tool calls refused by the rate limit.
pub const RATE_LIMIT_HITS: &str = "mcp_hangar_rate_limit_hits_total";
/// Breaker state per server: 0 closed, 1 open, 2 half-open.
pub const CIRCUIT_BREAKER_STATE: &str = "mcp_hangar_circuit_breaker_state";

/// Wakes of scale-to-zero servers by outcome.
pub const COLD_STARTS: &str = "mcp_hangar_cold_starts_total";
/// Time from the first request that waits for a cold server to its first ready replica.
pub const COLD_START_SECONDS: &str = "mcp_hangar_cold_start_seconds";

/// Cold-start buckets, in seconds: a pull and start of a container takes seconds to minutes.
const COLD_START_BUCKETS: [f64; 11] = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

/// Latency buckets, in seconds: the gateway adds well under a millisecond; tools take longer.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The gateway's metrics.
#[derive(Clone)]
pub struct GatewayMetrics {
    /// `mcp_hangar_tool_calls_total{namespace, server, tool, outcome}`
    pub tool_calls: IntCounterVec,
    /// `mcp_hangar_gateway_request_duration_seconds{kind, namespace, name, method}`
    pub request_duration: HistogramVec,
    /// `mcp_hangar_rate_limit_hits_total{namespace, server}`
    pub rate_limit_hits: IntCounterVec,
    /// `mcp_hangar_circuit_breaker_state{namespace, server}`
    pub circuit_breaker_state: IntGaugeVec,
    /// `mcp_hangar_cold_starts_total{namespace, server, outcome}`, outcome `ready`, `timeout`
    /// or `refused` (the demand could not be recorded).
    pub cold_starts: IntCounterVec,
    /// `mcp_hangar_cold_start_seconds{namespace, server}`
    pub cold_start_seconds: HistogramVec,
}

impl GatewayMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = GatewayMetrics {
            tool_calls: IntCounterVec::new(
                Opts::new(TOOL_CALLS, "Tool calls through the gateway by server, tool and outcome."),
                &["namespace", "server", "tool", "outcome"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(REQUEST_DURATION, "Time until the gateway answers a request (headers), per route.")
                    .buckets(BUCKETS.to_vec()),
                &["kind", "namespace", "name", "method"],
            )?,
            rate_limit_hits: IntCounterVec::new(
                Opts::new(RATE_LIMIT_HITS, "Tool calls refused by a server's rate limit."),
                &["namespace", "server"],
            )?,
            circuit_breaker_state: IntGaugeVec::new(
                Opts::new(CIRCUIT_BREAKER_STATE, "Circuit breaker of a server: 0 closed, 1 open, 2 half-open."),
                &["namespace", "server"],
            )?,
            cold_starts: IntCounterVec::new(
                Opts::new(COLD_STARTS, "Wakes of scale-to-zero servers by the gateway, by outcome."),
                &["namespace", "server", "outcome"],
            )?,
            cold_start_seconds: HistogramVec::new(
                HistogramOpts::new(
                    COLD_START_SECONDS,
                    "Time from the first request waiting for a scale-to-zero server to its first ready replica.",
                )
                .buckets(COLD_START_BUCKETS.to_vec()),
                &["namespace", "server"],
            )?,
        };
        registry.register(Box::new(metrics.tool_calls.clone()))?;
        registry.register(Box::new(metrics.request_duration.clone()))?;
        registry.register(Box::new(metrics.rate_limit_hits.clone()))?;
        registry.register(Box::new(metrics.circuit_breaker_state.clone()))?;
        registry.register(Box::new(metrics.cold_starts.clone()))?;
        registry.register(Box::new(metrics.cold_start_seconds.clone()))?;
        Ok(metrics)
    }
}

/// The `tool` label of a name: the name when it is a plausible tool name, else `other`, so that
/// clients cannot grow the label set without bound with junk names.
pub fn tool_label(name: &str) -> &str {
    let plausible = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    if plausible { name } else { "other" }
}
