//! One reconcile of one MCPServer: refuse what the admission rules refuse, apply the
//! children with server-side apply, prune the ones no longer wanted, run the health check if
//! it is due, then write status, events and metrics.
//!
//! Errors are classified: API conflicts, throttling, server errors and transport failures
//! are retried with exponential backoff; a spec the controller cannot run, or a child the
//! API server rejects, is permanent: the server is marked Dead with a condition and an
//! event, and looked at again only on change or after the resync period.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::Context;
use super::observed::{self, Observed};
use super::queue::Action;
use super::resources::{self, Child, ChildKind, ChildSet, FIELD_MANAGER, Owner, ResourceError};
use super::state::{self, Check, Evaluation, Observation, Settings, Workload, reason};
use crate::crd::{API_VERSION, MCPServer, MCPServerStatus, ServerMode, ServerState, Transport};
use crate::mcp;
use crate::policy::profile::{
    EffectiveProfile, ProfileError, ProfileRef, ResolvedProfile, resolve_configmap, resolve_named,
};
use crate::policy::tools::ToolPolicy;
use crate::policy::{FieldError, PolicyState, demand};

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The server lacks a name or namespace.
    #[error("the server has no {0}")]
    Incomplete(&'static str),
    /// The children could not be built.
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// The permission profile could not be resolved.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// A child could not be applied.
    #[error("applying {kind} {name}: {source}")]
    Apply {
        /// Kind of the child.
        kind: ChildKind,
        /// Name of the child.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Another API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl ReconcileError {
    /// The variant's name: the `reason` label of `mcp_operator_reconcile_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Incomplete(_) => "Incomplete",
            ReconcileError::Resource(_) => "Resource",
            ReconcileError::Profile(_) => "Profile",
            ReconcileError::Apply { .. } => "Apply",
            ReconcileError::Kube { .. } => "Kube",
        }
    }

    /// True when trying again soon may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReconcileError::Apply { source, .. } | ReconcileError::Kube { source, .. } => is_retryable(source),
            _ => false,
        }
    }
}

/// Conflicts (409), throttling (429), server errors (5xx) and transport failures are
/// retryable; other API answers (invalid, forbidden, not found) and malformed data are not.
pub fn is_retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => matches!(status.code, 409 | 429) || status.code >= 500,
        kube::Error::SerdeError(_)
        | kube::Error::BuildRequest(_)
        | kube::Error::HttpError(_)
        | kube::Error::FromUtf8(_) => false,
        _ => true,
    }
}

/// What the MCPServer reconciles share: the controllers' context and what the watches show
/// of the children.
pub struct ServerContext {
    /// The controllers' context.
    pub ctx: Arc<Context>,
    /// The children's stores and the record of applies.
    pub observed: Observed,
}

/// Reconciles one server: the queue runs it.
pub async fn reconcile(server: Arc<MCPServer>, sctx: Arc<ServerContext>) -> Result<Action, ReconcileError> {
    let ctx = &sctx.ctx;
    let timer = ctx.metrics.reconcile_duration.start_timer();
    let result = reconcile_server(&server, ctx, &sctx.observed).await;
    timer.observe_duration();
    let outcome = if result.is_ok() { "success" } else { "error" };
    ctx.metrics.reconcile_total.with_label_values(&[outcome]).inc();
    if result.is_ok() {
        ctx.reset_retries(&server);
    }
    result
}

/// What the queue does after a failed reconcile: back off for retryable errors, wait the
/// resync period for the rest.
pub fn error_policy(server: Arc<MCPServer>, error: &ReconcileError, sctx: Arc<ServerContext>) -> Action {
    let ctx = &sctx.ctx;
    ctx.metrics.reconcile_errors.with_label_values(&[error.reason()]).inc();
    if error.is_retryable() { Action::requeue(ctx.next_retry(&server)) } else { Action::requeue(ctx.config.resync) }
}

/// The current time to whole seconds, the precision status timestamps are stored with.
fn now() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

