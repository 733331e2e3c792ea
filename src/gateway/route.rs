//! Routes: which upstream a `/servers/...` or `/groups/...` path reaches, and with which policy.
//! The objects come from a [`Catalog`]: the reflector stores in a cluster, a plain map in tests.
//! It also holds what the caller check needs: namespace labels and the policy in force.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use hyper::Uri;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::watch;

use super::balance::Standing;
use super::breaker::BreakerConfig;
use super::ratelimit::Rate;
use crate::crd::{MCPAdmissionPolicy, MCPPermissionProfile, MCPServer, MCPServerGroup, ServerMode, Transport};
use crate::policy::defaults::{self, DEFAULT_PORT, GroupSettings, Settings};
use crate::policy::live::LastGood;
use crate::policy::tools::ToolPolicy;
use crate::policy::{Engine, PolicyState, membership};

/// Which kind a route names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// `/servers/{namespace}/{name}/mcp`
    Server,
    /// `/groups/{namespace}/{name}/mcp`
    Group,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteKey {
    /// Server or group.
    pub kind: RouteKind,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
}

impl RouteKey {
    /// `servers/ns/name` or `groups/ns/name`: what session ids are bound to.
    pub fn id(&self) -> String {
        let kind = match self.kind {
            RouteKind::Server => "servers",
            RouteKind::Group => "groups",
        };
        format!("{kind}/{}/{}", self.namespace, self.name)
    }

    /// The label value of the kind, for metrics.
    pub fn kind_label(&self) -> &'static str {
        match self.kind {
            RouteKind::Server => "server",
            RouteKind::Group => "group",
        }
    }
}

/// Where the routed objects come from.
pub trait Catalog: Send + Sync + 'static {
    /// An MCPServer.
    fn server(&self, namespace: &str, name: &str) -> Option<Arc<MCPServer>>;
    /// An MCPServerGroup.
    fn group(&self, namespace: &str, name: &str) -> Option<Arc<MCPServerGroup>>;
    /// The MCPServers of a namespace.
    fn servers_in(&self, namespace: &str) -> Vec<Arc<MCPServer>>;
    /// Marked changed after every change of an MCPServer (a cold start waits on it).
    fn changes(&self) -> watch::Receiver<u64>;
    /// The labels of a namespace, when it is known (none known: every caller is refused).
    fn namespace_labels(&self, _namespace: &str) -> Option<BTreeMap<String, String>> {
        None
    }
    /// The permission profiles and admission policy in force (the builtins unless told).
    fn policy(&self) -> Arc<PolicyState> {
        Arc::new(PolicyState::builtin())
    }
}

/// The profiles and admission policies of a cluster, as the policy in force
/// ([`LastGood::rebuild`], as the webhook builds it).
struct LivePolicy {
    engine: Engine,
    /// Set once every store has listed: watch events refresh the policy from then on.
    synced: AtomicBool,
    last_good: Mutex<LastGood>,
    profiles: Store<MCPPermissionProfile>,
    policies: Store<MCPAdmissionPolicy>,
}

impl LivePolicy {
    fn refresh(&self) {
        let mut last_good = self.last_good.lock().unwrap_or_else(|e| e.into_inner());
        let (profiles, policies) = (self.profiles.state(), self.policies.state());
        let (state, ignored) =
            last_good.rebuild(&self.engine, profiles.iter().map(AsRef::as_ref), policies.iter().map(AsRef::as_ref));
        for ignored in ignored {
            tracing::warn!(kind = %ignored.kind, name = ignored.name, errors = ?ignored.errors, "ignoring an invalid policy object; its last good version stays in force");
        }
        if *self.engine.state() != state {
            self.engine.replace_state(state);
        }
    }
}

/// The reflector stores of a cluster.
#[derive(Clone)]
pub struct StoreCatalog {
    /// MCPServers.
    pub servers: Store<MCPServer>,
    /// MCPServerGroups.
    pub groups: Store<MCPServerGroup>,
    /// Namespaces, metadata only (their labels).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    policy: Arc<LivePolicy>,
    changed: Arc<watch::Sender<u64>>,
}

