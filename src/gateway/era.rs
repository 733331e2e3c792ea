//! Which protocol era a POST belongs to, and whether its MCP headers agree with its body.
//!
//! 2026-07-28 (modern, stateless): the request names its revision in
//! `params._meta["io.modelcontextprotocol/protocolVersion"]` and repeats it in
//! `MCP-Protocol-Version`, with the method in `Mcp-Method` and, for `tools/call`,
//! `prompts/get`, `resources/read` and `tasks/*`, the target in `Mcp-Name`. The gateway routes
//! on those headers' meaning, so a body that says otherwise is refused (400, -32020), as the
//! official SDKs refuse it. Earlier revisions (sessions) are recognised by the lack of a claim.

use base64::Engine as _;
use serde_json::Value;

use super::jsonrpc::{HEADER_MISMATCH, INVALID_PARAMS, Message};
use crate::mcp::jsonrpc::NAME_BEARING_METHODS;

pub use crate::mcp::jsonrpc::{
    METHOD_HEADER, NAME_HEADER, PROTOCOL_VERSION_HEADER, PROTOCOL_VERSION_META as PROTOCOL_VERSION_META_KEY,
    SESSION_HEADER,
};
/// The first stateless revision; revisions are ISO dates, so later ones sort after it.
pub const FIRST_MODERN_REVISION: &str = "2026-07-28";

const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";

/// The era of one POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2026-07-28 or later: routed on its own.
    Modern,
    /// 2025-03-26 / 2025-06-18 / 2025-11-25: belongs to a session (or opens one).
    Session,
}

/// The MCP request headers of one POST, trimmed.
#[derive(Debug, Clone, Copy, Default)]
pub struct McpHeaders<'a> {
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<&'a str>,
    /// `Mcp-Method`.
    pub method: Option<&'a str>,
    /// `Mcp-Name`.
    pub name: Option<&'a str>,
}

/// A refused POST: HTTP 400 with this JSON-RPC code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The JSON-RPC error code.
    pub code: i64,
    /// What disagrees.
    pub message: String,
}

fn mismatch(message: String) -> Refusal {
    Refusal { code: HEADER_MISMATCH, message: format!("Bad Request: the request headers and body disagree: {message}") }
}

/// Whether a revision belongs to the stateless era.
pub fn is_modern(revision: &str) -> bool {
    revision >= FIRST_MODERN_REVISION
}

/// The body field `Mcp-Name` mirrors for a method.
pub fn name_field(method: &str) -> Option<&'static str> {
    NAME_BEARING_METHODS.iter().find(|(m, _)| *m == method).map(|(_, field)| *field)
}

/// Decodes an `Mcp-Name` value: plain, or `=?base64?…?=` (UTF-8). `None` if the Base64 is bad.
pub fn decode_header_value(value: &str) -> Option<String> {
    match value.strip_prefix(BASE64_PREFIX).and_then(|rest| rest.strip_suffix(BASE64_SUFFIX)) {
        None => Some(value.to_string()),
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
            String::from_utf8(bytes).ok()
        }
    }
}

/// The claim `params._meta[protocolVersion]`: absent → `None`; present → `Some(version or None)`.
fn claim(params: Option<&Value>) -> Option<Option<&str>> {
    let meta = params?.get("_meta")?.as_object()?;
    meta.get(PROTOCOL_VERSION_META_KEY).map(Value::as_str)
}

