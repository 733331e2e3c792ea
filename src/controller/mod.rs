//! The controller: turns admitted MCPServers into least-privilege workloads and reports
//! their true state.
//!
//! - [`resources`] builds every child object (pure), from the server as the policy's
//!   review defaulted it and the permission profile the policy resolves;
//! - [`state`] is the state machine and circuit breaker (pure);
//! - [`reconcile`] applies children, runs due health checks (the [`crate::mcp`] client) and
//!   writes status;
//! - [`leader`] elects the one replica that reconciles;
//! - [`watches`] keeps each watch recovering on its own (410 Gone, apiserver restarts);
//! - [`observed`] holds the children as watched and what was last applied to them;
//! - [`group`] reports MCPServerGroup membership and health, [`discovery`] creates and prunes
//!   the MCPServers an MCPDiscoverySource lists; the leader runs them beside the server controller.
//!
//! [`run`] drives a `kube::runtime::Controller` while this replica leads. Reconciles are
//! triggered by spec changes (status-only updates are filtered out, so writing status does
//! not wake the controller), by changes to owned children, by the gateway's demand Leases
//! (a request to a scale-to-zero server, see [`crate::policy::demand`]), and by the requeue
//! each reconcile asks for: the next due health check, the end of the startup timeout or of
//! the idle time, or a resync. Every reconcile builds the children anew and applies those that
//! differ from what [`observed`] shows (a changed spec or profile, a child deleted or edited),
//! so a profile edited in the cluster reaches the servers using it within their health
//! interval (the resync for cold servers) and an unchanged server costs no write. Health
//! checks run inside reconcile, bounded by `healthCheck.timeout` (always
//! shorter than the interval); the controller never reconciles one server twice at once and
//! runs at most `concurrency` reconciles together, so a slow server delays only itself.

pub mod discovery;
pub mod events;
pub mod group;
pub mod leader;
pub mod observed;
pub mod reconcile;
pub mod resources;
pub mod state;
pub mod watches;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use events::Recorder;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ObjectReference, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use crate::crd::MANAGER;
use crate::crd::MCPServer;
use crate::mcp::McpClient;
use crate::metrics::Metrics;
use crate::policy::{Engine, demand};
use leader::LeaderElector;
use resources::LABEL_MANAGED_BY;

/// Name the controller reports events under.
pub const CONTROLLER_NAME: &str = "mcp-hangar";
/// Default cluster DNS domain of Service URLs.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// Default number of reconciles run at once.
pub const DEFAULT_CONCURRENCY: u16 = 8;
/// First retry delay after a retryable error; doubled per attempt.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest event note the API accepts is 1 kB; notes are cut below that.
const MAX_NOTE: usize = 1000;
/// How long triggers of one server are gathered before it is reconciled: the events of its
/// six children that arrive just after a first apply make one reconcile, not six (those that
/// arrive while it runs are merged anyway). Short, as a cold start waits through it twice
/// (demand seen, pod ready).
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Settings of the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Most reconciles run at once.
    pub concurrency: u16,
    /// DNS domain of the cluster, for Service URLs.
    pub cluster_domain: String,
    /// Namespace the operator and the gateway run in; every server's NetworkPolicy admits
    /// their pods from there.
    pub operator_namespace: String,
    /// Base URL of the gateway (`http://<gateway service>.<namespace>.svc`); groups report
    /// `<base>/groups/<namespace>/<name>/mcp`. None: groups report no URL.
    pub gateway_url: Option<String>,
    /// Longest time between two reconciles of a server or group with nothing due.
    pub resync: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            concurrency: DEFAULT_CONCURRENCY,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
            operator_namespace: resources::DEFAULT_OPERATOR_NAMESPACE.into(),
            gateway_url: None,
            resync: state::RESYNC,
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes the controllers' events ([`Context::publish`]).
    recorder: Recorder,
    /// The admission rules, to refuse servers that bypassed the webhook.
    pub engine: Arc<Engine>,
    /// Process metrics.
    pub metrics: Metrics,
    /// The MCP health-check client.
    pub health: McpClient,
    /// Settings.
    pub config: ControllerConfig,
    /// Retry attempts per server uid since its last successful reconcile.
    attempts: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// Builds the shared context; `instance` names this replica in events.
    pub fn new(
        client: Client,
        engine: Arc<Engine>,
        metrics: Metrics,
        health: McpClient,
        config: ControllerConfig,
        instance: &str,
    ) -> Self {
        Context {
            recorder: Recorder::new(client.clone(), CONTROLLER_NAME, instance),
            client,
            engine,
            metrics,
            health,
            config,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// The delay before the next retry of a server after a retryable error: 1s, 2s, 4s, …
    /// up to the resync period.
    pub fn next_retry(&self, server: &MCPServer) -> Duration {
        let key = server.uid().unwrap_or_default();
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let attempt = attempts.entry(key).or_insert(0);
        let delay = BACKOFF_BASE.saturating_mul(2u32.saturating_pow(*attempt)).min(self.config.resync);
        *attempt = attempt.saturating_add(1);
        delay
    }

    /// Forgets the retry attempts of a server after a successful reconcile.
    pub fn reset_retries(&self, server: &MCPServer) {
        let key = server.uid().unwrap_or_default();
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        attempts.remove(&key);
    }

    /// Forgets everything kept about a deleted server: its retries and its health-check failures
    /// series (its state and tools series leave the store with it).
    pub fn forget(&self, server: &MCPServer) {
        self.reset_retries(server);
        forget_server_metrics(&self.metrics, server);
    }

    /// Publishes an event on `regarding` (about `related`, when given), its note cut to
    /// [`MAX_NOTE`]; a failure to publish is logged, never fatal.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(clip(note, MAX_NOTE)),
            action: action.into(),
            secondary: related,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            let object = regarding.name.as_deref().unwrap_or_default();
            tracing::warn!(kind = regarding.kind.as_deref().unwrap_or_default(), object, %error, "could not publish an event");
        }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let cut = (0..=max).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
    }
    text
}