async fn reconcile_server(server: &MCPServer, ctx: &Context, observed: &Observed) -> Result<Action, ReconcileError> {
    if server.metadata.deletion_timestamp.is_some() || observed.ready().await.is_err() {
        return Ok(Action::await_change());
    }
    let namespace = server.metadata.namespace.clone().ok_or(ReconcileError::Incomplete("namespace"))?;
    let now = now();
    let previous = state::owned(server.status.as_ref());

    let defaulted = match ctx.engine.review_server(server) {
        Ok(defaulted) => defaulted,
        Err(errors) => {
            let message =
                format!("the spec breaks the admission rules (was the webhook bypassed?): {}", join_errors(&errors));
            return refuse(ctx, server, &previous, reason::INVALID_SPEC, message, now).await;
        }
    };
    let policy = ctx.engine.state();
    let settings = Settings::of(&defaulted.spec);

    let mut awake_until = None;
    let (workload, url, target, selector) = match defaulted.spec.mode {
        Some(ServerMode::Container) => {
            let owner = Owner::of(&defaulted)?;
            if defaulted.spec.replicas == Some(0) {
                awake_until = demand_until(ctx, observed, &owner, settings.idle_ttl).filter(|until| now < *until);
            }
            let awake = awake_until.is_some();
            let refused = |why: &'static str, message: String| refuse(ctx, server, &previous, why, message, now);
            let profile = match resolve_profile(ctx, &defaulted, &namespace, &policy).await {
                Ok(profile) => profile,
                Err(ReconcileError::Profile(e)) => {
                    return refused(reason::PROFILE_UNAVAILABLE, e.to_string()).await;
                }
                Err(e) => return Err(e),
            };
            let operator_namespace = &ctx.config.operator_namespace;
            let children = match resources::desired_children(&defaulted, &profile, operator_namespace, awake) {
                Ok(children) => children,
                Err(e @ (ResourceError::MissingName | ResourceError::MissingNamespace)) => {
                    return Err(e.into());
                }
                Err(e) => return refused(reason::UNSUPPORTED_SPEC, e.to_string()).await,
            };
            if let Some(message) = pod_security_violations(ctx, &children, &profile) {
                return refused(reason::INVALID_SPEC, message).await;
            }
            let applied = match apply_children(ctx, observed, server, &namespace, children).await {
                Ok(applied) => applied,
                Err(e) if !e.is_retryable() => {
                    return refused(reason::APPLY_REJECTED, e.to_string()).await;
                }
                Err(e) => return Err(e),
            };
            let url = resources::service_url(&defaulted, &ctx.config.cluster_domain)?;
            let target =
                service_target(applied.cluster_ip.as_deref(), &owner, &defaulted).unwrap_or_else(|| url.clone());
            let desired = resources::wanted_replicas(&defaulted.spec, awake);
            (workload_of(desired, applied.rollout), url, target, Some(owner.selector_string()))
        }
        _ => {
            let endpoint = defaulted.spec.endpoint.clone().unwrap_or_default();
            (Workload::Remote, endpoint.clone(), endpoint, None)
        }
    };

    let check = if state::check_due(&settings, &previous, workload, now) {
        Some(run_check(ctx, server, &target, &defaulted, &settings).await)
    } else {
        None
    };
    let evaluation = state::evaluate(Observation {
        generation: server.metadata.generation,
        previous: &previous,
        settings: &settings,
        workload,
        check,
        tools: &ToolPolicy::of(defaulted.spec.tools.as_deref()),
        url,
        gateway_url: ctx
            .config
            .gateway_url
            .as_deref()
            .map(|base| resources::gateway_url(base, resources::Route::Servers, &namespace, &server.name_any())),
        selector,
        now,
    });
    publish(ctx, server, &previous, &evaluation).await?;
    // An awake scale-to-zero server is looked at again when its idle time runs out.
    let idle_ends = awake_until.map(|until| now.duration_until(until).unsigned_abs() + state::MIN_REQUEUE);
    let next = idle_ends.map_or(evaluation.requeue_after, |d| d.min(evaluation.requeue_after));
    Ok(Action::requeue(next.min(ctx.config.resync)))
}

/// Until when requests keep a scale-to-zero server awake, from its demand Lease
/// ([`crate::policy::demand`]) as watched; `None` when no request was ever recorded.
fn demand_until(ctx: &Context, observed: &Observed, owner: &Owner, idle_ttl: Duration) -> Option<Timestamp> {
    let lease = observed.lease(&ctx.config.operator_namespace, &demand::lease_name(&owner.namespace, &owner.name));
    demand::awake_until(lease.as_deref(), idle_ttl)
}

