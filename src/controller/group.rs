//! The MCPServerGroup controller: reports each group's members, their health against the
//! group's health policy, and its gateway URL.
//!
//! Membership and health come from [`crate::policy::membership`], the definition the gateway
//! routes by. Groups are reconciled on spec changes and whenever an MCPServer of their
//! namespace changes (labels, state, creation, deletion). The MCPServers are read from a
//! [`ServerFeed`]: the MCPServer controller's own store, which reports each namespace it changed
//! after storing the change (one copy of 10k servers, not two). A reconcile reads no API and
//! writes status only when it changed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use super::reconcile::ReconcileError;
use super::resources::{FIELD_MANAGER, Route, gateway_url};
use super::servers::Servers;
use super::state::{CONDITION_DEGRADED, CONDITION_READY};
use super::{Context, watches};
use crate::crd::{API_VERSION, GroupMemberStatus, MCPServer, MCPServerGroup, MCPServerGroupStatus};
use crate::policy::membership::{self, GroupHealth, MemberView, MembershipError};

/// Most members a group's status lists.
pub const MAX_LISTED_MEMBERS: usize = 100;
/// How long server changes are gathered before a group is reconciled.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Condition reasons of a group.
pub mod reason {
    /// Enough members are healthy.
    pub const ENOUGH_HEALTHY: &str = "EnoughHealthyMembers";
    /// Too few members are healthy.
    pub const TOO_FEW_HEALTHY: &str = "TooFewHealthyMembers";
    /// The selector matches nothing.
    pub const NO_MEMBERS: &str = "NoMembers";
    /// The selector cannot be evaluated.
    pub const INVALID_SELECTOR: &str = "InvalidSelector";
}

/// What the group reconciles share.
pub struct GroupContext {
    ctx: Arc<Context>,
    servers: Arc<Servers>,
}

/// A change of the MCPServers: in one namespace, or (after a relist) anywhere.
pub type ServerChange = Option<String>;

/// The MCPServer changes the MCPServer controller reports and the group controller has not
/// taken yet, coalesced: one entry per namespace however many events come.
#[derive(Default)]
pub struct ServerChanges {
    pending: Mutex<Pending>,
    notify: Notify,
}

#[derive(Default)]
struct Pending {
    namespaces: BTreeSet<String>,
    /// A relist ended: every group may be concerned, and the store is listed.
    relisted: bool,
}

impl ServerChanges {
    /// Notes a change and wakes the taker.
    pub fn report(&self, change: ServerChange) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match change {
                Some(namespace) => {
                    pending.namespaces.insert(namespace);
                }
                None => pending.relisted = true,
            }
        }
        self.notify.notify_one();
    }

    /// Everything pending, emptied: a relist stands for every namespace.
    fn take(&self) -> Vec<ServerChange> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Pending { namespaces, relisted } = std::mem::take(&mut *pending);
        if relisted { vec![None] } else { namespaces.into_iter().map(Some).collect() }
    }

    /// The changes as they come, each pending change once.
    fn stream(self: Arc<Self>) -> impl Stream<Item = ServerChange> + Send {
        futures::stream::unfold(self, |changes| async move {
            loop {
                let batch = changes.take();
                if !batch.is_empty() {
                    return Some((futures::stream::iter(batch), changes));
                }
                changes.notify.notified().await;
            }
        })
        .flatten()
    }
}

/// The MCPServers the group controller reads, and the changes that wake it.
pub struct ServerFeed {
    servers: Arc<Servers>,
    changes: BoxStream<'static, ServerChange>,
}

impl ServerFeed {
    /// The MCPServer controller's store and the changes it reports after storing them.
    pub fn shared(servers: Arc<Servers>, changes: Arc<ServerChanges>) -> ServerFeed {
        ServerFeed { servers, changes: changes.stream().boxed() }
    }

    /// A watch of its own, for the group controller running alone.
    pub fn watch(ctx: &Context) -> ServerFeed {
        let servers = Arc::new(Servers::default());
        let store = servers.clone();
        let watch = watcher(Api::<MCPServer>::all(ctx.client.clone()), watcher::Config::default());
        let changes = watches::recovering(watch, "mcpservers", ctx.metrics.clone())
            .modify(super::observed::strip)
            .filter_map(move |event| {
                std::future::ready(event.ok().and_then(|event| {
                    store.apply(&event);
                    change_of(&event)
                }))
            })
            .boxed();
        ServerFeed { servers, changes }
    }
}

/// What a stored MCPServer watch event changed, for the groups; `None` when nothing did.
pub fn change_of(event: &watcher::Event<MCPServer>) -> Option<ServerChange> {
    match event {
        watcher::Event::Apply(server) | watcher::Event::Delete(server) => Some(server.namespace()),
        watcher::Event::InitDone => Some(None),
        watcher::Event::Init | watcher::Event::InitApply(_) => None,
    }
}

