//! The circuit breaker of one server: `failureThreshold` consecutive failures (connect errors,
//! timeouts, HTTP 5xx) open it; while open, requests fail fast; after `resetTimeout` it lets
//! [`HALF_OPEN_TRIALS`] trial requests through (half-open): a success closes it, a failure opens
//! it again. A tool result with `isError: true` is an answer, not a failure.

use std::time::Duration;

use tokio::time::Instant;

/// Trial requests let through at once while half-open.
pub const HALF_OPEN_TRIALS: u32 = 1;

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open it.
    pub failure_threshold: u32,
    /// How long it stays open before trials.
    pub reset_timeout: Duration,
}

/// The state, as the `mcp_hangar_circuit_breaker_state` gauge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests pass (gauge 0).
    Closed,
    /// Requests fail fast until the instant (gauge 1).
    Open {
        /// When trials begin.
        until: Instant,
    },
    /// Trial requests decide (gauge 2).
    HalfOpen {
        /// Trials in flight.
        trials: u32,
    },
}

impl State {
    /// The gauge value.
    pub fn gauge(&self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open { .. } => 1,
            State::HalfOpen { .. } => 2,
        }
    }
}

/// The answer to "may this request go upstream?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes; report its outcome with [`Breaker::record`].
    Pass,
    /// Yes, as a half-open trial; report its outcome with [`Breaker::record`].
    Trial,
    /// No: fail fast; retry after this long.
    Reject(Duration),
}

/// One server's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    failures: u32,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Breaker { config, state: State::Closed, failures: 0 }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a request now would be refused without trying (open, or half-open with every
    /// trial slot taken).
    pub fn fails_fast(&self, now: Instant) -> bool {
        match self.state {
            State::Closed => false,
            State::Open { until } => now < until,
            State::HalfOpen { trials } => trials >= HALF_OPEN_TRIALS,
        }
    }

    /// Takes new settings, keeping the state.
    pub fn reconfigure(&mut self, config: BreakerConfig) {
        self.config = config;
    }

    /// Whether a request may go upstream now.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed => Admission::Pass,
            State::Open { until } if now < until => Admission::Reject(until - now),
            State::Open { .. } => {
                self.state = State::HalfOpen { trials: 1 };
                Admission::Trial
            }
            State::HalfOpen { trials } if trials < HALF_OPEN_TRIALS => {
                self.state = State::HalfOpen { trials: trials + 1 };
                Admission::Trial
            }
            State::HalfOpen { .. } => Admission::Reject(self.config.reset_timeout),
        }
    }

    /// Gives back an admission whose request never got an outcome (the client went away):
    /// a half-open trial frees its slot, so the breaker cannot wait forever for it.
    pub fn abandon(&mut self, admission: Admission) {
        if let (Admission::Trial, State::HalfOpen { trials }) = (admission, self.state) {
            self.state = State::HalfOpen { trials: trials.saturating_sub(1) };
        }
    }

    /// Records the outcome of an admitted request: `true` when it was answered (any status
    /// below 500), `false` on a connect error, timeout or 5xx.
    pub fn record(&mut self, admission: Admission, success: bool, now: Instant) {
        if success {
            self.failures = 0;
            if admission == Admission::Trial || matches!(self.state, State::HalfOpen { .. }) {
                self.state = State::Closed;
            }
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let trial_failed = admission == Admission::Trial;
        if trial_failed || (self.state == State::Closed && self.failures >= self.config.failure_threshold.max(1)) {
            self.state = State::Open { until: now + self.config.reset_timeout };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig { failure_threshold: 3, reset_timeout: Duration::from_secs(30) })
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_it_and_a_success_resets_the_count() {
        let mut b = breaker();
        for _ in 0..2 {
            let a = b.admit(Instant::now());
            b.record(a, false, Instant::now());
        }
        let a = b.admit(Instant::now());
        b.record(a, true, Instant::now());
        for _ in 0..2 {
            let a = b.admit(Instant::now());
            b.record(a, false, Instant::now());
        }
        assert_eq!(b.state(), State::Closed, "2 + 2 failures with a success between are not 3 in a row");
        let a = b.admit(Instant::now());
        b.record(a, false, Instant::now());
        assert!(matches!(b.state(), State::Open { .. }));
        assert!(b.fails_fast(Instant::now()));
        assert_eq!(b.admit(Instant::now()), Admission::Reject(Duration::from_secs(30)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.admit(Instant::now()), Admission::Reject(Duration::from_secs(20)));
    }

    /// A breaker opened by three consecutive failures.
    fn opened() -> Breaker {
        let mut b = breaker();
        for _ in 0..3 {
            let a = b.admit(Instant::now());
            b.record(a, false, Instant::now());
        }
        b
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_reset_timeout_one_trial_decides() {
        let mut b = opened();
        tokio::time::advance(Duration::from_secs(30)).await;
        let trial = b.admit(Instant::now());
        assert_eq!(trial, Admission::Trial);
        assert_eq!(b.state().gauge(), 2);
        assert!(
            b.fails_fast(Instant::now()) && matches!(b.admit(Instant::now()), Admission::Reject(_)),
            "one trial at a time"
        );
        b.record(trial, false, Instant::now());
        assert!(matches!(b.state(), State::Open { .. }), "a failed trial opens it again");
        tokio::time::advance(Duration::from_secs(30)).await;
        let trial = b.admit(Instant::now());
        b.record(trial, true, Instant::now());
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.admit(Instant::now()), Admission::Pass);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_trial_frees_its_slot() {
        let mut b = opened();
        tokio::time::advance(Duration::from_secs(30)).await;
        let trial = b.admit(Instant::now());
        b.abandon(trial);
        assert_eq!(b.admit(Instant::now()), Admission::Trial, "another request may try");
    }
}