/// Logs the errors of a watch (the stream retries with backoff); `then` runs after every event.
fn drive<T, E: std::fmt::Display>(
    events: impl futures::Stream<Item = Result<T, E>> + Send + 'static,
    what: &'static str,
    then: impl Fn() + Send + 'static,
) {
    tokio::spawn(events.for_each(move |event| {
        match event {
            Ok(_) => then(),
            Err(e) => tracing::warn!(error = %e, "watching {what}"),
        }
        futures::future::ready(())
    }));
}

impl StoreCatalog {
    /// Starts reflectors of the MCPServers and MCPServerGroups of every namespace, of the
    /// Namespaces (metadata only), the MCPPermissionProfiles and the MCPAdmissionPolicies (watch
    /// errors are retried with backoff); returns once all have listed.
    pub async fn watch(client: kube::Client) -> StoreCatalog {
        let config = watcher::Config::default;
        let (servers, server_writer) = reflector::store();
        let (groups, group_writer) = reflector::store();
        let (namespaces, namespace_writer) = reflector::store();
        let (profiles, profile_writer) = reflector::store();
        let (policies, policy_writer) = reflector::store();
        let policy = Arc::new(LivePolicy {
            engine: Engine::new().expect("generated schemas compile"),
            synced: AtomicBool::new(false),
            last_good: Mutex::default(),
            profiles: profiles.clone(),
            policies: policies.clone(),
        });
        let changed = Arc::new(watch::Sender::new(0u64));
        let notify = changed.clone();
        let server_events = watcher(Api::<MCPServer>::all(client.clone()), config());
        // The reflector has applied the event to the store before passing it on.
        let servers_changed = move || notify.send_modify(|n| *n = n.wrapping_add(1));
        drive(reflector(server_writer, server_events).default_backoff(), "MCPServers", servers_changed);
        let group_events = watcher(Api::<MCPServerGroup>::all(client.clone()), config());
        drive(reflector(group_writer, group_events).default_backoff(), "MCPServerGroups", || {});
        let namespace_events = watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), config());
        drive(reflector(namespace_writer, namespace_events).default_backoff(), "Namespaces", || {});
        // Not `wait_until_ready().now_or_never()`: polling a store's readiness from another task
        // takes over the one waker that `watch` waits with below.
        let refresh = |policy: &Arc<LivePolicy>| {
            let policy = policy.clone();
            move || {
                if policy.synced.load(Ordering::Acquire) {
                    policy.refresh();
                }
            }
        };
        let profile_events = watcher(Api::<MCPPermissionProfile>::all(client.clone()), config());
        drive(reflector(profile_writer, profile_events).default_backoff(), "MCPPermissionProfiles", refresh(&policy));
        let policy_events = watcher(Api::<MCPAdmissionPolicy>::all(client), config());
        drive(reflector(policy_writer, policy_events).default_backoff(), "MCPAdmissionPolicies", refresh(&policy));
        let _ = servers.wait_until_ready().await;
        let _ = groups.wait_until_ready().await;
        let _ = namespaces.wait_until_ready().await;
        let _ = profiles.wait_until_ready().await;
        let _ = policies.wait_until_ready().await;
        policy.synced.store(true, Ordering::Release);
        policy.refresh();
        StoreCatalog { servers, groups, namespaces, policy, changed }
    }
}

impl Catalog for StoreCatalog {
    fn server(&self, namespace: &str, name: &str) -> Option<Arc<MCPServer>> {
        self.servers.get(&ObjectRef::new(name).within(namespace))
    }

    fn group(&self, namespace: &str, name: &str) -> Option<Arc<MCPServerGroup>> {
        self.groups.get(&ObjectRef::new(name).within(namespace))
    }

