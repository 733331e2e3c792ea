//! Demand for a scale-to-zero server (`spec.replicas: 0`): the gateway renews one Lease per
//! server in the operator's namespace when requests arrive, and the controller runs one
//! replica while the last request is younger than `idleTTL`, then scales back to zero.
//!
//! Why a Lease: the gateway needs no write access to Deployments or to the users' MCPServers
//! (only to Leases in the operator's own namespace), a Lease is Kubernetes' heartbeat object
//! (`renewTime` is the last request), and the controller already watches what it reconciles.
//! Pure: naming, reading and building the Lease; the I/O is the gateway's and the controller's.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

/// `app.kubernetes.io/component` of every demand Lease; the controller watches this label.
pub const DEMAND_COMPONENT: &str = "demand";
/// Label of a demand Lease naming the server's namespace.
pub const SERVER_NAMESPACE_LABEL: &str = "mcp-hangar.io/server-namespace";
/// Label of a demand Lease naming the server.
pub const SERVER_NAME_LABEL: &str = "mcp-hangar.io/server-name";
/// The label selector of demand Leases.
pub const DEMAND_SELECTOR: &str = "app.kubernetes.io/component=demand";

/// Longest time a gateway replica goes without renewing the Lease of a server it serves.
pub const MAX_RENEW_INTERVAL: Duration = Duration::from_secs(30);

/// How often a gateway replica renews the Lease of a server that keeps getting requests: a
/// quarter of `idleTTL`, at most [`MAX_RENEW_INTERVAL`], so a busy server never reaches its
/// idle time while one write per interval is all the apiserver sees.
pub fn renew_interval(idle_ttl: Duration) -> Duration {
    (idle_ttl / 4).min(MAX_RENEW_INTERVAL)
}

/// The name of a server's demand Lease. Namespaces and server names are DNS labels (no
/// dots), so the dotted name is unambiguous.
pub fn lease_name(namespace: &str, name: &str) -> String {
    format!("mcp-demand.{namespace}.{name}")
}

/// The server (namespace, name) a demand Lease speaks for.
pub fn server_of(lease: &Lease) -> Option<(String, String)> {
    let labels = lease.metadata.labels.as_ref()?;
    Some((labels.get(SERVER_NAMESPACE_LABEL)?.clone(), labels.get(SERVER_NAME_LABEL)?.clone()))
}

/// Until when the last request recorded in `lease` keeps a scale-to-zero server awake;
/// `None` when no request was ever recorded.
pub fn awake_until(lease: Option<&Lease>, idle_ttl: Duration) -> Option<Timestamp> {
    let last = lease?.spec.as_ref()?.renew_time.as_ref()?.0;
    Some(last.saturating_add(idle_ttl).unwrap_or(Timestamp::MAX))
}

/// The Lease that records a request to a server at `now`, as `holder` (the gateway replica)
/// applies it.
pub fn demand_lease(operator_namespace: &str, namespace: &str, name: &str, holder: &str, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(namespace, name)),
            namespace: Some(operator_namespace.to_string()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/component".to_string(), DEMAND_COMPONENT.to_string()),
                (SERVER_NAMESPACE_LABEL.to_string(), namespace.to_string()),
                (SERVER_NAME_LABEL.to_string(), name.to_string()),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_string()),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_demand_lease_names_its_server_and_keeps_it_awake_for_idle_ttl() {
        let now = Timestamp::from_second(1_750_000_000).unwrap();
        let lease = demand_lease("mcp-system", "team-a", "fetch", "gateway-0", now);
        assert_eq!(lease.metadata.name.as_deref(), Some("mcp-demand.team-a.fetch"));
        assert_eq!(server_of(&lease), Some(("team-a".into(), "fetch".into())));
        let until = awake_until(Some(&lease), Duration::from_secs(300)).unwrap();
        assert_eq!(until.as_second() - now.as_second(), 300);
        assert_eq!(awake_until(None, Duration::from_secs(300)), None);
        assert_eq!(awake_until(Some(&Lease::default()), Duration::from_secs(300)), None);
        assert_ne!(lease_name("a-b", "c"), lease_name("a", "b-c"));
    }

    #[test]
    fn a_lease_is_renewed_four_times_per_idle_ttl_at_most_every_30s() {
        assert_eq!(renew_interval(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(renew_interval(Duration::from_secs(300)), Duration::from_secs(30));
        assert_eq!(renew_interval(Duration::ZERO), Duration::ZERO);
    }
}
