//! An in-memory Kubernetes API server for tests, served over plain HTTP on 127.0.0.1, to
//! which a real `kube::Client` connects.
//!
//! It knows no schema and needs no discovery: any core (`/api/v1/...`) or group
//! (`/apis/{group}/{version}/...`) resource path works, namespaced or cluster-scoped.
//!
//! What it implements, as the apiserver does:
//! - GET (404 `NotFound` Status), LIST (`<Kind>List`, `labelSelector` with `=`, `==`, `!=`,
//!   `in`, `notin`, `key`, `!key`; `fieldSelector` with `=`, `==`, `!=` on any dotted path such
//!   as `metadata.name`), POST (409 `AlreadyExists`; `generateName`), PUT (409 `Conflict` when
//!   `metadata.resourceVersion` is stale), PATCH (`merge-patch+json`, `strategic-merge-patch+json`
//!   treated as a merge patch, `json-patch+json`, `apply-patch+yaml` as server-side apply that
//!   creates when absent and else merges, recording the `fieldManager`; `force` accepted),
//!   DELETE (with `preconditions`; an object with `metadata.finalizers` only gets a
//!   `deletionTimestamp` and goes when its last finalizer is removed), DELETE on a collection.
//! - The `status` subresource writes only `.status`; writes to the main resource keep `.status`.
//! - Server-filled metadata: `uid`, `resourceVersion` (one global counter), `creationTimestamp`,
//!   `generation` (bumped when anything outside `metadata` and `status` changes). A write that
//!   changes nothing is a no-op, as on a real apiserver (no new resourceVersion, no event); so
//!   is a server-side apply that changes nothing (its `managedFields` time is kept).
//! - LIST with `limit` and `continue`: pages in namespace/name order, each reporting the
//!   resourceVersion of the first page, `remainingItemCount` when no selector is set; a token
//!   older than the last compaction gets 410 `Expired`.
//! - Garbage collection: when an object is removed, the objects listing it in
//!   `metadata.ownerReferences` are deleted too (unless `propagationPolicy: Orphan`, which strips
//!   the reference instead); an object created with owners none of which exists is deleted
//!   right after its creation, as the collector deletes dependents of vanished owners.
//! - WATCH (`?watch=true`): newline-delimited `{"type": ..., "object": ...}` events. With
//!   `resourceVersion` unset or `"0"`, the current objects first come as `ADDED`; with a
//!   resourceVersion, every change after it is replayed (an object modified into a watch's
//!   selectors comes as `ADDED`, out of them as `DELETED`); `sendInitialEvents=true` ends the initial
//!   events with the `k8s.io/initial-events-end` bookmark; `timeoutSeconds` closes the stream.
//!   After [`FakeApi::compact`], open watches and watches from an older resourceVersion get an
//!   `ERROR` event with a 410 `Expired` Status, so `kube::runtime::watcher` re-lists; so do
//!   watches further behind than the [`HISTORY_PER_COLLECTION`] changes kept per collection.
//! - `dryRun=All` on writes: the answer is computed, nothing is stored.
//! - Errors are `Status` objects (`kind: Status`, `status: Failure`, `reason`, `code`, `message`).
//!
//! Not implemented: discovery, field ownership and conflicts of server-side apply (an apply is a
//! merge patch, except `status.conditions`, merged as a list-map by `type` whose entries belong
//! to the manager that applied them), strategic-merge list semantics, admission, authentication.
//!
//! TokenReviews (`POST /apis/authentication.k8s.io/v1/tokenreviews`) are answered from a table
//! of tokens ([`FakeApi::add_token`]) as the apiserver answers them: authenticated with the
//! ServiceAccount's username and groups and the audiences the token and the review share, or
//! unauthenticated with an `error` (unknown token, no audience in common).
//!
//! For drills: [`FakeApi::fail_next`] makes the next requests matching a method and a path
//! substring fail with a status; [`FakeApi::delay_next`] holds them back for a while;
//! [`FakeApi::expire_next_watches`] answers the next watches with
//! 410; [`FakeApi::restart`] drops every connection, compacts and refuses connections for a
//! while, as a restarting apiserver does; [`FakeApi::requests`] is the request log; [`FakeApi::get`], [`FakeApi::put`],
//! [`FakeApi::delete`] and [`FakeApi::list`] reach the store without HTTP.
//!
//! Note that `kube::Client` retries 429, 503 and 504 answers by itself: inject 500 (or 409, 403…)
//! to see a failure reach the code under test.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};

/// The annotation that marks the end of the initial events of a streaming list.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";
/// Changes kept per collection for watches that resume from a resourceVersion (the watch
/// cache); a watch further behind gets 410 `Expired` and re-lists.
pub const HISTORY_PER_COLLECTION: usize = 20_000;

/// A collection: `apiVersion` (`v1` or `group/version`) and plural resource name.
type CollectionKey = (String, String);
/// An object's place in its collection: namespace and name.
type Place = (Option<String>, String);

/// Identifies one stored object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `v1` for the core group, else `group/version` (the object's apiVersion).
    pub api: String,
    /// Plural resource name, e.g. `secrets`.
    pub resource: String,
    /// Namespace, `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
}

impl ObjectKey {
    fn collection(&self) -> CollectionKey {
        (self.api.clone(), self.resource.clone())
    }

    fn place(&self) -> Place {
        (self.namespace.clone(), self.name.clone())
    }

    fn group(&self) -> &str {
        self.api.rsplit_once('/').map(|(group, _)| group).unwrap_or("")
    }

    /// `secrets` or `mcpservers.mcp-hangar.io`, as the apiserver names a resource in messages.
    fn qualified_resource(&self) -> String {
        match self.group() {
            "" => self.resource.clone(),
            group => format!("{}.{group}", self.resource),
        }
    }
}

/// What a request path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    api: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl Target {
    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey {
            api: self.api.clone(),
            resource: self.resource.clone(),
            namespace: self.namespace.clone(),
            name: name.to_string(),
        }
    }

    /// Whether an object of this collection (namespace `None` = every namespace) has `key`.
    fn contains(&self, key: &ObjectKey) -> bool {
        key.api == self.api
            && key.resource == self.resource
            && (self.namespace.is_none() || self.namespace == key.namespace)
    }

    fn collection(&self) -> CollectionKey {
        (self.api.clone(), self.resource.clone())
    }
}

