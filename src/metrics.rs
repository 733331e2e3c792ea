//! Prometheus metrics: one registry for the whole process, names in one place.

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Admission requests by kind, operation and verdict.
pub const ADMISSION_REQUESTS: &str = "mcp_hangar_admission_requests_total";
/// Admission latency by endpoint.
pub const ADMISSION_DURATION: &str = "mcp_hangar_admission_duration_seconds";
/// Not-after of the webhook certificate being served, as a Unix timestamp.
pub const WEBHOOK_CERTIFICATE_EXPIRY: &str = "mcp_hangar_webhook_certificate_expiry_timestamp_seconds";
/// Certificates issued and stored by this process, by part (`serving`, `ca`).
pub const WEBHOOK_CERTIFICATE_ROTATIONS: &str = "mcp_hangar_webhook_certificate_rotations_total";

/// Reconciles of MCPServers by result (`success` or `error`).
pub const RECONCILE_TOTAL: &str = "mcp_operator_reconcile_total";
/// Failed MCPServer reconciles, by the variant of the error.
pub const RECONCILE_ERRORS: &str = "mcp_operator_reconcile_errors_total";
/// Time one MCPServer reconcile takes.
pub const RECONCILE_DURATION: &str = "mcp_operator_reconcile_duration_seconds";
/// One series per MCPServer, labelled with its current state, value 1.
pub const SERVER_STATE: &str = "mcp_operator_provider_state";
/// Tools each MCPServer exposes.
pub const SERVER_TOOLS: &str = "mcp_operator_provider_tools_count";
/// Failed MCP health checks per MCPServer.
pub const SERVER_HEALTH_FAILURES: &str = "mcp_operator_provider_health_check_failures_total";
/// Errors of the controller's watches, by resource (410 Gone included).
pub const WATCH_ERRORS: &str = "mcp_hangar_watch_errors_total";
/// 1 while a watch of the controller works, 0 while it fails, by resource; absent when not leading.
pub const WATCH_UP: &str = "mcp_hangar_watch_up";

/// Latency buckets for reconciles, in seconds: API round trips plus a health check.
const RECONCILE_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Latency buckets for admission, in seconds: the webhook answers in microseconds to milliseconds.
const ADMISSION_BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

/// Every metric of the process, registered in its own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `mcp_hangar_admission_requests_total{endpoint, kind, operation, verdict}`
    pub admission_requests: IntCounterVec,
    /// `mcp_hangar_admission_duration_seconds{endpoint}`
    pub admission_duration: HistogramVec,
    /// `mcp_hangar_webhook_certificate_expiry_timestamp_seconds`
    pub webhook_certificate_expiry: Gauge,
    /// `mcp_hangar_webhook_certificate_rotations_total{part}`
    pub webhook_certificate_rotations: IntCounterVec,
    /// `mcp_operator_reconcile_total{result}`
    pub reconcile_total: IntCounterVec,
    /// `mcp_operator_reconcile_errors_total{reason}`
    pub reconcile_errors: IntCounterVec,
    /// `mcp_operator_reconcile_duration_seconds`
    pub reconcile_duration: Histogram,
    /// `mcp_operator_provider_health_check_failures_total{name, namespace}`
    pub server_health_failures: IntCounterVec,
    /// `mcp_hangar_watch_errors_total{resource}`
    pub watch_errors: IntCounterVec,
    /// `mcp_hangar_watch_up{resource}`
    pub watch_up: IntGaugeVec,
    /// The per-server families, written at scrape time (set while the controller leads).
    server_series: Arc<RwLock<Option<Renderer>>>,
}

/// Writes series in the text format at scrape time, from state a module already keeps: the
/// per-server families come from the controller's MCPServer store, so 10k servers do not cost
/// 20k stored series (the `prometheus` crate keeps a label-pair proto per series).
pub type Renderer = Arc<dyn Fn(&mut String) + Send + Sync>;

/// One MCPServer's per-server series: `mcp_operator_provider_state` and
/// `mcp_operator_provider_tools_count`.
pub struct ServerSeries<'a> {
    /// The server's name.
    pub name: &'a str,
    /// The server's namespace.
    pub namespace: &'a str,
    /// The state it reports.
    pub state: &'a str,
    /// The tools it exposes.
    pub tools: i64,
}