/// The server's permission profile: from the policy in force, or read from its ConfigMap.
async fn resolve_profile(
    ctx: &Context,
    server: &MCPServer,
    namespace: &str,
    policy: &PolicyState,
) -> Result<ResolvedProfile, ReconcileError> {
    match ProfileRef::of(&server.spec, policy)? {
        ProfileRef::Named(name) => Ok(resolve_named(&name, policy)?),
        ProfileRef::ConfigMap { name, key } => {
            let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
            let map = maps.get_opt(&name).await.map_err(|source| ReconcileError::Kube {
                action: "reading the permission profile ConfigMap",
                source,
            })?;
            let json = map.as_ref().and_then(|m| m.data.as_ref()).and_then(|data| data.get(&key)).map(String::as_str);
            Ok(resolve_configmap(&name, &key, json)?)
        }
    }
}

/// What the rendered pod breaks of its profile's Pod Security Standards level, if anything
/// (the builders never produce such a pod; this guards against it anyway).
fn pod_security_violations(ctx: &Context, children: &ChildSet, profile: &ResolvedProfile) -> Option<String> {
    let level = EffectiveProfile::of(&profile.spec).level;
    let verdict = ctx.engine.check_deployment_security(children.deployment.as_ref()?, level);
    (!verdict.allowed()).then(|| {
        format!(
            "the rendered pod breaks the {} Pod Security Standards level of profile {:?}: {}",
            level.as_str(),
            profile.name,
            join_errors(&verdict.errors)
        )
    })
}

