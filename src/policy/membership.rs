//! Group membership and member health: the one definition the group controller reports and
//! the gateway routes by.
//!
//! A member of an `MCPServerGroup` is an `MCPServer` in the group's namespace whose labels the
//! group's `spec.selector` matches and that is not being deleted. A member is healthy when its
//! state is Ready and, with `healthPolicy.unhealthyThreshold` set, its consecutive failed health
//! checks are below that threshold. The group is Ready when at least one member is healthy and
//! healthy/members reaches `healthPolicy.minHealthyPercentage` (default 100).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use super::selector::{self, Labels};
use crate::crd::{MCPServer, MCPServerGroup, ServerState};

/// Operators a selector requirement may use.
const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// Share of members that must be healthy when the group does not say.
pub const DEFAULT_MIN_HEALTHY_PERCENTAGE: i32 = 100;

/// Why a group's members cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The group has no selector, or an empty one (which would match everything).
    #[error("spec.selector is empty: set matchLabels or matchExpressions to choose the members")]
    EmptySelector,
    /// The selector cannot be evaluated.
    #[error("spec.selector is invalid: {0}")]
    InvalidSelector(String),
}

/// Decides which servers belong to one group.
#[derive(Debug, Clone)]
pub struct Membership {
    namespace: Option<String>,
    selector: LabelSelector,
}

impl Membership {
    /// The membership rule of `group`.
    pub fn of(group: &MCPServerGroup) -> Result<Membership, MembershipError> {
        let selector = group.spec.selector.clone().ok_or(MembershipError::EmptySelector)?;
        let labels = selector.match_labels.as_ref().map_or(0, |m| m.len());
        let expressions = selector.match_expressions.as_deref().unwrap_or_default();
        if labels + expressions.len() == 0 {
            return Err(MembershipError::EmptySelector);
        }
        if let Some(bad) = expressions.iter().find(|e| !OPERATORS.contains(&e.operator.as_str())) {
            return Err(MembershipError::InvalidSelector(format!(
                "operator {:?} of key {:?} is not In, NotIn, Exists or DoesNotExist",
                bad.operator, bad.key
            )));
        }
        Ok(Membership { namespace: group.namespace(), selector })
    }

    /// Whether `server` is a member.
    pub fn includes(&self, server: &Candidate<'_>) -> bool {
        !server.deleting
            && server.namespace == self.namespace.as_deref()
            && selector::matches(&self.selector, server.labels)
    }
}

/// What membership reads of an MCPServer.
pub struct Candidate<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: Option<&'a str>,
    /// Its labels.
    pub labels: &'a dyn Labels,
    /// Whether its deletion has begun.
    pub deleting: bool,
    /// The state its status reports.
    pub state: Option<ServerState>,
    /// The consecutive failed health checks its status reports.
    pub consecutive_failures: Option<i32>,
    /// The URL its status reports.
    pub url: Option<&'a str>,
}

/// The labels of a server that has none.
static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl<'a> From<&'a MCPServer> for Candidate<'a> {
    fn from(server: &'a MCPServer) -> Self {
        let status = server.status.as_ref();
        Candidate {
            name: server.metadata.name.as_deref().unwrap_or_default(),
            namespace: server.metadata.namespace.as_deref(),
            labels: server.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
            deleting: server.metadata.deletion_timestamp.is_some(),
            state: status.and_then(|s| s.state),
            consecutive_failures: status.and_then(|s| s.consecutive_failures),
            url: status.and_then(|s| s.url.as_deref()),
        }
    }
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Name of the MCPServer.
    pub name: String,
    /// Its reported state, if any.
    pub state: Option<ServerState>,
    /// Whether it counts as healthy (and so may receive calls).
    pub healthy: bool,
    /// The URL its status reports.
    pub url: Option<String>,
}

/// The members of a group and what they add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Every member, sorted by name.
    pub members: Vec<Member>,
    /// The group's `minHealthyPercentage`, defaulted and clamped to 0..=100.
    pub min_healthy_percentage: i32,
}

/// Where a group stands against its health policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupHealth {
    /// The selector matches no server.
    NoMembers,
    /// Enough members are healthy.
    Healthy {
        /// Healthy members.
        healthy: usize,
        /// All members.
        total: usize,
    },
    /// Too few members are healthy.
    BelowThreshold {
        /// Healthy members.
        healthy: usize,
        /// All members.
        total: usize,
        /// Healthy members the policy needs.
        required: usize,
    },
}

