//! What the MCPServer controller sees of its children, and what it last applied to them:
//! the reason an unchanged server costs no API write.
//!
//! The children's watches are projected, not stored: each watched object is reduced to a
//! [`Seen`] (fingerprints of its uid, resourceVersion, labels, annotations and owner
//! references; its generation; for a Deployment its rollout counts, for a Service its cluster
//! IP), kept with the record of its last apply in about 70 bytes, and then dropped. 10k servers
//! are 60k children: whole objects, even stripped, were the largest part of the controller's
//! memory. The demand Leases are few and kept whole in a reflector store.
//!
//! Every apply is recorded: one fingerprint of the object sent with the uid and version (below)
//! the API answered. An apply is skipped when the same object was applied before and
//! the child is still as that apply left it: for a Deployment the same generation (its status
//! moves on its own; a spec edit bumps the generation) and the labels, annotations and owner
//! references sent still present; for the other kinds the same resourceVersion (only writes
//! move it). A deleted or edited child, a changed spec or profile, or a restart (nothing
//! recorded) applies again.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use futures::{Stream, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::resources::{Child, ChildKind};
use super::watches;
use crate::metrics::Metrics;

/// What one apply of a child left behind: the fingerprint of the hash of the object sent and
/// of the [`version`] the API answered (8 bytes a child).
type Applied = NonZeroU64;

/// The fingerprint of a child's uid and of what moves when someone writes it: for a Deployment
/// its generation (its status moves on its own; a spec edit bumps the generation), for the
/// other kinds the resourceVersion (only writes move it). No generation counts as 0.
fn version(kind: ChildKind, meta: &ObjectMeta) -> u64 {
    let uid = meta.uid.as_deref();
    match kind {
        ChildKind::Deployment => fingerprint(&(uid, meta.generation.unwrap_or(0))),
        _ => fingerprint(&(uid, meta.resource_version.as_deref())),
    }
}

/// The record of applying an object hashed `hash` that the API answered at `version`.
fn applied(hash: u64, version: u64) -> Applied {
    NonZeroU64::new(fingerprint(&(hash, version))).unwrap_or(NonZeroU64::MIN)
}

/// The hash of a value.
fn fingerprint<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// A child of a given kind: the hash of its namespace and name.
fn child_key(namespace: &str, name: &str) -> u64 {
    fingerprint(&(namespace, name))
}

/// The index of a kind among [`ChildKind::ALL`].
fn index(kind: ChildKind) -> usize {
    ChildKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

/// A Deployment's rollout as its status reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollout {
    /// Pods that exist.
    pub replicas: i32,
    /// Pods that are ready.
    pub ready: i32,
    /// Pods of the current template; 0 while the status is older than the spec.
    pub updated: i32,
}

impl Rollout {
    /// The rollout a Deployment reports.
    pub fn of(deployment: &Deployment) -> Rollout {
        let status = deployment.status.as_ref();
        let current = status.and_then(|s| s.observed_generation) >= deployment.metadata.generation;
        Rollout {
            replicas: status.and_then(|s| s.replicas).unwrap_or(0),
            ready: status.and_then(|s| s.ready_replicas).unwrap_or(0),
            updated: if current { status.and_then(|s| s.updated_replicas).unwrap_or(0) } else { 0 },
        }
    }
}

/// The cluster IP a Service was given, when it has one.
pub fn cluster_ip(service: &Service) -> Option<Box<str>> {
    let ip = service.spec.as_ref()?.cluster_ip.as_deref()?;
    (!ip.is_empty() && ip != "None").then(|| ip.into())
}

/// The part of a child's spec or status that a reconcile reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Detail {
    /// Nothing: the identity decides.
    #[default]
    None,
    /// A Deployment's.
    Rollout(Rollout),
    /// A Service's.
    ClusterIp(Option<Box<str>>),
}

/// What the controller keeps of one watched child: hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    /// Its [`version`].
    version: u64,
    /// The uid hash of its controlling owner, 0 for none.
    controller: u64,
    /// Hashes of its labels, annotations and owner references, sorted (Deployments only).
    metadata: Box<[u64]>,
    detail: Detail,
}

fn label_print(key: &str, value: &str) -> u64 {
    fingerprint(&('l', key, value))
}