/// Writes the per-server state and tools series at scrape time from the MCPServer store: the
/// state each server reports, one series each (10k servers are 20k series, none stored).
fn server_series(servers: reflector::Store<MCPServer>) -> crate::metrics::Renderer {
    Arc::new(move |out: &mut String| {
        let mut all = servers.state();
        all.sort_by(|a, b| (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name)));
        let series: Vec<_> = all
            .iter()
            .filter_map(|server| {
                let status = server.status.as_ref()?;
                Some(crate::metrics::ServerSeries {
                    name: server.metadata.name.as_deref()?,
                    namespace: server.metadata.namespace.as_deref()?,
                    state: state::state_name(status.state?),
                    tools: i64::from(status.tools_count.unwrap_or(0)),
                })
            })
            .collect();
        crate::metrics::write_server_series(out, &series);
    })
}

/// Removes the health-check failures series of a deleted server.
fn forget_server_metrics(metrics: &Metrics, server: &MCPServer) {
    let name = server.name_any();
    let namespace = server.namespace().unwrap_or_default();
    let _ = metrics.server_health_failures.remove_label_values(&[name.as_str(), namespace.as_str()]);
}

/// Runs the Controller until `stop` completes; in-flight reconciles finish first.
///
/// Every watch (the MCPServers, each kind of child, the demand Leases) recovers on its own
/// through [`watches::recovering`] and passes no error on, so the Controller's shared trigger
/// backoff never pauses the MCPServer watch because another watch failed. The children and
/// Leases are reflected into [`observed::Observed`], which the reconciles read instead of the
/// API.
///
/// `servers` is the MCPServer store it fills (shared with the group controller), and `changed`
/// hears of every stored change ([`group::change_of`]).
pub async fn run_controller(
    ctx: Arc<Context>,
    (reader, writer): (reflector::Store<MCPServer>, reflector::store::Writer<MCPServer>),
    changed: Arc<group::ServerChanges>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let metrics = ctx.metrics.clone();
    let (observed, writers) = observed::Observed::new();
    let sctx = Arc::new(reconcile::ServerContext { ctx: ctx.clone(), observed });
    let deleted = sctx.clone();
    let servers = watches::recovering(
        watcher(Api::<MCPServer>::all(client.clone()), watcher::Config::default()),
        "mcpservers",
        metrics.clone(),
    )
    .modify(observed::strip)
    .reflect(writer)
    .inspect_ok(move |event| {
        if let Some(change) = group::change_of(event) {
            changed.report(change);
        }
        if let watcher::Event::Delete(server) = event {
            deleted.ctx.forget(server);
            deleted.observed.forget(&server.namespace().unwrap_or_default(), &server.name_any());
        }
    })
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    let leases = Api::<Lease>::namespaced(client.clone(), &ctx.config.operator_namespace);
    let demand_leases = watcher::Config::default().labels(demand::DEMAND_SELECTOR);
    let metrics = &metrics;
    let c = || client.clone();
    use observed::projected;
    let children = &writers.children;
    let lease_changes = observed::leases(leases, &demand_leases, metrics, writers.leases, children.clone());
    Controller::for_stream(servers, reader)
        .watches_stream(lease_changes, |lease| {
            demand::server_of(&lease).map(|(namespace, name)| ObjectRef::new(&name).within(&namespace))
        })
        .owns_stream(projected::<Deployment>(Api::all(c()), &owned, "deployments", metrics, children.clone()))
        .owns_stream(projected::<Service>(Api::all(c()), &owned, "services", metrics, children.clone()))
        .owns_stream(projected::<PartialObjectMeta<ServiceAccount>>(
            Api::all(c()),
            &owned,
            "serviceaccounts",
            metrics,
            children.clone(),
        ))
        .owns_stream(projected::<PartialObjectMeta<Role>>(Api::all(c()), &owned, "roles", metrics, children.clone()))
        .owns_stream(projected::<PartialObjectMeta<RoleBinding>>(
            Api::all(c()),
            &owned,
            "rolebindings",
            metrics,
            children.clone(),
        ))
        .owns_stream(projected::<PartialObjectMeta<NetworkPolicy>>(
            Api::all(c()),
            &owned,
            "networkpolicies",
            metrics,
            children.clone(),
        ))
        .with_config(kube::runtime::Config::default().concurrency(ctx.config.concurrency).debounce(DEBOUNCE))
        .graceful_shutdown_on(stop)
        .run(reconcile::reconcile, reconcile::error_policy, sctx)
        .for_each(|result| async move { log_outcome("MCPServer", result) })
        .await;
    ctx.metrics.watch_up.reset();
}