/// Parses `/api/v1/...` and `/apis/{group}/{version}/...` paths.
fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => (version.to_string(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    if rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    let namespace_subresource = rest.len() == 3 && matches!(rest[2], "status" | "finalize");
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 && !namespace_subresource {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return None;
    }
    Some(Target {
        api,
        resource: rest[0].to_string(),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: Method,
    /// URL path.
    pub path: String,
    /// Raw query string (empty when none).
    pub query: String,
    /// `Content-Type` header, when sent.
    pub content_type: Option<String>,
}

impl RequestRecord {
    /// Whether this is a watch request.
    pub fn is_watch(&self) -> bool {
        query_pairs(&self.query).get("watch").is_some_and(|v| v == "true" || v == "1")
    }
}

/// An injected failure (or delay).
#[derive(Clone, Debug)]
struct Fault {
    method: Option<Method>,
    path_contains: String,
    status: u16,
    delay: Duration,
    remaining: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn name(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, kept for watches that resume from a resourceVersion.
#[derive(Clone, Debug)]
struct Change {
    resource_version: u64,
    event: EventType,
    key: ObjectKey,
    object: Arc<Value>,
    /// The object before a modification, to tell watches with a selector that it entered or
    /// left their selection.
    previous: Option<Arc<Value>>,
}

impl Change {
    /// The event type a watch with these selectors sees, if any: as on the apiserver, an
    /// object modified into the selection is `ADDED`, one modified out of it `DELETED`.
    fn seen_as(&self, labels: &[Requirement], fields: &[Requirement]) -> Option<&'static str> {
        let now = matches_selectors(&self.object, labels, fields);
        let before = self.previous.as_ref().map(|p| matches_selectors(p, labels, fields));
        match (self.event, before, now) {
            (EventType::Modified, Some(false), true) => Some(EventType::Added.name()),
            (EventType::Modified, Some(true), false) => Some(EventType::Deleted.name()),
            (event, _, true) => Some(event.name()),
            _ => None,
        }
    }
}

/// The recent changes of one collection.
#[derive(Default)]
struct History {
    changes: VecDeque<Change>,
    /// Changes up to this resourceVersion were dropped: watches from before it get 410.
    dropped_to: u64,
}

/// An error answered as a `Status` object.
#[derive(Clone, Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    fn for_object(code: u16, reason: &'static str, key: &ObjectKey, message: String) -> Self {
        let mut details = json!({ "name": key.name, "kind": key.resource });
        if !key.group().is_empty() {
            details["group"] = json!(key.group());
        }
        ApiError { code, reason, message, details: Some(details) }
    }

    fn not_found(key: &ObjectKey) -> Self {
        Self::for_object(404, "NotFound", key, format!("{} {:?} not found", key.qualified_resource(), key.name))
    }

    fn already_exists(key: &ObjectKey) -> Self {
        Self::for_object(
            409,
            "AlreadyExists",
            key,
            format!("{} {:?} already exists", key.qualified_resource(), key.name),
        )
    }

    fn conflict(key: &ObjectKey) -> Self {
        Self::for_object(
            409,
            "Conflict",
            key,
            format!(
                "Operation cannot be fulfilled on {} {:?}: the object has been modified; please apply your changes to the latest version and try again",
                key.qualified_resource(),
                key.name
            ),
        )
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn invalid(key: &ObjectKey, message: impl Into<String>) -> Self {
        Self::for_object(422, "Invalid", key, message.into())
    }

    fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// The failure an injected fault answers with.
    fn injected(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        Self::new(code, reason, format!("injected failure ({code} {reason})"))
    }

    fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }

    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &self.status())
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// How a write treats the stored object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteMode {
    /// A write to the main resource: `.status` is kept as stored.
    Main,
    /// A write to the `status` subresource: only `.status` changes.
    Status,
    /// A write through [`FakeApi::put`]: the object is stored as given.
    Direct,
}

/// The store, behind one lock.
#[derive(Default)]
struct Store {
    /// Objects by collection, then by namespace and name (list order).
    objects: HashMap<CollectionKey, BTreeMap<Place, Arc<Value>>>,
    /// Where the object of each uid is, for the garbage collector.
    uids: HashMap<String, ObjectKey>,
    /// The objects naming each uid in their `ownerReferences`.
    dependents: HashMap<String, BTreeSet<ObjectKey>>,
    resource_version: u64,
    uid_counter: u64,
    history: HashMap<CollectionKey, History>,
    /// Watches from a resourceVersion below this one get 410.
    oldest_watchable: u64,
    /// Bumped by every compaction, so open watches notice it.
    compactions: u64,
    /// Bumped by every restart, so open watches end.
    restarts: u64,
    /// While set and in the future, new connections are closed at once (the apiserver is down).
    unavailable_until: Option<tokio::time::Instant>,
    kinds: HashMap<(String, String), String>,
    faults: Vec<Fault>,
    delays: Vec<Fault>,
    expiring_watches: Vec<Fault>,
    requests: Vec<RequestRecord>,
}

fn now_timestamp() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().expect("metadata was just made an object")
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

fn has_finalizers(object: &Value) -> bool {
    object.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty())
}

/// Everything but `metadata` and `status`: a change there bumps `generation`.
fn spec_fields(object: &Value) -> BTreeMap<&str, &Value> {
    object
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| *k != "metadata" && *k != "status").map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default()
}

/// The uids in the object's `ownerReferences`.
fn owner_uids(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)).map(str::to_string).collect())
        .unwrap_or_default()
}