fn annotation_print(key: &str, value: &str) -> u64 {
    fingerprint(&('a', key, value))
}

fn owner_print(owner: &OwnerReference) -> u64 {
    let OwnerReference { api_version, kind, name, uid, controller, block_owner_deletion } = owner;
    fingerprint(&('o', api_version, kind, name, uid, controller, block_owner_deletion))
}

/// The hashes of every label, annotation and owner reference of `meta`, sorted.
fn metadata_prints(meta: &ObjectMeta) -> Vec<u64> {
    let labels = meta.labels.iter().flatten().map(|(k, v)| label_print(k, v));
    let annotations = meta.annotations.iter().flatten().map(|(k, v)| annotation_print(k, v));
    let owners = meta.owner_references.iter().flatten().map(owner_print);
    let mut prints: Vec<u64> = labels.chain(annotations).chain(owners).collect();
    prints.sort_unstable();
    prints
}

/// A child kind the controller watches, and what it keeps of one.
pub trait Projected: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static {
    /// Which child this is.
    const KIND: ChildKind;

    /// What is kept beyond the identity.
    fn detail(&self) -> Detail {
        Detail::None
    }
}

impl Projected for Deployment {
    const KIND: ChildKind = ChildKind::Deployment;
    fn detail(&self) -> Detail {
        Detail::Rollout(Rollout::of(self))
    }
}

impl Projected for Service {
    const KIND: ChildKind = ChildKind::Service;
    fn detail(&self) -> Detail {
        Detail::ClusterIp(cluster_ip(self))
    }
}

impl Projected for PartialObjectMeta<ServiceAccount> {
    const KIND: ChildKind = ChildKind::ServiceAccount;
}

impl Projected for PartialObjectMeta<Role> {
    const KIND: ChildKind = ChildKind::Role;
}

impl Projected for PartialObjectMeta<RoleBinding> {
    const KIND: ChildKind = ChildKind::RoleBinding;
}

impl Projected for PartialObjectMeta<NetworkPolicy> {
    const KIND: ChildKind = ChildKind::NetworkPolicy;
}

impl Seen {
    fn of<K: Projected>(object: &K) -> Seen {
        let meta = object.meta();
        let controller = meta.owner_references.iter().flatten().find(|r| r.controller == Some(true));
        let metadata = if K::KIND == ChildKind::Deployment { metadata_prints(meta) } else { Vec::new() };
        Seen {
            version: version(K::KIND, meta),
            controller: controller.map_or(0, |r| fingerprint(&r.uid)),
            metadata: metadata.into(),
            detail: object.detail(),
        }
    }
}

/// What the controller knows of one child: as last watched, and as it last applied it.
#[derive(Debug, Default)]
struct Known {
    seen: Option<Seen>,
    applied: Option<Applied>,
}

impl Known {
    fn is_empty(&self) -> bool {
        self.seen.is_none() && self.applied.is_none()
    }
}

/// Every child known, one map per kind (keyed by namespace and name: 8-byte keys, and each map
/// grows on its own).
#[derive(Default)]
struct Table {
    known: [HashMap<u64, Known>; ChildKind::ALL.len()],
    /// A kind being listed again (after a restart of its watch): replaces its entries once done.
    relisting: HashMap<ChildKind, HashMap<u64, Seen>>,
}

/// The shared side of the projections: what [`Projector`]s write and [`Observed`] reads.
struct Children {
    table: Mutex<Table>,
    /// The kinds listed at least once, as bits of their [`ChildKind::ALL`] index.
    listed: watch::Sender<u8>,
}

/// The bit of the demand Leases.
const LEASES_LISTED: u8 = 1 << ChildKind::ALL.len();
/// Every kind listed, and the Leases.
const ALL_LISTED: u8 = (LEASES_LISTED << 1) - 1;

fn bit(kind: ChildKind) -> u8 {
    1 << index(kind)
}

