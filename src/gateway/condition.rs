//! The breaker's state on the MCPServer: condition [`CONDITION_TYPE`], written with server-side
//! apply on `mcpservers/status` under field manager [`FIELD_MANAGER`]. `status.conditions` is a
//! list-map keyed by `type`, so the gateway owns this one entry and the controller its own.
//!
//! Written on transitions only (closed ⇄ open; half-open counts as open), never per request,
//! and at most once per [`MIN_WRITE_INTERVAL`] per server: a transition inside the interval is
//! written when it ends, the latest state winning, and nothing when it is back to what was
//! written. Each replica has its own breaker; the condition says which replica changed it last.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::crd::{API_VERSION, MCPServer};

/// The condition's type.
pub const CONDITION_TYPE: &str = "CircuitBreakerOpen";
/// The gateway's field manager.
pub const FIELD_MANAGER: &str = "mcp-hangar-gateway";
/// Shortest time between two writes of one server's condition.
pub const MIN_WRITE_INTERVAL: Duration = Duration::from_secs(5);

/// Reasons of the condition.
pub mod reason {
    /// The breaker opened.
    pub const FAILURE_THRESHOLD_REACHED: &str = "FailureThresholdReached";
    /// A trial request succeeded and closed it.
    pub const TRIAL_SUCCEEDED: &str = "TrialSucceeded";
}

/// One breaker transition as the MCPServer shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerCondition {
    /// Open (or half-open) rather than closed.
    pub open: bool,
    /// One of [`reason`].
    pub reason: &'static str,
    /// Which replica, and when it tries again.
    pub message: String,
    /// When the breaker changed.
    pub at: Timestamp,
}

impl BreakerCondition {
    /// The breaker of `replica` opened; trials begin after `retry_in`.
    pub fn opened(replica: &str, retry_in: Duration, at: Timestamp) -> BreakerCondition {
        let retry_at = at.checked_add(SignedDuration::try_from(retry_in).unwrap_or(SignedDuration::ZERO)).unwrap_or(at);
        let message = format!(
            "gateway replica {replica}: consecutive connect errors, timeouts or HTTP 5xx reached spec.circuitBreaker.failureThreshold; requests fail fast with 503 until {retry_at}, then one trial request decides"
        );
        BreakerCondition { open: true, reason: reason::FAILURE_THRESHOLD_REACHED, message, at }
    }

    /// The breaker of `replica` closed.
    pub fn closed(replica: &str, at: Timestamp) -> BreakerCondition {
        let message = format!("gateway replica {replica}: a trial request was answered; requests pass again");
        BreakerCondition { open: false, reason: reason::TRIAL_SUCCEEDED, message, at }
    }

    /// As a Kubernetes condition.
    pub fn condition(&self) -> Condition {
        Condition {
            type_: CONDITION_TYPE.to_string(),
            status: if self.open { "True" } else { "False" }.to_string(),
            reason: self.reason.to_string(),
            message: self.message.clone(),
            last_transition_time: Time(self.at),
            observed_generation: None,
        }
    }
}

/// Where conditions are written: the API server, or a recorder in tests.
pub trait ConditionWriter: Send + Sync + 'static {
    /// Writes the condition of MCPServer `namespace/name`.
    fn write<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        condition: &'a BreakerCondition,
    ) -> BoxFuture<'a, Result<(), kube::Error>>;
}

/// Server-side apply of the one condition on `mcpservers/status`.
pub struct KubeWriter {
    client: kube::Client,
}

impl KubeWriter {
    /// A writer through `client`.
    pub fn new(client: kube::Client) -> KubeWriter {
        KubeWriter { client }
    }
}

impl ConditionWriter for KubeWriter {
    fn write<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        condition: &'a BreakerCondition,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(async move {
            let api: Api<MCPServer> = Api::namespaced(self.client.clone(), namespace);
            let patch = json!({
                "apiVersion": API_VERSION,
                "kind": "MCPServer",
                "status": {"conditions": [condition.condition()]},
            });
            api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
            Ok(())
        })
    }
}

type ServerKey = (String, String);

/// Sends breaker transitions to a background writer that rate-limits them per server.
#[derive(Clone)]
pub struct Publisher {
    replica: String,
    sender: mpsc::UnboundedSender<(ServerKey, BreakerCondition)>,
}

impl Publisher {
    /// Starts the writer task; `replica` names this gateway replica in the messages.
    pub fn spawn(writer: Arc<dyn ConditionWriter>, replica: String, interval: Duration) -> Publisher {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(writer, receiver, interval));
        Publisher { replica, sender }
    }

    /// The breaker of `namespace/name` opened (or closed, `retry_in` None).
    pub fn publish(&self, namespace: &str, name: &str, retry_in: Option<Duration>) {
        let now = Timestamp::now();
        let condition = match retry_in {
            Some(retry_in) => BreakerCondition::opened(&self.replica, retry_in, now),
            None => BreakerCondition::closed(&self.replica, now),
        };
        let _ = self.sender.send(((namespace.to_string(), name.to_string()), condition));
    }
}

