//! Watch streams that recover by themselves and show their health.
//!
//! `kube::runtime::Controller` merges its trigger streams and pauses the merged stream after
//! any error (`trigger_backoff`): one failing watch stops every other one, the MCPServer watch
//! included, and the shared backoff grows to 30 s (60 s with jitter) while errors keep coming.
//! Each watch here gets its own [`Retry`] instead and never passes an error on, so the merged
//! stream never backs off: errors are logged and counted per resource
//! (`mcp_hangar_watch_errors_total`, `mcp_hangar_watch_up`).
//!
//! A 410 Gone (`Expired`: the resourceVersion was compacted away, routine after an apiserver
//! restart) moves the watcher to a fresh list, which starts at once (after [`RETRY_BASE`] when
//! the previous 410 of this watch came less than [`FAST_RELIST_EVERY`] ago, so a watch that
//! keeps expiring cannot loop); every other error waits [`RETRY_BASE`], doubled per consecutive
//! error up to [`RETRY_MAX`]. Any event other than `Init` (a list that returned, a watch event)
//! shows the watch works again and resets the delay.

use std::collections::HashMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::watcher;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// First delay after an error.
pub const RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest delay between attempts while errors continue.
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// At most one immediate re-list after 410 Gone per this period; later ones wait [`RETRY_BASE`].
pub const FAST_RELIST_EVERY: Duration = Duration::from_secs(30);
/// A retried watch that has gone this long without an error works again.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// The retry state of one watch (pure: the caller passes the time).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Consecutive errors since the watch last made progress.
    failures: u32,
    /// When a 410 was last retried at once.
    last_fast_relist: Option<Instant>,
}