fn default_kind(resource: &str) -> String {
    let known = [
        ("configmaps", "ConfigMap"),
        ("secrets", "Secret"),
        ("pods", "Pod"),
        ("services", "Service"),
        ("serviceaccounts", "ServiceAccount"),
        ("namespaces", "Namespace"),
        ("events", "Event"),
        ("endpoints", "Endpoints"),
        ("endpointslices", "EndpointSlice"),
        ("persistentvolumeclaims", "PersistentVolumeClaim"),
        ("deployments", "Deployment"),
        ("statefulsets", "StatefulSet"),
        ("replicasets", "ReplicaSet"),
        ("daemonsets", "DaemonSet"),
        ("jobs", "Job"),
        ("leases", "Lease"),
        ("roles", "Role"),
        ("rolebindings", "RoleBinding"),
        ("clusterroles", "ClusterRole"),
        ("clusterrolebindings", "ClusterRoleBinding"),
        ("networkpolicies", "NetworkPolicy"),
        ("poddisruptionbudgets", "PodDisruptionBudget"),
        ("horizontalpodautoscalers", "HorizontalPodAutoscaler"),
        ("ingresses", "Ingress"),
        ("mutatingwebhookconfigurations", "MutatingWebhookConfiguration"),
        ("validatingwebhookconfigurations", "ValidatingWebhookConfiguration"),
        ("customresourcedefinitions", "CustomResourceDefinition"),
    ];
    if let Some((_, kind)) = known.iter().find(|(plural, _)| *plural == resource) {
        return kind.to_string();
    }
    let singular = resource.strip_suffix('s').unwrap_or(resource);
    let mut chars = singular.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

impl Store {
    fn kind_of(&self, api: &str, resource: &str) -> String {
        self.kinds.get(&(api.to_string(), resource.to_string())).cloned().unwrap_or_else(|| default_kind(resource))
    }

    fn learn_kind(&mut self, key: &ObjectKey, object: &Value) {
        if let Some(kind) = object.get("kind").and_then(Value::as_str).filter(|k| !k.is_empty()) {
            self.kinds.insert((key.api.clone(), key.resource.clone()), kind.to_string());
        }
    }

    fn next_resource_version(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    /// Watches of the collection from a resourceVersion below this one get 410.
    fn oldest_watchable(&self, collection: &CollectionKey) -> u64 {
        self.history.get(collection).map_or(0, |h| h.dropped_to).max(self.oldest_watchable)
    }

    /// Keeps a change for watches; the oldest of a full collection history are dropped.
    fn record(&mut self, event: EventType, key: &ObjectKey, object: Arc<Value>, previous: Option<Arc<Value>>) {
        let resource_version = self.resource_version;
        let history = self.history.entry(key.collection()).or_default();
        history.changes.push_back(Change { resource_version, event, key: key.clone(), object, previous });
        while history.changes.len() > HISTORY_PER_COLLECTION {
            if let Some(dropped) = history.changes.pop_front() {
                history.dropped_to = dropped.resource_version;
            }
        }
    }

    /// The object stored at `key`.
    fn object(&self, key: &ObjectKey) -> Option<&Arc<Value>> {
        self.objects.get(&key.collection())?.get(&key.place())
    }

    /// Stores the object at `key`, keeping the uid and owner indexes.
    fn insert(&mut self, key: &ObjectKey, object: Value) -> Arc<Value> {
        self.unindex(key);
        let object = Arc::new(object);
        if let Some(uid) = meta_str(&object, "uid") {
            self.uids.insert(uid.to_string(), key.clone());
        }
        for owner in owner_uids(&object) {
            self.dependents.entry(owner).or_default().insert(key.clone());
        }
        self.objects.entry(key.collection()).or_default().insert(key.place(), object.clone());
        object
    }

    /// Removes the object at `key` from the store and its indexes.
    fn take(&mut self, key: &ObjectKey) -> Option<Arc<Value>> {
        self.unindex(key);
        self.objects.get_mut(&key.collection())?.remove(&key.place())
    }

    fn unindex(&mut self, key: &ObjectKey) {
        let Some(old) = self.object(key).cloned() else {
            return;
        };
        if let Some(uid) = meta_str(&old, "uid") {
            self.uids.remove(uid);
        }
        for owner in owner_uids(&old) {
            if let Some(set) = self.dependents.get_mut(&owner) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(&owner);
                }
            }
        }
    }

    /// The objects of the target's collection (all namespaces when it names none), in order.
    fn collection<'a>(&'a self, target: &'a Target) -> impl Iterator<Item = (&'a Place, &'a Arc<Value>)> + 'a {
        self.objects
            .get(&target.collection())
            .into_iter()
            .flat_map(|objects| objects.iter())
            .filter(move |((namespace, _), _)| target.namespace.is_none() || target.namespace == *namespace)
    }

    /// Fills what the apiserver fills on create; the object is not stored.
    fn prepare_create(
        &mut self,
        target: &Target,
        mut object: Value,
        dry_run: bool,
    ) -> Result<(ObjectKey, Value), ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        let name = match (meta_str(&object, "name"), meta_str(&object, "generateName")) {
            (Some(name), _) if !name.is_empty() => name.to_string(),
            (_, Some(prefix)) if !prefix.is_empty() => {
                self.uid_counter += 1;
                format!("{prefix}{:05x}", self.uid_counter)
            }
            _ => {
                let key = target.key("");
                return Err(ApiError::invalid(
                    &key,
                    format!(
                        "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                        key.qualified_resource()
                    ),
                ));
            }
        };
        if let Some(path_name) = &target.name
            && *path_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({path_name})"
            )));
        }
        if let (Some(body_ns), Some(path_ns)) = (meta_str(&object, "namespace"), &target.namespace)
            && !body_ns.is_empty()
            && body_ns != path_ns
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({path_ns})"
            )));
        }
        let key = target.key(&name);
        if self.object(&key).is_some() {
            return Err(ApiError::already_exists(&key));
        }
        let kind = self.kind_of(&key.api, &key.resource);
        let map = object.as_object_mut().expect("checked above");
        map.entry("apiVersion").or_insert_with(|| json!(key.api));
        map.entry("kind").or_insert_with(|| json!(kind));
        self.uid_counter += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uid_counter);
        let resource_version = if dry_run { self.resource_version } else { self.next_resource_version() };
        let metadata = metadata_mut(&mut object);
        metadata.insert("name".into(), json!(name));
        match &key.namespace {
            Some(ns) => metadata.insert("namespace".into(), json!(ns)),
            None => metadata.remove("namespace"),
        };
        metadata.insert("uid".into(), json!(uid));
        metadata.insert("resourceVersion".into(), json!(resource_version.to_string()));
        metadata.insert("creationTimestamp".into(), json!(now_timestamp()));
        metadata.insert("generation".into(), json!(1));
        metadata.remove("deletionTimestamp");
        metadata.remove("deletionGracePeriodSeconds");
        Ok((key, object))
    }

    fn create(&mut self, target: &Target, object: Value, dry_run: bool) -> Result<Value, ApiError> {
        let (key, object) = self.prepare_create(target, object, dry_run)?;
        if !dry_run {
            self.learn_kind(&key, &object);
            let stored = self.insert(&key, object.clone());
            self.record(EventType::Added, &key, stored, None);
            if self.owners_gone(&object) {
                self.remove(&key, false);
            }
        }
        Ok(object)
    }

    /// True when the object names owners and none of them exists: the garbage collector
    /// deletes such a dependent (one created after its owner was deleted, for instance).
    fn owners_gone(&self, object: &Value) -> bool {
        let Some(owners) =
            object.pointer("/metadata/ownerReferences").and_then(Value::as_array).filter(|owners| !owners.is_empty())
        else {
            return false;
        };
        owners
            .iter()
            .all(|owner| owner.get("uid").and_then(Value::as_str).is_none_or(|uid| !self.uids.contains_key(uid)))
    }

    /// Stores `incoming` over the object at `key` as `mode` says.
    fn update(&mut self, key: &ObjectKey, incoming: Value, mode: WriteMode, dry_run: bool) -> Result<Value, ApiError> {
        let Some(old) = self.object(key).cloned() else {
            return Err(ApiError::not_found(key));
        };
        let old = Arc::unwrap_or_clone(old);
        if !incoming.is_object() {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        if mode != WriteMode::Direct {
            if let Some(sent) = meta_str(&incoming, "resourceVersion").filter(|rv| !rv.is_empty())
                && Some(sent) != meta_str(&old, "resourceVersion")
            {
                return Err(ApiError::conflict(key));
            }
            if let Some(name) = meta_str(&incoming, "name").filter(|n| !n.is_empty())
                && name != key.name
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({name}) does not match the name on the URL ({})",
                    key.name
                )));
            }
        }
        let mut updated = match mode {
            WriteMode::Status => {
                let mut updated = old.clone();
                match incoming.get("status") {
                    Some(status) => updated["status"] = status.clone(),
                    None => {
                        updated.as_object_mut().map(|m| m.remove("status"));
                    }
                }
                // An apply records who owns what; a write that changes neither is a no-op.
                let owners = |o: &Value| -> Vec<(Value, Value)> {
                    let entries = o.pointer("/metadata/managedFields").and_then(Value::as_array);
                    entries.into_iter().flatten().map(|m| (m["manager"].clone(), m["fieldsV1"].clone())).collect()
                };
                if let Some(managed) = incoming.pointer("/metadata/managedFields")
                    && (updated != old || owners(&incoming) != owners(&old))
                {
                    metadata_mut(&mut updated).insert("managedFields".into(), managed.clone());
                }
                updated
            }
            WriteMode::Main => {
                let mut updated = incoming;
                match old.get("status") {
                    Some(status) => updated["status"] = status.clone(),
                    None => {
                        updated.as_object_mut().map(|m| m.remove("status"));
                    }
                }
                updated
            }
            WriteMode::Direct => incoming,
        };
        let kind = self.kind_of(&key.api, &key.resource);
        if let Some(map) = updated.as_object_mut() {
            map.entry("apiVersion").or_insert_with(|| json!(key.api));
            map.entry("kind").or_insert_with(|| json!(kind));
        }
        let old_meta = old.get("metadata").cloned().unwrap_or_default();
        let metadata = metadata_mut(&mut updated);
        metadata.insert("name".into(), json!(key.name));
        match &key.namespace {
            Some(ns) => metadata.insert("namespace".into(), json!(ns)),
            None => metadata.remove("namespace"),
        };
        for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
            match old_meta.get(field) {
                Some(value) => metadata.insert(field.into(), value.clone()),
                None => metadata.remove(field),
            };
        }
        metadata.insert("resourceVersion".into(), old_meta.get("resourceVersion").cloned().unwrap_or(json!("")));
        if spec_fields(&updated) != spec_fields(&old) {
            let generation = old_meta.get("generation").and_then(Value::as_i64).unwrap_or(0) + 1;
            metadata_mut(&mut updated).insert("generation".into(), json!(generation));
        }
        let finished = updated.pointer("/metadata/deletionTimestamp").is_some() && !has_finalizers(&updated);
        if updated == old && !finished {
            return Ok(old);
        }
        if dry_run {
            return Ok(updated);
        }
        let resource_version = self.next_resource_version();
        metadata_mut(&mut updated).insert("resourceVersion".into(), json!(resource_version.to_string()));
        self.learn_kind(key, &updated);
        if finished {
            self.take(key);
            self.record(EventType::Deleted, key, Arc::new(updated.clone()), None);
            self.collect_dependents(&updated, false);
        } else {
            let previous = self.object(key).cloned();
            let stored = self.insert(key, updated.clone());
            self.record(EventType::Modified, key, stored, previous);
        }
        Ok(updated)
    }

    /// Deletes as the apiserver does: marks an object with finalizers, removes the others.
    fn delete(&mut self, key: &ObjectKey, options: &Value, dry_run: bool) -> Result<Value, ApiError> {
        let Some(object) = self.object(key).cloned() else {
            return Err(ApiError::not_found(key));
        };
        let mut object = Arc::unwrap_or_clone(object);
        if let Some(preconditions) = options.get("preconditions") {
            let stale_rv = preconditions
                .get("resourceVersion")
                .and_then(Value::as_str)
                .is_some_and(|rv| Some(rv) != meta_str(&object, "resourceVersion"));
            let other_uid = preconditions
                .get("uid")
                .and_then(Value::as_str)
                .is_some_and(|uid| Some(uid) != meta_str(&object, "uid"));
            if stale_rv || other_uid {
                return Err(ApiError::conflict(key));
            }
        }
        if dry_run {
            return Ok(object);
        }
        if has_finalizers(&object) {
            if object.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(object);
            }
            let resource_version = self.next_resource_version();
            let metadata = metadata_mut(&mut object);
            metadata.insert("deletionTimestamp".into(), json!(now_timestamp()));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
            metadata.insert("resourceVersion".into(), json!(resource_version.to_string()));
            let previous = self.object(key).cloned();
            let stored = self.insert(key, object.clone());
            self.record(EventType::Modified, key, stored, previous);
            return Ok(object);
        }
        let orphan = options.get("propagationPolicy").and_then(Value::as_str) == Some("Orphan");
        Ok(self.remove(key, orphan).unwrap_or(object))
    }

    /// Removes the object now and collects its dependents.
    fn remove(&mut self, key: &ObjectKey, orphan: bool) -> Option<Value> {
        let mut object = Arc::unwrap_or_clone(self.take(key)?);
        let resource_version = self.next_resource_version();
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(resource_version.to_string()));
        self.record(EventType::Deleted, key, Arc::new(object.clone()), None);
        self.collect_dependents(&object, orphan);
        Some(object)
    }

    /// The garbage collector: deletes (or orphans) every object owned by `owner`.
    fn collect_dependents(&mut self, owner: &Value, orphan: bool) {
        let Some(uid) = meta_str(owner, "uid").map(str::to_string) else {
            return;
        };
        let dependents: Vec<ObjectKey> = self.dependents.get(&uid).into_iter().flatten().cloned().collect();
        for key in dependents {
            if orphan {
                let Some(object) = self.object(&key).cloned() else {
                    continue;
                };
                let mut object = Arc::unwrap_or_clone(object);
                if let Some(refs) = object.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                }
                let _ = self.update(&key, object, WriteMode::Direct, false);
            } else {
                let _ = self.delete(&key, &Value::Null, false);
            }
        }
    }

    /// One page of a list, as the apiserver answers `limit` and `continue`: at most `limit`
    /// items after the token's position, every page reporting the resourceVersion of the
    /// first; a token older than the compaction gets 410 `Expired`.
    fn list_page(
        &self,
        target: &Target,
        labels: &[Requirement],
        fields: &[Requirement],
        limit: Option<usize>,
        token: Option<&String>,
    ) -> Result<Value, ApiError> {
        let (resource_version, after) = match token.filter(|t| !t.is_empty()) {
            None => (self.resource_version, None),
            Some(token) => {
                let (rv, place) = decode_continue(token)
                    .ok_or_else(|| ApiError::bad_request(format!("continue key is not valid: {token:?}")))?;
                if rv < self.oldest_watchable {
                    return Err(ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ));
                }
                (rv, Some(place))
            }
        };
        let mut rest = self
            .collection(target)
            .filter(|(place, _)| after.as_ref().is_none_or(|after| *place > after))
            .filter(|(_, object)| matches_selectors(object, labels, fields));
        let mut items = Vec::new();
        let mut last = None;
        for (place, object) in rest.by_ref().take(limit.unwrap_or(usize::MAX)) {
            items.push(Value::clone(object));
            last = Some(place.clone());
        }
        let remaining = rest.count();
        let mut body = list_body(self, target, items);
        body["metadata"]["resourceVersion"] = json!(resource_version.to_string());
        if remaining > 0
            && let Some(last) = last
        {
            body["metadata"]["continue"] = json!(encode_continue(resource_version, &last));
            if labels.is_empty() && fields.is_empty() {
                body["metadata"]["remainingItemCount"] = json!(remaining);
            }
        }
        Ok(body)
    }

    fn list(&self, target: &Target, labels: &[Requirement], fields: &[Requirement]) -> Vec<Value> {
        self.collection(target)
            .filter(|(_, object)| matches_selectors(object, labels, fields))
            .map(|(_, object)| Value::clone(object))
            .collect()
    }

    /// Takes the fault matching this request, if one is armed.
    fn take_fault(faults: &mut Vec<Fault>, method: &Method, path_and_query: &str) -> Option<Fault> {
        let index = faults.iter().position(|f| {
            f.remaining > 0
                && f.method.as_ref().is_none_or(|m| m == method)
                && path_and_query.contains(&f.path_contains)
        })?;
        let fault = &mut faults[index];
        fault.remaining -= 1;
        let taken = fault.clone();
        if fault.remaining == 0 {
            faults.remove(index);
        }
        Some(taken)
    }
}

