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
//!   the MCPServers an MCPDiscoverySource lists; the leader runs them beside the server controller;
//! - [`servers`] keeps the MCPServers compactly, [`queue`] decides which to reconcile when.
//!
//! [`run`] drives the [`queue`] while this replica leads. Reconciles are
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
pub mod queue;
pub mod reconcile;
pub mod resources;
pub mod servers;
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
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use crate::crd::MANAGER;
use crate::crd::MCPServer;
use crate::mcp::McpClient;
use crate::metrics::Metrics;
use crate::policy::{Engine, demand};
use leader::LeaderElector;
use resources::LABEL_MANAGED_BY;
use servers::ServerKey;

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
fn server_series(servers: Arc<servers::Servers>) -> crate::metrics::Renderer {
    Arc::new(move |out: &mut String| {
        servers.scan(|all| {
            let series: Vec<_> = all
                .filter_map(|(key, kept)| {
                    Some(crate::metrics::ServerSeries {
                        name: &key.name,
                        namespace: &key.namespace,
                        state: state::state_name(kept.state()?),
                        tools: i64::from(kept.tools_count().unwrap_or(0)),
                    })
                })
                .collect();
            crate::metrics::write_server_series(out, &series);
        });
    })
}

/// Removes the health-check failures series of a deleted server.
fn forget_server_metrics(metrics: &Metrics, server: &MCPServer) {
    let name = server.name_any();
    let namespace = server.namespace().unwrap_or_default();
    let _ = metrics.server_health_failures.remove_label_values(&[name.as_str(), namespace.as_str()]);
}

/// Reconciles the MCPServers until `stop` completes; in-flight reconciles finish first.
///
/// Every watch (the MCPServers, each kind of child, the demand Leases) recovers on its own
/// through [`watches::recovering`] and passes no error on. The MCPServers are kept in
/// `servers` (shared with the group controller; `changed` hears of every stored change,
/// [`group::change_of`]); the children and Leases are reflected into [`observed::Observed`],
/// which the reconciles read instead of the API. A spec change of a server, a change of one of
/// its children and its demand Lease trigger it in the [`queue::Queue`].
pub async fn run_controller(
    ctx: Arc<Context>,
    servers: Arc<servers::Servers>,
    changed: Arc<group::ServerChanges>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let metrics = ctx.metrics.clone();
    let (observed, writers) = observed::Observed::new();
    let sctx = Arc::new(reconcile::ServerContext { ctx: ctx.clone(), observed });
    let deleted = sctx.clone();
    let store = servers.clone();
    let spec_changes = watches::recovering(
        watcher(Api::<MCPServer>::all(client.clone()), watcher::Config::default()),
        "mcpservers",
        metrics.clone(),
    )
    .modify(observed::strip)
    .inspect_ok(move |event| {
        store.apply(event);
        if let Some(change) = group::change_of(event) {
            changed.report(change);
        }
        if let watcher::Event::Delete(server) = event {
            deleted.ctx.forget(server);
            deleted.observed.forget(&server.namespace().unwrap_or_default(), &server.name_any());
        }
    })
    .try_filter_map({
        let mut generations = watches::Generations::default();
        move |event| std::future::ready(Ok(generations.changed(event)))
    })
    .filter_map(|server| std::future::ready(server.ok().as_ref().and_then(ServerKey::of)))
    .boxed();
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    let leases = Api::<Lease>::namespaced(client.clone(), &ctx.config.operator_namespace);
    let demand_leases = watcher::Config::default().labels(demand::DEMAND_SELECTOR);
    let metrics = &metrics;
    let c = || client.clone();
    use observed::projected;
    let children = &writers.children;
    let lease_changes = observed::leases(leases, &demand_leases, metrics, writers.leases, children.clone());
    let demand = lease_changes
        .filter_map(|lease| async move {
            let (namespace, name) = demand::server_of(&lease.ok()?)?;
            Some(ServerKey::new(&namespace, &name))
        })
        .boxed();
    let triggers = futures::stream::select_all([
        spec_changes,
        demand,
        owners(projected::<Deployment>(Api::all(c()), &owned, "deployments", metrics, children.clone())),
        owners(projected::<Service>(Api::all(c()), &owned, "services", metrics, children.clone())),
        owners(projected::<PartialObjectMeta<ServiceAccount>>(
            Api::all(c()),
            &owned,
            "serviceaccounts",
            metrics,
            children.clone(),
        )),
        owners(projected::<PartialObjectMeta<Role>>(Api::all(c()), &owned, "roles", metrics, children.clone())),
        owners(projected::<PartialObjectMeta<RoleBinding>>(
            Api::all(c()),
            &owned,
            "rolebindings",
            metrics,
            children.clone(),
        )),
        owners(projected::<PartialObjectMeta<NetworkPolicy>>(
            Api::all(c()),
            &owned,
            "networkpolicies",
            metrics,
            children.clone(),
        )),
    ]);
    drive(servers, triggers, sctx, stop).await;
    ctx.metrics.watch_up.reset();
}

