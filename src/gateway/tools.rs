//! The tool policy (`spec.tools.allowList`/`denyList`, [`ToolPolicy`]) on decoded JSON-RPC:
//! which tools a `tools/list` answer shows and which `tools/call`s are forwarded.

use serde_json::Value;

use super::jsonrpc::{self, INVALID_PARAMS};
pub use crate::policy::tools::ToolPolicy;

/// The policy applied to JSON-RPC answers (the rule itself is in [`crate::policy::tools`]).
impl ToolPolicy {
    /// Removes the tools not allowed from a `tools/list` answer to request `id`; true if changed.
    /// Other messages (notifications, other answers, errors) are left alone.
    pub fn filter_answer(&self, message: &mut Value, id: &Value) -> bool {
        if message.get("id") != Some(id) {
            return false;
        }
        let Some(tools) = message.pointer_mut("/result/tools").and_then(Value::as_array_mut) else { return false };
        let before = tools.len();
        tools.retain(|tool| tool.get("name").and_then(Value::as_str).is_some_and(|name| self.allows(name)));
        tools.len() != before
    }
}

/// What the gateway answers to a `tools/call` of a tool that is not allowed: the error an unknown
/// tool gets from a server (-32602, "Unknown tool"), so the tool's existence does not leak.
pub fn unknown_tool(id: &Value, tool: &str) -> Value {
    jsonrpc::error(Some(id), INVALID_PARAMS, &format!("Unknown tool: {tool}"), None)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy(names: &[&str]) -> ToolPolicy {
        ToolPolicy { allow: Some(names.iter().map(|n| n.to_string()).collect()), ..Default::default() }
    }

    #[test]
    fn only_allowed_tools_stay_in_the_answer_with_the_cursor_kept() {
        let mut answer = json!({"jsonrpc":"2.0","id":4,"result":{
            "tools":[{"name":"echo"},{"name":"delete_all"},{"nameless":true},{"name":"add"}],
            "nextCursor":"p2"}});
        assert!(policy(&["echo", "add"]).filter_answer(&mut answer, &json!(4)));
        assert_eq!(answer["result"]["tools"], json!([{"name":"echo"},{"name":"add"}]));
        assert_eq!(answer["result"]["nextCursor"], "p2", "every page is filtered; paging goes on");
    }

    #[test]
    fn other_messages_and_open_policies_are_left_alone() {
        let mut other = json!({"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"x"}]}});
        assert!(!policy(&["echo"]).filter_answer(&mut other, &json!(4)), "another request's answer");
        assert!(!ToolPolicy::default().filter_answer(&mut other, &json!(5)));
        assert!(ToolPolicy::default().allows("anything"));
        assert!(!policy(&["echo"]).allows("Echo"), "names are case-sensitive");
        assert_eq!(unknown_tool(&json!(9), "x")["error"]["code"], -32602);
    }
}