/// One term of a label or field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Splits at commas outside parentheses.
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms.into_iter().map(str::trim).filter(|t| !t.is_empty()).collect()
}

fn parse_set(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

fn parse_selector(selector: &str) -> Result<Vec<Requirement>, String> {
    let mut requirements = Vec::new();
    for term in split_terms(selector) {
        let requirement = if let Some(key) = term.strip_prefix('!') {
            Requirement::NotExists(key.trim().to_string())
        } else if let Some((key, set)) = term.split_once(" notin ") {
            Requirement::NotIn(key.trim().to_string(), parse_set(set).ok_or(format!("invalid set in {term:?}"))?)
        } else if let Some((key, set)) = term.split_once(" in ") {
            Requirement::In(key.trim().to_string(), parse_set(set).ok_or(format!("invalid set in {term:?}"))?)
        } else if let Some((key, value)) = term.split_once("!=") {
            Requirement::NotEquals(key.trim().to_string(), value.trim().to_string())
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            Requirement::Equals(key.trim().to_string(), value.trim().to_string())
        } else if term.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
            Requirement::Exists(term.to_string())
        } else {
            return Err(format!("unable to parse requirement {term:?}"));
        };
        requirements.push(requirement);
    }
    Ok(requirements)
}

fn requirement_matches(requirement: &Requirement, lookup: &dyn Fn(&str) -> Option<String>) -> bool {
    match requirement {
        Requirement::Equals(key, value) => lookup(key).as_deref() == Some(value),
        Requirement::NotEquals(key, value) => lookup(key).as_deref() != Some(value),
        Requirement::In(key, values) => lookup(key).is_some_and(|v| values.contains(&v)),
        Requirement::NotIn(key, values) => lookup(key).is_none_or(|v| !values.contains(&v)),
        Requirement::Exists(key) => lookup(key).is_some(),
        Requirement::NotExists(key) => lookup(key).is_none(),
    }
}

