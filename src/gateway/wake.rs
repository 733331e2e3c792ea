//! Cold start on the data path: a request to a scale-to-zero server (`replicas: 0`) records
//! demand (the server's demand Lease, [`crate::policy::demand`]) and, while the server has no
//! ready replica, waits until the catalog (the MCPServer reflector) shows one.
//!
//! The gateway never scales anything: the controller reads the Lease and runs one replica
//! while the last request is younger than `idleTTL`. Per server, the Lease is written at most
//! once per [`demand::renew_interval`] and never twice at once; every request that arrives
//! meanwhile joins the same wake. Waiting is bounded: at most `max_waiters` requests per
//! server (more are refused at once), each for at most the server's `startupTimeout`. When the
//! demand cannot be recorded the waiting requests are refused (fail closed): no write, no wake.
//!
//! Only a POST (a JSON-RPC message) is demand: GET streams and session DELETEs do not wake a
//! server. Given a group route, demand is recorded for its cold members without waiting; the
//! proxy asks instead for the one member a group's strategy picks (`balance`: a cold member only
//! when no warm one is left), as a server, so that member is woken and awaited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use hyper::StatusCode;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::GatewayMetrics;
use super::route::{Catalog, RouteKey, RouteKind, Upstream};
use crate::crd::{MCPServer, ServerMode, ServerState};
use crate::policy::defaults::Settings;
use crate::policy::demand;

/// Field manager of the gateway's demand Lease writes.
pub const FIELD_MANAGER: &str = "mcp-hangar-gateway";
/// `Retry-After` of a request refused because its server is still cold.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A demand that could not be recorded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("writing the demand Lease {lease}: {reason}")]
pub struct DemandError {
    /// Name of the Lease.
    pub lease: String,
    /// What failed.
    pub reason: String,
}

/// Where demand goes: the demand Lease of a server, renewed now.
pub trait DemandSignal: Send + Sync + 'static {
    /// Records a request to the server `namespace/name`.
    fn record(&self, namespace: &str, name: &str) -> BoxFuture<'static, Result<(), DemandError>>;
}

/// Demand Leases in the operator's namespace, written with server-side apply (which creates
/// the Lease the first time: RBAC `create` and `patch` on Leases there, nothing else).
pub struct LeaseDemand {
    api: Api<Lease>,
    operator_namespace: String,
    holder: String,
}

impl LeaseDemand {
    /// Writes Leases in `operator_namespace` as `holder` (this gateway replica).
    pub fn new(client: kube::Client, operator_namespace: &str, holder: &str) -> Self {
        LeaseDemand {
            api: Api::namespaced(client, operator_namespace),
            operator_namespace: operator_namespace.to_string(),
            holder: holder.to_string(),
        }
    }
}

impl DemandSignal for LeaseDemand {
    fn record(&self, namespace: &str, name: &str) -> BoxFuture<'static, Result<(), DemandError>> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let lease = demand::demand_lease(&self.operator_namespace, namespace, name, &self.holder, now);
        let lease_name = demand::lease_name(namespace, name);
        let api = self.api.clone();
        Box::pin(async move {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match api.patch(&lease_name, &params, &Patch::Apply(&lease)).await {
                Ok(_) => Ok(()),
                Err(e) => Err(DemandError { lease: lease_name, reason: e.to_string() }),
            }
        })
    }
}

/// A request the gateway answers itself because its server is cold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cold {
    /// 503.
    pub status: StatusCode,
    /// Names the server and says why.
    pub message: String,
    /// When to try again.
    pub retry_after: Duration,
}

/// The Lease writes of one server, as its waiters see them.
#[derive(Debug, Clone, Default)]
struct Writes {
    in_flight: bool,
    /// When the last successful write was sent.
    written: Option<Instant>,
    /// The last write's failure, until a write succeeds.
    failed: Option<DemandError>,
}

/// One scale-to-zero server seen by this replica.
struct Entry {
    writes: watch::Sender<Writes>,
    waiters: usize,
    /// When the first request of the wake under way began to wait.
    wake_started: Option<Instant>,
}