impl Children {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply<K: Projected>(&self, event: &watcher::Event<K>) {
        let key = |object: &K| child_key(&object.namespace().unwrap_or_default(), &object.name_any());
        let kind = K::KIND;
        let mut table = self.table();
        match event {
            watcher::Event::Apply(object) => {
                table.known[index(kind)].entry(key(object)).or_default().seen = Some(Seen::of(object));
            }
            watcher::Event::Delete(object) => {
                let known = &mut table.known[index(kind)];
                if let Some(entry) = known.get_mut(&key(object)) {
                    entry.seen = None;
                    if entry.is_empty() {
                        known.remove(&key(object));
                    }
                }
            }
            watcher::Event::Init => {
                table.relisting.insert(kind, HashMap::new());
            }
            watcher::Event::InitApply(object) => {
                table.relisting.entry(kind).or_default().insert(key(object), Seen::of(object));
            }
            watcher::Event::InitDone => {
                let listed = table.relisting.remove(&kind).unwrap_or_default();
                let known = &mut table.known[index(kind)];
                known.values_mut().for_each(|entry| entry.seen = None);
                for (key, seen) in listed {
                    known.entry(key).or_default().seen = Some(seen);
                }
                known.retain(|_, entry| !entry.is_empty());
                known.shrink_to_fit();
                drop(table);
                self.listed.send_modify(|listed| *listed |= bit(kind));
            }
        }
    }

    /// The child as last watched, and as last applied.
    fn get(&self, kind: ChildKind, namespace: &str, name: &str) -> (Option<Seen>, Option<Applied>) {
        let table = self.table();
        let known = table.known[index(kind)].get(&child_key(namespace, name));
        known.map_or((None, None), |k| (k.seen.clone(), k.applied))
    }
}

/// The children's projections and the record of applies.
pub struct Observed {
    children: Arc<Children>,
    leases: Store<Lease>,
}

/// What fills [`Observed`]: one projector for the children's watches ([`projected`]) and the
/// Leases' store writer ([`reflected`]).
pub struct Writers {
    /// The children.
    pub children: Projector,
    /// The demand Leases.
    pub leases: Writer<Lease>,
}

/// Writes the children's watch events into their [`Observed`].
#[derive(Clone)]
pub struct Projector(Arc<Children>);

impl Projector {
    /// Applies one watch event of a child kind.
    pub fn apply<K: Projected>(&self, event: &watcher::Event<K>) {
        self.0.apply(event);
    }

    /// Marks the demand Leases listed.
    pub fn leases_listed(&self) {
        self.0.listed.send_modify(|listed| *listed |= LEASES_LISTED);
    }
}

/// The hash of a child as it would be sent.
pub fn hash_of(child: &Child) -> u64 {
    fingerprint(&child.to_value().to_string())
}

/// Annotation in which client-side `kubectl apply` keeps a whole copy of the object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops the managed fields and kubectl's copy of the object, which no store reads.
pub fn strip<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
    if let Some(annotations) = object.meta_mut().annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// Why a reconcile cannot read the children: the controller is stopping.
#[derive(Debug)]
pub struct Stopping;

impl Observed {
    /// Empty projections and the writers that fill them.
    pub fn new() -> (Observed, Writers) {
        let (leases, leases_w) = reflector::store();
        let children = Arc::new(Children { table: Mutex::default(), listed: watch::Sender::new(0) });
        let observed = Observed { children: children.clone(), leases };
        (observed, Writers { children: Projector(children), leases: leases_w })
    }

    /// Waits until every kind and the Leases have their first list, so no reconcile mistakes a
    /// child not yet listed for a missing one (not `Store::wait_until_ready`, which wakes only
    /// one of several waiting reconciles). Errs only when the controller is stopping.
    pub async fn ready(&self) -> Result<(), Stopping> {
        let mut listed = self.children.listed.subscribe();
        listed.wait_for(|bits| *bits == ALL_LISTED).await.map(|_| ()).map_err(|_| Stopping)
    }

    /// The rollout of the server's Deployment as last watched.
    pub fn rollout(&self, namespace: &str, name: &str) -> Option<Rollout> {
        match self.children.get(ChildKind::Deployment, namespace, name).0?.detail {
            Detail::Rollout(rollout) => Some(rollout),
            _ => None,
        }
    }

    /// The cluster IP of the server's Service as last watched.
    pub fn cluster_ip(&self, namespace: &str, name: &str) -> Option<Box<str>> {
        match self.children.get(ChildKind::Service, namespace, name).0?.detail {
            Detail::ClusterIp(ip) => ip,
            _ => None,
        }
    }