/// Logs what one reconcile of a controller came to: debug when it went well, a warning naming
/// the object and the error when it failed.
pub(crate) fn log_outcome<K, E, Q>(
    kind: &'static str,
    result: Result<
        (kube::runtime::reflector::ObjectRef<K>, kube::runtime::controller::Action),
        kube::runtime::controller::Error<E, Q>,
    >,
) where
    K: kube::Resource,
    K::DynamicType: Clone + Eq + std::hash::Hash + std::fmt::Debug,
    E: std::error::Error + 'static,
    Q: std::error::Error + 'static,
{
    match result {
        Ok((object, _)) => tracing::debug!(kind, object = %object, "reconciled"),
        Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) => {
            tracing::warn!(kind, object = %object, error = %error, "reconcile failed");
        }
        Err(error) => tracing::warn!(kind, error = %error, "controller"),
    }
}

async fn changed_to(receiver: &mut watch::Receiver<bool>, value: bool) -> bool {
    receiver.wait_for(|v| *v == value).await.is_ok()
}

/// Reconciles while this replica leads (always, without an elector) until `shutdown` turns
/// true. Losing the lease aborts reconciles at once, so two replicas never write together;
/// shutting down lets them finish, then releases the lease.
pub async fn run(ctx: Arc<Context>, elector: Option<LeaderElector>, mut shutdown: watch::Receiver<bool>) {
    let (leading_tx, mut leading) = watch::channel(elector.is_none());
    let (campaign_stop, campaign_stopped) = watch::channel(false);
    let campaign = elector.map(|elector| tokio::spawn(elector.run(leading_tx.clone(), campaign_stopped)));
    loop {
        tokio::select! {
            led = changed_to(&mut leading, true) => if !led { break },
            _ = changed_to(&mut shutdown, true) => break,
        }
        tracing::info!("leading: reconciling MCPServers, MCPServerGroups and MCPDiscoverySources");
        let stop = || {
            let mut shutdown = shutdown.clone();
            async move {
                changed_to(&mut shutdown, true).await;
            }
        };
        let (servers, writer) = reflector::store();
        ctx.metrics.set_server_series(Some(server_series(servers.clone())));
        let changed = Arc::new(group::ServerChanges::default());
        let feed = group::ServerFeed::shared(servers.clone(), changed.clone());
        let controllers = async {
            tokio::join!(
                run_controller(ctx.clone(), (servers, writer), changed, stop()),
                group::run(ctx.clone(), feed, stop()),
                discovery::run(ctx.clone(), stop())
            );
        };
        let mut lost = leading.clone();
        tokio::select! {
            () = controllers => {}
            _ = changed_to(&mut lost, false) => tracing::warn!("leadership lost: reconciles stopped"),
        }
        ctx.metrics.set_server_series(None);
        if *shutdown.borrow() {
            break;
        }
    }
    let _ = campaign_stop.send(true);
    if let Some(campaign) = campaign {
        let _ = campaign.await;
    }
    drop(leading_tx);
    tracing::info!("controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_are_clipped_on_character_boundaries() {
        let clipped = clip("é".repeat(600), MAX_NOTE);
        assert!(clipped.len() <= MAX_NOTE && clipped.len() >= MAX_NOTE - 1);
        assert!(clipped.chars().all(|c| c == 'é'));
        assert_eq!(clip("short".into(), MAX_NOTE), "short");
    }
}
