//! MCP protocol client: the health check of every MCP revision, and the wire types the
//! gateway shares.
//!
//! - [`jsonrpc`]: JSON-RPC messages, revisions, header names and `_meta` keys.
//! - [`sse`]: the `text/event-stream` parser.
//! - `transport`: HTTP exchanges (streamable HTTP and the older HTTP+SSE transport).
//! - [`client`]: revision negotiation and the health report.
//!
//! Independent of the rest of the crate: the caller passes the TLS configuration in and maps
//! its own transport setting to [`Transport`].
//!
//! Protocol objects come from the official Rust SDK (`rmcp::model`, default features off:
//! no transport, server or macros). Measured cost: `cargo build -p rmcp` took 15 s on the
//! shared 2 cores, with about a dozen crates new to the tree on Linux (chrono, sha2 and its
//! digest stack, unicode-normalization). Its strict result structs are
//! not used to read answers; see [`jsonrpc`].

pub mod client;
pub mod jsonrpc;
pub mod sse;
mod transport;

use std::time::Duration;

pub use client::{HealthReport, McpClient, ServerInfo};
pub use jsonrpc::Revision;
pub use rmcp::model::{ClientCapabilities, ErrorData, Implementation, ProtocolVersion, ServerCapabilities};
pub use transport::Resolver;

/// Largest answer read from a server, in bytes.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// Largest error body quoted from a non-2xx answer, in bytes.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Most `tools/list` pages followed.
pub const MAX_TOOL_PAGES: usize = 50;
/// Most tool names kept from one server.
pub const MAX_TOOLS: usize = 1024;
/// Longest tool name kept; longer names break the MCP naming rules and are skipped.
pub const MAX_TOOL_NAME_LEN: usize = 128;
/// Longest server-provided text quoted in an error or report, in characters.
pub const MAX_QUOTED: usize = 200;

/// How a server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Streamable HTTP: every message is a POST (2025-03-26 and later).
    #[default]
    StreamableHttp,
    /// The HTTP+SSE transport of 2024-11-05: a GET event stream plus POSTed messages.
    Sse,
}

/// Why an MCP exchange failed. The text is fit for conditions and events; every quoted
/// server text is bounded by [`MAX_QUOTED`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpError {
    /// The URL cannot be used.
    #[error("invalid endpoint URL: {0}")]
    InvalidUrl(String),
    /// TLS could not be configured.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// No connection, or the connection broke.
    #[error("{method}: request failed: {detail}")]
    Connection {
        /// The MCP method (or step) being sent.
        method: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The server answered with an unexpected HTTP status and no JSON-RPC error.
    #[error("{method}: HTTP {status}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Status {
        /// The MCP method being sent.
        method: &'static str,
        /// The HTTP status code.
        status: u16,
        /// The start of the body, when there is one.
        detail: String,
    },
    /// The answer is not what the MCP specification says.
    #[error("{method}: {detail}")]
    Protocol {
        /// The MCP method being sent.
        method: &'static str,
        /// What is wrong with the answer.
        detail: String,
    },
    /// The server answered with a JSON-RPC error (with any HTTP status).
    #[error("{method}: JSON-RPC error {code}: {message}{}{}",
        status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
        if supported.is_empty() { String::new() } else { format!(" (supported: {})", supported.join(", ")) })]
    Rpc {
        /// The MCP method being sent.
        method: &'static str,
        /// JSON-RPC error code.
        code: i64,
        /// The server's message (shortened).
        message: String,
        /// The HTTP status, when not 200.
        status: Option<u16>,
        /// `data.supported` of an unsupported-revision error: the revisions the server serves.
        supported: Vec<String>,
    },
    /// The whole check took longer than its timeout.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
}

impl McpError {
    /// True when the server was not reached or did not answer in time: no revision verdict.
    pub fn unreachable(&self) -> bool {
        matches!(self, McpError::InvalidUrl(_) | McpError::Connection { .. } | McpError::Timeout(_))
    }

    /// True when the answer says this revision or transport is not what the server speaks:
    /// an HTTP 4xx other than authentication, timeout and rate limiting, or a JSON-RPC error
    /// about the request's shape. `-32000` is what the TypeScript SDK answers a request
    /// without a session ("Bad Request: No valid session ID provided").
    pub fn wrong_revision(&self) -> bool {
        match self {
            McpError::Status { status, .. } => {
                (400..500).contains(status) && ![401, 403, 407, 408, 429].contains(status)
            }
            McpError::Rpc { code, status, .. } => {
                !status.is_some_and(|s| [401, 403, 407, 408, 429].contains(&s))
                    && [
                        jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
                        jsonrpc::HEADER_MISMATCH,
                        jsonrpc::INVALID_REQUEST,
                        jsonrpc::METHOD_NOT_FOUND,
                        jsonrpc::INVALID_PARAMS,
                        -32000,
                    ]
                    .contains(code)
            }
            _ => false,
        }
    }
}

/// At most [`MAX_QUOTED`] characters of `text`, with `…` when cut.
pub(crate) fn quote(text: &str) -> String {
    let mut quoted: String = text.chars().take(MAX_QUOTED).collect();
    if quoted.len() < text.len() {
        quoted.push('…');
    }
    quoted
}

/// An error and its sources, bounded.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    quote(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_verdicts_come_from_answers_about_the_request_only() {
        let status = |status| McpError::Status { method: "tools/list", status, detail: String::new() };
        let rpc = |code, status| McpError::Rpc {
            method: "tools/list",
            code,
            message: String::new(),
            status,
            supported: vec![],
        };
        assert!(status(400).wrong_revision() && status(404).wrong_revision() && status(405).wrong_revision());
        assert!(!status(401).wrong_revision() && !status(429).wrong_revision() && !status(500).wrong_revision());
        assert!(rpc(jsonrpc::UNSUPPORTED_PROTOCOL_VERSION, Some(400)).wrong_revision());
        assert!(rpc(jsonrpc::METHOD_NOT_FOUND, None).wrong_revision());
        assert!(!rpc(-32603, None).wrong_revision(), "a failing handler is not a revision problem");
        assert!(!rpc(jsonrpc::INVALID_REQUEST, Some(429)).wrong_revision());
        assert!(!McpError::Timeout(Duration::from_secs(1)).wrong_revision());
        assert!(McpError::Timeout(Duration::from_secs(1)).unreachable());
    }
}
