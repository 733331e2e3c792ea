//! The health check: negotiate a revision like the official clients' automatic mode, read
//! the server's identity and tools, and remember per endpoint what worked.
//!
//! Negotiation over streamable HTTP (newest first):
//! 1. `server/discover` at 2026-07-28 (stateless). A result naming 2026-07-28 settles it;
//!    `-32022` whose `supported` list holds no revision this client speaks fails the check;
//!    any other answer (an HTTP 4xx, a JSON-RPC error, a result without a stateless
//!    revision) falls back to the handshake. No answer at all (connection, timeout) fails
//!    the check: an outage is not a revision verdict.
//! 2. `initialize` offering 2025-11-25; a server refusing the offer (`-32022`, `-32602`,
//!    HTTP 4xx) is offered 2025-06-18, then 2025-03-26.
//!
//! Servers configured with the HTTP+SSE transport speak 2024-11-05 over it.
//!
//! What worked is remembered per URL, so a steady check costs one round trip where the
//! revision allows it: a stateless server with tools gets `tools/list` alone (its identity
//! comes from the result's `_meta` stamp), a handshake server gets `initialize` at the
//! revision it chose. An answer that says the revision no longer fits (HTTP 4xx,
//! `-32022`, `-32601`, …) forgets it and negotiates again in the same check.
//!
//! Only `tools/list` when the server advertises the tools capability; without it the
//! server is healthy with zero tools.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::Implementation;
use serde_json::{Value, json};

use super::jsonrpc::{self, Revision};
use super::transport::{Http, Legacy, Resolver, Streamable, to_uri};
use super::{MAX_TOOL_NAME_LEN, MAX_TOOL_PAGES, MAX_TOOLS, McpError, Transport, quote};

/// Most endpoints remembered; past it the memory starts over.
const MAX_REMEMBERED: usize = 4096;

/// Who the server says it is (`serverInfo`), bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `name`.
    pub name: String,
    /// `version`, when given.
    pub version: Option<String>,
}

impl ServerInfo {
    /// Reads an rmcp `Implementation` (or a looser object with at least a name).
    fn read(value: &Value) -> Option<ServerInfo> {
        if let Ok(info) = serde_json::from_value::<Implementation>(value.clone()) {
            return Some(ServerInfo { name: quote(&info.name), version: Some(quote(&info.version)) });
        }
        let name = value.get("name").and_then(Value::as_str)?;
        Some(ServerInfo { name: quote(name), version: value.get("version").and_then(Value::as_str).map(quote) })
    }
}

/// What a passed check learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The negotiated revision.
    pub protocol_version: Revision,
    /// The server's identity, when it gave one.
    pub server_info: Option<ServerInfo>,
    /// Whether the server advertised tools (and `tools/list` was asked).
    pub tools_listed: bool,
    /// Every tool name, in the server's order (at most [`MAX_TOOLS`]).
    pub tools: Vec<String>,
}

/// What worked last time for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// 2026-07-28: whether it has tools, and who it said it was.
    Stateless { revision: Revision, tools: bool, server_info: Option<ServerInfo> },
    /// A handshake revision the server chose.
    Handshake(Revision),
}

/// An MCP client for health checks; cheap to clone (connections and memory are shared).
#[derive(Clone)]
pub struct McpClient {
    http: Http,
    known: Arc<Mutex<HashMap<String, Known>>>,
}

impl McpClient {
    /// A client using `tls` for https endpoints.
    pub fn new(tls: rustls::ClientConfig) -> Self {
        Self::with_host_overrides(tls, [])
    }