/// Classifies a decoded POST and checks that its MCP headers agree with its body.
pub fn classify(message: &Message, headers: McpHeaders<'_>) -> Result<Era, Refusal> {
    let header_modern = headers.protocol_version.is_some_and(is_modern);
    let Some(method) = message.method() else {
        return Ok(if header_modern { Era::Modern } else { Era::Session });
    };
    let claimed = match claim(message.params()) {
        None => None,
        Some(Some(version)) => Some(version),
        Some(None) => {
            return Err(Refusal {
                code: INVALID_PARAMS,
                message: format!("Invalid params: _meta.{PROTOCOL_VERSION_META_KEY} must be a string"),
            });
        }
    };
    if let (Some(header), Some(claimed)) = (headers.protocol_version, claimed)
        && header != claimed
    {
        return Err(mismatch(format!(
            "the body names protocol version {claimed} but the MCP-Protocol-Version header names {header}"
        )));
    }
    let modern = match claimed {
        Some(version) => is_modern(version),
        None if method == "initialize" && header_modern => {
            return Err(mismatch("an initialize request was sent with a modern MCP-Protocol-Version header".into()));
        }
        None if header_modern && matches!(message, Message::Request { .. }) => {
            return Err(Refusal {
                code: INVALID_PARAMS,
                message: format!(
                    "Invalid params: the MCP-Protocol-Version header names a stateless revision but the request \
                     has no _meta.{PROTOCOL_VERSION_META_KEY}"
                ),
            });
        }
        None => header_modern,
    };
    if !modern {
        return Ok(Era::Session);
    }
    if let Some(header) = headers.method
        && header != method
    {
        return Err(mismatch(format!("the body names method {method} but the Mcp-Method header names {header}")));
    }
    if !matches!(message, Message::Request { .. }) {
        return Ok(Era::Modern);
    }
    if headers.protocol_version.is_none() {
        return Err(mismatch("the required MCP-Protocol-Version header is absent".into()));
    }
    if headers.method.is_none() {
        return Err(mismatch(format!("the body names method {method} but the required Mcp-Method header is absent")));
    }
    let Some(field) = name_field(method) else { return Ok(Era::Modern) };
    let body = message.param_str(field);
    match (headers.name, body) {
        (None, None) => Ok(Era::Modern),
        (None, Some(body)) => Err(mismatch(format!(
            "the body carries params.{field}=\"{body}\" but the required Mcp-Name header is absent"
        ))),
        (Some(header), body) => match decode_header_value(header) {
            None => Err(mismatch("the Mcp-Name header carries an invalid Base64 value".into())),
            Some(decoded) if body.is_some_and(|body| body != decoded) => Err(mismatch(format!(
                "the body carries params.{field}=\"{}\" but the Mcp-Name header names \"{decoded}\"",
                body.unwrap_or_default()
            ))),
            Some(_) => Ok(Era::Modern),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::gateway::jsonrpc::decode;

    const V: &str = FIRST_MODERN_REVISION;

    fn modern_call(tool: &str) -> Message {
        let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name": tool, "_meta": {PROTOCOL_VERSION_META_KEY: V}}});
        decode(body.to_string().as_bytes()).unwrap()
    }

    fn headers<'a>(version: Option<&'a str>, method: Option<&'a str>, name: Option<&'a str>) -> McpHeaders<'a> {
        McpHeaders { protocol_version: version, method, name }
    }

    #[test]
    fn agreeing_modern_headers_are_stateless() {
        let call = modern_call("echo");
        assert_eq!(classify(&call, headers(Some(V), Some("tools/call"), Some("echo"))), Ok(Era::Modern));
        assert_eq!(
            classify(&call, headers(Some(V), Some("tools/call"), Some("=?base64?ZWNobw==?="))),
            Ok(Era::Modern),
            "Base64 form of echo"
        );
    }

    #[test]
    fn disagreeing_or_missing_modern_headers_are_refused() {
        let call = modern_call("echo");
        for (h, what) in [
            (headers(Some("2026-09-01"), Some("tools/call"), Some("echo")), "version"),
            (headers(Some(V), Some("tools/list"), Some("echo")), "method"),
            (headers(Some(V), Some("tools/call"), Some("delete_all")), "name"),
            (headers(Some(V), Some("tools/call"), Some("=?base64?!!?=")), "bad base64"),
            (headers(None, Some("tools/call"), Some("echo")), "no version"),
            (headers(Some(V), None, Some("echo")), "no method"),
            (headers(Some(V), Some("tools/call"), None), "no name"),
        ] {
            let refusal = classify(&call, h).expect_err(what);
            assert_eq!(refusal.code, HEADER_MISMATCH, "{what}");
        }
    }

    #[test]
    fn session_requests_are_recognised_and_modern_headers_without_claim_refused() {
        let init =
            decode(br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#)
                .unwrap();
        assert_eq!(classify(&init, headers(None, None, None)), Ok(Era::Session));
        assert_eq!(classify(&init, headers(Some(V), None, None)).unwrap_err().code, HEADER_MISMATCH);
        let list = decode(br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#).unwrap();
        assert_eq!(classify(&list, headers(Some("2025-06-18"), None, None)), Ok(Era::Session));
        assert_eq!(classify(&list, headers(Some(V), Some("tools/list"), None)).unwrap_err().code, INVALID_PARAMS);
        let bad_claim =
            decode(br#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":1}}}"#)
                .unwrap();
        assert_eq!(classify(&bad_claim, headers(None, None, None)).unwrap_err().code, INVALID_PARAMS);
    }
}
