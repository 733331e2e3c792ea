//! What the MCPServer controller sees of its children, and what it last applied to them:
//! the reason an unchanged server costs no API write.
//!
//! Reflector stores hold the children as the watches show them (Deployments with their
//! metadata and status, Services with their spec, the other kinds as their identity and owner
//! references only: what is not read is dropped, to keep 10k servers small) and the demand
//! Leases. Every apply is recorded: the hash of the object sent and the uid, resourceVersion and
//! generation the API answered. An apply is skipped when the same object was applied before and
//! the child is still as that apply left it: for a Deployment the same generation (its status
//! moves on its own; a spec edit bumps the generation) and the labels, annotations and owner
//! references sent still present; for the other kinds the same resourceVersion (only writes
//! move it). A deleted or edited child, a changed spec or profile, or a restart (nothing
//! recorded) applies again.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use futures::Stream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::resources::{Child, ChildKind};
use super::watches;
use crate::metrics::Metrics;

/// What one apply of a child left behind; strings kept as their hashes (32 bytes a child).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Applied {
    hash: u64,
    uid: u64,
    resource_version: u64,
    generation: Option<i64>,
}

/// A child: its kind and the hash of its namespace and name.
type ChildKey = (ChildKind, u64);

/// The hash of a string, or of its absence.
fn fingerprint(text: Option<&str>) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

fn child_key(kind: ChildKind, namespace: &str, name: &str) -> ChildKey {
    let mut hasher = std::hash::DefaultHasher::new();
    (namespace, name).hash(&mut hasher);
    (kind, hasher.finish())
}

/// The children's stores and the record of applies.
pub struct Observed {
    deployments: Store<Deployment>,
    services: Store<Service>,
    accounts: Store<PartialObjectMeta<ServiceAccount>>,
    roles: Store<PartialObjectMeta<Role>>,
    bindings: Store<PartialObjectMeta<RoleBinding>>,
    policies: Store<PartialObjectMeta<NetworkPolicy>>,
    leases: Store<Lease>,
    applied: Mutex<HashMap<ChildKey, Applied>>,
}

/// The writers that fill [`Observed`], each given to its watch ([`reflected`]).
pub struct Writers {
    /// Deployments (metadata and status).
    pub deployments: Writer<Deployment>,
    /// Services.
    pub services: Writer<Service>,
    /// ServiceAccounts (identity and owners).
    pub accounts: Writer<PartialObjectMeta<ServiceAccount>>,
    /// Roles (identity and owners).
    pub roles: Writer<PartialObjectMeta<Role>>,
    /// RoleBindings (identity and owners).
    pub bindings: Writer<PartialObjectMeta<RoleBinding>>,
    /// NetworkPolicies (identity and owners).
    pub policies: Writer<PartialObjectMeta<NetworkPolicy>>,
    /// The demand Leases.
    pub leases: Writer<Lease>,
}

/// The hash of a child as it would be sent.
pub fn hash_of(child: &Child) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    child.to_value().to_string().hash(&mut hasher);
    hasher.finish()
}