fn matches_selectors(object: &Value, labels: &[Requirement], fields: &[Requirement]) -> bool {
    let label = |key: &str| object.pointer("/metadata/labels")?.get(key)?.as_str().map(str::to_string);
    let field = |path: &str| {
        let mut value = object;
        for part in path.split('.') {
            value = value.get(part)?;
        }
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    };
    labels.iter().all(|r| requirement_matches(r, &label)) && fields.iter().all(|r| requirement_matches(r, &field))
}

fn query_pairs(query: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

struct Inner {
    store: Mutex<Store>,
    /// Holds the latest resourceVersion; watches wait on it.
    changed: watch::Sender<u64>,
    /// Set on drop of the [`FakeApi`]; ends watches and the server.
    shutdown: watch::Sender<bool>,
}

impl Inner {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes the watches when the store changed.
    fn notify(&self) {
        let rv = self.store().resource_version;
        self.changed.send_if_modified(|current| {
            let changed = *current != rv;
            *current = rv;
            changed
        });
    }
}

/// Accepts connections until shutdown. While the apiserver is down (see [`FakeApi::restart`])
/// new connections are closed at once, and a restart drops every open connection.
async fn serve(listener: tokio::net::TcpListener, router: Router, inner: Arc<Inner>) {
    let mut stop = inner.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (down, restarts) = {
            let store = inner.store();
            (store.unavailable_until.is_some_and(|until| tokio::time::Instant::now() < until), store.restarts)
        };
        if down {
            drop(stream);
            continue;
        }
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut changes = inner.changed.subscribe();
        let mut stop = inner.shutdown.subscribe();
        let conn_inner = inner.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let restarted = async {
                while conn_inner.store().restarts == restarts {
                    if changes.changed().await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = connection => {}
                () = restarted => {}
                _ = stop.wait_for(|stop| *stop) => {}
            }
        });
    }
}

/// The fake API server; stops when dropped.
pub struct FakeApi {
    inner: Arc<Inner>,
    addr: SocketAddr,
    tokens: Arc<Mutex<Tokens>>,
}

/// The tokens the TokenReview API knows: token → (username, audiences).
#[derive(Default)]
struct Tokens {
    known: HashMap<String, (String, Vec<String>)>,
    reviews: usize,
    failing: bool,
}

/// The audience of tokens issued for the apiserver itself (a review naming no audience).
const API_AUDIENCE: &str = "https://kubernetes.default.svc";

async fn token_review(State(tokens): State<Arc<Mutex<Tokens>>>, body: Bytes) -> Response {
    let mut tokens = tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tokens.reviews += 1;
    if tokens.failing {
        return ApiError::injected(500).into_response();
    }
    let review = match parse_body(&body) {
        Ok(review) => review,
        Err(error) => return error.into_response(),
    };
    let Some(token) = review["spec"]["token"].as_str().filter(|t| !t.is_empty()) else {
        let message = "TokenReview.authentication.k8s.io \"\" is invalid: spec.token: Required value";
        return ApiError::new(422, "Invalid", message).into_response();
    };
    let wanted: Vec<String> = match review["spec"]["audiences"].as_array().filter(|a| !a.is_empty()) {
        Some(audiences) => audiences.iter().filter_map(|a| a.as_str().map(str::to_string)).collect(),
        None => vec![API_AUDIENCE.to_string()],
    };
    let status = match tokens.known.get(token) {
        None => {
            json!({"user": {}, "error": "[invalid bearer token, square/go-jose: error in cryptographic primitive]"})
        }
        Some((username, audiences)) => {
            let shared: Vec<&String> = wanted.iter().filter(|w| audiences.contains(w)).collect();
            if shared.is_empty() {
                let error = format!(
                    "[invalid bearer token, token audiences {audiences:?} is invalid for the target audiences {wanted:?}]"
                );
                json!({"user": {}, "error": error})
            } else {
                let namespace = username.split(':').nth(2).unwrap_or_default();
                let groups = [
                    "system:serviceaccounts".to_string(),
                    format!("system:serviceaccounts:{namespace}"),
                    "system:authenticated".into(),
                ];
                json!({"authenticated": true, "user": {"username": username, "uid": "00000000-0000-0000-0000-000000000001", "groups": groups}, "audiences": shared})
            }
        }
    };
    let answer = json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {"creationTimestamp": null}, "spec": review["spec"], "status": status});
    json_response(StatusCode::CREATED, &answer)
}