    /// A client trusting the system's root certificates, with the caller's crypto provider.
    /// Without any roots (a minimal image) https checks fail with a certificate error; plain
    /// http still works.
    pub fn with_native_roots(provider: Arc<rustls::crypto::CryptoProvider>) -> Result<Self, McpError> {
        use hyper_rustls::ConfigBuilderExt;
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| McpError::Tls(e.to_string()))?;
        let config = match builder.clone().with_native_roots() {
            Ok(builder) => builder.with_no_client_auth(),
            Err(e) => {
                tracing::warn!(error = %e, "no system root certificates: https health checks will fail");
                builder.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth()
            }
        };
        Ok(McpClient::new(config))
    }

    /// A client that connects to the given addresses for these host names instead of asking
    /// DNS (TLS still verifies the name), as `curl --resolve`; tests point names at 127.0.0.1.
    pub fn with_host_overrides(
        tls: rustls::ClientConfig,
        overrides: impl IntoIterator<Item = (String, IpAddr)>,
    ) -> Self {
        McpClient { http: Http::new(tls, Resolver::new(overrides)), known: Arc::default() }
    }

    /// The revision remembered for `url`, if a check passed there.
    pub fn remembered(&self, url: &str) -> Option<Revision> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).get(url).map(|known| match known {
            Known::Stateless { revision, .. } => *revision,
            Known::Handshake(revision) => *revision,
        })
    }

    fn remember(&self, url: &str, known: Known) {
        let mut map = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_REMEMBERED && !map.contains_key(url) {
            map.clear();
        }
        map.insert(url.to_string(), known);
    }

    fn forget(&self, url: &str) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).remove(url);
    }

    /// Runs one health check against `url` within `timeout`.
    pub async fn check(&self, url: &str, transport: Transport, timeout: Duration) -> Result<HealthReport, McpError> {
        let base = url::Url::parse(url).map_err(|e| McpError::InvalidUrl(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || !base.has_host() {
            return Err(McpError::InvalidUrl("use an http or https URL with a host".into()));
        }
        let check = async {
            match transport {
                Transport::Sse => self.legacy(&base).await,
                Transport::StreamableHttp => self.streamable(url, &base).await,
            }
        };
        tokio::time::timeout(timeout, check).await.map_err(|_| McpError::Timeout(timeout))?
    }

    async fn streamable(&self, url: &str, base: &url::Url) -> Result<HealthReport, McpError> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner()).get(url).cloned();
        if let Some(known) = known {
            let steady = match &known {
                Known::Stateless { revision, tools: true, server_info } => {
                    self.stateless_tools(base, *revision, server_info.clone()).await
                }
                Known::Stateless { revision, tools: false, .. } => self.stateless(url, base, *revision).await,
                Known::Handshake(revision) => self.handshake(url, base, *revision).await,
            };
            match steady {
                Err(error) if error.wrong_revision() => {
                    tracing::debug!(%error, "the remembered MCP revision no longer fits: negotiating again");
                    self.forget(url);
                }
                other => return other,
            }
        }
        self.negotiate(url, base).await
    }

    async fn negotiate(&self, url: &str, base: &url::Url) -> Result<HealthReport, McpError> {
        let newest = Revision::STATELESS[0];
        match self.stateless(url, base, newest).await {
            Ok(report) => return Ok(report),
            Err(error) if error.unreachable() => return Err(error),
            Err(McpError::Rpc { code: jsonrpc::UNSUPPORTED_PROTOCOL_VERSION, supported, method, message, status })
                if !supported.is_empty() && supported.iter().all(|v| Revision::parse(v).is_none()) =>
            {
                return Err(McpError::Rpc {
                    method,
                    code: jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
                    message,
                    status,
                    supported,
                });
            }
            Err(error) => tracing::debug!(%error, "no stateless MCP revision: trying the handshake"),
        }
        let mut last = None;
        for revision in Revision::HANDSHAKE {
            match self.handshake(url, base, revision).await {
                Ok(report) => return Ok(report),
                Err(error) if refuses_offer(&error) => last = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last.unwrap_or(McpError::Protocol { method: "initialize", detail: "no revision offered".into() }))
    }

    /// `server/discover`, then the tools when advertised.
    async fn stateless(&self, url: &str, base: &url::Url, revision: Revision) -> Result<HealthReport, McpError> {
        const DISCOVER: &str = "server/discover";
        let mut conversation = Streamable::stateless(self.http.clone(), to_uri(base)?, revision);
        let result = conversation.call(1, DISCOVER, json!({})).await?;
        let supported = result
            .get("supportedVersions")
            .and_then(Value::as_array)
            .ok_or(McpError::Protocol { method: DISCOVER, detail: "the result has no supportedVersions".into() })?;
        if !supported.iter().any(|v| v.as_str() == Some(revision.as_str())) {
            return Err(McpError::Protocol {
                method: DISCOVER,
                detail: format!("the server does not list {revision} in supportedVersions"),
            });
        }
        let tools = advertises_tools(&result);
        let server_info = stamped_server_info(&result);
        let report = if tools {
            let mut report = list_tools(&mut conversation, revision, 2).await?;
            report.server_info = report.server_info.or(server_info);
            report
        } else {
            HealthReport { protocol_version: revision, server_info, tools_listed: false, tools: Vec::new() }
        };
        let known = Known::Stateless { revision, tools, server_info: report.server_info.clone() };
        self.remember(url, known);
        Ok(report)
    }

    /// The steady state of a stateless server with tools: `tools/list` alone.
    async fn stateless_tools(
        &self,
        base: &url::Url,
        revision: Revision,
        remembered: Option<ServerInfo>,
    ) -> Result<HealthReport, McpError> {
        let mut conversation = Streamable::stateless(self.http.clone(), to_uri(base)?, revision);
        let mut report = list_tools(&mut conversation, revision, 1).await?;
        report.server_info = report.server_info.or(remembered);
        Ok(report)
    }

    /// `initialize` offering `offer`, `notifications/initialized`, then the tools when
    /// advertised. The session is ended however this returns.
    async fn handshake(&self, url: &str, base: &url::Url, offer: Revision) -> Result<HealthReport, McpError> {
        let mut session = Streamable::handshake(self.http.clone(), to_uri(base)?);
        let init = session.call(1, "initialize", jsonrpc::initialize_params(offer)).await?;
        let (revision, server_info) = read_initialize(&init, &Revision::HANDSHAKE)?;
        session.set_protocol(revision.as_str(), "initialize")?;
        session.notify("notifications/initialized").await?;
        let report = if advertises_tools(&init) {
            let mut pages = ToolPages::default();
            while let Some(params) = pages.next_params()? {
                let id = 2 + pages.pages as u64;
                let result = session.call(id, "tools/list", params).await?;
                pages.read(&result)?;
            }
            HealthReport { protocol_version: revision, server_info, tools_listed: true, tools: pages.tools }
        } else {
            HealthReport { protocol_version: revision, server_info, tools_listed: false, tools: Vec::new() }
        };
        self.remember(url, Known::Handshake(revision));
        Ok(report)
    }

    /// 2024-11-05 over the HTTP+SSE transport; the stream is dropped however this returns.
    async fn legacy(&self, base: &url::Url) -> Result<HealthReport, McpError> {
        let mut session = Legacy::open(self.http.clone(), base).await?;
        let offer = Revision::V2024_11_05;
        let init = session.call(1, "initialize", jsonrpc::initialize_params(offer)).await?;
        let spoken = [offer, Revision::V2025_03_26, Revision::V2025_06_18, Revision::V2025_11_25];
        let (revision, server_info) = read_initialize(&init, &spoken)?;
        session.notify("notifications/initialized").await?;
        if !advertises_tools(&init) {
            return Ok(HealthReport {
                protocol_version: revision,
                server_info,
                tools_listed: false,
                tools: Vec::new(),
            });
        }
        let mut pages = ToolPages::default();
        while let Some(params) = pages.next_params()? {
            let id = 2 + pages.pages as u64;
            let result = session.call(id, "tools/list", params).await?;
            pages.read(&result)?;
        }
        Ok(HealthReport { protocol_version: revision, server_info, tools_listed: true, tools: pages.tools })
    }
}