    /// Whether the child of that kind and name, as last watched, is controlled by the server
    /// of uid `owner`.
    pub fn controlled_by(&self, kind: ChildKind, namespace: &str, name: &str, owner: &str) -> bool {
        self.children.get(kind, namespace, name).0.is_some_and(|seen| seen.controller == fingerprint(owner))
    }

    /// The demand Lease of that name in the operator's namespace.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Arc<Lease>> {
        self.leases.get(&ObjectRef::new(name).within(namespace))
    }

    /// Whether applying `child` (hashed `hash`) would change nothing: see the module docs.
    pub fn satisfied(&self, child: &Child, hash: u64) -> bool {
        let desired = child.meta();
        let (namespace, name) =
            (desired.namespace.as_deref().unwrap_or_default(), desired.name.as_deref().unwrap_or_default());
        let (Some(seen), Some(record)) = self.children.get(child.kind(), namespace, name) else {
            return false;
        };
        let metadata_kept = child.kind() != ChildKind::Deployment
            || metadata_prints(desired).iter().all(|p| seen.metadata.binary_search(p).is_ok());
        record == applied(hash, seen.version) && metadata_kept
    }

    /// Records an apply of `kind` and what the API answered.
    pub fn record(&self, kind: ChildKind, hash: u64, answer: &ObjectMeta) {
        let key =
            child_key(answer.namespace.as_deref().unwrap_or_default(), answer.name.as_deref().unwrap_or_default());
        let record = applied(hash, version(kind, answer));
        self.children.table().known[index(kind)].entry(key).or_default().applied = Some(record);
    }

    /// Forgets the applies of a deleted server's children.
    pub fn forget(&self, namespace: &str, name: &str) {
        let key = child_key(namespace, name);
        let mut table = self.children.table();
        for known in &mut table.known {
            if let Some(entry) = known.get_mut(&key) {
                entry.applied = None;
                if entry.is_empty() {
                    known.remove(&key);
                }
            }
        }
    }
}

/// A recovering watch of one child kind, projected into [`Observed`], yielding what changed.
pub fn projected<K: Projected>(
    api: Api<K>,
    config: &watcher::Config,
    resource: &'static str,
    metrics: &Metrics,
    projector: Projector,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    watches::recovering(watcher(api, config.clone()), resource, metrics.clone())
        .inspect_ok(move |event| projector.apply(event))
        .touched_objects()
}