impl FakeApi {
    /// Starts a server on 127.0.0.1 with a free port.
    pub async fn start() -> FakeApi {
        let (changed, _) = watch::channel(0);
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner { store: Mutex::new(Store::default()), changed, shutdown });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let tokens = Arc::new(Mutex::new(Tokens::default()));
        let reviews = Router::new()
            .route("/apis/authentication.k8s.io/v1/tokenreviews", axum::routing::post(token_review))
            .with_state(tokens.clone());
        let router = Router::new().fallback(handle).with_state(inner.clone()).merge(reviews);
        tokio::spawn(serve(listener, router, inner.clone()));
        FakeApi { inner, addr, tokens }
    }

    /// Makes the TokenReview API accept `token` as ServiceAccount `namespace/name`'s, issued
    /// for `audiences` (as `kubectl create token name -n namespace --audience …`).
    pub fn add_token(&self, token: &str, namespace: &str, name: &str, audiences: &[&str]) {
        let username = format!("system:serviceaccount:{namespace}:{name}");
        let audiences = audiences.iter().map(|a| a.to_string()).collect();
        self.tokens.lock().unwrap().known.insert(token.to_string(), (username, audiences));
    }

    /// How many TokenReviews were asked for.
    pub fn token_reviews(&self) -> usize {
        self.tokens.lock().unwrap().reviews
    }

    /// While `failing`, TokenReviews answer 500 (the authenticator is down).
    pub fn fail_token_reviews(&self, failing: bool) {
        self.tokens.lock().unwrap().failing = failing;
    }

    /// The server's URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A real `kube::Client` talking to this server, with `default` as its default namespace.
    pub fn client(&self) -> kube::Client {
        let uri = self.url().parse().expect("valid URL");
        kube::Client::try_from(kube::Config::new(uri)).expect("kube client")
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.store().resource_version
    }

    /// The object at `path` (e.g. `/api/v1/namespaces/ns/secrets/name`), if stored.
    pub fn get(&self, path: &str) -> Option<Value> {
        let target = parse_path(path)?;
        let key = target.key(target.name.as_deref()?);
        self.inner.store().object(&key).map(|o| Value::clone(o))
    }

    /// The objects of the collection at `path` (namespaced paths list one namespace).
    pub fn list(&self, path: &str) -> Vec<Value> {
        let Some(target) = parse_path(path) else {
            return Vec::new();
        };
        self.inner.store().list(&target, &[], &[])
    }

    /// How many objects of the collection at `path` satisfy `condition`, without copying them.
    pub fn count(&self, path: &str, condition: impl Fn(&Value) -> bool) -> usize {
        let Some(target) = parse_path(path) else {
            return 0;
        };
        let store = self.inner.store();
        store.collection(&target).filter(|(_, object)| condition(object)).count()
    }

    /// Stores `object` at `path` as given (status included, no resourceVersion check), creating
    /// it or replacing it; fills the server metadata and emits the watch event. Panics on a path
    /// that names no object.
    pub fn put(&self, path: &str, object: Value) -> Value {
        let target = parse_path(path).expect("an object path");
        let name = target.name.clone().expect("an object path");
        let key = target.key(&name);
        let stored = {
            let mut store = self.inner.store();
            let collection = Target { name: None, subresource: None, ..target };
            let mut object = object;
            metadata_mut(&mut object).insert("name".into(), json!(name));
            if store.object(&key).is_some() {
                store.update(&key, object, WriteMode::Direct, false)
            } else {
                store.create(&collection, object, false)
            }
        };
        self.inner.notify();
        stored.expect("store accepts the object")
    }

    /// Deletes the object at `path` as a DELETE request would (finalizers honoured, dependents
    /// collected); returns what the apiserver would answer, `None` when it was absent.
    pub fn delete(&self, path: &str) -> Option<Value> {
        let target = parse_path(path)?;
        let key = target.key(target.name.as_deref()?);
        let deleted = self.inner.store().delete(&key, &Value::Null, false).ok();
        self.inner.notify();
        deleted
    }

    /// Tells the server the kind of a resource before any object of it is stored (used for the
    /// `kind` of empty lists; `apps/v1`-style `api`, `v1` for the core group).
    pub fn register_kind(&self, api: &str, resource: &str, kind: &str) {
        self.inner.store().kinds.insert((api.to_string(), resource.to_string()), kind.to_string());
    }

    /// Registers every kind the operator reads or writes (its own kinds, the children of a
    /// server, what discovery watches, Leases and Events).
    pub fn register_operator_kinds(&self) {
        for (api, resource, kind) in [
            ("mcp-hangar.io/v1alpha1", "mcpservers", "MCPServer"),
            ("mcp-hangar.io/v1alpha1", "mcpservergroups", "MCPServerGroup"),
            ("mcp-hangar.io/v1alpha1", "mcpdiscoverysources", "MCPDiscoverySource"),
            ("apps/v1", "deployments", "Deployment"),
            ("v1", "services", "Service"),
            ("v1", "serviceaccounts", "ServiceAccount"),
            ("v1", "namespaces", "Namespace"),
            ("v1", "configmaps", "ConfigMap"),
            ("rbac.authorization.k8s.io/v1", "roles", "Role"),
            ("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
            ("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy"),
            ("coordination.k8s.io/v1", "leases", "Lease"),
            ("events.k8s.io/v1", "events", "Event"),
        ] {
            self.register_kind(api, resource, kind);
        }
    }

    /// The next `times` requests whose method is `method` (any when `None`) and whose
    /// `path?query` contains `path_contains` fail with `status` (a `Status` body).
    pub fn fail_next(&self, times: usize, method: Option<Method>, path_contains: &str, status: u16) {
        self.inner.store().faults.push(Fault {
            method,
            path_contains: path_contains.to_string(),
            status,
            delay: Duration::ZERO,
            remaining: times,
        });
    }

    /// The next `times` requests whose method is `method` (any when `None`) and whose
    /// `path?query` contains `path_contains` wait `delay` before being handled, as on a slow
    /// apiserver; requests sent meanwhile by others overtake them.
    pub fn delay_next(&self, times: usize, method: Option<Method>, path_contains: &str, delay: Duration) {
        self.inner.store().delays.push(Fault {
            method,
            path_contains: path_contains.to_string(),
            status: 0,
            delay,
            remaining: times,
        });
    }

    /// The next `times` watch requests whose `path?query` contains `path_contains` are answered
    /// with a 410 `ERROR` event (resourceVersion too old), then closed.
    pub fn expire_next_watches(&self, times: usize, path_contains: &str) {
        self.inner.store().expiring_watches.push(Fault {
            method: Some(Method::GET),
            path_contains: path_contains.to_string(),
            status: 410,
            delay: Duration::ZERO,
            remaining: times,
        });
    }

    /// Forgets the change history, as etcd compaction does: every open watch gets a 410
    /// `ERROR` event and closes, and watching from an older resourceVersion answers 410.
    pub fn compact(&self) {
        {
            let mut store = self.inner.store();
            store.history.clear();
            store.oldest_watchable = store.resource_version;
            store.compactions += 1;
        }
        self.inner.changed.send_modify(|_| {});
    }

    /// Restarts the apiserver over a compacted etcd: every open connection drops (watches end
    /// without an event), the change history is forgotten, and for `outage` new connections are
    /// closed at once (a client error, which `kube::Client` does not retry); afterwards watches
    /// from an older resourceVersion get 410 `Expired`, as from a real apiserver whose watch
    /// cache starts after the compaction.
    pub fn restart(&self, outage: Duration) {
        {
            let mut store = self.inner.store();
            store.history.clear();
            store.oldest_watchable = store.resource_version;
            store.restarts += 1;
            store.unavailable_until = Some(tokio::time::Instant::now() + outage);
        }
        self.inner.changed.send_modify(|_| {});
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.store().requests.clone()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.inner.store().requests.clear();
    }

    /// Waits until the object at `path` satisfies `condition` (`None` = absent), for at most
    /// `timeout`; returns the object's last state and whether the condition was met.
    pub async fn wait_for(
        &self,
        path: &str,
        timeout: Duration,
        condition: impl Fn(Option<&Value>) -> bool,
    ) -> (Option<Value>, bool) {
        let mut changes = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let current = self.get(path);
            if condition(current.as_ref()) {
                return (current, true);
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return (current, false) },
                () = tokio::time::sleep_until(deadline) => return (self.get(path), condition(self.get(path).as_ref())),
            }
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = self.inner.shutdown.send(true);
    }
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// Parses an apply body: JSON, or YAML as kubectl may send.
fn parse_apply_body(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return Ok(value);
    }
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the apply body is not UTF-8"))?;
    serde_saphyr::from_str(text).map_err(|e| ApiError::bad_request(format!("the apply body is not valid YAML: {e}")))
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let path_and_query = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
    let params = query_pairs(&query);
    let record =
        RequestRecord { method: method.clone(), path: path.clone(), query, content_type: content_type(&headers) };
    let is_watch = record.is_watch();
    let (injected, delayed) = {
        let mut store = inner.store();
        store.requests.push(record);
        let injected = Store::take_fault(&mut store.faults, &method, &path_and_query);
        (injected, Store::take_fault(&mut store.delays, &method, &path_and_query))
    };
    if let Some(delayed) = delayed {
        tokio::time::sleep(delayed.delay).await;
    }
    if let Some(fault) = injected {
        return ApiError::injected(fault.status).into_response();
    }
    let Some(target) = parse_path(&path) else {
        return ApiError::new(404, "NotFound", "the server could not find the requested resource").into_response();
    };
    if target.subresource.as_deref().is_some_and(|s| s != "status") {
        return ApiError::new(404, "NotFound", "the server could not find the requested resource").into_response();
    }
    if is_watch && method == Method::GET {
        return start_watch(inner, target, &params, &path_and_query);
    }
    let dry_run = params.get("dryRun").is_some_and(|v| v == "All");
    let result = {
        let mut store = inner.store();
        answer(&mut store, &method, &target, &params, &headers, &body, dry_run)
    };
    inner.notify();
    match result {
        Ok((code, value)) => json_response(code, &value),
        Err(error) => error.into_response(),
    }
}