/// Whether every label, annotation and owner reference of `desired` is on `observed`.
fn metadata_kept(desired: &ObjectMeta, observed: &ObjectMeta) -> bool {
    let contains = |want: &Option<std::collections::BTreeMap<String, String>>,
                    have: &Option<std::collections::BTreeMap<String, String>>| {
        want.iter().flatten().all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    contains(&desired.labels, &observed.labels)
        && contains(&desired.annotations, &observed.annotations)
        && desired.owner_references.iter().flatten().all(|r| observed.owner_references.iter().flatten().any(|o| o == r))
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

/// Keeps of a child what [`Observed::satisfied`] and pruning read when its resourceVersion
/// decides: drops managed fields, labels and annotations.
pub fn strip_child<K: Resource>(object: &mut K) {
    strip(object);
    object.meta_mut().labels = None;
    object.meta_mut().annotations = None;
}

/// Drops what the store never reads of a Deployment: its spec, its managed fields.
pub fn strip_deployment(deployment: &mut Deployment) {
    strip(deployment);
    deployment.spec = None;
}

impl Observed {
    /// Empty stores and the writers that fill them.
    pub fn new() -> (Observed, Writers) {
        let (deployments, deployments_w) = reflector::store();
        let (services, services_w) = reflector::store();
        let (accounts, accounts_w) = reflector::store();
        let (roles, roles_w) = reflector::store();
        let (bindings, bindings_w) = reflector::store();
        let (policies, policies_w) = reflector::store();
        let (leases, leases_w) = reflector::store();
        let observed = Observed {
            deployments,
            services,
            accounts,
            roles,
            bindings,
            policies,
            leases,
            applied: Mutex::new(HashMap::new()),
        };
        let writers = Writers {
            deployments: deployments_w,
            services: services_w,
            accounts: accounts_w,
            roles: roles_w,
            bindings: bindings_w,
            policies: policies_w,
            leases: leases_w,
        };
        (observed, writers)
    }

    /// Waits until every store has its first list, so no reconcile mistakes a child not yet
    /// listed for a missing one. Errs only when the controller is stopping.
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.deployments.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.accounts.wait_until_ready().await?;
        self.roles.wait_until_ready().await?;
        self.bindings.wait_until_ready().await?;
        self.policies.wait_until_ready().await?;
        self.leases.wait_until_ready().await
    }

    /// The Deployment as last watched (no spec: metadata and status).
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Arc<Deployment>> {
        self.deployments.get(&ObjectRef::new(name).within(namespace))
    }

    /// The Service as last watched.
    pub fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(&ObjectRef::new(name).within(namespace))
    }

    /// The demand Lease of that name in the operator's namespace.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Arc<Lease>> {
        self.leases.get(&ObjectRef::new(name).within(namespace))
    }

    /// The metadata of the child as last watched.
    pub fn meta(&self, kind: ChildKind, namespace: &str, name: &str) -> Option<ObjectMeta> {
        match kind {
            ChildKind::Deployment => self.deployment(namespace, name).map(|o| o.metadata.clone()),
            ChildKind::Service => self.service(namespace, name).map(|o| o.metadata.clone()),
            ChildKind::ServiceAccount => meta_of(&self.accounts, namespace, name),
            ChildKind::Role => meta_of(&self.roles, namespace, name),
            ChildKind::RoleBinding => meta_of(&self.bindings, namespace, name),
            ChildKind::NetworkPolicy => meta_of(&self.policies, namespace, name),
        }
    }

    /// Whether applying `child` (hashed `hash`) would change nothing: see the module docs.
    pub fn satisfied(&self, child: &Child, hash: u64) -> bool {
        let desired = child.meta();
        let (namespace, name) =
            (desired.namespace.clone().unwrap_or_default(), desired.name.clone().unwrap_or_default());
        let kind = child.kind();
        let Some(record) = self.record_of(&child_key(kind, &namespace, &name)) else {
            return false;
        };
        let Some(observed) = self.meta(kind, &namespace, &name) else {
            return false;
        };
        let unmoved = match kind {
            ChildKind::Deployment => observed.generation == record.generation && metadata_kept(desired, &observed),
            _ => fingerprint(observed.resource_version.as_deref()) == record.resource_version,
        };
        record.hash == hash && fingerprint(observed.uid.as_deref()) == record.uid && unmoved
    }

    /// Records an apply of `kind` and what the API answered.
    pub fn record(&self, kind: ChildKind, hash: u64, answer: &ObjectMeta) {
        let key = child_key(
            kind,
            answer.namespace.as_deref().unwrap_or_default(),
            answer.name.as_deref().unwrap_or_default(),
        );
        let applied = Applied {
            hash,
            uid: fingerprint(answer.uid.as_deref()),
            resource_version: fingerprint(answer.resource_version.as_deref()),
            generation: answer.generation,
        };
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).insert(key, applied);
    }

    /// Forgets the applies of a deleted server's children.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        for kind in ChildKind::ALL {
            applied.remove(&child_key(kind, namespace, name));
        }
    }

    fn record_of(&self, key: &ChildKey) -> Option<Applied> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied()
    }
}