fn join_errors(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Marks a server the controller will not run as Dead, with the reason.
async fn refuse(
    ctx: &Context,
    server: &MCPServer,
    previous: &MCPServerStatus,
    why: &'static str,
    message: String,
    now: Timestamp,
) -> Result<Action, ReconcileError> {
    tracing::warn!(server = %server.name_any(), reason = why, %message, "not running the server");
    let evaluation = state::refused(previous, server.metadata.generation, why, message, now);
    publish(ctx, server, previous, &evaluation).await?;
    Ok(Action::requeue(evaluation.requeue_after.min(ctx.config.resync)))
}

async fn run_check(
    ctx: &Context,
    server: &MCPServer,
    target: &str,
    defaulted: &MCPServer,
    settings: &Settings,
) -> Check {
    let transport = match defaulted.spec.transport {
        Some(Transport::Sse) => mcp::Transport::Sse,
        _ => mcp::Transport::StreamableHttp,
    };
    match ctx.health.check(target, transport, settings.timeout).await {
        Ok(report) => Check::Passed(report),
        Err(error) => {
            let name = server.name_any();
            let namespace = server.namespace().unwrap_or_default();
            ctx.metrics.server_health_failures.with_label_values(&[name.as_str(), namespace.as_str()]).inc();
            tracing::info!(server = %name, %namespace, %error, "health check failed");
            Check::Failed(error.to_string())
        }
    }
}

/// Writes the status if it changed, and an event if the state changed.
async fn publish(
    ctx: &Context,
    server: &MCPServer,
    previous: &MCPServerStatus,
    evaluation: &Evaluation,
) -> Result<(), ReconcileError> {
    let status = &evaluation.status;
    if status != previous {
        let api: Api<MCPServer> = Api::namespaced(ctx.client.clone(), &server.namespace().unwrap_or_default());
        let patch = json!({"apiVersion": API_VERSION, "kind": "MCPServer", "status": status});
        api.patch_status(&server.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(|source| ReconcileError::Kube { action: "writing status", source })?;
    }
    if let Some(state) = status.state
        && previous.state != Some(state)
    {
        let from = previous.state.map(state::state_name).unwrap_or("None");
        let note = format!("{from} → {}: {}", state::state_name(state), evaluation.message);
        let warning = matches!(state, ServerState::Degraded | ServerState::Dead);
        let type_ = if warning { EventType::Warning } else { EventType::Normal };
        ctx.publish(&server.object_ref(&()), None, type_, evaluation.reason, "StateChange", note).await;
    }
    Ok(())
}

/// What applying returned that the status needs.
struct Applied {
    rollout: Option<observed::Rollout>,
    cluster_ip: Option<Box<str>>,
}

async fn apply<K>(ctx: &Context, namespace: &str, object: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch(&object.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object)).await
}

/// Applies every wanted child in order, skipping those already as wanted ([`Observed`]),
/// and prunes the owned ones no longer wanted; an event names every child that could not be
/// applied.
async fn apply_children(
    ctx: &Context,
    observed: &Observed,
    server: &MCPServer,
    namespace: &str,
    children: ChildSet,
) -> Result<Applied, ReconcileError> {
    let wanted: Vec<ChildKind> = ChildKind::ALL.into_iter().filter(|k| children.has(*k)).collect();
    let mut applied = Applied { rollout: None, cluster_ip: None };
    for child in children.into_children() {
        let kind = child.kind();
        let hash = observed::hash_of(&child);
        if observed.satisfied(&child, hash) {
            continue;
        }
        let result = match &child {
            Child::ServiceAccount(o) => apply(ctx, namespace, o).await.map(|o| o.metadata),
            Child::Role(o) => apply(ctx, namespace, o).await.map(|o| o.metadata),
            Child::RoleBinding(o) => apply(ctx, namespace, o).await.map(|o| o.metadata),
            Child::NetworkPolicy(o) => apply(ctx, namespace, o).await.map(|o| o.metadata),
            Child::Service(o) => apply(ctx, namespace, o).await.map(|s| {
                applied.cluster_ip = observed::cluster_ip(&s);
                s.metadata
            }),
            Child::Deployment(o) => apply(ctx, namespace, o).await.map(|d| {
                applied.rollout = Some(observed::Rollout::of(&d));
                d.metadata
            }),
        };
        match result {
            Ok(answer) => observed.record(kind, hash, &answer),
            Err(source) => {
                let error = ReconcileError::Apply { kind, name: server.name_any(), source };
                let note = error.to_string();
                ctx.publish(&server.object_ref(&()), None, EventType::Warning, "ApplyFailed", "Apply", note).await;
                return Err(error);
            }
        }
    }
    let name = server.name_any();
    if wanted.contains(&ChildKind::Deployment) && applied.rollout.is_none() {
        applied.rollout = observed.rollout(namespace, &name);
    }
    if wanted.contains(&ChildKind::Service) && applied.cluster_ip.is_none() {
        applied.cluster_ip = observed.cluster_ip(namespace, &name);
    }
    for kind in ChildKind::ALL.into_iter().filter(|k| !wanted.contains(k)) {
        prune(ctx, observed, server, namespace, kind).await?;
    }
    Ok(applied)
}

/// Deletes the child of that kind if this server controls it. A ServiceAccount the spec
/// names is never deleted, even one this server created earlier.
async fn prune(
    ctx: &Context,
    observed: &Observed,
    server: &MCPServer,
    namespace: &str,
    kind: ChildKind,
) -> Result<(), ReconcileError> {
    if kind == ChildKind::ServiceAccount
        && server.spec.service_account_name.as_deref() == server.metadata.name.as_deref()
    {
        return Ok(());
    }
    let name = server.name_any();
    let Some(owner) = server.uid().filter(|owner| observed.controlled_by(kind, namespace, &name, owner)) else {
        return Ok(());
    };
    let result = match kind {
        ChildKind::ServiceAccount => delete_owned::<ServiceAccount>(ctx, namespace, &name, &owner).await,
        ChildKind::Role => delete_owned::<Role>(ctx, namespace, &name, &owner).await,
        ChildKind::RoleBinding => delete_owned::<RoleBinding>(ctx, namespace, &name, &owner).await,
        ChildKind::NetworkPolicy => delete_owned::<NetworkPolicy>(ctx, namespace, &name, &owner).await,
        ChildKind::Service => delete_owned::<Service>(ctx, namespace, &name, &owner).await,
        ChildKind::Deployment => delete_owned::<Deployment>(ctx, namespace, &name, &owner).await,
    };
    result.map_err(|source| ReconcileError::Kube { action: "pruning a child", source })
}

/// Deletes the child if the server of uid `owner` still controls it, that very object (uid
/// precondition: the watch keeps only hashes, so its uid is read first); gone already is fine.
async fn delete_owned<K>(ctx: &Context, namespace: &str, name: &str, owner: &str) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(existing) = api.get_metadata_opt(name).await? else {
        return Ok(());
    };
    let controlled =
        existing.metadata.owner_references.iter().flatten().any(|r| r.controller == Some(true) && r.uid == owner);
    if !controlled {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: existing.metadata.uid, resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            tracing::info!(server = %name, kind = K::kind(&()).as_ref(), "pruned a child no longer wanted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The workload as the Deployment reports it.
fn workload_of(desired: i32, rollout: Option<observed::Rollout>) -> Workload {
    let rollout = rollout.unwrap_or_default();
    Workload::Container { desired, replicas: rollout.replicas, ready: rollout.ready, updated: rollout.updated }
}

/// The URL health checks use in container mode: the Service's cluster IP when it has one,
/// so checks do not depend on the operator's DNS settings.
fn service_target(cluster_ip: Option<&str>, owner: &Owner, server: &MCPServer) -> Option<String> {
    let ip = cluster_ip?;
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
    Some(format!("http://{host}:{}{}", owner.port, resources::mcp_path(server.spec.transport)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use kube::core::Status;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(Status { code, ..Status::default() }))
    }

    #[test]
    fn stored_servers_pass_the_admission_rules() {
        let stored: MCPServer = serde_json::from_value(json!({
            "apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer",
            "metadata": {
                "name": "s", "namespace": "ns", "uid": "u-1", "generation": 3,
                "resourceVersion": "42", "creationTimestamp": "2025-01-01T00:00:00Z",
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "mcp-hangar.io/v1alpha1"}],
            },
            "spec": {"mode": "remote", "endpoint": "https://mcp.example.com/mcp"},
            "status": {"state": "Ready", "consecutiveFailures": 0, "conditions": [{
                "type": "Ready", "status": "True", "reason": "HealthCheckPassed", "message": "",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
            }]},
        }))
        .unwrap();
        let engine = crate::policy::Engine::new().unwrap();
        let defaulted = engine.review_server(&stored).unwrap();
        assert_eq!(defaulted.spec.health_check.unwrap().timeout.as_deref(), Some("10s"), "defaults applied");
        let mut privileged = stored.clone();
        privileged.spec.mode = Some(ServerMode::Container);
        privileged.spec.endpoint = None;
        privileged.spec.image = Some("a/b:1".into());
        privileged.spec.security_context = Some(Box::new(k8s_openapi::api::core::v1::SecurityContext {
            privileged: Some(true),
            ..Default::default()
        }));
        assert!(engine.review_server(&privileged).is_err());
    }

    #[test]
    fn errors_are_classified() {
        for code in [409, 429, 500, 503] {
            assert!(is_retryable(&api_error(code)), "{code}");
        }
        for code in [400, 403, 404, 422] {
            assert!(!is_retryable(&api_error(code)), "{code}");
        }
        let apply = ReconcileError::Apply { kind: ChildKind::Deployment, name: "x".into(), source: api_error(503) };
        assert!(apply.is_retryable());
        assert!(!ReconcileError::Incomplete("namespace").is_retryable());
    }

    #[test]
    fn workload_ignores_updated_replicas_of_an_old_generation() {
        let mut deployment = Deployment::default();
        deployment.metadata.generation = Some(2);
        deployment.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(2),
            ready_replicas: Some(2),
            updated_replicas: Some(2),
            ..DeploymentStatus::default()
        });
        let old = workload_of(2, Some(observed::Rollout::of(&deployment)));
        assert_eq!(old, Workload::Container { desired: 2, replicas: 2, ready: 2, updated: 0 });
        deployment.status.as_mut().unwrap().observed_generation = Some(2);
        let current = workload_of(2, Some(observed::Rollout::of(&deployment)));
        assert_eq!(current, Workload::Container { desired: 2, replicas: 2, ready: 2, updated: 2 });
        assert_eq!(workload_of(1, None), Workload::Container { desired: 1, replicas: 0, ready: 0, updated: 0 });
    }

    #[test]
    fn health_target_prefers_the_cluster_ip() {
        let mut server = MCPServer::new("s", Default::default());
        server.metadata.namespace = Some("ns".into());
        server.spec.port = Some(9000);
        let owner = Owner::of(&server).unwrap();
        let target = |ip: &str| {
            let service = Service {
                spec: Some(ServiceSpec { cluster_ip: Some(ip.into()), ..ServiceSpec::default() }),
                ..Service::default()
            };
            service_target(observed::cluster_ip(&service).as_deref(), &owner, &server)
        };
        assert_eq!(target("10.0.0.7").as_deref(), Some("http://10.0.0.7:9000/mcp"));
        assert_eq!(target("fd00::7").as_deref(), Some("http://[fd00::7]:9000/mcp"));
        assert_eq!(target("None"), None);
        assert_eq!(target(""), None);
        assert_eq!(service_target(None, &owner, &server), None);
    }
}
