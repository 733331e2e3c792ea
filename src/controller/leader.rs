//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: the holder
//! renews the Lease every retry period; a candidate takes it over when the holder released
//! it or when the Lease record has not changed for a whole lease duration (measured on the
//! candidate's own clock, so clock skew between nodes does not matter). Every write carries
//! the resourceVersion it read, so two candidates can never both win.
//!
//! Only leadership is decided here; what a leader does is the caller's business.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

/// Default name of the Lease.
pub const DEFAULT_LEASE_NAME: &str = "mcp-hangar-controller";

/// Durations of the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How long a leader keeps leading while renewals fail; shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate should do with the Lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Take it: it is free or expired.
    Acquire,
    /// Renew it: we hold it.
    Renew,
    /// Leave it: someone else holds it.
    Follow {
        /// The current holder.
        holder: String,
    },
}

/// Decides from the Lease's holder and how long its record has been unchanged.
pub fn decide(
    holder: Option<&str>,
    identity: &str,
    unchanged_for: Duration,
    lease_duration: Duration,
) -> LeaseDecision {
    match holder {
        None | Some("") => LeaseDecision::Acquire,
        Some(holder) if holder == identity => LeaseDecision::Renew,
        Some(_) if unchanged_for >= lease_duration => LeaseDecision::Acquire,
        Some(holder) => LeaseDecision::Follow { holder: holder.to_string() },
    }
}

/// This process's identity: `POD_NAME`, or the host name and process id.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "mcp-hangar".into());
    format!("{host}_{}", std::process::id())
}

/// One candidate in the election of one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    observed: Option<(String, Instant)>,
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl LeaderElector {
    /// A candidate for the Lease `name` of `api`'s namespace.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: LeaseTiming) -> Self {
        LeaderElector { api, name: name.to_string(), identity: identity.to_string(), timing, observed: None }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One attempt: true when this candidate holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds(self.timing.lease_duration)),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(false),
                Err(e) => Err(e),
            };
        };
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let since = match &self.observed {
            Some((seen, since)) if *seen == version => *since,
            _ => Instant::now(),
        };
        self.observed = Some((version, since));
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.timing.lease_duration);
        match decide(spec.holder_identity.as_deref(), &self.identity, since.elapsed(), duration) {
            LeaseDecision::Follow { .. } => return Ok(false),
            LeaseDecision::Acquire => {
                spec.acquire_time = Some(now.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            }
            LeaseDecision::Renew => {}
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(seconds(self.timing.lease_duration));
        spec.renew_time = Some(now);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(written) => {
                let version = written.metadata.resource_version.unwrap_or_default();
                self.observed = Some((version, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up so another candidate can take it at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| ())
    }

    /// Campaigns until `shutdown` turns true, publishing leadership on `leading`; releases the
    /// Lease on the way out.
    pub async fn run(mut self, leading: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
        let mut renewed: Option<Instant> = None;
        while !*shutdown.borrow() {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    renewed = Some(Instant::now());
                    if !*leading.borrow() {
                        tracing::info!(identity = %self.identity, lease = %self.name, "became the leader");
                        leading.send_replace(true);
                    }
                }
                Ok(false) => {
                    renewed = None;
                    if *leading.borrow() {
                        tracing::warn!(identity = %self.identity, "lost the lease to another candidate");
                        leading.send_replace(false);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "lease request failed");
                    let expired = renewed.is_none_or(|at| at.elapsed() >= self.timing.renew_deadline);
                    if *leading.borrow() && expired {
                        tracing::warn!(identity = %self.identity, "could not renew the lease in time: no longer the leader");
                        leading.send_replace(false);
                        renewed = None;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.timing.retry_period) => {}
                _ = shutdown.changed() => {}
            }
        }
        if *leading.borrow() {
            leading.send_replace(false);
            match self.release().await {
                Ok(()) => tracing::info!(lease = %self.name, "released the lease"),
                Err(e) => tracing::warn!(error = %e, "could not release the lease"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    #[test]
    fn decisions() {
        let table = [
            (None, Duration::ZERO, LeaseDecision::Acquire),
            (Some(""), Duration::ZERO, LeaseDecision::Acquire),
            (Some("me"), Duration::from_secs(100), LeaseDecision::Renew),
            (Some("other"), Duration::from_secs(14), LeaseDecision::Follow { holder: "other".into() }),
            (Some("other"), Duration::from_secs(15), LeaseDecision::Acquire),
        ];
        for (holder, unchanged, expected) in table {
            assert_eq!(decide(holder, "me", unchanged, LEASE), expected, "{holder:?}");
        }
    }

    #[test]
    fn renew_deadline_is_shorter_than_the_lease() {
        let timing = LeaseTiming::default();
        assert!(timing.renew_deadline < timing.lease_duration);
        assert!(timing.retry_period < timing.renew_deadline);
    }

    #[test]
    fn identity_is_never_empty() {
        assert!(!default_identity().is_empty());
    }
}