/// Runs the reconciles the triggers and requeues call for, once the servers are listed, until
/// `stop` completes; then lets those running finish.
async fn drive(
    servers: Arc<servers::Servers>,
    mut triggers: impl futures::Stream<Item = ServerKey> + Unpin,
    sctx: Arc<reconcile::ServerContext>,
    stop: impl Future<Output = ()>,
) {
    let concurrency = usize::from(sctx.ctx.config.concurrency.max(1));
    let mut queue = queue::Queue::<ServerKey>::new(DEBOUNCE);
    let mut running = tokio::task::JoinSet::new();
    let mut keys = HashMap::new();
    let store = servers.clone();
    let listed = store.listed();
    let (mut stop, mut listed) = (std::pin::pin!(stop), std::pin::pin!(listed));
    let mut is_listed = false;
    loop {
        let mut wake = None;
        if is_listed {
            wake = loop {
                match queue.take(tokio::time::Instant::now(), concurrency) {
                    Ok(key) => {
                        let task = running.spawn(reconcile_one(servers.clone(), key.clone(), sctx.clone()));
                        keys.insert(task.id(), key);
                    }
                    Err(at) => break at,
                }
            };
        }
        let due = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut stop => break,
            () = &mut listed, if !is_listed => is_listed = true,
            Some(key) = triggers.next() => queue.trigger(key, tokio::time::Instant::now()),
            Some(ended) = running.join_next_with_id() => ended_one(&mut queue, &mut keys, ended),
            () = due => {}
        }
    }
    while let Some(ended) = running.join_next_with_id().await {
        ended_one(&mut queue, &mut keys, ended);
    }
}

/// What a reconcile task came to: the server is free again, due when its action says.
fn ended_one(
    queue: &mut queue::Queue<ServerKey>,
    keys: &mut HashMap<tokio::task::Id, ServerKey>,
    ended: Result<(tokio::task::Id, Option<queue::Action>), tokio::task::JoinError>,
) {
    let (id, action) = match ended {
        Ok((id, action)) => (id, action),
        Err(error) => {
            tracing::error!(%error, "a reconcile task failed");
            (error.id(), Some(queue::Action::requeue(BACKOFF_BASE)))
        }
    };
    if let Some(key) = keys.remove(&id) {
        queue.done(&key);
        if let Some(after) = action.and_then(|a| a.requeue_after()) {
            queue.requeue(key, tokio::time::Instant::now() + after);
        }
    }
}

/// Reconciles the server `key` names, if it is still there; the action asked for.
async fn reconcile_one(
    servers: Arc<servers::Servers>,
    key: ServerKey,
    sctx: Arc<reconcile::ServerContext>,
) -> Option<queue::Action> {
    let server = match servers.get(&key)?.server() {
        Ok(server) => Arc::new(server),
        Err(error) => {
            tracing::error!(object = %key, %error, "a kept MCPServer does not decode");
            return None;
        }
    };
    Some(match reconcile::reconcile(server.clone(), sctx.clone()).await {
        Ok(action) => {
            tracing::debug!(kind = "MCPServer", object = %key, "reconciled");
            action
        }
        Err(error) => {
            tracing::warn!(kind = "MCPServer", object = %key, %error, "reconcile failed");
            reconcile::error_policy(server, &error, sctx)
        }
    })
}

/// The MCPServers owning the children a watch yields.
fn owners<K: kube::Resource>(
    children: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) -> futures::stream::BoxStream<'static, ServerKey> {
    children.filter_map(|child| std::future::ready(child.ok().as_ref().and_then(owner_of))).boxed()
}

/// The MCPServer that owns `child`, if any.
fn owner_of<K: kube::Resource>(child: &K) -> Option<ServerKey> {
    use kube::Resource;
    let meta = child.meta();
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.api_version == MCPServer::api_version(&()) && owner.kind == MCPServer::kind(&()))?;
    Some(ServerKey::new(meta.namespace.as_deref()?, &owner.name))
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
        let servers = Arc::new(servers::Servers::default());
        ctx.metrics.set_server_series(Some(server_series(servers.clone())));
        let changed = Arc::new(group::ServerChanges::default());
        let feed = group::ServerFeed::shared(servers.clone(), changed.clone());
        let controllers = async {
            tokio::join!(
                run_controller(ctx.clone(), servers, changed, stop()),
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
