//! Group load balancing: which member of a group gets a request.
//!
//! Members come in membership order (by name, `policy::membership`). Only members in rotation
//! are picked: [`Standing::Warm`] (state Ready and healthy, or no state reported, as with
//! `--routes-file`), not out for failures, not already tried by this request. Among them:
//!
//! - `RoundRobin`: each in turn.
//! - `LeastConnections`: the fewest requests in flight through this replica (an answer counts
//!   until its body, a stream included, has ended); ties go round-robin.
//! - `Random`: uniformly.
//! - `Failover`: the first in name order; the next one only while it is out.
//!
//! When no warm member is left, a member on its way up gets the request ([`Pick::WakeCold`]; the
//! cold-start waker holds it until the member is ready): the first [`Standing::Starting`] one
//! (Initializing: starting or already being woken), else the first [`Standing::Cold`] one (scaled
//! to zero), not yet tried. Degraded and Dead members get nothing.
//!
//! `healthPolicy.unhealthyThreshold` consecutive failed requests (connect error, timeout, HTTP
//! 5xx) take a member out of rotation. It answers again through a probe: [`PROBE_INTERVAL`]
//! after its last failure one request is let through; an answer puts it back, a failure keeps
//! it out for another interval. Counts are per gateway replica, like the breaker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::crd::{LoadBalancingStrategy, ServerState};

/// Time an out-of-rotation member waits before one probe request may try it.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// A member's standing as the controller reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Ready and healthy (or not reported at all): takes requests.
    Warm,
    /// Initializing: takes requests only when no warm member is left.
    Starting,
    /// Scaled to zero: woken when no warm or starting member is left.
    Cold,
    /// Degraded, Dead or unhealthy: takes nothing.
    Down,
}

impl Standing {
    /// The standing of a member in a given state; `healthy` is `policy::membership`'s verdict.
    pub fn of(state: Option<ServerState>, healthy: bool) -> Standing {
        match state {
            None => Standing::Warm,
            Some(ServerState::Ready) if healthy => Standing::Warm,
            Some(ServerState::Initializing) => Standing::Starting,
            Some(ServerState::Cold) => Standing::Cold,
            Some(_) => Standing::Down,
        }
    }
}

/// One member as the strategies see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// As the controller reports it.
    pub standing: Standing,
    /// Requests in flight through this replica.
    pub in_flight: usize,
    /// False while out of rotation for failures (or already tried by this request).
    pub available: bool,
}

/// The member a request goes to, by index into the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// A warm member.
    Warm(usize),
    /// No warm member is left: this cold one must be woken.
    WakeCold(usize),
}

impl Pick {
    /// The member's index.
    pub fn index(self) -> usize {
        match self {
            Pick::Warm(i) | Pick::WakeCold(i) => i,
        }
    }
}

/// Chooses a member: `turn` counts the route's requests (round-robin and ties), `random` is a
/// random number. `None` when no member is available.
pub fn choose(strategy: LoadBalancingStrategy, members: &[Candidate], turn: usize, random: u64) -> Option<Pick> {
    let warm: Vec<usize> =
        (0..members.len()).filter(|&i| members[i].available && members[i].standing == Standing::Warm).collect();
    if warm.is_empty() {
        let first = |standing| (0..members.len()).find(|&i| members[i].available && members[i].standing == standing);
        return first(Standing::Starting).or_else(|| first(Standing::Cold)).map(Pick::WakeCold);
    }
    let index = match strategy {
        LoadBalancingStrategy::RoundRobin => warm[turn % warm.len()],
        LoadBalancingStrategy::Random => warm[(random % warm.len() as u64) as usize],
        LoadBalancingStrategy::Failover => warm[0],
        LoadBalancingStrategy::LeastConnections => {
            let fewest = warm.iter().map(|&i| members[i].in_flight).min().unwrap_or(0);
            let tied: Vec<usize> = warm.into_iter().filter(|&i| members[i].in_flight == fewest).collect();
            tied[turn % tied.len()]
        }
    };
    Some(Pick::Warm(index))
}

/// What this replica knows of one member.
#[derive(Debug, Default)]
struct Record {
    in_flight: Arc<()>,
    failures: u32,
    last_failure: Option<Instant>,
}

/// The balancing state of a gateway replica: turns per route, and per member the requests in
/// flight and the consecutive failures.
#[derive(Debug, Default)]
pub struct Balancer {
    turns: Mutex<HashMap<String, usize>>,
    members: Mutex<HashMap<String, Record>>,
    seed: AtomicU64,
}

/// Holds one request in flight on a member until dropped (with the answer's body).
#[derive(Debug)]
pub struct InFlight {
    _held: Arc<()>,
}

impl Balancer {
    /// A balancer with nothing recorded.
    pub fn new() -> Balancer {
        let seed = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
        Balancer { seed: AtomicU64::new(seed | 1), ..Balancer::default() }
    }

