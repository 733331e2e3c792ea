//! Which tools of an MCPServer are exposed: `spec.tools.allowList` and `spec.tools.denyList`.
//! One rule for the controller (`status.tools`) and the gateway (`tools/list`, `tools/call`).

use std::collections::BTreeSet;

use crate::crd::ToolsConfig;

/// The tool policy of one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolPolicy {
    /// `None`: every tool; `Some`: only these.
    pub allow: Option<BTreeSet<String>>,
    /// Never these, whatever `allow` says.
    pub deny: BTreeSet<String>,
}

impl ToolPolicy {
    /// The policy `spec.tools` states.
    pub fn of(tools: Option<&ToolsConfig>) -> Self {
        let names = |list: Option<&Vec<String>>| list.map(|l| l.iter().cloned().collect::<BTreeSet<_>>());
        ToolPolicy {
            allow: names(tools.and_then(|t| t.allow_list.as_ref())),
            deny: names(tools.and_then(|t| t.deny_list.as_ref())).unwrap_or_default(),
        }
    }

    /// Whether a tool may be listed and called (names are case-sensitive).
    pub fn allows(&self, tool: &str) -> bool {
        !self.deny.contains(tool) && self.allow.as_ref().is_none_or(|allow| allow.contains(tool))
    }

    /// Whether any tool is held back, so that answers need filtering at all.
    pub fn filters(&self) -> bool {
        self.allow.is_some() || !self.deny.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(allow: Option<&[&str]>, deny: Option<&[&str]>) -> ToolsConfig {
        let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        ToolsConfig { allow_list: allow.map(list), deny_list: deny.map(list), rate_limit: None }
    }

    #[test]
    fn the_deny_list_wins_over_the_allow_list() {
        let both = ToolPolicy::of(Some(&tools(Some(&["echo", "drop"]), Some(&["drop"]))));
        assert!(both.allows("echo") && !both.allows("drop") && !both.allows("other"));
        let deny = ToolPolicy::of(Some(&tools(None, Some(&["drop"]))));
        assert!(deny.allows("echo") && !deny.allows("drop") && deny.filters());
        assert!(!deny.allows("drop") && deny.allows("Drop"), "names are case-sensitive");
    }

    #[test]
    fn no_lists_expose_everything_and_filter_nothing() {
        for policy in [ToolPolicy::of(None), ToolPolicy::of(Some(&tools(None, None)))] {
            assert!(policy.allows("anything") && !policy.filters());
        }
        let empty_allow = ToolPolicy::of(Some(&tools(Some(&[]), None)));
        assert!(!empty_allow.allows("echo"), "an empty allow list exposes nothing");
    }
}
