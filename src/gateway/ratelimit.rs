//! Token buckets for `tools.rateLimit`: `requestsPerMinute` tokens a minute, at most
//! `burstSize` saved up. One bucket per server per gateway replica (see the module docs of
//! [`crate::gateway`] for why the limit is per replica).

use std::time::Duration;

use tokio::time::Instant;

/// A rate: refill per minute and bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per minute.
    pub per_minute: u32,
    /// Most tokens saved up.
    pub burst: u32,
}

/// One token bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: Rate,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> Self {
        Bucket { rate, tokens: f64::from(rate.burst.max(1)), last: now }
    }

    /// The bucket's rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    fn per_second(&self) -> f64 {
        f64::from(self.rate.per_minute.max(1)) / 60.0
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second()).min(f64::from(self.rate.burst.max(1)));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_second()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_calls_wait_for_the_refill() {
        let mut bucket = Bucket::new(Rate { per_minute: 60, burst: 3 }, Instant::now());
        for _ in 0..3 {
            assert_eq!(bucket.take(Instant::now()), Ok(()));
        }
        let wait = bucket.take(Instant::now()).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(bucket.take(Instant::now()).unwrap_err(), Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(bucket.take(Instant::now()), Ok(()));
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..3 {
            assert_eq!(bucket.take(Instant::now()), Ok(()));
        }
        assert!(bucket.take(Instant::now()).is_err(), "saved tokens stop at the burst size");
    }
}
