//! The MCPDiscoverySource controller: creates, updates and (Authoritative mode) deletes the
//! MCPServers a source lists.
//!
//! - What a source lists is computed by [`crate::policy::discovered`]; this module reads the
//!   Services, Namespaces or ConfigMap and writes the servers.
//! - A server belongs to a source when it carries the source's annotation
//!   (`mcp-hangar.io/discovery-source: <ns>/<name>`); the label of the same name selects them.
//!   A server without it is never touched: a name conflict is an entry error.
//! - New servers are created with a POST (so one created meanwhile by someone else is a
//!   conflict, not taken over); changed entries are server-side applied with the field manager
//!   [`FIELD_MANAGER`], forced. An entry is applied only when its hash (annotation) changed:
//!   a user's edit of a discovered server stays until the source's definition of that server
//!   changes; then the source's fields win again, and fields the source does not set keep the
//!   user's values.
//! - Every write goes through admission: an entry the webhook refuses is reported in
//!   `status.errors` with the webhook's message and the other entries proceed.
//! - Deletion: owner references cannot cross namespaces (type Namespace creates servers in
//!   other namespaces) and would make the garbage collector delete an Additive source's servers,
//!   so an Authoritative source carries the finalizer [`FINALIZER`] instead: deleting it deletes
//!   its servers first. An Additive source has no finalizer; its servers stay, still labelled,
//!   and a source re-created under the same name adopts them again.
//! - Watches on Services, Namespaces, ConfigMaps (metadata only) and the source's own servers
//!   trigger a sync within the debounce; `refreshInterval` is the resync. A sync that changes
//!   nothing writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta, PartialObjectMetaExt, Selector};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::reconcile::{ReconcileError, is_retryable};
use super::resources::LABEL_MANAGED_BY;
use super::state::CONDITION_READY;
use super::{Context, watches};
use crate::crd::{
    API_VERSION, CONFIG_MAP_KEY, DISCOVERY_HASH_ANNOTATION, DISCOVERY_SOURCE_ANNOTATION, DISCOVERY_SOURCE_LABEL,
    DiscoveryEntryError, DiscoveryMode, DiscoveryType, MANAGER, MCPDiscoverySource, MCPDiscoverySourceStatus,
    MCPServer,
};
use crate::policy::discovered::{
    self, Entry, EntryError, MAX_LISTED_ERRORS, MAX_LISTED_SERVERS, ServerKey, SourceError,
};

/// Field manager of the servers discovery writes (distinct from the server controller's).
pub const FIELD_MANAGER: &str = "mcp-hangar-discovery";
/// Finalizer of an Authoritative source: its servers are deleted before it goes.
pub const FINALIZER: &str = "mcp-hangar.io/discovery-cleanup";
/// Condition type: the source was read.
pub const CONDITION_SYNCED: &str = "Synced";
/// Condition type: provider template fields were ignored for some servers.
pub const CONDITION_TEMPLATE_FIELDS_IGNORED: &str = "TemplateFieldsIgnored";
/// Most server writes one sync has in flight.
const WRITE_CONCURRENCY: usize = 16;
/// How long changes are gathered before a source is synced.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Condition reasons of a source.
pub mod reason {
    /// The source was read.
    pub const SOURCE_READ: &str = "SourceRead";
    /// The ConfigMap does not exist.
    pub const CONFIG_MAP_NOT_FOUND: &str = "ConfigMapNotFound";
    /// The source cannot be used as written.
    pub const INVALID_SOURCE: &str = "InvalidSource";
    /// Every entry is in place.
    pub const ALL_ENTRIES_APPLIED: &str = "AllEntriesApplied";
    /// Some entries were skipped.
    pub const ENTRIES_FAILED: &str = "EntriesFailed";
    /// The source could not be read.
    pub const SOURCE_UNAVAILABLE: &str = "SourceUnavailable";
    /// Template fields do not apply to some servers' mode.
    pub const FIELDS_NOT_APPLICABLE: &str = "FieldsNotApplicable";
    /// Every template field applies.
    pub const ALL_FIELDS_APPLY: &str = "AllFieldsApply";
}

/// Why a source could not be read, as a condition says it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unreadable {
    reason: &'static str,
    message: String,
}