/// True when an `initialize` failure refuses the offered revision (worth offering an older one).
fn refuses_offer(error: &McpError) -> bool {
    match error {
        McpError::Rpc { code, .. } => [jsonrpc::UNSUPPORTED_PROTOCOL_VERSION, jsonrpc::INVALID_PARAMS].contains(code),
        McpError::Status { status, .. } => *status == 400,
        _ => false,
    }
}

/// Every `tools/list` page of a stateless server; ids start at `first_id`.
async fn list_tools(
    conversation: &mut Streamable,
    revision: Revision,
    first_id: u64,
) -> Result<HealthReport, McpError> {
    let mut pages = ToolPages::default();
    let mut server_info = None;
    while let Some(params) = pages.next_params()? {
        let id = first_id + pages.pages as u64;
        let result = conversation.call(id, "tools/list", params).await?;
        server_info = server_info.or_else(|| stamped_server_info(&result));
        pages.read(&result)?;
    }
    Ok(HealthReport { protocol_version: revision, server_info, tools_listed: true, tools: pages.tools })
}

fn advertises_tools(result: &Value) -> bool {
    result.pointer("/capabilities/tools").is_some_and(|tools| !tools.is_null())
}

fn stamped_server_info(result: &Value) -> Option<ServerInfo> {
    result.get("_meta").and_then(|meta| meta.get(jsonrpc::SERVER_INFO_META)).and_then(ServerInfo::read)
}

/// The revision the server chose in `initialize` (one of `spoken`) and its identity.
fn read_initialize(result: &Value, spoken: &[Revision]) -> Result<(Revision, Option<ServerInfo>), McpError> {
    let method = "initialize";
    let version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or(McpError::Protocol { method, detail: "the result has no protocolVersion".into() })?;
    let revision = Revision::parse(version).filter(|r| spoken.contains(r)).ok_or_else(|| McpError::Protocol {
        method,
        detail: format!(
            "the server chose protocol version {:?}, which this client does not speak here",
            quote(version)
        ),
    })?;
    Ok((revision, result.get("serverInfo").and_then(ServerInfo::read)))
}

/// Follows `tools/list` pages and collects the names.
#[derive(Default)]
struct ToolPages {
    tools: Vec<String>,
    cursor: Option<String>,
    pages: usize,
    done: bool,
}