/// The groups a change may concern: those of its namespace, or all.
fn groups_of(groups: &Store<MCPServerGroup>, change: &ServerChange) -> Vec<ObjectRef<MCPServerGroup>> {
    let concerned = |g: &Arc<MCPServerGroup>| change.is_none() || g.namespace() == *change;
    groups.state().iter().filter(|g| concerned(g)).map(|g| ObjectRef::from_obj(g.as_ref())).collect()
}

/// Runs the group controller until `stop` completes.
pub async fn run(ctx: Arc<Context>, feed: ServerFeed, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let metrics = ctx.metrics.clone();
    let (groups, group_writer) = reflector::store();
    let groups_watch = watcher(Api::<MCPServerGroup>::all(client), watcher::Config::default());
    let group_changes = watches::recovering(groups_watch, "mcpservergroups", metrics)
        .reflect(group_writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let mapper_groups = groups.clone();
    let ServerFeed { servers, changes } = feed;
    let server_changes = changes.flat_map(move |change| futures::stream::iter(groups_of(&mapper_groups, &change)));
    let config = kube::runtime::Config::default().concurrency(ctx.config.concurrency).debounce(DEBOUNCE);
    let context = Arc::new(GroupContext { ctx, servers });
    Controller::for_stream(group_changes, groups)
        .reconcile_on(server_changes)
        .with_config(config)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move { super::log_outcome("MCPServerGroup", result) })
        .await;
}

/// Retries API failures with a short delay, the rest at the resync.
fn error_policy(_group: Arc<MCPServerGroup>, error: &ReconcileError, gctx: Arc<GroupContext>) -> Action {
    if error.is_retryable() { Action::requeue(Duration::from_secs(5)) } else { Action::requeue(gctx.ctx.config.resync) }
}

async fn reconcile(group: Arc<MCPServerGroup>, gctx: Arc<GroupContext>) -> Result<Action, ReconcileError> {
    if group.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = group.namespace().ok_or(ReconcileError::Incomplete("namespace"))?;
    gctx.servers.listed().await;
    let view = gctx.servers.scan_namespace(&namespace, |servers| {
        membership::members(&group, servers.map(|(key, kept)| kept.candidate(key)))
    });
    let previous = group.status.clone().unwrap_or_default();
    let url = gctx
        .ctx
        .config
        .gateway_url
        .as_deref()
        .map(|base| gateway_url(base, Route::Groups, &namespace, &group.name_any()));
    let status = group_status(group.metadata.generation, &view, &previous, url, now());
    if status != previous {
        let api: Api<MCPServerGroup> = Api::namespaced(gctx.ctx.client.clone(), &namespace);
        let patch = json!({"apiVersion": API_VERSION, "kind": "MCPServerGroup", "status": status});
        api.patch_status(&group.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(|source| ReconcileError::Kube { action: "writing group status", source })?;
    }
    announce(&gctx.ctx, &group, &previous, &status).await;
    Ok(Action::requeue(gctx.ctx.config.resync))
}

/// The current time to whole seconds, the precision status timestamps are stored with.
fn now() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// The status a group's member view calls for; transition times are kept from `previous`
/// while a condition's status stays the same.
pub fn group_status(
    generation: Option<i64>,
    view: &Result<MemberView, MembershipError>,
    previous: &MCPServerGroupStatus,
    url: Option<String>,
    now: Timestamp,
) -> MCPServerGroupStatus {
    let condition = |type_: &str, value: bool, why: &str, message: &str| {
        let status = if value { "True" } else { "False" };
        let last_transition_time = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or(Time(now), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: why.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time,
        }
    };
    let view = match view {
        Ok(view) => view,
        Err(error) => {
            let message = error.to_string();
            return MCPServerGroupStatus {
                members: Some(0),
                healthy_members: Some(0),
                servers: Vec::new(),
                url,
                observed_generation: generation,
                conditions: vec![
                    condition(CONDITION_READY, false, reason::INVALID_SELECTOR, &message),
                    condition(CONDITION_DEGRADED, false, reason::INVALID_SELECTOR, &message),
                ],
            };
        }
    };
    let health = view.health();
    let message = health.message(view.min_healthy_percentage);
    let (ready, degraded, why) = match health {
        GroupHealth::NoMembers => (false, false, reason::NO_MEMBERS),
        GroupHealth::Healthy { .. } => (true, false, reason::ENOUGH_HEALTHY),
        GroupHealth::BelowThreshold { .. } => (false, true, reason::TOO_FEW_HEALTHY),
    };
    MCPServerGroupStatus {
        members: Some(i32::try_from(view.members.len()).unwrap_or(i32::MAX)),
        healthy_members: Some(i32::try_from(view.healthy_count()).unwrap_or(i32::MAX)),
        servers: view
            .members
            .iter()
            .take(MAX_LISTED_MEMBERS)
            .map(|m| GroupMemberStatus { name: m.name.clone(), state: m.state, healthy: m.healthy })
            .collect(),
        url,
        observed_generation: generation,
        conditions: vec![
            condition(CONDITION_READY, ready, why, &message),
            condition(CONDITION_DEGRADED, degraded, why, &message),
        ],
    }
}

fn ready_condition(status: &MCPServerGroupStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == CONDITION_READY)
}