impl From<SourceError> for Unreadable {
    fn from(error: SourceError) -> Self {
        Unreadable { reason: reason::INVALID_SOURCE, message: error.to_string() }
    }
}

/// Hash of what makes a source worth a sync: its generation and whether it is being deleted.
fn spec_or_deletion(source: &MCPDiscoverySource) -> Option<u64> {
    let generation = u64::try_from(source.metadata.generation.unwrap_or(0)).unwrap_or(0);
    Some(generation.wrapping_mul(2) + u64::from(source.metadata.deletion_timestamp.is_some()))
}

fn sources_of_type(sources: &Store<MCPDiscoverySource>, kind: DiscoveryType) -> Vec<ObjectRef<MCPDiscoverySource>> {
    sources
        .state()
        .iter()
        .filter(|s| s.spec.source_type == Some(kind))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The ConfigMap a ConfigMap-type source reads: namespace and name.
fn config_map_of(source: &MCPDiscoverySource) -> Option<(String, String)> {
    let reference = source.spec.config_map_ref.as_ref()?;
    let namespace = reference.namespace.clone().filter(|n| !n.is_empty()).or_else(|| source.namespace())?;
    Some((namespace, reference.name.clone()?))
}

/// Runs the discovery controller until `stop` completes.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let (sources, writer) = reflector::store();
    let metrics = ctx.metrics.clone();
    let sources_watch = watcher(Api::<MCPDiscoverySource>::all(client.clone()), watcher::Config::default());
    let source_changes = watches::recovering(sources_watch, "mcpdiscoverysources", metrics.clone())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(spec_or_deletion, Default::default());
    // The operator's own Services (children of container servers) are never discovered.
    let user_services = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}!={MANAGER}"));
    let services = watcher(Api::<Service>::all(client.clone()), user_services);
    let services = watches::recovering(services, "services/discovery", metrics.clone()).touched_objects();
    let namespaces = watcher(Api::<Namespace>::all(client.clone()), watcher::Config::default());
    let namespaces = watches::recovering(namespaces, "namespaces", metrics.clone()).touched_objects();
    let config_maps = watcher(Api::<PartialObjectMeta<ConfigMap>>::all(client.clone()), watcher::Config::default());
    let config_maps = watches::recovering(config_maps, "configmaps", metrics.clone()).touched_objects();
    // Deleting a discovered server brings it back (Additive) or confirms a prune.
    let discovered = watcher(Api::<MCPServer>::all(client), watcher::Config::default().labels(DISCOVERY_SOURCE_LABEL));
    let deleted_servers =
        watches::recovering(discovered, "mcpservers/discovery", metrics).try_filter_map(|event| async move {
            Ok(match event {
                watcher::Event::Delete(server) => Some(server),
                _ => None,
            })
        });
    let (by_service, by_namespace, by_config_map) = (sources.clone(), sources.clone(), sources.clone());
    let config = kube::runtime::Config::default().concurrency(ctx.config.concurrency).debounce(DEBOUNCE);
    Controller::for_stream(source_changes, sources)
        .watches_stream(services, move |_: Service| sources_of_type(&by_service, DiscoveryType::Namespace))
        .watches_stream(namespaces, move |_: Namespace| sources_of_type(&by_namespace, DiscoveryType::Namespace))
        .watches_stream(config_maps, move |map: PartialObjectMeta<ConfigMap>| {
            let key = (map.namespace().unwrap_or_default(), map.name_any());
            by_config_map
                .state()
                .iter()
                .filter(|s| {
                    s.spec.source_type == Some(DiscoveryType::ConfigMap) && config_map_of(s) == Some(key.clone())
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(deleted_servers, |server: MCPServer| {
            let id = server.annotations().get(DISCOVERY_SOURCE_ANNOTATION)?;
            let (namespace, name) = id.split_once('/')?;
            Some(ObjectRef::new(name).within(namespace))
        })
        .with_config(config)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move { super::log_outcome("MCPDiscoverySource", result) })
        .await;
}

/// Retries API failures soon, the rest at the source's refresh interval.
fn error_policy(source: Arc<MCPDiscoverySource>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    if error.is_retryable() {
        Action::requeue(Duration::from_secs(5))
    } else {
        Action::requeue(discovered::refresh_interval(&source))
    }
}

/// The current time to whole seconds, the precision status timestamps are stored with.
fn now() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

fn kube_error(action: &'static str) -> impl FnOnce(kube::Error) -> ReconcileError {
    move |source| ReconcileError::Kube { action, source }
}

async fn reconcile(source: Arc<MCPDiscoverySource>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = source.namespace().ok_or(ReconcileError::Incomplete("namespace"))?;
    let sources: Api<MCPDiscoverySource> = Api::namespaced(ctx.client.clone(), &namespace);
    let authoritative = source.spec.mode == Some(DiscoveryMode::Authoritative);
    let has_finalizer = source.finalizers().iter().any(|f| f == FINALIZER);
    if source.metadata.deletion_timestamp.is_some() {
        if has_finalizer {
            if authoritative {
                let managed = list_managed(&ctx, &source).await?;
                for (key, server) in &managed {
                    delete_server(&ctx, &source, key, server).await?;
                }
            }
            set_finalizer(&sources, &source, false).await?;
        }
        return Ok(Action::await_change());
    }
    if authoritative != has_finalizer {
        set_finalizer(&sources, &source, authoritative).await?;
    }
    let read = read_source(&ctx, &source, &namespace).await?;
    let mut managed = list_managed(&ctx, &source).await?;
    let mut sync = Outcome::default();
    let synced = match read {
        Err(unreadable) => Err(unreadable),
        Ok(entries) => {
            let listed: BTreeSet<ServerKey> = entries
                .iter()
                .filter_map(|e| match e {
                    Ok(entry) => Some(entry.key.clone()),
                    Err(error) => error.key.clone(),
                })
                .collect();
            let mut wanted = Vec::new();
            for entry in entries {
                match entry {
                    Ok(entry) => {
                        // Taken out, and put back by `Outcome::record`: one copy at a time.
                        let existing = managed.remove(&entry.key);
                        wanted.push((entry, existing));
                    }
                    Err(error) => sync.errors.push(error),
                }
            }
            let outcomes: Vec<EntryOutcome> = futures::stream::iter(
                wanted.into_iter().map(|(entry, existing)| sync_entry(&ctx, &source, entry, existing)),
            )
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect()
            .await?;
            for outcome in outcomes {
                sync.record(outcome, &mut managed);
            }
            sync.errors.sort_by(|a, b| a.entry.cmp(&b.entry));
            if authoritative {
                let unlisted: Vec<ServerKey> = managed.keys().filter(|k| !listed.contains(*k)).cloned().collect();
                for key in unlisted {
                    if let Some(server) = managed.remove(&key) {
                        delete_server(&ctx, &source, &key, &server).await?;
                    }
                }
            }
            Ok(())
        }
    };
    let previous = source.status.clone().unwrap_or_default();
    let servers: BTreeSet<String> = managed.keys().map(ToString::to_string).collect();
    let status = source_status(&source, &previous, &synced, &sync, &servers, now());
    if status != previous {
        let patch = json!({"apiVersion": API_VERSION, "kind": "MCPDiscoverySource", "status": status});
        sources
            .patch_status(&source.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(kube_error("writing discovery source status"))?;
        announce_readiness(&ctx, &source, &previous, &status).await;
    }
    Ok(Action::requeue(discovered::refresh_interval(&source)))
}

/// What one sync did besides the writes it announced.
#[derive(Default)]
struct Outcome {
    /// Entries turned into servers (applied or already in place).
    discovered: usize,
    /// Entries skipped, with why.
    errors: Vec<EntryError>,
    /// Template fields ignored, by the mode of the servers they were ignored for.
    ignored: BTreeMap<String, BTreeSet<String>>,
    /// Whether a server was created, updated or deleted.
    changed: bool,
}

/// Adds or removes the finalizer, guarded by the resourceVersion the decision was made on.
async fn set_finalizer(
    api: &Api<MCPDiscoverySource>,
    source: &MCPDiscoverySource,
    present: bool,
) -> Result<(), ReconcileError> {
    let mut finalizers: Vec<String> = source.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    if present {
        finalizers.push(FINALIZER.to_string());
    }
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": source.resource_version()}});
    match api.patch(&source.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(ReconcileError::Kube { action: "updating the discovery finalizer", source }),
    }
}

/// The entries the source lists, or why it cannot be read.
async fn read_source(
    ctx: &Context,
    source: &MCPDiscoverySource,
    namespace: &str,
) -> Result<Result<Vec<Result<Entry, EntryError>>, Unreadable>, ReconcileError> {
    match source.spec.source_type {
        None => Ok(Err(Unreadable {
            reason: reason::INVALID_SOURCE,
            message: "spec.type is required: Namespace or ConfigMap".into(),
        })),
        Some(DiscoveryType::Namespace) => read_namespaces(ctx, source).await,
        Some(DiscoveryType::ConfigMap) => {
            let Some((map_namespace, name)) = config_map_of(source) else {
                return Ok(Err(Unreadable {
                    reason: reason::INVALID_SOURCE,
                    message: "spec.configMapRef.name is required for type ConfigMap".into(),
                }));
            };
            let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &map_namespace);
            let Some(map) = maps.get_opt(&name).await.map_err(kube_error("reading the discovery ConfigMap"))? else {
                return Ok(Err(Unreadable {
                    reason: reason::CONFIG_MAP_NOT_FOUND,
                    message: format!("ConfigMap {map_namespace}/{name} does not exist"),
                }));
            };
            let Some(yaml) = map.data.as_ref().and_then(|d| d.get(CONFIG_MAP_KEY)) else {
                return Ok(Err(SourceError::MissingKey.into()));
            };
            Ok(discovered::from_config_map(yaml, namespace).map_err(Unreadable::from))
        }
    }
}

/// The annotated Services of the namespaces the selector chooses (terminating ones excluded).
async fn read_namespaces(
    ctx: &Context,
    source: &MCPDiscoverySource,
) -> Result<Result<Vec<Result<Entry, EntryError>>, Unreadable>, ReconcileError> {
    let selector = match source.spec.namespace_selector.clone().map(Selector::try_from) {
        Some(Ok(selector)) if !selector.selects_all() => selector,
        Some(Err(e)) => return Ok(Err(SourceError::InvalidSelector(e.to_string()).into())),
        _ => {
            return Ok(Err(SourceError::InvalidSelector(
                "it is empty: set matchLabels or matchExpressions choosing the namespaces".into(),
            )
            .into()));
        }
    };
    let namespaces = Api::<Namespace>::all(ctx.client.clone())
        .list_metadata(&ListParams::default().labels(&selector.to_string()))
        .await
        .map_err(kube_error("listing namespaces"))?;
    let chosen: BTreeSet<String> = namespaces
        .items
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .map(ResourceExt::name_any)
        .collect();
    if chosen.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let services = Api::<Service>::all(ctx.client.clone())
        .list(&ListParams::default().labels(&format!("{LABEL_MANAGED_BY}!={MANAGER}")))
        .await
        .map_err(kube_error("listing services"))?;
    Ok(Ok(services
        .items
        .iter()
        .filter(|s| s.namespace().is_some_and(|ns| chosen.contains(&ns)))
        .filter_map(discovered::from_service)
        .collect()))
}

/// What a sync reads of a server: its metadata (who manages it, the hash of its definition, its
/// uid for a delete). A sync lists the source's servers, and 1,000 whole servers are megabytes.
type Managed = PartialObjectMeta<MCPServer>;

/// Servers listed per request: a page of 1,000 servers' metadata decoded at once was 4 MiB
/// beside its 2.4 MB body, the controller's whole peak at 10k servers.
const LIST_PAGE: u32 = 100;

/// The servers the source manages now, by namespace and name, listed page by page and stripped.
async fn list_managed(
    ctx: &Context,
    source: &MCPDiscoverySource,
) -> Result<BTreeMap<ServerKey, Managed>, ReconcileError> {
    let id = discovered::source_id(source);
    let label = format!("{DISCOVERY_SOURCE_LABEL}={}", discovered::source_label(source));
    let api = Api::<MCPServer>::all(ctx.client.clone());
    let mut params = ListParams::default().labels(&label).limit(LIST_PAGE);
    let mut managed = BTreeMap::new();
    loop {
        let page = api.list_metadata(&params).await.map_err(kube_error("listing discovered servers"))?;
        for mut server in page.items.into_iter().filter(|s| discovered::is_managed_by(s.annotations(), &id)) {
            super::observed::strip(&mut server);
            managed.insert(
                ServerKey { namespace: server.namespace().unwrap_or_default(), name: server.name_any() },
                server,
            );
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(managed),
        }
    }
}

/// What syncing one entry did.
struct EntryOutcome {
    key: ServerKey,
    /// The server as it now stands, when the source manages it.
    server: Option<Managed>,
    /// Why the entry was skipped.
    error: Option<EntryError>,
    /// Template fields ignored, with the server's mode.
    ignored: Option<(String, Vec<String>)>,
    /// Whether the server was created or updated.
    changed: bool,
}

impl Outcome {
    fn record(&mut self, outcome: EntryOutcome, managed: &mut BTreeMap<ServerKey, Managed>) {
        if let Some((mode, fields)) = outcome.ignored {
            self.ignored.entry(mode).or_default().extend(fields);
        }
        if let Some(server) = outcome.server {
            managed.insert(outcome.key, server);
        }
        match outcome.error {
            Some(error) => self.errors.push(error),
            None => self.discovered += 1,
        }
        self.changed |= outcome.changed;
    }
}

/// Creates or updates the server of one entry; refusals and conflicts become entry errors.
async fn sync_entry(
    ctx: &Context,
    source: &MCPDiscoverySource,
    entry: Entry,
    managed: Option<Managed>,
) -> Result<EntryOutcome, ReconcileError> {
    let key = entry.key.clone();
    let desired = discovered::desired(source, &entry);
    let ignored = (!desired.ignored.is_empty()).then(|| {
        let mode = desired.object["spec"]["mode"].as_str().unwrap_or("unknown").to_string();
        (mode, desired.ignored.clone())
    });
    let mut outcome = EntryOutcome { key: key.clone(), server: None, error: None, ignored, changed: false };
    let skipped = |message: String| Some(EntryError { key: Some(key.clone()), entry: key.to_string(), message });
    let api: Api<MCPServer> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let existing = match managed {
        Some(server) => Some(server),
        None => match api.get_metadata_opt(&key.name).await.map_err(kube_error("reading a discovered server"))? {
            Some(other) if !discovered::is_managed_by(other.annotations(), &discovered::source_id(source)) => {
                outcome.error = skipped(format!(
                    "an MCPServer {key} exists that this source did not create: the entry is skipped (rename one of them)"
                ));
                return Ok(outcome);
            }
            other => other,
        },
    };
    if let Some(server) = &existing {
        let unchanged = server.annotations().get(DISCOVERY_HASH_ANNOTATION) == Some(&desired.hash);
        if unchanged || server.metadata.deletion_timestamp.is_some() {
            outcome.server = existing;
            return Ok(outcome);
        }
    }
    let created = existing.is_none();
    let result = match &existing {
        None => {
            // Sent as written (unknown fields included), so admission judges the entry itself.
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
            let object: DynamicObject = match serde_json::from_value(desired.object.clone()) {
                Ok(object) => object,
                Err(error) => {
                    outcome.error = skipped(format!("the entry is not a valid MCPServer: {error}"));
                    return Ok(outcome);
                }
            };
            let servers: Api<DynamicObject> =
                Api::namespaced_with(ctx.client.clone(), &key.namespace, &ApiResource::erase::<MCPServer>(&()));
            servers.create(&params, &object).await.map(|created| created.metadata)
        }
        Some(_) => api
            .patch(&key.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired.object))
            .await
            .map(|server| server.metadata),
    };
    outcome.server = existing;
    match result {
        Ok(metadata) => {
            let mut server = metadata.into_request_partial::<MCPServer>();
            super::observed::strip(&mut server);
            let (verb, reason) = if created { ("created", "Created") } else { ("updated", "Updated") };
            tracing::info!(source = %source.name_any(), server = %key, "discovered server {verb}");
            let note = format!("MCPServer {key} {verb}");
            announce(ctx, source, Some(&server), EventType::Normal, reason, note).await;
            outcome.server = Some(server);
            outcome.changed = true;
            Ok(outcome)
        }
        Err(kube::Error::Api(status)) if created && status.code == 409 => {
            outcome.error =
                skipped(format!("an MCPServer {key} was created meanwhile by someone else: the entry is skipped"));
            Ok(outcome)
        }
        Err(kube::Error::Api(status)) if !is_retryable(&kube::Error::Api(status.clone())) => {
            outcome.error = skipped(status.message);
            Ok(outcome)
        }
        Err(source) => Err(ReconcileError::Kube { action: "writing a discovered server", source }),
    }
}

/// Deletes one of the source's servers (only that very object: uid precondition).
async fn delete_server(
    ctx: &Context,
    source: &MCPDiscoverySource,
    key: &ServerKey,
    server: &Managed,
) -> Result<(), ReconcileError> {
    let api: Api<MCPServer> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: server.uid(), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(&key.name, &params).await {
        Ok(_) => {
            tracing::info!(source = %source.name_any(), server = %key, "discovered server deleted");
            let note = format!("MCPServer {key} deleted: the source no longer lists it");
            announce(ctx, source, Some(server), EventType::Normal, "Deleted", note).await;
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 409 => Ok(()),
        Err(source) => Err(ReconcileError::Kube { action: "deleting a discovered server", source }),
    }
}

/// The source's status after a sync; `lastSyncTime` moves only when something changed.
fn source_status(
    source: &MCPDiscoverySource,
    previous: &MCPDiscoverySourceStatus,
    synced: &Result<(), Unreadable>,
    sync: &Outcome,
    servers: &BTreeSet<String>,
    now: Timestamp,
) -> MCPDiscoverySourceStatus {
    let generation = source.metadata.generation;
    let condition = |type_: &str, value: bool, why: &str, message: String| {
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
            message,
            observed_generation: generation,
            last_transition_time,
        }
    };
    let mut conditions = Vec::new();
    match synced {
        Err(unreadable) => {
            conditions.push(condition(CONDITION_READY, false, reason::SOURCE_UNAVAILABLE, unreadable.message.clone()));
            conditions.push(condition(CONDITION_SYNCED, false, unreadable.reason, unreadable.message.clone()));
        }
        Ok(()) => {
            let total = sync.discovered + sync.errors.len();
            if sync.errors.is_empty() {
                let message = format!("all {total} listed servers are in place");
                conditions.push(condition(CONDITION_READY, true, reason::ALL_ENTRIES_APPLIED, message));
            } else {
                let message = format!("{} of {total} entries were skipped: see status.errors", sync.errors.len());
                conditions.push(condition(CONDITION_READY, false, reason::ENTRIES_FAILED, message));
            }
            let message = format!("the source lists {total} servers");
            conditions.push(condition(CONDITION_SYNCED, true, reason::SOURCE_READ, message));
        }
    }
    if source.spec.provider_template.as_ref().is_some_and(|t| t.spec.is_some()) {
        if sync.ignored.is_empty() {
            let message = "every providerTemplate field applies".to_string();
            conditions.push(condition(CONDITION_TEMPLATE_FIELDS_IGNORED, false, reason::ALL_FIELDS_APPLY, message));
        } else {
            let message = sync
                .ignored
                .iter()
                .map(|(mode, fields)| {
                    format!("ignored for {mode} servers: {}", fields.iter().cloned().collect::<Vec<_>>().join(", "))
                })
                .collect::<Vec<_>>()
                .join("; ");
            conditions.push(condition(CONDITION_TEMPLATE_FIELDS_IGNORED, true, reason::FIELDS_NOT_APPLICABLE, message));
        }
    }
    let discovered =
        if synced.is_ok() { sync.discovered } else { previous.discovered.map_or(0, |d| d.max(0) as usize) };
    let mut status = MCPDiscoverySourceStatus {
        discovered: Some(i32::try_from(discovered).unwrap_or(i32::MAX)),
        servers: servers.iter().take(MAX_LISTED_SERVERS).cloned().collect(),
        errors: sync
            .errors
            .iter()
            .take(MAX_LISTED_ERRORS)
            .map(|e| DiscoveryEntryError { entry: e.entry.clone(), message: e.message.clone() })
            .collect(),
        last_sync_time: previous.last_sync_time.clone(),
        observed_generation: generation,
        conditions,
    };
    if sync.changed || status != *previous || status.last_sync_time.is_none() {
        status.last_sync_time = Some(Time(now));
    }
    status
}

/// Publishes an event on the source, about `server` when given (so events about different
/// servers are not merged into one series).
async fn announce(
    ctx: &Context,
    source: &MCPDiscoverySource,
    server: Option<&Managed>,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let related = server.map(|s| s.object_ref(&()));
    ctx.publish(&source.object_ref(&()), related, type_, reason, "Sync", note).await;
}

/// An event when the source's readiness or its reason changed.
async fn announce_readiness(
    ctx: &Context,
    source: &MCPDiscoverySource,
    previous: &MCPDiscoverySourceStatus,
    status: &MCPDiscoverySourceStatus,
) {
    let ready = |s: &MCPDiscoverySourceStatus| s.conditions.iter().find(|c| c.type_ == CONDITION_READY).cloned();
    let (Some(now), before) = (ready(status), ready(previous)) else {
        return;
    };
    if before.is_some_and(|b| b.status == now.status && b.reason == now.reason) || now.status == "True" {
        return;
    }
    announce(ctx, source, None, EventType::Warning, &now.reason, now.message).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> MCPDiscoverySource {
        let mut source = MCPDiscoverySource::new("s", Default::default());
        source.metadata.namespace = Some("ns".into());
        source.metadata.generation = Some(1);
        source
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn an_unchanged_sync_keeps_the_status_and_its_time() {
        let servers = BTreeSet::from(["ns/a".to_string()]);
        let sync = Outcome { discovered: 1, ..Outcome::default() };
        let first = source_status(&source(), &Default::default(), &Ok(()), &sync, &servers, at(0));
        assert_eq!(first.last_sync_time, Some(Time(at(0))));
        let again = source_status(&source(), &first, &Ok(()), &sync, &servers, at(300));
        assert_eq!(again, first);
        let changed = Outcome { discovered: 1, changed: true, ..Outcome::default() };
        let later = source_status(&source(), &first, &Ok(()), &changed, &servers, at(600));
        assert_eq!(later.last_sync_time, Some(Time(at(600))));
    }

    #[test]
    fn unreadable_sources_keep_the_count_and_say_why() {
        let servers = BTreeSet::from(["ns/a".to_string()]);
        let sync = Outcome { discovered: 1, ..Outcome::default() };
        let first = source_status(&source(), &Default::default(), &Ok(()), &sync, &servers, at(0));
        let gone = Unreadable { reason: reason::CONFIG_MAP_NOT_FOUND, message: "ConfigMap ns/x does not exist".into() };
        let status = source_status(&source(), &first, &Err(gone), &Outcome::default(), &servers, at(5));
        assert_eq!(status.discovered, Some(1));
        let synced = status.conditions.iter().find(|c| c.type_ == CONDITION_SYNCED).unwrap();
        assert_eq!((synced.status.as_str(), synced.reason.as_str()), ("False", reason::CONFIG_MAP_NOT_FOUND));
    }

    #[test]
    fn errors_and_servers_are_bounded() {
        let servers: BTreeSet<String> = (0..MAX_LISTED_SERVERS + 3).map(|i| format!("ns/s{i:04}")).collect();
        let errors = (0..MAX_LISTED_ERRORS + 3)
            .map(|i| EntryError { key: None, entry: format!("e{i}"), message: "bad".into() })
            .collect();
        let sync = Outcome { errors, ..Outcome::default() };
        let status = source_status(&source(), &Default::default(), &Ok(()), &sync, &servers, at(0));
        assert_eq!((status.servers.len(), status.errors.len()), (MAX_LISTED_SERVERS, MAX_LISTED_ERRORS));
        let ready = status.conditions.iter().find(|c| c.type_ == CONDITION_READY).unwrap();
        assert_eq!(ready.reason, reason::ENTRIES_FAILED);
    }

    #[test]
    fn sources_are_resynced_on_spec_changes_and_deletion_only() {
        let mut s = source();
        let before = spec_or_deletion(&s);
        s.metadata.labels = Some(Default::default());
        assert_eq!(spec_or_deletion(&s), before);
        s.metadata.deletion_timestamp = Some(Time(at(0)));
        assert_ne!(spec_or_deletion(&s), before);
    }

    #[test]
    fn config_map_references_default_to_the_source_namespace() {
        let mut s = source();
        s.spec.config_map_ref = Some(crate::crd::ConfigMapRef { name: Some("defs".into()), namespace: None });
        assert_eq!(config_map_of(&s), Some(("ns".into(), "defs".into())));
        s.spec.config_map_ref.as_mut().unwrap().namespace = Some("mcp-config".into());
        assert_eq!(config_map_of(&s), Some(("mcp-config".into(), "defs".into())));
    }
}
