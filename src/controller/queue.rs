//! The MCPServer work queue: every server pending at most once, due at a time.
//!
//! It keeps kube-runtime's `Controller` rules: a trigger makes a server due after the debounce
//! (a later trigger moves that on, so a burst makes one reconcile; it also brings forward a
//! later requeue); a reconcile's requeue makes it due then, unless it is due sooner; a server
//! is never reconciled twice at once (a trigger while it runs makes it due again), and at most
//! `concurrency` reconciles run together. Unlike kube's queue, which keeps each pending
//! request three times with the full reference of what triggered it (9.9 MiB at 11k servers
//! after the startup burst), it keeps each pending server's key twice.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// What a reconcile asks of the queue when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action(Option<Duration>);

impl Action {
    /// Reconcile again after `after` (sooner if triggered).
    pub fn requeue(after: Duration) -> Action {
        Action(Some(after))
    }

    /// Reconcile again only when triggered.
    pub fn await_change() -> Action {
        Action(None)
    }

    /// The delay asked for, if any.
    pub fn requeue_after(&self) -> Option<Duration> {
        self.0
    }
}

/// The queue's state (pure: the caller passes the time).
#[derive(Debug)]
pub struct Queue<K> {
    debounce: Duration,
    /// Pending keys by due time.
    due: BTreeSet<(Instant, K)>,
    /// The due time of each pending key.
    at: BTreeMap<K, Instant>,
    running: HashSet<K>,
}

impl<K: Clone + Ord + Hash> Queue<K> {
    /// An empty queue.
    pub fn new(debounce: Duration) -> Self {
        Queue { debounce, due: BTreeSet::new(), at: BTreeMap::new(), running: HashSet::new() }
    }

    /// Something about `key` changed at `now`.
    pub fn trigger(&mut self, key: K, now: Instant) {
        self.schedule(key, now, now + self.debounce);
    }

    /// The reconcile of `key` that ran asks to run again at `at`.
    pub fn requeue(&mut self, key: K, at: Instant) {
        self.schedule(key, at, at);
    }

    /// Makes `key` due at `next`, unless it is due before `request`.
    fn schedule(&mut self, key: K, request: Instant, next: Instant) {
        if let Some(&current) = self.at.get(&key) {
            if current < request {
                return;
            }
            self.due.remove(&(current, key.clone()));
        }
        self.at.insert(key.clone(), next);
        self.due.insert((next, key));
    }

    /// Takes the first key due by `now` that is not running, and marks it running; or says
    /// when to look again (`None`: when something is scheduled or ends).
    pub fn take(&mut self, now: Instant, concurrency: usize) -> Result<K, Option<Instant>> {
        if self.running.len() >= concurrency {
            return Err(None);
        }
        let (at, key) = self.due.iter().find(|(_, key)| !self.running.contains(key)).cloned().ok_or(None)?;
        if at > now {
            return Err(Some(at));
        }
        self.due.remove(&(at, key.clone()));
        self.at.remove(&key);
        self.running.insert(key.clone());
        Ok(key)
    }

    /// The reconcile of `key` ended.
    pub fn done(&mut self, key: &K) {
        self.running.remove(key);
    }

    /// Keys pending.
    pub fn pending(&self) -> usize {
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_millis(50);

    #[test]
    fn triggers_debounce_and_bring_a_requeue_forward() {
        let t0 = Instant::now();
        let mut q = Queue::new(D);
        q.trigger("a", t0);
        q.trigger("a", t0 + D / 2);
        assert_eq!(q.pending(), 1);
        assert_eq!(q.take(t0 + D, 8), Err(Some(t0 + D / 2 + D)), "the second trigger moved it on");
        assert_eq!(q.take(t0 + 2 * D, 8), Ok("a"));
        q.done(&"a");
        q.requeue("a", t0 + Duration::from_secs(30));
        q.trigger("a", t0 + 3 * D);
        assert_eq!(q.take(t0 + 4 * D, 8), Ok("a"), "the trigger came before the requeue");
        q.done(&"a");
        q.trigger("a", t0);
        q.requeue("a", t0 + Duration::from_secs(30));
        assert_eq!(q.take(t0 + D, 8), Ok("a"), "a later requeue does not push a trigger back");
        assert_eq!(q.pending(), 0);
    }

    #[test]
    fn one_run_per_key_and_at_most_concurrency() {
        let t0 = Instant::now();
        let mut q = Queue::new(D);
        for key in ["a", "b", "c"] {
            q.trigger(key, t0);
        }
        let later = t0 + D;
        assert_eq!(q.take(later, 2), Ok("a"));
        q.trigger("a", t0);
        assert_eq!(q.take(later, 2), Ok("b"), "a runs: b comes first");
        assert_eq!(q.take(later, 2), Err(None), "two run");
        q.done(&"b");
        assert_eq!(q.take(later, 2), Ok("c"));
        q.done(&"c");
        assert_eq!(q.take(later, 2), Err(None), "a is due again but still runs");
        q.done(&"a");
        assert_eq!(q.take(later, 2), Ok("a"));
        assert_eq!(q.take(later, 2), Err(None));
    }
}