    fn servers_in(&self, namespace: &str) -> Vec<Arc<MCPServer>> {
        self.servers.state().into_iter().filter(|s| s.namespace().as_deref() == Some(namespace)).collect()
    }

    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces.get(&ObjectRef::new(namespace)).map(|n| n.metadata.labels.clone().unwrap_or_default())
    }

    fn policy(&self) -> Arc<PolicyState> {
        self.policy.engine.state()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// A catalog filled by hand (tests, `gateway --routes-file`).
#[derive(Debug)]
pub struct StaticCatalog {
    servers: RwLock<BTreeMap<(String, String), Arc<MCPServer>>>,
    groups: RwLock<BTreeMap<(String, String), Arc<MCPServerGroup>>>,
    namespaces: RwLock<BTreeMap<String, BTreeMap<String, String>>>,
    policy: RwLock<Arc<PolicyState>>,
    changed: watch::Sender<u64>,
}

impl Default for StaticCatalog {
    /// No routes, no namespaces, the builtin policy.
    fn default() -> Self {
        StaticCatalog {
            servers: RwLock::default(),
            groups: RwLock::default(),
            namespaces: RwLock::default(),
            policy: RwLock::new(Arc::new(PolicyState::builtin())),
            changed: watch::Sender::new(0),
        }
    }
}

fn key_of(meta: &kube::api::ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_else(|| "default".into()), meta.name.clone().unwrap_or_default())
}

impl StaticCatalog {
    /// Adds or replaces a server.
    pub fn put_server(&self, server: MCPServer) {
        let key = key_of(&server.metadata);
        self.servers.write().expect("catalog lock").insert(key, Arc::new(server));
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Adds or replaces a group.
    pub fn put_group(&self, group: MCPServerGroup) {
        let key = key_of(&group.metadata);
        self.groups.write().expect("catalog lock").insert(key, Arc::new(group));
    }

    /// Adds or replaces a namespace and its labels.
    pub fn put_namespace(&self, name: &str, labels: BTreeMap<String, String>) {
        self.namespaces.write().expect("catalog lock").insert(name.to_string(), labels);
    }

    /// Puts a policy in force.
    pub fn set_policy(&self, policy: PolicyState) {
        *self.policy.write().expect("catalog lock") = Arc::new(policy);
    }
}

impl Catalog for StaticCatalog {
    fn server(&self, namespace: &str, name: &str) -> Option<Arc<MCPServer>> {
        self.servers.read().expect("catalog lock").get(&(namespace.to_string(), name.to_string())).cloned()
    }

    fn group(&self, namespace: &str, name: &str) -> Option<Arc<MCPServerGroup>> {
        self.groups.read().expect("catalog lock").get(&(namespace.to_string(), name.to_string())).cloned()
    }

    fn servers_in(&self, namespace: &str) -> Vec<Arc<MCPServer>> {
        let servers = self.servers.read().expect("catalog lock");
        servers.iter().filter(|((ns, _), _)| ns == namespace).map(|(_, s)| s.clone()).collect()
    }

    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces.read().expect("catalog lock").get(namespace).cloned()
    }

    fn policy(&self) -> Arc<PolicyState> {
        self.policy.read().expect("catalog lock").clone()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Why a route cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No such object.
    #[error("no {kind} {namespace}/{name}")]
    NotFound {
        /// `MCPServer` or `MCPServerGroup`.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The group selects no server.
    #[error("MCPServerGroup {0} has no member")]
    NoMember(String),
    /// The server cannot be proxied as it is declared.
    #[error("MCPServer {server}: {reason}")]
    Unroutable {
        /// `namespace/name`.
        server: String,
        /// Why.
        reason: String,
    },
}

/// One upstream server and the policy the gateway applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `namespace/name` of the MCPServer.
    pub member: String,
    /// Namespace of the MCPServer.
    pub namespace: String,
    /// Name of the MCPServer.
    pub name: String,
    /// Its MCP endpoint.
    pub url: Uri,
    /// `spec.tools.allowList` and `denyList`.
    pub tools: ToolPolicy,
    /// `spec.tools.rateLimit`, if any.
    pub rate: Option<Rate>,
    /// `spec.circuitBreaker`, unless disabled.
    pub breaker: Option<BreakerConfig>,
    /// Whether it takes a group's requests (a server's own route ignores it).
    pub standing: Standing,
}

/// What a route reaches: its upstreams and, for a group, how to balance over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The server, or the group's members in membership order.
    pub upstreams: Vec<Upstream>,
    /// A group's strategy, failover and health policy.
    pub group: Option<GroupSettings>,
}