/// Publishes an event when the group's readiness or its reason changed.
async fn announce(
    ctx: &Context,
    group: &MCPServerGroup,
    previous: &MCPServerGroupStatus,
    status: &MCPServerGroupStatus,
) {
    let Some(now) = ready_condition(status) else {
        return;
    };
    let before = ready_condition(previous);
    if before.is_some_and(|b| b.status == now.status && b.reason == now.reason) {
        return;
    }
    let type_ = if now.status == "True" { EventType::Normal } else { EventType::Warning };
    let note = format!("Ready={}: {}", now.status, now.message);
    ctx.publish(&group.object_ref(&()), None, type_, &now.reason, "Reconcile", note).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::membership::Member;

    #[tokio::test]
    async fn server_changes_are_coalesced_per_namespace_and_a_relist_stands_for_all() {
        let changes = Arc::new(ServerChanges::default());
        for _ in 0..1000 {
            changes.report(Some("b".into()));
            changes.report(Some("a".into()));
        }
        let mut stream = changes.clone().stream().boxed();
        assert_eq!(stream.next().await, Some(Some("a".into())));
        assert_eq!(stream.next().await, Some(Some("b".into())));
        changes.report(Some("a".into()));
        changes.report(None);
        assert_eq!(stream.next().await, Some(None), "a relist covers the namespace reported with it");
        let waiting = tokio::spawn(async move { stream.next().await });
        tokio::task::yield_now().await;
        changes.report(Some("c".into()));
        let woken = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(woken.expect("woken by a report").unwrap(), Some(Some("c".into())));
    }

    fn view(states: &[bool], percentage: i32) -> Result<MemberView, MembershipError> {
        let members = states
            .iter()
            .enumerate()
            .map(|(i, healthy)| Member {
                name: format!("s{i}"),
                state: Some(if *healthy { crate::crd::ServerState::Ready } else { crate::crd::ServerState::Dead }),
                healthy: *healthy,
                url: None,
            })
            .collect();
        Ok(MemberView { members, min_healthy_percentage: percentage })
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn cond<'a>(status: &'a MCPServerGroupStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn crossing_the_threshold_flips_ready_and_degraded() {
        let empty = MCPServerGroupStatus::default();
        let healthy = group_status(Some(1), &view(&[true, false], 50), &empty, None, at(0));
        assert_eq!((healthy.members, healthy.healthy_members), (Some(2), Some(1)));
        assert_eq!(cond(&healthy, "Ready").status, "True");
        assert_eq!(cond(&healthy, "Degraded").status, "False");
        let below = group_status(Some(1), &view(&[true, false, false], 50), &healthy, None, at(10));
        assert_eq!(cond(&below, "Ready").status, "False");
        assert_eq!(cond(&below, "Ready").reason, reason::TOO_FEW_HEALTHY);
        assert!(cond(&below, "Ready").message.contains("1 more must become healthy"));
        assert_eq!(cond(&below, "Degraded").status, "True");
        assert_eq!(cond(&below, "Ready").last_transition_time, Time(at(10)));
    }

    #[test]
    fn unchanged_views_give_an_identical_status() {
        let first = group_status(Some(2), &view(&[true], 100), &Default::default(), Some("u".into()), at(0));
        let again = group_status(Some(2), &view(&[true], 100), &first, Some("u".into()), at(60));
        assert_eq!(first, again);
    }

    #[test]
    fn no_members_and_bad_selectors_are_conditions() {
        let none = group_status(Some(1), &view(&[], 50), &Default::default(), None, at(0));
        assert_eq!(cond(&none, "Ready").reason, reason::NO_MEMBERS);
        assert_eq!(cond(&none, "Ready").status, "False");
        assert_eq!(cond(&none, "Degraded").status, "False");
        let bad = group_status(Some(1), &Err(MembershipError::EmptySelector), &Default::default(), None, at(0));
        assert_eq!(cond(&bad, "Ready").reason, reason::INVALID_SELECTOR);
    }

    #[test]
    fn member_lists_are_bounded() {
        let states = vec![true; MAX_LISTED_MEMBERS + 5];
        let status = group_status(Some(1), &view(&states, 100), &Default::default(), None, at(0));
        assert_eq!(status.servers.len(), MAX_LISTED_MEMBERS);
        assert_eq!(status.members, Some(i32::try_from(MAX_LISTED_MEMBERS + 5).unwrap()));
    }

    #[test]
    fn urls_name_the_group_on_the_gateway() {
        assert_eq!(
            gateway_url("http://mcp-hangar-gateway.mcp-hangar.svc/", Route::Groups, "ns", "db"),
            "http://mcp-hangar-gateway.mcp-hangar.svc/groups/ns/db/mcp"
        );
    }
}