    /// Picks a member of `route` among `members` (`(member, standing)` in membership order),
    /// skipping the indexes in `tried`. A member out of rotation whose probe is due is marked
    /// probed when picked, so one request at a time tries it.
    pub fn pick(
        &self,
        route: &str,
        strategy: LoadBalancingStrategy,
        members: &[(&str, Standing)],
        threshold: Option<u32>,
        tried: &[usize],
        now: Instant,
    ) -> Option<Pick> {
        let turn = {
            let mut turns = self.turns.lock().expect("balancer lock");
            let turn = turns.entry(route.to_string()).or_insert(usize::MAX);
            *turn = turn.wrapping_add(1);
            *turn
        };
        let mut records = self.members.lock().expect("balancer lock");
        let candidates: Vec<Candidate> = members
            .iter()
            .enumerate()
            .map(|(i, (member, standing))| {
                let record = records.get(*member);
                let out = record.is_some_and(|r| threshold.is_some_and(|t| r.failures >= t) && !probe_due(r, now));
                Candidate {
                    standing: *standing,
                    in_flight: record.map_or(0, |r| Arc::strong_count(&r.in_flight) - 1),
                    available: !out && !tried.contains(&i),
                }
            })
            .collect();
        let pick = choose(strategy, &candidates, turn, self.random())?;
        if let Some(record) = records.get_mut(members[pick.index()].0)
            && threshold.is_some_and(|t| record.failures >= t)
        {
            record.last_failure = Some(now);
        }
        Some(pick)
    }

    /// Counts a request in flight on `member` until the guard is dropped.
    pub fn start(&self, member: &str) -> InFlight {
        let mut records = self.members.lock().expect("balancer lock");
        InFlight { _held: records.entry(member.to_string()).or_default().in_flight.clone() }
    }

    /// Records an exchange's outcome: `false` on a connect error, timeout or HTTP 5xx.
    pub fn record(&self, member: &str, success: bool, now: Instant) {
        let mut records = self.members.lock().expect("balancer lock");
        let record = records.entry(member.to_string()).or_default();
        if success {
            record.failures = 0;
            record.last_failure = None;
        } else {
            record.failures = record.failures.saturating_add(1);
            record.last_failure = Some(now);
        }
    }

    /// Consecutive failures of a member.
    pub fn failures(&self, member: &str) -> u32 {
        self.members.lock().expect("balancer lock").get(member).map_or(0, |r| r.failures)
    }

    /// A xorshift64 step: cheap, and random enough to spread requests.
    fn random(&self) -> u64 {
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        x
    }
}

/// Whether a failed request may be sent to another member even though it reached its upstream:
/// it only reads (`tools/list` and every other `*/list`, `resources/read`, `prompts/get`). A
/// request that never reached its upstream (breaker open, connect error) may always be.
pub fn retry_safe(method: &str) -> bool {
    method.ends_with("/list") || matches!(method, "resources/read" | "prompts/get")
}