/// The upstream of one MCPServer: container mode `http://<name>.<ns>.svc:<port><path>`, remote
/// mode `spec.endpoint`. Values the webhook defaults are defaulted alike here for objects that
/// never passed it.
pub fn upstream(server: &MCPServer) -> Result<Upstream, RouteError> {
    let namespace = server.namespace().unwrap_or_else(|| "default".into());
    let name = server.name_any();
    let member = format!("{namespace}/{name}");
    let unroutable = |reason: &str| RouteError::Unroutable { server: member.clone(), reason: reason.into() };
    let spec = &server.spec;
    let url = match spec.mode {
        Some(ServerMode::Remote) => {
            spec.endpoint.clone().ok_or_else(|| unroutable("remote mode without spec.endpoint"))?
        }
        Some(ServerMode::Container) => {
            if spec.transport == Some(Transport::Sse) {
                return Err(unroutable("the gateway speaks streamable HTTP; transport sse is not proxied"));
            }
            let port = spec.port.map_or(DEFAULT_PORT, i64::from);
            format!("http://{name}.{namespace}.svc:{port}/mcp")
        }
        None => return Err(unroutable("spec.mode is not set")),
    };
    let url: Uri = url.parse().map_err(|_| unroutable("the endpoint is not a valid URL"))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none() {
        return Err(unroutable("the endpoint must be an http(s) URL"));
    }
    let rate = defaults::rate_limit(spec).map(|(per_minute, burst)| Rate { per_minute, burst });
    let settings = Settings::of(spec);
    let breaker = settings.breaker_enabled.then(|| BreakerConfig {
        failure_threshold: u32::try_from(settings.breaker_threshold).unwrap_or(1).max(1),
        reset_timeout: settings.reset_timeout,
    });
    let standing = Standing::Warm;
    Ok(Upstream { member, namespace, name, url, tools: ToolPolicy::of(spec.tools.as_deref()), rate, breaker, standing })
}