impl GroupHealth {
    /// A one-line explanation for a condition message.
    pub fn message(&self, percentage: i32) -> String {
        match *self {
            GroupHealth::NoMembers => "the selector matches no MCPServer in this namespace".to_string(),
            GroupHealth::Healthy { healthy, total } => {
                format!("{healthy} of {total} members healthy (at least {percentage}% needed)")
            }
            GroupHealth::BelowThreshold { healthy, total, required } => format!(
                "{healthy} of {total} members healthy, {required} needed for {percentage}%: {} more must become healthy",
                required - healthy
            ),
        }
    }
}

impl MemberView {
    /// The members that may receive calls, in name order.
    pub fn healthy(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.healthy)
    }

    /// Number of healthy members.
    pub fn healthy_count(&self) -> usize {
        self.healthy().count()
    }

    /// Healthy members needed: `ceil(members × percentage / 100)`, and never fewer than one.
    pub fn required(&self) -> usize {
        let total = self.members.len();
        let percentage = usize::try_from(self.min_healthy_percentage).unwrap_or(0);
        (total * percentage).div_ceil(100).max(1)
    }

    /// The group's health against its policy.
    pub fn health(&self) -> GroupHealth {
        let total = self.members.len();
        if total == 0 {
            return GroupHealth::NoMembers;
        }
        let (healthy, required) = (self.healthy_count(), self.required());
        if healthy >= required {
            GroupHealth::Healthy { healthy, total }
        } else {
            GroupHealth::BelowThreshold { healthy, total, required }
        }
    }
}

/// Whether a server counts as healthy under the group's `unhealthyThreshold`.
fn is_healthy(server: &Candidate<'_>, unhealthy_threshold: Option<i32>) -> bool {
    let failing = unhealthy_threshold.is_some_and(|t| server.consecutive_failures.unwrap_or(0) >= t.max(1));
    server.state == Some(ServerState::Ready) && !failing
}