fn answer(
    store: &mut Store,
    method: &Method,
    target: &Target,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
    dry_run: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let labels = parse_selector(params.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("labelSelector: {e}")))?;
    let fields = parse_selector(params.get("fieldSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("fieldSelector: {e}")))?;
    let mode = if target.subresource.is_some() { WriteMode::Status } else { WriteMode::Main };
    match (method, &target.name) {
        (&Method::GET, Some(name)) => store
            .object(&target.key(name))
            .map(|o| (StatusCode::OK, Value::clone(o)))
            .ok_or_else(|| ApiError::not_found(&target.key(name))),
        (&Method::GET, None) => {
            let limit = match params.get("limit").filter(|l| !l.is_empty()) {
                Some(limit) => {
                    Some(limit.parse::<usize>().map_err(|_| ApiError::bad_request("limit must be a number"))?)
                }
                None => None,
            };
            let page = store.list_page(target, &labels, &fields, limit.filter(|l| *l > 0), params.get("continue"))?;
            Ok((StatusCode::OK, page))
        }
        (&Method::POST, None) => {
            let object = parse_body(body)?;
            let created = store.create(target, object, dry_run)?;
            Ok((StatusCode::CREATED, created))
        }
        (&Method::PUT, Some(name)) => {
            let object = parse_body(body)?;
            let key = target.key(name);
            store.update(&key, object, mode, dry_run).map(|o| (StatusCode::OK, o))
        }
        (&Method::PATCH, Some(name)) => {
            let key = target.key(name);
            patch(store, target, &key, params, headers, body, mode, dry_run)
        }
        (&Method::DELETE, Some(name)) => {
            let options = parse_body(body)?;
            let policy = params.get("propagationPolicy").map(|p| json!(p));
            let options = match (options, policy) {
                (Value::Null, Some(policy)) => json!({ "propagationPolicy": policy }),
                (options, _) => options,
            };
            store.delete(&target.key(name), &options, dry_run).map(|o| (StatusCode::OK, o))
        }
        (&Method::DELETE, None) => {
            let options = parse_body(body)?;
            let items = store.list(target, &labels, &fields);
            let mut deleted = Vec::new();
            for item in items {
                let name = meta_str(&item, "name").unwrap_or_default().to_string();
                let key =
                    ObjectKey { namespace: meta_str(&item, "namespace").map(str::to_string), ..target.key(&name) };
                deleted.push(store.delete(&key, &options, dry_run)?);
            }
            Ok((StatusCode::OK, list_body(store, target, deleted)))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
        )),
    }
}

/// An opaque continue token: the list's resourceVersion and the last place returned.
fn encode_continue(resource_version: u64, (namespace, name): &Place) -> String {
    use base64::Engine as _;
    let raw = format!("{resource_version}\n{}\n{name}", namespace.as_deref().unwrap_or(""));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Option<(u64, Place)> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let mut parts = raw.splitn(3, '\n');
    let rv = parts.next()?.parse().ok()?;
    let namespace = Some(parts.next()?.to_string()).filter(|n| !n.is_empty());
    Some((rv, (namespace, parts.next()?.to_string())))
}

fn list_body(store: &Store, target: &Target, items: Vec<Value>) -> Value {
    json!({
        "kind": format!("{}List", store.kind_of(&target.api, &target.resource)),
        "apiVersion": target.api,
        "metadata": { "resourceVersion": store.resource_version.to_string() },
        "items": items,
    })
}

#[allow(clippy::too_many_arguments)]
fn patch(
    store: &mut Store,
    target: &Target,
    key: &ObjectKey,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
    mode: WriteMode,
    dry_run: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let content_type = content_type(headers).unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or("").trim().to_string();
    let existing = store.object(key).map(|o| Value::clone(o));
    match media_type.as_str() {
        "application/apply-patch+yaml" => {
            let manager = params.get("fieldManager").filter(|m| !m.is_empty()).ok_or_else(|| {
                ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
            })?;
            let mut applied = parse_apply_body(body)?;
            if !applied.is_object() {
                return Err(ApiError::bad_request("the apply body must be an object"));
            }
            for field in ["apiVersion", "kind"] {
                if applied.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                    return Err(ApiError::bad_request(format!("{field} must be set in an apply patch")));
                }
            }
            let mut entry = json!({
                "manager": manager,
                "operation": "Apply",
                "apiVersion": applied["apiVersion"],
                "time": now_timestamp(),
                "fieldsType": "FieldsV1",
                "fieldsV1": {},
            });
            match existing {
                None if mode == WriteMode::Main => {
                    entry["fieldsV1"] = apply_condition_map(&json!({}), &mut applied, manager);
                    let metadata = metadata_mut(&mut applied);
                    metadata.insert("managedFields".into(), json!([entry]));
                    metadata.entry("name").or_insert_with(|| json!(key.name));
                    let collection = Target { name: None, subresource: None, ..target.clone() };
                    store.create(&collection, applied, dry_run).map(|o| (StatusCode::CREATED, o))
                }
                None => Err(ApiError::not_found(key)),
                Some(mut object) => {
                    entry["fieldsV1"] = apply_condition_map(&object, &mut applied, manager);
                    let before = object.clone();
                    json_patch::merge(&mut object, &applied);
                    let mut managed: Vec<Value> = object
                        .pointer("/metadata/managedFields")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    // The manager's entry is updated in place; an apply that changes nothing keeps
                    // its time, so it stays a no-op as on the apiserver.
                    let same = |m: &Value| {
                        m.get("manager") == entry.get("manager") && m.get("operation") == entry.get("operation")
                    };
                    match managed.iter_mut().find(|m| same(m)) {
                        Some(old) => {
                            if object == before && old.get("fieldsV1") == entry.get("fieldsV1") {
                                entry["time"] = old["time"].clone();
                            }
                            *old = entry;
                        }
                        None => managed.push(entry),
                    }
                    metadata_mut(&mut object).insert("managedFields".into(), json!(managed));
                    store.update(key, object, mode, dry_run).map(|o| (StatusCode::OK, o))
                }
            }
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let mut object = existing.ok_or_else(|| ApiError::not_found(key))?;
            let patch = parse_body(body)?;
            json_patch::merge(&mut object, &patch);
            store.update(key, object, mode, dry_run).map(|o| (StatusCode::OK, o))
        }
        "application/json-patch+json" => {
            let mut object = existing.ok_or_else(|| ApiError::not_found(key))?;
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is invalid: {e}")))?;
            json_patch::patch(&mut object, &patch)
                .map_err(|e| ApiError::invalid(key, format!("the JSON patch could not be applied: {e}")))?;
            store.update(key, object, mode, dry_run).map(|o| (StatusCode::OK, o))
        }
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {other:?}"
            ),
        )),
    }
}