impl Retry {
    /// The delay before polling the watch again after an error at `now`; `gone` when the error
    /// is a 410 Gone, after which the watcher re-lists.
    pub fn on_error(&mut self, gone: bool, now: Instant) -> Duration {
        if gone {
            let fast =
                self.last_fast_relist.is_none_or(|last| now.saturating_duration_since(last) >= FAST_RELIST_EVERY);
            if fast {
                self.last_fast_relist = Some(now);
                return Duration::ZERO;
            }
            return RETRY_BASE;
        }
        let delay = RETRY_BASE.saturating_mul(2u32.saturating_pow(self.failures)).min(RETRY_MAX);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Records that the watch made progress: the next error starts from [`RETRY_BASE`].
    pub fn on_progress(&mut self) {
        self.failures = 0;
    }
}

/// True when `error` says the requested resourceVersion is gone (HTTP 410).
pub fn is_gone(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// Wraps a `watcher` stream of `resource` (a plural name, e.g. `deployments`): errors are
/// logged, counted and retried after this watch's own delay, never passed on.
///
/// `mcp_hangar_watch_up` turns 0 on an error other than 410 Gone, and back to 1 on the next
/// event, or once the retried watch has gone [`HEALTHY_AFTER`] without an error (a watch
/// resumed on a quiet resource sends no event).
pub fn recovering<K, S>(
    stream: S,
    resource: &'static str,
    metrics: Metrics,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K, S>
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let up = metrics.watch_up.with_label_values(&[resource]);
    let errors = metrics.watch_errors.with_label_values(&[resource]);
    up.set(1);
    let state = (Box::pin(stream), Retry::default(), false);
    futures::stream::unfold(state, move |(mut stream, mut retry, mut failing)| {
        let (up, errors) = (up.clone(), errors.clone());
        async move {
            loop {
                let next = if failing {
                    match tokio::time::timeout(HEALTHY_AFTER, stream.next()).await {
                        Ok(next) => next,
                        Err(_quiet) => {
                            failing = false;
                            retry.on_progress();
                            up.set(1);
                            tracing::info!(resource, "watch recovered");
                            continue;
                        }
                    }
                } else {
                    stream.next().await
                };
                match next? {
                    Ok(event) => {
                        if !matches!(event, watcher::Event::Init) {
                            failing = false;
                            retry.on_progress();
                            up.set(1);
                        }
                        return Some((Ok(event), (stream, retry, failing)));
                    }
                    Err(error) => {
                        let gone = is_gone(&error);
                        let delay = retry.on_error(gone, Instant::now());
                        errors.inc();
                        if !gone {
                            failing = true;
                            up.set(0);
                        }
                        tracing::warn!(resource, error = %error, gone, retry_in = ?delay, "watch error");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    })
}

/// The objects of a watch whose generation changed (a spec edit, or a deletion begun), as
/// `kube::runtime::predicates::generation` passes them, so status writes wake no reconcile.
///
/// It keeps a fingerprint of each uid and its generation (16 bytes; kube's predicate keeps the
/// name, namespace and uid strings of each object), forgets deleted objects, and rebuilds the
/// table at every relist, so objects deleted while the watch was down are forgotten too.
#[derive(Debug, Default)]
pub struct Generations {
    seen: HashMap<u64, i64>,
    /// During a relist: the table before it, which the objects listed are compared with.
    before: Option<HashMap<u64, i64>>,
}

/// The key of an object in [`Generations`]: a hash of its uid.
fn uid_key<K: Resource>(object: &K) -> u64 {
    use std::hash::BuildHasher;
    std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(&object.meta().uid)
}

impl Generations {
    /// The object `event` applies, if its generation changed (or it has none).
    pub fn changed<K: Resource>(&mut self, event: watcher::Event<K>) -> Option<K> {
        let (object, listing) = match event {
            watcher::Event::Apply(object) => (object, false),
            watcher::Event::InitApply(object) => (object, true),
            watcher::Event::Delete(object) => {
                self.seen.remove(&uid_key(&object));
                return None;
            }
            watcher::Event::Init => {
                self.before = Some(std::mem::take(&mut self.seen));
                return None;
            }
            watcher::Event::InitDone => {
                self.before = None;
                return None;
            }
        };
        let Some(generation) = object.meta().generation else {
            return Some(object);
        };
        let key = uid_key(&object);
        let previous = self.seen.insert(key, generation);
        let previous = match (&mut self.before, listing) {
            (Some(before), true) => before.remove(&key),
            _ => previous,
        };
        (previous != Some(generation)).then_some(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MCPServer;

    fn server(uid: &str, generation: i64) -> MCPServer {
        let mut server = MCPServer::new("s", Default::default());
        server.metadata.uid = Some(uid.into());
        server.metadata.generation = Some(generation);
        server
    }

    #[test]
    fn only_generation_changes_pass_and_relists_forget_the_deleted() {
        use watcher::Event::*;
        let mut generations = Generations::default();
        let mut pass = |event| generations.changed(event).is_some();
        assert!(pass(Apply(server("a", 1))), "first sight");
        assert!(!pass(Apply(server("a", 1))), "a status write");
        assert!(pass(Apply(server("a", 2))), "a spec edit");
        assert!(pass(Apply(server("b", 1))));
        assert!(!pass(Delete(server("b", 1))));
        assert!(pass(Apply(server("b", 1))), "re-created under the same uid after a delete");
        assert!(pass(Apply(MCPServer::new("x", Default::default()))), "no generation");
        assert!(!pass(Init));
        assert!(!pass(InitApply(server("a", 2))), "unchanged across the relist");
        assert!(pass(InitApply(server("c", 1))));
        assert!(!pass(InitDone));
        assert!(pass(Apply(server("b", 1))), "b vanished during the relist and was forgotten");
        assert!(!pass(Apply(server("c", 1))));
    }

    #[test]
    fn errors_back_off_exponentially_up_to_the_cap_and_progress_resets() {
        let now = Instant::now();
        let mut retry = Retry::default();
        let delays: Vec<Duration> = (0..7).map(|_| retry.on_error(false, now)).collect();
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(delays, vec![ms(500), ms(1000), ms(2000), ms(4000), ms(8000), RETRY_MAX, RETRY_MAX]);
        retry.on_progress();
        assert_eq!(retry.on_error(false, now), RETRY_BASE);
    }

    #[test]
    fn gone_relists_at_once_even_after_a_run_of_errors() {
        let now = Instant::now();
        let mut retry = Retry::default();
        for _ in 0..5 {
            retry.on_error(false, now);
        }
        assert_eq!(retry.on_error(true, now), Duration::ZERO);
    }

    #[test]
    fn a_second_gone_within_the_period_waits_the_base_delay() {
        let start = Instant::now();
        let mut retry = Retry::default();
        assert_eq!(retry.on_error(true, start), Duration::ZERO);
        retry.on_progress();
        assert_eq!(retry.on_error(true, start + Duration::from_secs(1)), RETRY_BASE);
        assert_eq!(retry.on_error(true, start + Duration::from_secs(2)), RETRY_BASE);
        assert_eq!(retry.on_error(true, start + FAST_RELIST_EVERY), Duration::ZERO);
        assert_eq!(retry.on_error(false, start + FAST_RELIST_EVERY), RETRY_BASE, "410s do not grow the delay");
    }

    #[test]
    fn only_410_counts_as_gone() {
        let status = |code: u16| {
            let mut status = kube::core::Status::failure("expired", "Expired");
            status.code = code;
            Box::new(status)
        };
        assert!(is_gone(&watcher::Error::WatchError(status(410))));
        assert!(is_gone(&watcher::Error::WatchStartFailed(kube::Error::Api(status(410)))));
        assert!(!is_gone(&watcher::Error::WatchError(status(500))));
        assert!(!is_gone(&watcher::Error::InitialListFailed(kube::Error::Api(status(403)))));
        assert!(!is_gone(&watcher::Error::NoResourceVersion));
    }
}