/// Writes the per-server families for `servers` (none when empty), in the order given.
pub fn write_server_series(out: &mut String, servers: &[ServerSeries<'_>]) {
    if servers.is_empty() {
        return;
    }
    let state_help = "MCPServer state: one series per server, labelled with its current state, value 1.";
    let _ = writeln!(out, "# HELP {SERVER_STATE} {state_help}\n# TYPE {SERVER_STATE} gauge");
    for server in servers {
        let (name, namespace, state) = (escape(server.name), escape(server.namespace), escape(server.state));
        let _ = writeln!(out, "{SERVER_STATE}{{name=\"{name}\",namespace=\"{namespace}\",state=\"{state}\"}} 1");
    }
    let _ = writeln!(out, "# HELP {SERVER_TOOLS} Tools an MCPServer exposes.\n# TYPE {SERVER_TOOLS} gauge");
    for server in servers {
        let (name, namespace) = (escape(server.name), escape(server.namespace));
        let _ = writeln!(out, "{SERVER_TOOLS}{{name=\"{name}\",namespace=\"{namespace}\"}} {}", server.tools);
    }
}

/// A label value escaped for the text format (backslash, double quote, line feed).
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(['\\', '"', '\n']) {
        value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
    } else {
        value.into()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let admission_requests = IntCounterVec::new(
            Opts::new(ADMISSION_REQUESTS, "Admission requests by endpoint, kind, operation and verdict."),
            &["endpoint", "kind", "operation", "verdict"],
        )
        .expect("valid metric definition");
        let admission_duration = HistogramVec::new(
            HistogramOpts::new(ADMISSION_DURATION, "Time to answer an admission request.")
                .buckets(ADMISSION_BUCKETS.to_vec()),
            &["endpoint"],
        )
        .expect("valid metric definition");
        let webhook_certificate_expiry = Gauge::new(
            WEBHOOK_CERTIFICATE_EXPIRY,
            "Not-after of the webhook serving certificate being served, as a Unix timestamp.",
        )
        .expect("valid metric definition");
        let webhook_certificate_rotations = IntCounterVec::new(
            Opts::new(
                WEBHOOK_CERTIFICATE_ROTATIONS,
                "Webhook certificates issued and stored by this process, by part.",
            ),
            &["part"],
        )
        .expect("valid metric definition");
        let reconcile_total =
            IntCounterVec::new(Opts::new(RECONCILE_TOTAL, "MCPServer reconciles by result."), &["result"])
                .expect("valid metric definition");
        let reconcile_errors = IntCounterVec::new(
            Opts::new(RECONCILE_ERRORS, "Failed MCPServer reconciles by error variant."),
            &["reason"],
        )
        .expect("valid metric definition");
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(RECONCILE_DURATION, "Time to reconcile one MCPServer.")
                .buckets(RECONCILE_BUCKETS.to_vec()),
        )
        .expect("valid metric definition");
        let server_health_failures = IntCounterVec::new(
            Opts::new(SERVER_HEALTH_FAILURES, "Failed MCP health checks of an MCPServer."),
            &["name", "namespace"],
        )
        .expect("valid metric definition");
        let watch_errors = IntCounterVec::new(
            Opts::new(WATCH_ERRORS, "Errors of the controller's watches by resource (410 Gone included)."),
            &["resource"],
        )
        .expect("valid metric definition");
        let watch_up = IntGaugeVec::new(
            Opts::new(WATCH_UP, "1 while a watch of the controller works, 0 while it fails."),
            &["resource"],
        )
        .expect("valid metric definition");
        registry.register(Box::new(admission_requests.clone())).expect("unique metric");
        registry.register(Box::new(admission_duration.clone())).expect("unique metric");
        registry.register(Box::new(webhook_certificate_expiry.clone())).expect("unique metric");
        registry.register(Box::new(webhook_certificate_rotations.clone())).expect("unique metric");
        registry.register(Box::new(reconcile_total.clone())).expect("unique metric");
        registry.register(Box::new(reconcile_errors.clone())).expect("unique metric");
        registry.register(Box::new(reconcile_duration.clone())).expect("unique metric");
        registry.register(Box::new(server_health_failures.clone())).expect("unique metric");
        registry.register(Box::new(watch_errors.clone())).expect("unique metric");
        registry.register(Box::new(watch_up.clone())).expect("unique metric");
        Metrics {
            registry,
            admission_requests,
            admission_duration,
            webhook_certificate_expiry,
            webhook_certificate_rotations,
            reconcile_total,
            reconcile_errors,
            reconcile_duration,
            server_health_failures,
            watch_errors,
            watch_up,
            server_series: Arc::default(),
        }
    }

    /// The registry, for modules that add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Sets (or with `None` removes) what writes the per-server families at scrape time.
    pub fn set_server_series(&self, renderer: Option<Renderer>) {
        *self.server_series.write().unwrap_or_else(|e| e.into_inner()) = renderer;
    }

    /// All metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        let mut text = String::from_utf8(out).unwrap_or_default();
        let server_series = self.server_series.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(renderer) = server_series {
            renderer(&mut text);
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_server_families_are_written_at_scrape_time_and_removed_with_their_renderer() {
        let metrics = Metrics::new();
        let renderer: Renderer = Arc::new(|out: &mut String| {
            let servers = [
                ServerSeries { name: "fetch", namespace: "tools", state: "Ready", tools: 3 },
                ServerSeries { name: "odd\"name\\", namespace: "a\nb", state: "Cold", tools: 0 },
            ];
            write_server_series(out, &servers);
        });
        metrics.set_server_series(Some(renderer));
        let text = metrics.render();
        assert!(text.contains(&format!("# TYPE {SERVER_STATE} gauge\n")), "{text}");
        assert!(text.contains(r#"mcp_operator_provider_state{name="fetch",namespace="tools",state="Ready"} 1"#));
        assert!(text.contains(r#"mcp_operator_provider_tools_count{name="fetch",namespace="tools"} 3"#));
        assert!(text.contains(r#"mcp_operator_provider_state{name="odd\"name\\",namespace="a\nb",state="Cold"} 1"#));
        assert_eq!(text.matches(&format!("# HELP {SERVER_TOOLS} ")).count(), 1);
        metrics.set_server_series(None);
        assert!(!metrics.render().contains(SERVER_STATE));
    }

    #[test]
    fn no_servers_write_no_family() {
        let mut out = String::new();
        write_server_series(&mut out, &[]);
        assert!(out.is_empty());
    }
}
