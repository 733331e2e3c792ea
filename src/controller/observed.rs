//! What the MCPServer controller sees of its children, and what it last applied to them:
//! the reason an unchanged server costs no API write.
//!
//! Reflector stores hold the children as the watches show them (Deployments with their
//! status, Services with their cluster IP, the other kinds as metadata only; `managedFields`
//! and the Deployment's spec dropped to keep 10k servers small) and the demand Leases. Every
//! apply is recorded: the hash of the object sent and the uid, resourceVersion and generation
//! the API answered. An apply is skipped when the same object was applied before and the
//! child is still as that apply left it: for a Deployment the same generation (its status moves
//! on its own), for the other kinds the same resourceVersion (only writes move it), and the
//! labels, annotations and owner references sent still present. A deleted or edited child, a
//! changed spec or profile, or a restart (nothing recorded) applies again.

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

/// What one apply of a child left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    hash: u64,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
}

/// A child: its kind, namespace and name.
type ChildKey = (ChildKind, String, String);

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
#[allow(missing_docs)]
pub struct Writers {
    pub deployments: Writer<Deployment>,
    pub services: Writer<Service>,
    pub accounts: Writer<PartialObjectMeta<ServiceAccount>>,
    pub roles: Writer<PartialObjectMeta<Role>>,
    pub bindings: Writer<PartialObjectMeta<RoleBinding>>,
    pub policies: Writer<PartialObjectMeta<NetworkPolicy>>,
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

/// Drops what the stores never read.
pub fn strip<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
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
        let Some(record) = self.record_of(&(kind, namespace.clone(), name.clone())) else {
            return false;
        };
        let Some(observed) = self.meta(kind, &namespace, &name) else {
            return false;
        };
        let unmoved = match kind {
            ChildKind::Deployment => observed.generation == record.generation,
            _ => observed.resource_version == record.resource_version,
        };
        record.hash == hash && observed.uid == record.uid && unmoved && metadata_kept(desired, &observed)
    }

    /// Records an apply of `kind` and what the API answered.
    pub fn record(&self, kind: ChildKind, hash: u64, answer: &ObjectMeta) {
        let key = (kind, answer.namespace.clone().unwrap_or_default(), answer.name.clone().unwrap_or_default());
        let applied = Applied {
            hash,
            uid: answer.uid.clone(),
            resource_version: answer.resource_version.clone(),
            generation: answer.generation,
        };
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).insert(key, applied);
    }

    /// Forgets the applies of a deleted server's children.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        for kind in ChildKind::ALL {
            applied.remove(&(kind, namespace.to_string(), name.to_string()));
        }
    }

    fn record_of(&self, key: &ChildKey) -> Option<Applied> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
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