/// Server-side apply of `status.conditions` as the list-map keyed by `type` that the operator's
/// CRDs (and the built-in kinds) declare: an applied entry replaces the stored one of its type in
/// place or is appended; an entry this manager applied before and now leaves out is removed
/// unless another manager applied it too; other managers' entries stay. Rewrites the applied
/// list to the result and returns the manager's `fieldsV1` (`k:{"type":…}` per owned entry).
fn apply_condition_map(stored: &Value, applied: &mut Value, manager: &str) -> Value {
    if !applied.get("status").is_some_and(Value::is_object) {
        return json!({});
    }
    let type_of = |c: &Value| c.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    let owned_by = |entry: &Value| -> Vec<String> {
        let fields = entry.pointer("/fieldsV1/f:status/f:conditions").and_then(Value::as_object);
        fields.map_or_else(Vec::new, |keys| {
            keys.keys()
                .filter_map(|k| serde_json::from_str::<Value>(k.strip_prefix("k:")?).ok())
                .map(|k| type_of(&k))
                .collect()
        })
    };
    let managers = stored.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default();
    let (mine, others): (Vec<&Value>, Vec<&Value>) =
        managers.iter().partition(|m| m.get("manager").and_then(Value::as_str) == Some(manager));
    let mine: Vec<String> = mine.into_iter().flat_map(owned_by).collect();
    let others: Vec<String> = others.into_iter().flat_map(owned_by).collect();
    let entries = applied.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    if entries.is_empty() && mine.is_empty() {
        return json!({});
    }
    let applied_types: Vec<String> = entries.iter().map(type_of).collect();
    let stored_list = stored.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut merged: Vec<Value> = stored_list
        .into_iter()
        .filter_map(|c| match applied_types.iter().position(|t| *t == type_of(&c)) {
            Some(i) => Some(entries[i].clone()),
            None if mine.contains(&type_of(&c)) && !others.contains(&type_of(&c)) => None,
            None => Some(c),
        })
        .collect();
    for entry in &entries {
        if !merged.iter().any(|c| type_of(c) == type_of(entry)) {
            merged.push(entry.clone());
        }
    }
    applied["status"]["conditions"] = json!(merged);
    let keys: Map<String, Value> =
        applied_types.iter().map(|t| (format!("k:{}", json!({"type": t})), json!({}))).collect();
    json!({"f:status": {"f:conditions": keys}})
}

fn watch_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": event_type, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn start_watch(inner: Arc<Inner>, target: Target, params: &HashMap<String, String>, path_and_query: &str) -> Response {
    let labels = parse_selector(params.get("labelSelector").map(String::as_str).unwrap_or(""));
    let fields = parse_selector(params.get("fieldSelector").map(String::as_str).unwrap_or(""));
    let (labels, fields) = match (labels, fields) {
        (Ok(labels), Ok(fields)) => (labels, fields),
        (Err(e), _) | (_, Err(e)) => return ApiError::bad_request(e).into_response(),
    };
    let mut target = target;
    if let Some(name) = target.name.take() {
        return ApiError::bad_request(format!(
            "watch on a single object ({name}) is not supported: use fieldSelector=metadata.name={name}"
        ))
        .into_response();
    }
    target.subresource = None;
    let requested = params.get("resourceVersion").cloned().unwrap_or_default();
    let send_initial_events = params.get("sendInitialEvents").is_some_and(|v| v == "true");
    let timeout = params.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).map(Duration::from_secs);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut initial = Vec::new();
    let (start, compactions, kind) = {
        let mut store = inner.store();
        let expire = Store::take_fault(&mut store.expiring_watches, &Method::GET, path_and_query).is_some();
        let start = if requested.is_empty() || requested == "0" || send_initial_events {
            initial = store.list(&target, &labels, &fields);
            Ok(store.resource_version)
        } else {
            match requested.parse::<u64>() {
                Ok(rv) if rv < store.oldest_watchable(&target.collection()) || expire => Err(ApiError::gone(format!(
                    "too old resource version: {rv} ({})",
                    store.oldest_watchable(&target.collection())
                ))),
                Ok(rv) => Ok(rv),
                Err(_) => {
                    return ApiError::bad_request(format!("invalid resourceVersion {requested:?}")).into_response();
                }
            }
        };
        let start = match start {
            Ok(_) if expire => Err(ApiError::gone("too old resource version (injected)")),
            other => other,
        };
        (start, store.compactions, store.kind_of(&target.api, &target.resource))
    };
    let mut changes = inner.changed.subscribe();
    let mut shutdown = inner.shutdown.subscribe();
    tokio::spawn(async move {
        let mut last = match start {
            Ok(rv) => rv,
            Err(error) => {
                let _ = tx.send(watch_line("ERROR", &error.status())).await;
                return;
            }
        };
        for object in &initial {
            if tx.send(watch_line("ADDED", object)).await.is_err() {
                return;
            }
        }
        if send_initial_events {
            let bookmark = json!({
                "kind": kind,
                "apiVersion": target.api,
                "metadata": { "resourceVersion": last.to_string(), "annotations": { INITIAL_EVENTS_END: "true" } },
            });
            if tx.send(watch_line("BOOKMARK", &bookmark)).await.is_err() {
                return;
            }
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let (events, compacted) = {
                let store = inner.store();
                let collection = target.collection();
                let compacted = store.compactions != compactions || last < store.oldest_watchable(&collection);
                let mut events = Vec::new();
                if let Some(history) = store.history.get(&collection) {
                    let from = history.changes.partition_point(|c| c.resource_version <= last);
                    events.extend(
                        history
                            .changes
                            .range(from..)
                            .filter(|c| target.contains(&c.key))
                            .filter_map(|c| c.seen_as(&labels, &fields).map(|event| (event, c.object.clone()))),
                    );
                    if let Some(latest) = history.changes.back() {
                        last = last.max(latest.resource_version);
                    }
                }
                (events, compacted)
            };
            for (event, object) in events {
                if tx.send(watch_line(event, &object)).await.is_err() {
                    return;
                }
            }
            if compacted {
                let error = ApiError::gone(format!("too old resource version: {last}"));
                let _ = tx.send(watch_line("ERROR", &error.status())).await;
                return;
            }
            let expired = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
                () = expired => return,
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<Bytes, std::convert::Infallible>(line), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_collections_objects_and_subresources() {
        let t = parse_path("/api/v1/namespaces/ns/secrets/s").unwrap();
        assert_eq!(
            (t.api.as_str(), t.resource.as_str(), t.namespace.as_deref(), t.name.as_deref()),
            ("v1", "secrets", Some("ns"), Some("s"))
        );
        let t = parse_path("/apis/mcp-hangar.io/v1alpha1/namespaces/ns/mcpservers/a/status").unwrap();
        assert_eq!((t.api.as_str(), t.subresource.as_deref()), ("mcp-hangar.io/v1alpha1", Some("status")));
        let t = parse_path("/api/v1/namespaces/ns").unwrap();
        assert_eq!((t.resource.as_str(), t.namespace, t.name.as_deref()), ("namespaces", None, Some("ns")));
        let t = parse_path("/api/v1/namespaces/ns/status").unwrap();
        assert_eq!(
            (t.resource.as_str(), t.name.as_deref(), t.subresource.as_deref()),
            ("namespaces", Some("ns"), Some("status"))
        );
        let t = parse_path("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/x").unwrap();
        assert_eq!((t.namespace, t.name.as_deref()), (None, Some("x")));
        assert!(parse_path("/apis/x").is_none());
        assert!(parse_path("/healthz").is_none());
    }

    #[test]
    fn selectors_follow_label_selector_syntax() {
        let object = json!({ "metadata": { "name": "a", "labels": { "app": "web", "tier": "front" } } });
        let yes = |s: &str| matches_selectors(&object, &parse_selector(s).unwrap(), &[]);
        assert!(yes("app=web"));
        assert!(yes("app==web,tier=front"));
        assert!(!yes("app=db"));
        assert!(yes("app!=db"));
        assert!(yes("tier in (back, front)"));
        assert!(!yes("tier notin (back,front)"));
        assert!(yes("app,!missing"));
        assert!(!yes("missing"));
        assert!(matches_selectors(&object, &[], &parse_selector("metadata.name=a").unwrap()));
        assert!(!matches_selectors(&object, &[], &parse_selector("metadata.name!=a").unwrap()));
    }
}
