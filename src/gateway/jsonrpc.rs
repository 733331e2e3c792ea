//! The server side of JSON-RPC 2.0 the gateway needs: decode one client message, build error
//! answers. The shared vocabulary (codes, header names) is `crate::mcp::jsonrpc`'s.

use serde_json::{Map, Value, json};

pub use crate::mcp::jsonrpc::{HEADER_MISMATCH, INVALID_PARAMS, INVALID_REQUEST};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Unknown or ended session, as the MCP SDKs answer it.
pub const SESSION_NOT_FOUND: i64 = -32001;
/// The server's `tools.rateLimit` is used up.
pub const RATE_LIMITED: i64 = -32029;
/// The upstream server cannot be reached now (circuit open, connect error, timeout).
pub const UNAVAILABLE: i64 = -32030;

/// One decoded JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A call that expects an answer.
    Request {
        /// Its id (a string or a number).
        id: Value,
        /// The method.
        method: String,
        /// The params, when given.
        params: Option<Value>,
    },
    /// A call without an answer.
    Notification {
        /// The method.
        method: String,
        /// The params, when given.
        params: Option<Value>,
    },
    /// An answer (a client answering a server's request).
    Response {
        /// The id of the request it answers.
        id: Value,
    },
}

/// Why a body is not one JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON.
    #[error("Parse error: the body is not JSON")]
    Json,
    /// A JSON array: batches are refused (removed from MCP in 2025-06-18).
    #[error("Invalid Request: JSON-RPC batches are not accepted by the gateway")]
    Batch,
    /// JSON, but not a JSON-RPC 2.0 message.
    #[error("Invalid Request: {0}")]
    Shape(&'static str),
}

impl DecodeError {
    /// The JSON-RPC error code of this failure.
    pub fn code(&self) -> i64 {
        match self {
            DecodeError::Json => PARSE_ERROR,
            DecodeError::Batch | DecodeError::Shape(_) => INVALID_REQUEST,
        }
    }
}

impl Message {
    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response { .. } => None,
        }
    }

    /// The params of a request or notification.
    pub fn params(&self) -> Option<&Value> {
        match self {
            Message::Request { params, .. } | Message::Notification { params, .. } => params.as_ref(),
            Message::Response { .. } => None,
        }
    }

    /// The id of a request.
    pub fn request_id(&self) -> Option<&Value> {
        match self {
            Message::Request { id, .. } => Some(id),
            _ => None,
        }
    }

    /// A string parameter, e.g. `name` of `tools/call`.
    pub fn param_str(&self, key: &str) -> Option<&str> {
        self.params()?.get(key)?.as_str()
    }
}

/// Decodes one JSON-RPC 2.0 message.
pub fn decode(body: &[u8]) -> Result<Message, DecodeError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| DecodeError::Json)?;
    let mut object = match value {
        Value::Object(object) => object,
        Value::Array(_) => return Err(DecodeError::Batch),
        _ => return Err(DecodeError::Shape("a JSON-RPC message is a JSON object")),
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(DecodeError::Shape("jsonrpc must be \"2.0\""));
    }
    let params = object.remove("params");
    if params.as_ref().is_some_and(|p| !p.is_object() && !p.is_array()) {
        return Err(DecodeError::Shape("params must be an object or an array"));
    }
    let id = object.remove("id");
    if id.as_ref().is_some_and(|id| !id.is_string() && !id.is_number()) {
        return Err(DecodeError::Shape("id must be a string or a number"));
    }
    match (object.remove("method"), id) {
        (Some(Value::String(method)), Some(id)) => Ok(Message::Request { id, method, params }),
        (Some(Value::String(method)), None) => Ok(Message::Notification { method, params }),
        (Some(_), _) => Err(DecodeError::Shape("method must be a string")),
        (None, Some(id)) if object.contains_key("result") || object.contains_key("error") => {
            Ok(Message::Response { id })
        }
        (None, _) => Err(DecodeError::Shape("a message needs a method, or an id with a result or an error")),
    }
}

/// The JSON of an error answer; `id` is null when the request's id is unknown.
pub fn error(id: Option<&Value>, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = Map::new();
    error.insert("code".into(), json!(code));
    error.insert("message".into(), json!(message));
    if let Some(data) = data {
        error.insert("data".into(), data);
    }
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": error})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_notifications_and_responses_decode() {
        let request = decode(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo"}}"#).unwrap();
        assert_eq!(request.method(), Some("tools/call"));
        assert_eq!(request.param_str("name"), Some("echo"));
        assert_eq!(request.request_id(), Some(&json!(7)));
        let note = decode(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(note, Message::Notification { .. }));
        let answer = decode(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(answer, Message::Response { id: json!("a") });
    }

    #[test]
    fn hostile_bodies_are_refused_with_their_code() {
        assert_eq!(decode(b"{nope").unwrap_err().code(), PARSE_ERROR);
        assert_eq!(decode(b"[]").unwrap_err(), DecodeError::Batch);
        for bad in [
            &br#"{"id":1,"method":"x"}"#[..],
            br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            b"42",
        ] {
            assert_eq!(decode(bad).unwrap_err().code(), INVALID_REQUEST, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn errors_carry_the_request_id() {
        let body = error(Some(&json!(3)), INVALID_PARAMS, "Unknown tool: x", None);
        assert_eq!(body, json!({"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"Unknown tool: x"}}));
        assert_eq!(error(None, PARSE_ERROR, "p", Some(json!(1)))["id"], Value::Null);
    }
}
