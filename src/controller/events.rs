//! Publishes the controllers' events (`events.k8s.io/v1`) the way kube's `Recorder` does: the
//! first occurrence is created, a repeat within [`SERIES_TTL`] patches that event's `series`
//! (count and last time) instead of adding another.
//!
//! Why not kube's `Recorder` itself: it keeps a whole Event (about 2 KB) per distinct event for
//! six minutes and scans that cache on every publish. Bringing up 10k servers publishes 10k
//! events, so that was 20 MiB and a quadratic scan. This cache keeps about 100 bytes per event,
//! is pruned at most every [`PRUNE_EVERY`], and stops growing at [`MAX_SERIES`] (an event past
//! it is still published, only not counted as a series).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client};
use serde_json::json;

/// How long a repeat still counts in its first event's series (kube's value).
pub const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);
/// How often expired series are dropped from the cache.
const PRUNE_EVERY: SignedDuration = SignedDuration::from_mins(1);
/// The most series followed at once.
pub const MAX_SERIES: usize = 65_536;

/// An event published recently: where it is and how often it happened.
struct Series {
    namespace: Box<str>,
    name: Box<str>,
    count: i32,
    last: Timestamp,
}

/// The series followed, by event key.
struct Cache {
    series: HashMap<u64, Series>,
    pruned: Timestamp,
}

impl Cache {
    fn new(now: Timestamp) -> Cache {
        Cache { series: HashMap::new(), pruned: now }
    }

    /// The series this event continues, counted once more; `None` for a first occurrence.
    fn repeat(&mut self, key: u64, now: Timestamp) -> Option<(Box<str>, Box<str>, i32)> {
        if self.pruned + PRUNE_EVERY <= now {
            self.series.retain(|_, s| s.last + SERIES_TTL > now);
            self.series.shrink_to_fit();
            self.pruned = now;
        }
        let series = self.series.get(&key).filter(|s| s.last + SERIES_TTL > now)?;
        Some((series.namespace.clone(), series.name.clone(), series.count.saturating_add(1)))
    }

    fn remember(&mut self, key: u64, series: Series) {
        if self.series.len() < MAX_SERIES || self.series.contains_key(&key) {
            self.series.insert(key, series);
        }
    }
}

/// What makes two events the same (kube's key: type, action, reason, regarding, related).
fn key(event: &Event, regarding: &ObjectReference) -> u64 {
    fn reference(r: &ObjectReference, hasher: &mut impl Hasher) {
        (&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid, &r.field_path, &r.resource_version).hash(hasher);
    }
    let mut hasher = std::hash::DefaultHasher::new();
    (event.type_ == EventType::Warning, &event.action, &event.reason).hash(&mut hasher);
    reference(regarding, &mut hasher);
    event.secondary.is_some().hash(&mut hasher);
    if let Some(related) = &event.secondary {
        reference(related, &mut hasher);
    }
    hasher.finish()
}

/// Publishes events as one controller instance.
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    cache: Mutex<Cache>,
}

impl Recorder {
    /// A recorder reporting as `controller`, instance `instance`.
    pub fn new(client: Client, controller: &str, instance: &str) -> Recorder {
        let cache = Mutex::new(Cache::new(Timestamp::now()));
        Recorder { client, controller: controller.into(), instance: instance.into(), cache }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `event` about `regarding`, in its namespace (`default` for a cluster-scoped
    /// object).
    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = key(event, regarding);
        let repeat = self.cache().repeat(key, now);
        if let Some((namespace, name, count)) = repeat {
            let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
            let patch = json!({ "series": EventSeries { count, last_observed_time: MicroTime(now) } });
            events.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            self.cache().remember(key, Series { namespace, name, count, last: now });
            return Ok(());
        }
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let name = format!("{}.{:x}", regarding.name.as_deref().unwrap_or(&self.controller), now.as_nanosecond());
        let created = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            type_: Some(if event.type_ == EventType::Warning { "Warning" } else { "Normal" }.into()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..K8sEvent::default()
        };
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        events.create(&PostParams::default(), &created).await?;
        self.cache().remember(key, Series { namespace: namespace.into(), name: name.into(), count: 1, last: now });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reason: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: None,
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    fn reference(name: &str) -> ObjectReference {
        let (kind, namespace, name) = (Some("MCPServer".into()), Some("ns".into()), Some(name.into()));
        ObjectReference { kind, namespace, name, ..ObjectReference::default() }
    }

    #[test]
    fn the_same_event_on_the_same_object_is_one_series() {
        assert_eq!(key(&event("Ready"), &reference("a")), key(&event("Ready"), &reference("a")));
        assert_ne!(key(&event("Ready"), &reference("a")), key(&event("Ready"), &reference("b")));
        assert_ne!(key(&event("Ready"), &reference("a")), key(&event("Cold"), &reference("a")));
        let mut warning = event("Ready");
        warning.type_ = EventType::Warning;
        assert_ne!(key(&warning, &reference("a")), key(&event("Ready"), &reference("a")));
        let mut related = event("Ready");
        related.secondary = Some(reference("b"));
        assert_ne!(key(&related, &reference("a")), key(&event("Ready"), &reference("a")));
    }

    #[test]
    fn a_repeat_counts_in_its_series_until_the_series_expires() {
        let start = Timestamp::now();
        let mut cache = Cache::new(start);
        assert_eq!(cache.repeat(1, start), None, "a first occurrence");
        cache.remember(1, Series { namespace: "ns".into(), name: "a.1".into(), count: 1, last: start });
        let later = start + SignedDuration::from_mins(5);
        let (namespace, name, count) = cache.repeat(1, later).unwrap();
        assert_eq!((&*namespace, &*name, count), ("ns", "a.1", 2));
        cache.remember(1, Series { namespace, name, count, last: later });
        assert_eq!(
            cache.repeat(1, later + SignedDuration::from_mins(5)).map(|r| r.2),
            Some(3),
            "counted from the last"
        );
        assert_eq!(cache.repeat(1, later + SERIES_TTL), None, "expired: a new event");
        assert!(cache.series.is_empty(), "and pruned");
    }

    #[test]
    fn the_cache_stops_growing_at_its_bound() {
        let now = Timestamp::now();
        let mut cache = Cache::new(now);
        for key in 0..=MAX_SERIES as u64 {
            cache.remember(key, Series { namespace: "ns".into(), name: "e".into(), count: 1, last: now });
        }
        assert_eq!(cache.series.len(), MAX_SERIES);
        assert_eq!(cache.repeat(MAX_SERIES as u64, now), None, "past the bound: published, not followed");
    }
}
