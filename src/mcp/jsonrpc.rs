//! JSON-RPC 2.0 messages and the MCP wire vocabulary shared by the health check and the
//! gateway: revisions, header names, `_meta` keys, error codes.
//!
//! Protocol objects (`Implementation`, `ClientCapabilities`, `ErrorData`, `ProtocolVersion`)
//! are the official Rust SDK's (`rmcp::model`, re-exported from [`crate::mcp`]). Whole
//! results are read leniently from `serde_json::Value` instead of rmcp's strict result
//! structs: a health check must report "tool 7 has no inputSchema" as a skipped tool, not
//! fail a server on one sloppy entry, and keep memory bounded while reading.

use base64::Engine;
use rmcp::model::{ClientCapabilities, ErrorData, Implementation, ProtocolVersion};
use serde_json::{Value, json};

/// `MCP-Protocol-Version` header.
pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";
/// `Mcp-Session-Id` header (handshake revisions over streamable HTTP).
pub const SESSION_HEADER: &str = "mcp-session-id";
/// `Mcp-Method` header (2026-07-28): the JSON-RPC method of the body.
pub const METHOD_HEADER: &str = "mcp-method";
/// `Mcp-Name` header (2026-07-28): the tool, prompt or resource a request names.
pub const NAME_HEADER: &str = "mcp-name";
/// `params._meta` key naming the revision of a stateless request.
pub const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
/// `params._meta` key carrying the client capabilities of a stateless request.
pub const CLIENT_CAPABILITIES_META: &str = "io.modelcontextprotocol/clientCapabilities";
/// `params._meta` key carrying the client implementation of a stateless request.
pub const CLIENT_INFO_META: &str = "io.modelcontextprotocol/clientInfo";
/// `result._meta` key where 2026-07-28 servers stamp their implementation.
pub const SERVER_INFO_META: &str = "io.modelcontextprotocol/serverInfo";

/// JSON-RPC error: the request named a revision the server does not serve; `data.supported`
/// lists the ones it does.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// JSON-RPC error: the routing headers disagree with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// JSON-RPC error: method not found.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC error: invalid request.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC error: invalid params.
pub const INVALID_PARAMS: i64 = -32602;

/// The methods whose `Mcp-Name` header mirrors a parameter, and that parameter.
pub const NAME_BEARING_METHODS: [(&str, &str); 3] =
    [("tools/call", "name"), ("prompts/get", "name"), ("resources/read", "uri")];

/// An MCP protocol revision this client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Revision {
    /// HTTP+SSE transport era; handshake.
    V2024_11_05,
    /// Streamable HTTP; handshake.
    V2025_03_26,
    /// Handshake, `MCP-Protocol-Version` header required.
    V2025_06_18,
    /// The last handshake revision.
    V2025_11_25,
    /// Stateless: no handshake, every request carries its revision in `params._meta`.
    V2026_07_28,
}

impl Revision {
    /// Handshake revisions spoken over streamable HTTP, newest first.
    pub const HANDSHAKE: [Revision; 3] = [Revision::V2025_11_25, Revision::V2025_06_18, Revision::V2025_03_26];
    /// Stateless revisions, newest first.
    pub const STATELESS: [Revision; 1] = [Revision::V2026_07_28];

    /// The rmcp protocol version.
    pub fn protocol_version(self) -> ProtocolVersion {
        match self {
            Revision::V2024_11_05 => ProtocolVersion::V_2024_11_05,
            Revision::V2025_03_26 => ProtocolVersion::V_2025_03_26,
            Revision::V2025_06_18 => ProtocolVersion::V_2025_06_18,
            Revision::V2025_11_25 => ProtocolVersion::V_2025_11_25,
            Revision::V2026_07_28 => ProtocolVersion::V_2026_07_28,
        }
    }