impl Entry {
    fn new() -> Self {
        Entry { writes: watch::Sender::new(Writes::default()), waiters: 0, wake_started: None }
    }
}

/// How a wake ended, for the metrics.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ready,
    Timeout,
    Refused,
    /// The server was deleted or no longer scales to zero: not counted.
    Moot,
}

/// The cold-start state of every scale-to-zero server this replica has served.
pub struct Waker {
    signal: Option<Arc<dyn DemandSignal>>,
    max_waiters: usize,
    metrics: GatewayMetrics,
    servers: Arc<Mutex<HashMap<(String, String), Entry>>>,
}

/// Whether the server is scaled to zero until requests arrive.
fn scales_to_zero(server: &MCPServer) -> bool {
    server.spec.mode == Some(ServerMode::Container) && server.spec.replicas == Some(0)
}

/// Whether the controller reports a ready replica of an awake server.
fn has_ready_replica(server: &MCPServer) -> bool {
    let Some(status) = &server.status else { return false };
    status.state != Some(ServerState::Cold) && status.ready_replicas.unwrap_or(0) >= 1
}

/// Takes a waiter's place back when its request ends, however it ends.
struct Waiting<'a> {
    waker: &'a Waker,
    key: (String, String),
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.waker.servers.lock().expect("wake lock").get_mut(&self.key) {
            entry.waiters = entry.waiters.saturating_sub(1);
        }
    }
}

impl Waker {
    /// A waker that records demand through `signal` (none: scale-to-zero servers are forwarded
    /// to as they are, as with routes from a file), with at most `max_waiters` waiting
    /// requests per server.
    pub fn new(signal: Option<Arc<dyn DemandSignal>>, max_waiters: usize, metrics: GatewayMetrics) -> Self {
        Waker { signal, max_waiters, metrics, servers: Arc::default() }
    }

    /// Records demand for the cold servers a POST reaches and, on a server route, waits until
    /// the server has a ready replica. `Ok` also when there is nothing to wake.
    pub async fn admit(&self, catalog: &dyn Catalog, key: &RouteKey, upstreams: &[Upstream]) -> Result<(), Cold> {
        let Some(signal) = &self.signal else { return Ok(()) };
        let cold_servers = upstreams
            .iter()
            .filter_map(|upstream| catalog.server(&upstream.namespace, &upstream.name))
            .filter(|server| scales_to_zero(server));
        for server in cold_servers {
            let namespace = server.metadata.namespace.clone().unwrap_or_default();
            let name = server.metadata.name.clone().unwrap_or_default();
            let settings = Settings::of(&server.spec);
            self.demand(signal, (namespace.clone(), name.clone()), settings.idle_ttl);
            if key.kind == RouteKind::Server && !has_ready_replica(&server) {
                return self.wait(catalog, (namespace, name), settings.startup_timeout).await;
            }
        }
        Ok(())
    }

    /// Starts a Lease write for the server unless one is under way or the last one is recent.
    fn demand(&self, signal: &Arc<dyn DemandSignal>, key: (String, String), idle_ttl: Duration) {
        let now = Instant::now();
        let mut servers = self.servers.lock().expect("wake lock");
        let entry = servers.entry(key.clone()).or_insert_with(Entry::new);
        let due = {
            let writes = entry.writes.borrow();
            !writes.in_flight && writes.written.is_none_or(|at| now >= at + demand::renew_interval(idle_ttl))
        };
        if !due {
            return;
        }
        entry.writes.send_modify(|w| w.in_flight = true);
        let write = signal.record(&key.0, &key.1);
        let servers = self.servers.clone();
        tokio::spawn(async move {
            let result = write.await;
            if let Err(e) = &result {
                tracing::warn!(server = %format!("{}/{}", key.0, key.1), error = %e, "cannot record demand");
            }
            if let Some(entry) = servers.lock().expect("wake lock").get(&key) {
                entry.writes.send_modify(|w| {
                    w.in_flight = false;
                    match result {
                        Ok(()) => (w.written, w.failed) = (Some(now), None),
                        Err(e) => w.failed = Some(e),
                    }
                });
            }
        });
    }