fn probe_due(record: &Record, now: Instant) -> bool {
    record.last_failure.is_none_or(|at| now >= at + PROBE_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use LoadBalancingStrategy::*;

    const WARM: Candidate = Candidate { standing: Standing::Warm, in_flight: 0, available: true };

    fn picks(strategy: LoadBalancingStrategy, members: &[Candidate], n: usize) -> Vec<usize> {
        (0..n).map(|turn| choose(strategy, members, turn, turn as u64 * 7919).unwrap().index()).collect()
    }

    #[test]
    fn round_robin_takes_each_warm_member_in_turn() {
        let down = Candidate { standing: Standing::Down, ..WARM };
        assert_eq!(picks(RoundRobin, &[WARM, down, WARM, WARM], 6), [0, 2, 3, 0, 2, 3]);
    }

    #[test]
    fn least_connections_prefers_the_idle_member_and_spreads_ties() {
        let busy = Candidate { in_flight: 3, ..WARM };
        let one = Candidate { in_flight: 1, ..WARM };
        assert_eq!(picks(LeastConnections, &[busy, one, busy], 3), [1, 1, 1]);
        assert_eq!(picks(LeastConnections, &[busy, WARM, WARM], 4), [1, 2, 1, 2]);
    }

    #[test]
    fn failover_takes_the_first_member_in_order_until_it_is_out() {
        assert_eq!(picks(Failover, &[WARM, WARM, WARM], 3), [0, 0, 0]);
        let out = Candidate { available: false, ..WARM };
        assert_eq!(picks(Failover, &[out, WARM, WARM], 3), [1, 1, 1]);
    }

    #[test]
    fn random_reaches_every_member_roughly_evenly() {
        let balancer = Balancer::new();
        let members = [("ns/a", Standing::Warm), ("ns/b", Standing::Warm), ("ns/c", Standing::Warm)];
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            let pick = balancer.pick("g", Random, &members, None, &[], Instant::now()).unwrap();
            counts[pick.index()] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn a_cold_member_is_woken_only_when_no_warm_member_is_left() {
        let cold = Candidate { standing: Standing::Cold, ..WARM };
        let down = Candidate { standing: Standing::Down, ..WARM };
        assert_eq!(choose(RoundRobin, &[cold, WARM], 0, 0), Some(Pick::Warm(1)));
        let tried = Candidate { available: false, ..WARM };
        assert_eq!(choose(RoundRobin, &[down, tried, cold, cold], 1, 0), Some(Pick::WakeCold(2)));
        let starting = Candidate { standing: Standing::Starting, ..WARM };
        assert_eq!(choose(Random, &[cold, starting], 1, 0), Some(Pick::WakeCold(1)), "one already on its way first");
        assert_eq!(choose(Failover, &[down, tried], 0, 0), None);
    }

    #[test]
    fn states_map_to_standings() {
        assert_eq!(Standing::of(Some(ServerState::Ready), true), Standing::Warm);
        assert_eq!(Standing::of(Some(ServerState::Ready), false), Standing::Down, "over unhealthyThreshold");
        assert_eq!(Standing::of(None, false), Standing::Warm, "nothing reports it: try it");
        assert_eq!(Standing::of(Some(ServerState::Cold), false), Standing::Cold);
        assert_eq!(Standing::of(Some(ServerState::Degraded), false), Standing::Down);
        assert_eq!(Standing::of(Some(ServerState::Initializing), false), Standing::Starting);
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_requests_steer_least_connections_until_their_guards_drop() {
        let balancer = Balancer::new();
        let members = [("ns/a", Standing::Warm), ("ns/b", Standing::Warm)];
        let pick = |b: &Balancer| b.pick("g", LeastConnections, &members, None, &[], Instant::now()).unwrap().index();
        let held: Vec<InFlight> = (0..2).map(|_| balancer.start("ns/a")).collect();
        assert_eq!((0..4).map(|_| pick(&balancer)).collect::<Vec<_>>(), [1, 1, 1, 1]);
        let on_b = balancer.start("ns/b");
        let more_on_b = balancer.start("ns/b");
        let third = balancer.start("ns/b");
        assert_eq!(pick(&balancer), 0, "b now has more in flight");
        drop((held, on_b, more_on_b, third));
        let both: Vec<usize> = (0..4).map(|_| pick(&balancer)).collect();
        assert!(both.contains(&0) && both.contains(&1), "all idle: ties alternate {both:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn failing_members_leave_rotation_and_come_back_after_a_probe_answers() {
        let balancer = Balancer::new();
        let members = [("ns/a", Standing::Warm), ("ns/b", Standing::Warm)];
        let pick = |b: &Balancer| b.pick("g", Failover, &members, Some(2), &[], Instant::now()).unwrap().index();
        balancer.record("ns/a", false, Instant::now());
        assert_eq!(pick(&balancer), 0, "one failure is under the threshold");
        balancer.record("ns/a", false, Instant::now());
        assert_eq!(pick(&balancer), 1, "two in a row take it out");
        tokio::time::advance(PROBE_INTERVAL).await;
        assert_eq!(pick(&balancer), 0, "the probe is due");
        assert_eq!(pick(&balancer), 1, "one probe at a time");
        balancer.record("ns/a", false, Instant::now());
        tokio::time::advance(PROBE_INTERVAL / 2).await;
        assert_eq!(pick(&balancer), 1, "a failed probe keeps it out");
        tokio::time::advance(PROBE_INTERVAL).await;
        assert_eq!(pick(&balancer), 0);
        balancer.record("ns/a", true, Instant::now());
        assert_eq!((0..3).map(|_| pick(&balancer)).collect::<Vec<_>>(), [0, 0, 0], "it answered: back in rotation");
        let without = balancer.pick("g", Failover, &members, None, &[], Instant::now());
        balancer.record("ns/a", false, Instant::now());
        assert_eq!(without, Some(Pick::Warm(0)), "without a threshold failures never take it out");
    }

    #[test]
    fn only_reads_are_retried_once_they_reached_an_upstream() {
        for method in [
            "tools/list",
            "resources/list",
            "resources/templates/list",
            "prompts/list",
            "resources/read",
            "prompts/get",
        ] {
            assert!(retry_safe(method), "{method}");
        }
        for method in ["tools/call", "initialize", "completion/complete", "logging/setLevel", "listx"] {
            assert!(!retry_safe(method), "{method}");
        }
    }

    #[test]
    fn members_already_tried_are_skipped() {
        let balancer = Balancer::new();
        let members = [("ns/a", Standing::Warm), ("ns/b", Standing::Warm)];
        let now = Instant::now();
        assert_eq!(balancer.pick("g", Failover, &members, None, &[0], now), Some(Pick::Warm(1)));
        assert_eq!(balancer.pick("g", Failover, &members, None, &[0, 1], now), None);
    }
}