fn meta_of<K>(store: &Store<PartialObjectMeta<K>>, namespace: &str, name: &str) -> Option<ObjectMeta>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store.get(&ObjectRef::new(name).within(namespace)).map(|o| o.metadata.clone())
}

/// A recovering watch of one kind, `modify`'d and reflected into its store, yielding what
/// changed.
pub fn reflected<K>(
    api: Api<K>,
    config: &watcher::Config,
    resource: &'static str,
    metrics: &Metrics,
    writer: Writer<K>,
    modify: impl FnMut(&mut K) + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watches::recovering(watcher(api, config.clone()), resource, metrics.clone())
        .modify(modify)
        .reflect(writer)
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

    fn watched_deployment(observed: &mut Writers, meta: ObjectMeta, ready: i32) {
        let mut deployment = Deployment {
            metadata: meta,
            status: Some(DeploymentStatus { ready_replicas: Some(ready), ..DeploymentStatus::default() }),
            ..Deployment::default()
        };
        strip_deployment(&mut deployment);
        observed.deployments.apply_watcher_event(&watcher::Event::Apply(deployment));
    }

    fn watched_role(observed: &mut Writers, meta: ObjectMeta) {
        let mut role = PartialObjectMeta::<Role> { metadata: meta, ..Default::default() };
        strip_child(&mut role);
        observed.roles.apply_watcher_event(&watcher::Event::Apply(role));
    }

    #[test]
    fn a_role_is_satisfied_only_while_nobody_wrote_it_since_the_same_apply() {
        let (observed, mut writers) = Observed::new();
        let role = desired_role("get");
        let hash = hash_of(&role);
        assert!(!observed.satisfied(&role, hash), "nothing watched nor recorded");
        watched_role(&mut writers, meta("u1", "10", 1));
        assert!(!observed.satisfied(&role, hash), "watched but never applied by this process");
        observed.record(ChildKind::Role, hash, &meta("u1", "10", 1));
        assert!(observed.satisfied(&role, hash));
        let other = desired_role("list");
        assert!(!observed.satisfied(&other, hash_of(&other)), "a different desired object");
        watched_role(&mut writers, meta("u1", "11", 1));
        assert!(!observed.satisfied(&role, hash), "someone wrote it");
        observed.record(ChildKind::Role, hash, &meta("u1", "11", 1));
        watched_role(&mut writers, meta("u2", "11", 1));
        assert!(!observed.satisfied(&role, hash), "deleted and re-created");
        observed.forget("ns", "s");
        assert!(!observed.satisfied(&role, hash), "forgotten with its server");
    }

    #[test]
    fn a_deployment_ignores_its_status_but_not_its_spec_or_labels() {
        let (observed, mut writers) = Observed::new();
        let deployment = desired_deployment();
        let hash = hash_of(&deployment);
        observed.record(ChildKind::Deployment, hash, &meta("u1", "10", 1));
        watched_deployment(&mut writers, meta("u1", "10", 1), 0);
        assert!(observed.satisfied(&deployment, hash));
        watched_deployment(&mut writers, meta("u1", "12", 1), 1);
        assert!(observed.satisfied(&deployment, hash), "status churn");
        assert_eq!(observed.deployment("ns", "s").unwrap().status.as_ref().unwrap().ready_replicas, Some(1));
        let mut relabelled = meta("u1", "13", 1);
        relabelled.labels = None;
        watched_deployment(&mut writers, relabelled, 1);
        assert!(!observed.satisfied(&deployment, hash), "a label removed");
        watched_deployment(&mut writers, meta("u1", "14", 2), 1);
        assert!(!observed.satisfied(&deployment, hash), "a spec edit");
    }
}
