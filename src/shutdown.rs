//! Graceful shutdown of `serve`: readiness turns false first, every listener and loop is told
//! to stop only after a delay (so that Service endpoints drop the pod before connections are
//! refused), and open connections then finish what they have begun.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::readiness::Readiness;

/// Readiness condition that turns false when the process starts shutting down.
pub const RUNNING_CONDITION: &str = "running";

/// The order to stop, given once to every listener and background loop.
#[derive(Debug)]
pub struct Shutdown {
    order: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// Nothing is stopping yet.
    pub fn new() -> Self {
        Shutdown { order: watch::Sender::new(false) }
    }

    /// Completes once the order to stop is given (or this `Shutdown` is dropped).
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut order = self.order.subscribe();
        async move {
            let _ = order.wait_for(|stop| *stop).await;
        }
    }

    /// True once the order to stop has been given.
    pub fn is_stopping(&self) -> bool {
        *self.order.borrow()
    }

    /// Shuts down in order: readiness false at once, then after `delay` the order to stop.
    pub async fn begin(&self, readiness: &Readiness, delay: Duration) {
        tracing::info!(?delay, "shutting down: readiness is now false");
        readiness.set_unmet(RUNNING_CONDITION, "shutting down");
        tokio::time::sleep(delay).await;
        self.order.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_turns_false_before_the_order_to_stop() {
        let readiness = Readiness::new();
        let shutdown = Shutdown::new();
        let stopped = tokio::spawn(shutdown.stopped());
        let begin = shutdown.begin(&readiness, Duration::from_millis(500));
        tokio::pin!(begin);
        assert!(tokio::time::timeout(Duration::from_millis(100), &mut begin).await.is_err());
        assert_eq!(readiness.unmet(), vec![(RUNNING_CONDITION.to_string(), "shutting down".to_string())]);
        assert!(!shutdown.is_stopping() && !stopped.is_finished());
        begin.await;
        assert!(shutdown.is_stopping());
        stopped.await.unwrap();
    }
}