/// The recovering watch of the demand Leases, reflected into their store (stripped), yielding
/// what changed; the end of each list marks them listed in the projector.
pub fn leases(
    api: Api<Lease>,
    config: &watcher::Config,
    metrics: &Metrics,
    writer: Writer<Lease>,
    projector: Projector,
) -> impl Stream<Item = Result<Lease, watcher::Error>> + Send + 'static {
    watches::recovering(watcher(api, config.clone()), "leases", metrics.clone())
        .modify(strip)
        .reflect(writer)
        .inspect_ok(move |event| {
            if matches!(event, watcher::Event::InitDone) {
                projector.leases_listed();
            }
        })
        .touched_objects()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::api::rbac::v1::PolicyRule;

    fn meta(uid: &str, rv: &str, generation: i64) -> ObjectMeta {
        ObjectMeta {
            name: Some("s".into()),
            namespace: Some("ns".into()),
            uid: Some(uid.into()),
            resource_version: Some(rv.into()),
            generation: Some(generation),
            labels: Some([("app".to_string(), "s".to_string())].into()),
            ..ObjectMeta::default()
        }
    }

    fn desired_deployment() -> Child {
        Child::Deployment(Deployment {
            metadata: ObjectMeta { uid: None, resource_version: None, generation: None, ..meta("", "", 0) },
            ..Deployment::default()
        })
    }

    fn desired_role(verb: &str) -> Child {
        Child::Role(Role {
            metadata: ObjectMeta { uid: None, resource_version: None, generation: None, ..meta("", "", 0) },
            rules: Some(vec![PolicyRule { verbs: vec![verb.into()], ..PolicyRule::default() }]),
        })
    }

    fn watched_deployment(writers: &Writers, meta: ObjectMeta, ready: i32) {
        let deployment = Deployment {
            metadata: meta,
            status: Some(DeploymentStatus { ready_replicas: Some(ready), ..DeploymentStatus::default() }),
            ..Deployment::default()
        };
        writers.children.apply(&watcher::Event::Apply(deployment));
    }

    fn watched_role(writers: &Writers, meta: ObjectMeta) {
        let role = PartialObjectMeta::<Role> { metadata: meta, ..Default::default() };
        writers.children.apply(&watcher::Event::Apply(role));
    }

    #[test]
    fn a_role_is_satisfied_only_while_nobody_wrote_it_since_the_same_apply() {
        let (observed, writers) = Observed::new();
        let role = desired_role("get");
        let hash = hash_of(&role);
        assert!(!observed.satisfied(&role, hash), "nothing watched nor recorded");
        watched_role(&writers, meta("u1", "10", 1));
        assert!(!observed.satisfied(&role, hash), "watched but never applied by this process");
        observed.record(ChildKind::Role, hash, &meta("u1", "10", 1));
        assert!(observed.satisfied(&role, hash));
        let other = desired_role("list");
        assert!(!observed.satisfied(&other, hash_of(&other)), "a different desired object");
        watched_role(&writers, meta("u1", "11", 1));
        assert!(!observed.satisfied(&role, hash), "someone wrote it");
        observed.record(ChildKind::Role, hash, &meta("u1", "11", 1));
        watched_role(&writers, meta("u2", "11", 1));
        assert!(!observed.satisfied(&role, hash), "deleted and re-created");
        observed.forget("ns", "s");
        assert!(!observed.satisfied(&role, hash), "forgotten with its server");
    }

    #[test]
    fn a_deployment_ignores_its_status_but_not_its_spec_or_labels() {
        let (observed, writers) = Observed::new();
        let deployment = desired_deployment();
        let hash = hash_of(&deployment);
        observed.record(ChildKind::Deployment, hash, &meta("u1", "10", 1));
        watched_deployment(&writers, meta("u1", "10", 1), 0);
        assert!(observed.satisfied(&deployment, hash));
        watched_deployment(&writers, meta("u1", "12", 1), 1);
        assert!(observed.satisfied(&deployment, hash), "status churn");
        assert_eq!(observed.rollout("ns", "s").unwrap().ready, 1);
        let mut relabelled = meta("u1", "13", 1);
        relabelled.labels = None;
        watched_deployment(&writers, relabelled, 1);
        assert!(!observed.satisfied(&deployment, hash), "a label removed");
        let mut more = meta("u1", "14", 1);
        more.labels.as_mut().unwrap().insert("added".into(), "by someone".into());
        watched_deployment(&writers, more, 1);
        assert!(observed.satisfied(&deployment, hash), "a label added by someone else");
        watched_deployment(&writers, meta("u1", "15", 2), 1);
        assert!(!observed.satisfied(&deployment, hash), "a spec edit");
        watched_deployment(&writers, meta("u2", "16", 1), 1);
        assert!(!observed.satisfied(&deployment, hash), "deleted and re-created at the same generation");
    }

    #[test]
    fn a_relist_replaces_what_its_kind_had_and_readiness_waits_for_every_kind() {
        let (observed, writers) = Observed::new();
        let owner = OwnerReference { controller: Some(true), uid: "server-uid".into(), ..OwnerReference::default() };
        let mut owned = meta("u1", "10", 1);
        owned.owner_references = Some(vec![owner]);
        watched_role(&writers, owned);
        watched_deployment(&writers, meta("d1", "10", 1), 0);
        assert!(observed.controlled_by(ChildKind::Role, "ns", "s", "server-uid"));
        assert!(!observed.controlled_by(ChildKind::Role, "ns", "s", "another"));
        assert!(!observed.controlled_by(ChildKind::Deployment, "ns", "s", "server-uid"), "not its owner");
        // The Role watch restarts and lists nothing: the Role is gone, the Deployment stays.
        writers.children.apply::<PartialObjectMeta<Role>>(&watcher::Event::Init);
        assert!(observed.controlled_by(ChildKind::Role, "ns", "s", "server-uid"), "until the list ends");
        writers.children.apply::<PartialObjectMeta<Role>>(&watcher::Event::InitDone);
        assert!(!observed.controlled_by(ChildKind::Role, "ns", "s", "server-uid"));
        assert!(observed.rollout("ns", "s").is_some());
        assert_eq!(*observed.children.listed.borrow(), bit(ChildKind::Role), "one kind listed of six");
    }
}