impl ToolPages {
    /// Parameters of the next request, or `None` when every page is read.
    fn next_params(&self) -> Result<Option<Value>, McpError> {
        if self.done {
            return Ok(None);
        }
        if self.pages >= MAX_TOOL_PAGES {
            return Err(McpError::Protocol {
                method: "tools/list",
                detail: format!("more than {MAX_TOOL_PAGES} pages of tools"),
            });
        }
        Ok(Some(match &self.cursor {
            Some(cursor) => json!({"cursor": cursor}),
            None => json!({}),
        }))
    }

    fn read(&mut self, result: &Value) -> Result<(), McpError> {
        self.pages += 1;
        let tools = result
            .get("tools")
            .and_then(Value::as_array)
            .ok_or(McpError::Protocol { method: "tools/list", detail: "the result has no tools array".into() })?;
        let names = tools
            .iter()
            .filter_map(|tool| tool.get("name").and_then(Value::as_str))
            .filter(|name| !name.is_empty() && name.len() <= MAX_TOOL_NAME_LEN);
        for name in names {
            if self.tools.len() < MAX_TOOLS {
                self.tools.push(name.to_string());
            }
        }
        self.cursor = result.get("nextCursor").and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_string);
        self.done = self.cursor.is_none();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_pages_follow_cursors_and_skip_bad_names() {
        let mut pages = ToolPages::default();
        assert_eq!(pages.next_params().unwrap(), Some(json!({})));
        let long = "n".repeat(MAX_TOOL_NAME_LEN + 1);
        pages
            .read(&json!({"tools": [{"name": "a"}, {"name": ""}, {"name": long}, {"title": "x"}], "nextCursor": "c1"}))
            .unwrap();
        assert_eq!(pages.next_params().unwrap(), Some(json!({"cursor": "c1"})));
        pages.read(&json!({"tools": [{"name": "b"}]})).unwrap();
        assert_eq!(pages.next_params().unwrap(), None);
        assert_eq!(pages.tools, vec!["a".to_string(), "b".to_string()]);
        assert!(ToolPages::default().read(&json!({"tool": []})).is_err());
    }

    #[test]
    fn endless_pagination_is_cut_off() {
        let mut pages = ToolPages::default();
        for _ in 0..MAX_TOOL_PAGES {
            pages.next_params().unwrap();
            pages.read(&json!({"tools": [], "nextCursor": "again"})).unwrap();
        }
        assert!(pages.next_params().is_err());
    }

    #[test]
    fn initialize_results_name_a_spoken_revision() {
        let result = json!({"protocolVersion": "2025-06-18", "capabilities": {},
            "serverInfo": {"name": "srv", "version": "1.2.3"}});
        let (revision, info) = read_initialize(&result, &Revision::HANDSHAKE).unwrap();
        assert_eq!(revision, Revision::V2025_06_18);
        assert_eq!(info, Some(ServerInfo { name: "srv".into(), version: Some("1.2.3".into()) }));
        assert!(!advertises_tools(&result));
        let stateless = json!({"protocolVersion": "2026-07-28"});
        assert!(read_initialize(&stateless, &Revision::HANDSHAKE).is_err(), "not a handshake revision");
        let nameless = json!({"protocolVersion": "2025-11-25", "serverInfo": {"version": "1"}});
        assert_eq!(read_initialize(&nameless, &Revision::HANDSHAKE).unwrap().1, None);
    }

    #[test]
    fn identities_are_read_loosely_and_bounded() {
        let long = "n".repeat(1000);
        let info = ServerInfo::read(&json!({"name": long})).unwrap();
        assert_eq!((info.name.chars().count(), info.version), (super::super::MAX_QUOTED + 1, None));
        let stamped = json!({"_meta": {(jsonrpc::SERVER_INFO_META): {"name": "s", "version": "2"}}});
        assert_eq!(stamped_server_info(&stamped).map(|i| i.name), Some("s".into()));
        assert!(advertises_tools(&json!({"capabilities": {"tools": {}}})));
    }

    #[test]
    fn only_refusals_of_the_offer_try_an_older_revision() {
        let rpc = |code| McpError::Rpc {
            method: "initialize",
            code,
            message: String::new(),
            status: None,
            supported: vec![],
        };
        assert!(refuses_offer(&rpc(jsonrpc::UNSUPPORTED_PROTOCOL_VERSION)));
        assert!(!refuses_offer(&rpc(-32603)));
        assert!(refuses_offer(&McpError::Status { method: "initialize", status: 400, detail: String::new() }));
        assert!(!refuses_offer(&McpError::Status { method: "initialize", status: 500, detail: String::new() }));
        assert!(!refuses_offer(&McpError::Timeout(Duration::from_secs(1))));
    }
}