    /// Waits until the catalog shows a ready replica of the server, the demand fails, or the
    /// startup timeout passes.
    async fn wait(&self, catalog: &dyn Catalog, key: (String, String), startup_timeout: Duration) -> Result<(), Cold> {
        let member = format!("{}/{}", key.0, key.1);
        let cold =
            |message: String| Cold { status: StatusCode::SERVICE_UNAVAILABLE, message, retry_after: RETRY_AFTER };
        let arrived = Instant::now();
        let mut writes = {
            let mut servers = self.servers.lock().expect("wake lock");
            let entry = servers.entry(key.clone()).or_insert_with(Entry::new);
            if entry.waiters >= self.max_waiters {
                return Err(cold(format!(
                    "Service Unavailable: MCPServer {member} is starting from zero and {} requests already wait for it",
                    self.max_waiters
                )));
            }
            entry.waiters += 1;
            entry.wake_started.get_or_insert(arrived);
            entry.writes.subscribe()
        };
        let _waiting = Waiting { waker: self, key: key.clone() };
        let mut changes = catalog.changes();
        let deadline = arrived + startup_timeout;
        let (mut catalog_open, mut writes_open) = (true, true);
        loop {
            match catalog.server(&key.0, &key.1) {
                Some(server) if scales_to_zero(&server) && !has_ready_replica(&server) => {}
                Some(server) if scales_to_zero(&server) => {
                    self.end_wake(&key, Outcome::Ready);
                    return Ok(());
                }
                // Changed to run replicas of its own, or gone: the normal path answers.
                _ => {
                    self.end_wake(&key, Outcome::Moot);
                    return Ok(());
                }
            }
            let failed = {
                let writes = writes.borrow_and_update();
                if writes.in_flight { None } else { writes.failed.clone() }
            };
            if let Some(e) = failed {
                self.end_wake(&key, Outcome::Refused);
                tracing::warn!(server = %member, error = %e, "refusing a request: its server could not be woken");
                return Err(cold(format!(
                    "Service Unavailable: MCPServer {member} is scaled to zero and could not be woken (the gateway could not record the demand)"
                )));
            }
            tokio::select! {
                // A closed channel (the catalog or the entry gone) leaves the deadline.
                changed = changes.changed(), if catalog_open => catalog_open = changed.is_ok(),
                changed = writes.changed(), if writes_open => writes_open = changed.is_ok(),
                () = tokio::time::sleep_until(deadline) => {
                    self.end_wake(&key, Outcome::Timeout);
                    return Err(cold(format!(
                        "Service Unavailable: MCPServer {member} is starting from zero and had no ready replica within its startupTimeout ({startup_timeout:?})"
                    )));
                }
            }
        }
    }