    /// The revision as written on the wire, e.g. `2025-11-25`.
    pub fn as_str(self) -> &'static str {
        match self {
            Revision::V2024_11_05 => "2024-11-05",
            Revision::V2025_03_26 => "2025-03-26",
            Revision::V2025_06_18 => "2025-06-18",
            Revision::V2025_11_25 => "2025-11-25",
            Revision::V2026_07_28 => "2026-07-28",
        }
    }

    /// The revision with that wire name, if this client speaks it.
    pub fn parse(text: &str) -> Option<Revision> {
        [
            Revision::V2024_11_05,
            Revision::V2025_03_26,
            Revision::V2025_06_18,
            Revision::V2025_11_25,
            Revision::V2026_07_28,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }

    /// True for revisions without the `initialize` handshake.
    pub fn is_stateless(self) -> bool {
        self >= Revision::V2026_07_28
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// This client's implementation, as sent in `clientInfo`.
pub fn client_info() -> Implementation {
    Implementation::new("mcp-hangar", env!("CARGO_PKG_VERSION"))
}

/// A JSON-RPC request.
pub fn request(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// A JSON-RPC notification.
pub fn notification(method: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": method})
}

/// `initialize` parameters offering `revision`, with no client capabilities.
pub fn initialize_params(revision: Revision) -> Value {
    json!({
        "protocolVersion": revision.protocol_version(),
        "capabilities": ClientCapabilities::default(),
        "clientInfo": client_info(),
    })
}

/// Adds the per-request envelope of a stateless revision to `params._meta`.
pub fn with_envelope(mut params: Value, revision: Revision) -> Value {
    if !params.is_object() {
        params = json!({});
    }
    let meta = params.as_object_mut().map(|p| p.entry("_meta").or_insert_with(|| json!({})));
    if let Some(Value::Object(meta)) = meta {
        meta.insert(PROTOCOL_VERSION_META.into(), json!(revision.protocol_version()));
        meta.insert(CLIENT_CAPABILITIES_META.into(), json!(ClientCapabilities::default()));
        meta.insert(CLIENT_INFO_META.into(), json!(client_info()));
    }
    params
}

/// The `Mcp-Name` value of a request, for the methods that name something.
pub fn name_header(method: &str, params: &Value) -> Option<String> {
    let (_, key) = NAME_BEARING_METHODS.iter().find(|(m, _)| *m == method)?;
    params.get(key).and_then(Value::as_str).map(encode_header_value)
}

/// A header value as the SDKs write it: printable ASCII without edge spaces verbatim,
/// anything else as `=?base64?…?=`.
pub fn encode_header_value(value: &str) -> String {
    let plain = value.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && value.trim() == value
        && !(value.starts_with("=?base64?") && value.ends_with("?="));
    if plain {
        value.to_string()
    } else {
        format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(value))
    }
}

/// The JSON-RPC answer (result or error) with that id in a message or batch.
pub fn find_answer(value: Value, id: u64) -> Option<Value> {
    match value {
        Value::Array(items) => items.into_iter().find_map(|item| find_answer(item, id)),
        Value::Object(ref map)
            if map.get("id") == Some(&json!(id)) && (map.contains_key("result") || map.contains_key("error")) =>
        {
            Some(value)
        }
        _ => None,
    }
}

/// The error object of an answer, read with rmcp's `ErrorData` (or leniently when a server
/// bends its shape).
pub fn error_of(answer: &Value) -> Option<ErrorData> {
    let error = answer.get("error")?;
    serde_json::from_value::<ErrorData>(error.clone()).ok().or_else(|| {
        let code = error.get("code").and_then(Value::as_i64).and_then(|c| i32::try_from(c).ok()).unwrap_or(0);
        let message = error.get("message").and_then(Value::as_str).unwrap_or("").to_string();
        Some(ErrorData::new(rmcp::model::ErrorCode(code), message, error.get("data").cloned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_found_by_id_in_messages_and_batches() {
        let answer = json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": []}});
        assert_eq!(find_answer(answer.clone(), 2), Some(answer.clone()));
        assert_eq!(find_answer(answer.clone(), 3), None);
        let request = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
        assert_eq!(find_answer(request.clone(), 2), None, "a request is not an answer");
        let batch = json!([request, answer.clone()]);
        assert_eq!(find_answer(batch, 2), Some(answer));
    }

    #[test]
    fn the_envelope_names_revision_capabilities_and_client() {
        let params = with_envelope(json!({"cursor": "c"}), Revision::V2026_07_28);
        assert_eq!(params["cursor"], "c");
        assert_eq!(params["_meta"][PROTOCOL_VERSION_META], "2026-07-28");
        assert_eq!(params["_meta"][CLIENT_CAPABILITIES_META], json!({}));
        assert_eq!(params["_meta"][CLIENT_INFO_META]["name"], "mcp-hangar");
        assert_eq!(with_envelope(Value::Null, Revision::V2026_07_28)["_meta"][PROTOCOL_VERSION_META], "2026-07-28");
    }

    #[test]
    fn name_headers_mirror_the_named_parameter() {
        assert_eq!(name_header("tools/call", &json!({"name": "search"})).as_deref(), Some("search"));
        assert_eq!(name_header("resources/read", &json!({"uri": "file:///a"})).as_deref(), Some("file:///a"));
        assert_eq!(name_header("tools/list", &json!({"name": "x"})), None);
        assert_eq!(encode_header_value("héllo"), "=?base64?aMOpbGxv?=");
        assert_eq!(encode_header_value(" edge"), "=?base64?IGVkZ2U=?=");
    }

    #[test]
    fn revisions_round_trip_and_order() {
        for revision in [Revision::V2024_11_05, Revision::V2025_11_25, Revision::V2026_07_28] {
            assert_eq!(Revision::parse(revision.as_str()), Some(revision));
            assert_eq!(revision.protocol_version().to_string(), revision.as_str());
        }
        assert_eq!(Revision::parse("2099-01-01"), None);
        assert!(Revision::V2026_07_28.is_stateless() && !Revision::V2025_11_25.is_stateless());
    }

    #[test]
    fn errors_are_read_strictly_or_leniently() {
        let strict = error_of(&json!({"error": {"code": -32022, "message": "no", "data": {"supported": ["x"]}}}));
        assert_eq!(strict.map(|e| (e.code.0, e.message.to_string())), Some((-32022, "no".to_string())));
        let bent = error_of(&json!({"error": {"code": "oops"}})).unwrap();
        assert_eq!((bent.code.0, bent.message.as_ref()), (0, ""));
        assert!(error_of(&json!({"result": {}})).is_none());
    }
}