/// The members of `group` among `servers` (any namespace; others are skipped), sorted by name.
pub fn members<'a, S: Into<Candidate<'a>>>(
    group: &MCPServerGroup,
    servers: impl IntoIterator<Item = S>,
) -> Result<MemberView, MembershipError> {
    let membership = Membership::of(group)?;
    let policy = group.spec.health_policy.as_ref();
    let threshold = policy.and_then(|p| p.unhealthy_threshold);
    let mut members: Vec<Member> = servers
        .into_iter()
        .map(Into::into)
        .filter(|s| membership.includes(s))
        .map(|s| Member {
            name: s.name.to_owned(),
            state: s.state,
            healthy: is_healthy(&s, threshold),
            url: s.url.map(str::to_owned),
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let min_healthy_percentage =
        policy.and_then(|p| p.min_healthy_percentage).unwrap_or(DEFAULT_MIN_HEALTHY_PERCENTAGE).clamp(0, 100);
    Ok(MemberView { members, min_healthy_percentage })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{HealthPolicy, MCPServerStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, Time};

    fn group(labels: &[(&str, &str)], percentage: Option<i32>) -> MCPServerGroup {
        let mut group = MCPServerGroup::new("g", Default::default());
        group.metadata.namespace = Some("ns".into());
        group.spec.selector = Some(LabelSelector {
            match_labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            match_expressions: None,
        });
        group.spec.health_policy = Some(HealthPolicy { min_healthy_percentage: percentage, unhealthy_threshold: None });
        group
    }

    fn server(name: &str, ns: &str, labels: &[(&str, &str)], state: Option<ServerState>) -> MCPServer {
        let mut server = MCPServer::new(name, Default::default());
        server.metadata.namespace = Some(ns.into());
        server.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        server.status = Some(MCPServerStatus { state, ..Default::default() });
        server
    }

    const DB: (&str, &str) = ("mcp-hangar.io/category", "database");

    #[test]
    fn members_are_matching_servers_of_the_namespace_in_name_order() {
        let servers = [
            server("zeta", "ns", &[DB], Some(ServerState::Ready)),
            server("alpha", "ns", &[DB, ("tier", "replica")], Some(ServerState::Degraded)),
            server("other-ns", "elsewhere", &[DB], Some(ServerState::Ready)),
            server("web", "ns", &[("mcp-hangar.io/category", "web")], Some(ServerState::Ready)),
            server("unlabelled", "ns", &[], None),
        ];
        let view = members(&group(&[DB], Some(50)), &servers).unwrap();
        let names: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert_eq!(view.healthy().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["zeta"]);
        assert_eq!(view.health(), GroupHealth::Healthy { healthy: 1, total: 2 });
    }

    #[test]
    fn servers_being_deleted_are_not_members() {
        let mut leaving = server("leaving", "ns", &[DB], Some(ServerState::Ready));
        leaving.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let view = members(&group(&[DB], None), [&leaving]).unwrap();
        assert_eq!(view.health(), GroupHealth::NoMembers);
    }

    #[test]
    fn threshold_rounds_up_and_needs_one_healthy_member() {
        // (members, healthy, percentage, ready?)
        let table = [
            (2, 1, 50, true),
            (3, 1, 50, false),
            (3, 2, 50, true),
            (4, 3, 100, false),
            (4, 4, 100, true),
            (3, 0, 0, false),
            (3, 1, 0, true),
            (1, 1, 100, true),
        ];
        for (total, healthy, percentage, ready) in table {
            let servers: Vec<MCPServer> = (0..total)
                .map(|i| {
                    let state = if i < healthy { ServerState::Ready } else { ServerState::Dead };
                    server(&format!("s{i}"), "ns", &[DB], Some(state))
                })
                .collect();
            let view = members(&group(&[DB], Some(percentage)), &servers).unwrap();
            let health = view.health();
            assert_eq!(matches!(health, GroupHealth::Healthy { .. }), ready, "{total} {healthy} {percentage}");
        }
    }

    #[test]
    fn the_message_says_how_many_are_missing() {
        let servers: Vec<MCPServer> = (0..4)
            .map(|i| {
                let state = if i == 0 { ServerState::Ready } else { ServerState::Degraded };
                server(&format!("s{i}"), "ns", &[DB], Some(state))
            })
            .collect();
        let view = members(&group(&[DB], Some(75)), &servers).unwrap();
        let health = view.health();
        assert_eq!(health, GroupHealth::BelowThreshold { healthy: 1, total: 4, required: 3 });
        assert_eq!(
            health.message(view.min_healthy_percentage),
            "1 of 4 members healthy, 3 needed for 75%: 2 more must become healthy"
        );
    }

    #[test]
    fn unset_policy_needs_every_member() {
        let mut g = group(&[DB], None);
        g.spec.health_policy = None;
        let servers =
            [server("a", "ns", &[DB], Some(ServerState::Ready)), server("b", "ns", &[DB], Some(ServerState::Cold))];
        let view = members(&g, &servers).unwrap();
        assert_eq!(view.min_healthy_percentage, 100);
        assert_eq!(view.health(), GroupHealth::BelowThreshold { healthy: 1, total: 2, required: 2 });
    }

    #[test]
    fn unhealthy_threshold_counts_failing_ready_members_out() {
        let mut g = group(&[DB], Some(100));
        g.spec.health_policy.as_mut().unwrap().unhealthy_threshold = Some(2);
        let mut flaky = server("flaky", "ns", &[DB], Some(ServerState::Ready));
        flaky.status.as_mut().unwrap().consecutive_failures = Some(2);
        let mut once = server("once", "ns", &[DB], Some(ServerState::Ready));
        once.status.as_mut().unwrap().consecutive_failures = Some(1);
        let view = members(&g, [&flaky, &once]).unwrap();
        assert_eq!(view.healthy().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["once"]);
    }

    #[test]
    fn empty_or_invalid_selectors_are_errors() {
        let mut g = group(&[], None);
        assert_eq!(members(&g, [] as [&MCPServer; 0]).unwrap_err(), MembershipError::EmptySelector);
        g.spec.selector = None;
        assert_eq!(members(&g, [] as [&MCPServer; 0]).unwrap_err(), MembershipError::EmptySelector);
        g.spec.selector = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: "Near".into(),
                values: None,
            }]),
        });
        assert!(matches!(members(&g, [] as [&MCPServer; 0]).unwrap_err(), MembershipError::InvalidSelector(_)));
    }

    #[test]
    fn expressions_select_too() {
        let mut g = group(&[], None);
        g.spec.selector = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["primary".into(), "replica".into()]),
            }]),
        });
        let servers = [
            server("p", "ns", &[("tier", "primary")], Some(ServerState::Ready)),
            server("x", "ns", &[("tier", "cache")], Some(ServerState::Ready)),
        ];
        let view = members(&g, &servers).unwrap();
        assert_eq!(view.members.len(), 1);
    }
}