async fn run(
    writer: Arc<dyn ConditionWriter>,
    mut receiver: mpsc::UnboundedReceiver<(ServerKey, BreakerCondition)>,
    interval: Duration,
) {
    let mut pending: HashMap<ServerKey, BreakerCondition> = HashMap::new();
    let mut attempted: HashMap<ServerKey, Instant> = HashMap::new();
    let mut written: HashMap<ServerKey, bool> = HashMap::new();
    loop {
        let next = pending.keys().filter_map(|key| attempted.get(key).map(|at| *at + interval)).min();
        tokio::select! {
            received = receiver.recv() => match received {
                Some((key, condition)) => {
                    pending.insert(key, condition);
                }
                None => return,
            },
            () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
        }
        let now = Instant::now();
        let due: Vec<ServerKey> =
            pending.keys().filter(|key| attempted.get(*key).is_none_or(|at| now >= *at + interval)).cloned().collect();
        for key in due {
            let Some(condition) = pending.remove(&key) else { continue };
            if written.get(&key) == Some(&condition.open) {
                continue;
            }
            attempted.insert(key.clone(), now);
            match writer.write(&key.0, &key.1, &condition).await {
                Ok(()) => {
                    written.insert(key, condition.open);
                }
                Err(error) => {
                    tracing::warn!(server = %format!("{}/{}", key.0, key.1), %error, "writing the circuit breaker condition");
                    pending.entry(key).or_insert(condition);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Mutex<Vec<(String, bool, Instant)>>,
        fail: Mutex<usize>,
    }

    impl ConditionWriter for Recorder {
        fn write<'a>(
            &'a self,
            _namespace: &'a str,
            name: &'a str,
            condition: &'a BreakerCondition,
        ) -> BoxFuture<'a, Result<(), kube::Error>> {
            Box::pin(async move {
                let mut fail = self.fail.lock().unwrap();
                if *fail > 0 {
                    *fail -= 1;
                    return Err(kube::Error::Service("down".into()));
                }
                self.writes.lock().unwrap().push((name.to_string(), condition.open, Instant::now()));
                Ok(())
            })
        }
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transitions_are_written_at_most_once_per_interval_and_the_latest_wins() {
        let recorder = Arc::new(Recorder::default());
        let publisher = Publisher::spawn(recorder.clone(), "gw-0".into(), MIN_WRITE_INTERVAL);
        let start = Instant::now();
        publisher.publish("ns", "a", Some(Duration::from_secs(30)));
        settle().await;
        assert_eq!(recorder.writes.lock().unwrap().len(), 1, "the first transition is written at once");
        publisher.publish("ns", "a", None);
        publisher.publish("ns", "a", Some(Duration::from_secs(30)));
        publisher.publish("ns", "b", Some(Duration::from_secs(30)));
        settle().await;
        tokio::time::sleep(MIN_WRITE_INTERVAL * 2).await;
        let writes = recorder.writes.lock().unwrap().clone();
        let names: Vec<(&str, bool)> = writes.iter().map(|(n, open, _)| (n.as_str(), *open)).collect();
        assert_eq!(names, [("a", true), ("b", true)], "a closed and opened again inside the interval: nothing new");
        publisher.publish("ns", "a", None);
        publisher.publish("ns", "a", Some(Duration::from_secs(1)));
        publisher.publish("ns", "a", None);
        settle().await;
        tokio::time::sleep(MIN_WRITE_INTERVAL).await;
        let writes = recorder.writes.lock().unwrap().clone();
        assert_eq!(writes.len(), 3);
        assert_eq!((writes[2].0.as_str(), writes[2].1), ("a", false));
        assert!(writes[2].2 >= start + MIN_WRITE_INTERVAL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_tried_again_after_the_interval() {
        let recorder = Arc::new(Recorder::default());
        *recorder.fail.lock().unwrap() = 1;
        let publisher = Publisher::spawn(recorder.clone(), "gw-0".into(), MIN_WRITE_INTERVAL);
        publisher.publish("ns", "a", Some(Duration::from_secs(30)));
        settle().await;
        assert!(recorder.writes.lock().unwrap().is_empty());
        tokio::time::sleep(MIN_WRITE_INTERVAL + Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(recorder.writes.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_condition_names_the_replica_and_the_next_try() {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let open = BreakerCondition::opened("gw-7", Duration::from_secs(30), at).condition();
        assert_eq!((open.type_.as_str(), open.status.as_str()), ("CircuitBreakerOpen", "True"));
        assert!(open.message.contains("gw-7") && open.message.contains("2027-01-15T08:00:30Z"), "{}", open.message);
        let closed = BreakerCondition::closed("gw-7", at).condition();
        assert_eq!((closed.status.as_str(), closed.reason.as_str()), ("False", "TrialSucceeded"));
    }
}