/// The upstreams a route reaches: the server itself, or the group's members by name with
/// their standing.
pub fn resolve(catalog: &dyn Catalog, key: &RouteKey) -> Result<Resolved, RouteError> {
    let not_found = |kind| RouteError::NotFound { kind, namespace: key.namespace.clone(), name: key.name.clone() };
    match key.kind {
        RouteKind::Server => {
            let server = catalog.server(&key.namespace, &key.name).ok_or_else(|| not_found("MCPServer"))?;
            Ok(Resolved { upstreams: vec![upstream(&server)?], group: None })
        }
        RouteKind::Group => {
            let group = catalog.group(&key.namespace, &key.name).ok_or_else(|| not_found("MCPServerGroup"))?;
            let no_member = || RouteError::NoMember(format!("{}/{}", key.namespace, key.name));
            // The one definition of who is a member, in the order every strategy counts from.
            let servers = catalog.servers_in(&key.namespace);
            let view = membership::members(&group, servers.iter().map(AsRef::as_ref)).map_err(|_| no_member())?;
            let members: Vec<_> = view
                .members
                .iter()
                .filter_map(|member| {
                    let server = servers.iter().find(|s| s.metadata.name.as_deref() == Some(&member.name))?;
                    let upstream = upstream(server).ok()?;
                    Some(Upstream { standing: Standing::of(member.state, member.healthy), ..upstream })
                })
                .collect();
            if members.is_empty() {
                return Err(no_member());
            }
            Ok(Resolved { upstreams: members, group: Some(GroupSettings::of(&group.spec)) })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    use super::*;
    use crate::crd::{CircuitBreaker, MCPServerGroupSpec, MCPServerSpec, RateLimit, ToolsConfig};

    fn server(name: &str, spec: MCPServerSpec) -> MCPServer {
        let mut server = MCPServer::new(name, spec);
        server.metadata.namespace = Some("ns".into());
        server
    }

    #[test]
    fn container_and_remote_servers_get_their_upstream_and_policy() {
        let container = server(
            "github",
            MCPServerSpec {
                mode: Some(ServerMode::Container),
                port: Some(3000),
                tools: Some(Box::new(ToolsConfig {
                    allow_list: Some(vec!["a".into(), "c".into()]),
                    deny_list: Some(vec!["c".into()]),
                    rate_limit: Some(RateLimit { requests_per_minute: Some(60), burst_size: None }),
                })),
                ..Default::default()
            },
        );
        let up = upstream(&container).unwrap();
        assert_eq!(up.url, "http://github.ns.svc:3000/mcp");
        assert!(up.tools.allows("a") && !up.tools.allows("b") && !up.tools.allows("c"), "allowList, then denyList");
        assert_eq!(up.rate, Some(Rate { per_minute: 60, burst: 60 }), "burst defaults to a minute's worth");
        assert_eq!(up.breaker, Some(BreakerConfig { failure_threshold: 5, reset_timeout: Duration::from_secs(30) }));
        let remote = server(
            "r",
            MCPServerSpec {
                mode: Some(ServerMode::Remote),
                endpoint: Some("https://mcp.example.com/v1/mcp".into()),
                circuit_breaker: Some(Box::new(CircuitBreaker { enabled: Some(false), ..Default::default() })),
                ..Default::default()
            },
        );
        let up = upstream(&remote).unwrap();
        assert_eq!(up.url, "https://mcp.example.com/v1/mcp");
        assert_eq!((up.breaker, up.rate, up.tools.filters()), (None, None, false));
        let sse = server(
            "s",
            MCPServerSpec { mode: Some(ServerMode::Container), transport: Some(Transport::Sse), ..Default::default() },
        );
        assert!(matches!(upstream(&sse), Err(RouteError::Unroutable { .. })));
    }

    #[test]
    fn groups_reach_the_servers_their_selector_matches_in_their_namespace() {
        let catalog = StaticCatalog::default();
        for (name, team, ns) in [("b", "x", "ns"), ("a", "x", "ns"), ("c", "y", "ns"), ("d", "x", "other")] {
            let mut s = server(
                name,
                MCPServerSpec {
                    mode: Some(ServerMode::Remote),
                    endpoint: Some(format!("http://127.0.0.1:1/{name}")),
                    ..Default::default()
                },
            );
            s.metadata.namespace = Some(ns.into());
            s.metadata.labels = Some(BTreeMap::from([("team".to_string(), team.to_string())]));
            catalog.put_server(s);
        }
        let mut group = MCPServerGroup::new(
            "g",
            MCPServerGroupSpec {
                selector: Some(LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "team".into(),
                        operator: "In".into(),
                        values: Some(vec!["x".into()]),
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        group.metadata.namespace = Some("ns".into());
        catalog.put_group(group);
        let key = RouteKey { kind: RouteKind::Group, namespace: "ns".into(), name: "g".into() };
        let members: Vec<_> = resolve(&catalog, &key).unwrap().upstreams.into_iter().map(|u| u.member).collect();
        assert_eq!(members, ["ns/a", "ns/b"]);
        let missing = RouteKey { kind: RouteKind::Server, namespace: "ns".into(), name: "zz".into() };
        assert!(matches!(resolve(&catalog, &missing), Err(RouteError::NotFound { .. })));
        let mut everything = MCPServerGroup::new("all", MCPServerGroupSpec::default());
        everything.metadata.namespace = Some("ns".into());
        everything.spec.selector = Some(LabelSelector::default());
        catalog.put_group(everything);
        let all = RouteKey { kind: RouteKind::Group, namespace: "ns".into(), name: "all".into() };
        assert!(matches!(resolve(&catalog, &all), Err(RouteError::NoMember(_))), "an empty selector takes in nothing");
    }
}