    /// Ends the wake under way, if any (once per wake: the first waiter to see its end).
    fn end_wake(&self, key: &(String, String), outcome: Outcome) {
        let started = self.servers.lock().expect("wake lock").get_mut(key).and_then(|e| e.wake_started.take());
        let Some(started) = started else { return };
        let label = match outcome {
            Outcome::Ready => "ready",
            Outcome::Timeout => "timeout",
            Outcome::Refused => "refused",
            Outcome::Moot => return,
        };
        self.metrics.cold_starts.with_label_values(&[&key.0, &key.1, label]).inc();
        if outcome == Outcome::Ready {
            let seconds = started.elapsed().as_secs_f64();
            self.metrics.cold_start_seconds.with_label_values(&[&key.0, &key.1]).observe(seconds);
            tracing::info!(server = %format!("{}/{}", key.0, key.1), seconds, "cold start: the server is ready");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use prometheus::Registry;

    use super::*;
    use crate::crd::{MCPServerSpec, MCPServerStatus};
    use crate::gateway::StaticCatalog;
    use crate::gateway::route::upstream;

    /// Counts writes; each takes `delay` and fails when `fail` says so.
    #[derive(Default)]
    struct Counting {
        writes: AtomicUsize,
        delay: Duration,
        fail: bool,
    }

    impl DemandSignal for Arc<Counting> {
        fn record(&self, namespace: &str, name: &str) -> BoxFuture<'static, Result<(), DemandError>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            let (this, lease) = (self.clone(), demand::lease_name(namespace, name));
            Box::pin(async move {
                tokio::time::sleep(this.delay).await;
                if this.fail { Err(DemandError { lease, reason: "forbidden".into() }) } else { Ok(()) }
            })
        }
    }

    fn server(replicas: i32, state: Option<(ServerState, i32)>) -> MCPServer {
        let mut server = MCPServer::new(
            "s",
            MCPServerSpec {
                mode: Some(ServerMode::Container),
                image: Some("a/b:1".into()),
                replicas: Some(replicas),
                startup_timeout: Some("10s".into()),
                idle_ttl: Some("40s".into()),
                ..Default::default()
            },
        );
        server.metadata.namespace = Some("ns".into());
        server.status = state.map(|(state, ready)| MCPServerStatus {
            state: Some(state),
            ready_replicas: Some(ready),
            ..Default::default()
        });
        server
    }

    struct Setup {
        catalog: StaticCatalog,
        signal: Arc<Counting>,
        waker: Waker,
        registry: Registry,
        key: RouteKey,
    }

    fn setup(signal: Counting, max_waiters: usize, initial: MCPServer) -> Setup {
        let registry = Registry::new();
        let metrics = GatewayMetrics::new(&registry).unwrap();
        let signal = Arc::new(signal);
        let waker = Waker::new(Some(Arc::new(signal.clone())), max_waiters, metrics);
        let catalog = StaticCatalog::default();
        catalog.put_server(initial);
        let key = RouteKey { kind: RouteKind::Server, namespace: "ns".into(), name: "s".into() };
        Setup { catalog, signal, waker, registry, key }
    }

    impl Setup {
        async fn admit(&self) -> Result<(), Cold> {
            let upstreams = [upstream(&self.catalog.server("ns", "s").unwrap()).unwrap()];
            self.waker.admit(&self.catalog, &self.key, &upstreams).await
        }

        fn writes(&self) -> usize {
            self.signal.writes.load(Ordering::SeqCst)
        }

        fn metric(&self, name: &str, outcome: Option<&str>) -> u64 {
            let families = self.registry.gather();
            let Some(family) = families.iter().find(|f| f.name() == name) else { return 0 };
            family
                .get_metric()
                .iter()
                .filter(|m| outcome.is_none_or(|o| m.get_label().iter().any(|l| l.value() == o)))
                .map(|m| m.get_counter().get_value() as u64 + m.get_histogram().get_sample_count())
                .sum()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn servers_with_replicas_are_untouched_and_awake_ones_are_renewed_once_per_interval() {
        let always_on = setup(Counting::default(), 4, server(1, None));
        always_on.admit().await.unwrap();
        assert_eq!(always_on.writes(), 0, "replicas ≥ 1: no demand is recorded");

        let awake = setup(Counting::default(), 4, server(0, Some((ServerState::Ready, 1))));
        for _ in 0..20 {
            awake.admit().await.unwrap();
        }
        tokio::task::yield_now().await;
        assert_eq!(awake.writes(), 1, "a ready server answers at once; one write per interval");
        tokio::time::sleep(Duration::from_secs(9)).await;
        awake.admit().await.unwrap();
        assert_eq!(awake.writes(), 1, "idleTTL 40s: renewed every 10s");
        tokio::time::sleep(Duration::from_secs(1)).await;
        awake.admit().await.unwrap();
        assert_eq!(awake.writes(), 2, "every request is demand: a busy server stays awake");
        assert_eq!(awake.metric(crate::gateway::metrics::COLD_STARTS, None), 0, "no wake happened");
    }

    #[tokio::test(start_paused = true)]
    async fn fifty_waiters_share_one_wake_and_are_all_let_through_once_a_replica_is_ready() {
        let counting = Counting { delay: Duration::from_millis(200), ..Counting::default() };
        let cold = setup(counting, 256, server(0, Some((ServerState::Cold, 0))));
        let started = Instant::now();
        let waiters = futures::future::join_all((0..50).map(|_| cold.admit()));
        let wake = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cold.catalog.put_server(server(0, Some((ServerState::Initializing, 0))));
            tokio::time::sleep(Duration::from_secs(2)).await;
            cold.catalog.put_server(server(0, Some((ServerState::Ready, 1))));
        };
        let (results, ()) = tokio::join!(waiters, wake);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(3), "answered as soon as the catalog shows a ready replica");
        assert_eq!(cold.writes(), 1, "one Lease write for 50 requests");
        assert_eq!(cold.metric(crate::gateway::metrics::COLD_STARTS, Some("ready")), 1);
        assert_eq!(cold.metric(crate::gateway::metrics::COLD_START_SECONDS, None), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_gets_ready_is_refused_after_its_startup_timeout() {
        let cold = setup(Counting::default(), 256, server(0, Some((ServerState::Cold, 0))));
        let started = Instant::now();
        let refused = cold.admit().await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(10), "startupTimeout 10s");
        assert_eq!((refused.status, refused.retry_after), (StatusCode::SERVICE_UNAVAILABLE, RETRY_AFTER));
        assert!(
            refused.message.contains("MCPServer ns/s") && refused.message.contains("startupTimeout"),
            "{refused:?}"
        );
        assert_eq!(cold.metric(crate::gateway::metrics::COLD_STARTS, Some("timeout")), 1);
        assert_eq!(cold.writes(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_past_the_bound_are_refused_at_once() {
        let cold = setup(Counting::default(), 2, server(0, Some((ServerState::Cold, 0))));
        let (first, second, third) = tokio::join!(cold.admit(), cold.admit(), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let started = Instant::now();
            let refused = cold.admit().await.unwrap_err();
            assert_eq!(started.elapsed(), Duration::ZERO, "no wait");
            refused
        });
        assert!(third.message.contains("2 requests already wait"), "{third:?}");
        assert!(first.is_err() && second.is_err(), "the two waiters time out");
        cold.catalog.put_server(server(0, Some((ServerState::Ready, 1))));
        cold.admit().await.expect("the places are given back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_demand_that_cannot_be_recorded_refuses_the_waiters_and_is_retried_by_the_next_request() {
        let failing = Counting { delay: Duration::from_millis(50), fail: true, ..Counting::default() };
        let cold = setup(failing, 256, server(0, Some((ServerState::Cold, 0))));
        let started = Instant::now();
        let (a, b) = tokio::join!(cold.admit(), cold.admit());
        assert_eq!(started.elapsed(), Duration::from_millis(50), "refused when the write fails, not at the deadline");
        let refused = a.unwrap_err();
        assert!(refused.message.contains("could not be woken"), "{refused:?}");
        assert!(!refused.message.contains("forbidden"), "the apiserver's answer is logged, not shown to callers");
        assert!(b.is_err());
        assert_eq!(cold.writes(), 1);
        assert_eq!(cold.metric(crate::gateway::metrics::COLD_STARTS, Some("refused")), 1);
        assert!(cold.admit().await.is_err());
        assert_eq!(cold.writes(), 2, "a failed write does not hold back the next one");
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_route_records_demand_for_its_cold_members_without_waiting() {
        let cold = setup(Counting::default(), 256, server(0, Some((ServerState::Cold, 0))));
        let group = RouteKey { kind: RouteKind::Group, namespace: "ns".into(), name: "g".into() };
        let upstreams = [upstream(&cold.catalog.server("ns", "s").unwrap()).unwrap()];
        cold.waker.admit(&cold.catalog, &group, &upstreams).await.unwrap();
        assert_eq!(cold.writes(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_demand_signal_nothing_waits() {
        let waker = Waker::new(None, 1, GatewayMetrics::new(&Registry::new()).unwrap());
        let catalog = StaticCatalog::default();
        catalog.put_server(server(0, None));
        let key = RouteKey { kind: RouteKind::Server, namespace: "ns".into(), name: "s".into() };
        let upstreams = [upstream(&catalog.server("ns", "s").unwrap()).unwrap()];
        waker.admit(&catalog, &key, &upstreams).await.unwrap();
    }
}
