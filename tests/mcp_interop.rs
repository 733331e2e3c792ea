//! The health check against real servers built with the official MCP SDKs (TypeScript
//! `@modelcontextprotocol/server` 2.x and `sdk` 1.x, `server-everything`, Python `mcp` 2.3),
//! started on 127.0.0.1 by `tests/support/health_peers.rs`.

#[path = "support/health_peers.rs"]
mod health_peers;
use health_peers as peers;

use std::sync::Arc;
use std::time::Duration;

use mcp_hangar::mcp::{McpClient, McpError, Revision, Transport};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(10);
const HTTP: Transport = Transport::StreamableHttp;
/// How long a closed session may take to disappear on the server.
const SETTLE: Duration = Duration::from_secs(5);

fn client() -> McpClient {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    McpClient::new(tls)
}

/// The requests the TypeScript peers logged for `path`.
fn ts_log(path: &str) -> Vec<Value> {
    let state = peers::typescript().get_json("/state");
    state["log"].as_array().unwrap().iter().filter(|e| e["path"] == path).cloned().collect()
}

fn open_sessions(kind: &str) -> i64 {
    peers::typescript().get_json("/state")["open"][kind].as_i64().unwrap()
}

fn methods(log: &[Value]) -> Vec<String> {
    log.iter().map(|e| e["method"].as_str().unwrap_or(e["http"].as_str().unwrap()).to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2026_only_server_is_checked_without_a_handshake_and_then_in_one_round_trip() {
    let peer = peers::typescript();
    let client = client();
    let url = peer.url("/modern");
    let report = client.check(&url, HTTP, TIMEOUT).await.unwrap();
    assert_eq!(report.protocol_version, Revision::V2026_07_28);
    assert_eq!(report.tools, ["modern-alpha", "modern-beta", "modern-gamma"]);
    let info = report.server_info.clone().unwrap();
    assert_eq!((info.name.as_str(), info.version.as_deref()), ("ts-modern", Some("2.4.0")));
    let log = ts_log("/modern");
    assert_eq!(methods(&log), ["server/discover", "tools/list"]);
    for entry in &log {
        assert_eq!(entry["protocol"], "2026-07-28");
        assert_eq!(entry["mcpMethod"], entry["method"], "Mcp-Method mirrors the body");
    }

    let again = client.check(&url, HTTP, TIMEOUT).await.unwrap();
    assert_eq!(again, report, "the identity comes from the result's _meta stamp");
    assert_eq!(methods(&ts_log("/modern")[2..]), ["tools/list"], "steady state: one round trip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_revision_servers_get_the_newest_revision() {
    let report = client().check(&peers::typescript().url("/dual"), HTTP, TIMEOUT).await.unwrap();
    assert_eq!(report.protocol_version, Revision::V2026_07_28);
    assert_eq!(report.tools, ["dual-one", "dual-two"]);
    assert_eq!(report.server_info.unwrap().name, "ts-dual");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_tool_pages_are_followed_through_next_cursor() {
    let peer = peers::python();
    let report = client().check(&peer.url("/paged/mcp"), HTTP, TIMEOUT).await.unwrap();
    assert_eq!(report.protocol_version, Revision::V2026_07_28);
    let expected: Vec<String> = (0..7).map(|i| format!("py-tool-{i:02}")).collect();
    assert_eq!(report.tools, expected);
    let info = report.server_info.unwrap();
    assert_eq!((info.name.as_str(), info.version.as_deref()), ("py-paged", Some("2.3.0")));
    let log = peer.get_json("/log");
    let asked: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"] == "/paged/mcp")
        .map(|e| e["method"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(asked, ["server/discover", "tools/list", "tools/list", "tools/list"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_tools_capability_is_healthy_with_no_tools() {
    let peer = peers::python();
    let report = client().check(&peer.url("/plain/mcp"), HTTP, TIMEOUT).await.unwrap();
    assert_eq!(report.protocol_version, Revision::V2026_07_28);
    assert!(!report.tools_listed);
    assert!(report.tools.is_empty());
    let log = peer.get_json("/log");
    let asked: Vec<&Value> = log.as_array().unwrap().iter().filter(|e| e["path"] == "/plain/mcp").collect();
    assert!(asked.iter().all(|e| e["method"] != "tools/list"), "{asked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_only_server_falls_back_to_2025_11_25_and_remembers_it() {
    let peer = peers::typescript();
    let client = client();
    let url = peer.url("/handshake");
    let report = client.check(&url, HTTP, TIMEOUT).await.unwrap();
    assert_eq!(report.protocol_version, Revision::V2025_11_25);
    assert_eq!(report.tools, ["hs-a", "hs-b", "hs-c", "hs-d"]);
    assert_eq!(report.server_info.clone().unwrap().name, "ts-handshake");
    let first = ts_log("/handshake");
    assert_eq!(methods(&first)[..4], ["server/discover", "initialize", "notifications/initialized", "tools/list"]);

    let again = client.check(&url, HTTP, TIMEOUT).await.unwrap();
    assert_eq!(again, report);
    let settled = peer.wait_for("/state", SETTLE, |s| s["open"]["handshake"] == 0).await;
    assert_eq!(settled["open"]["handshake"], 0, "every session ended");
    let all = methods(&ts_log("/handshake"));
    assert_eq!(all.iter().filter(|m| *m == "server/discover").count(), 1, "no second probe: {all:?}");
    assert_eq!(all.iter().filter(|m| *m == "DELETE").count(), 2, "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_tool_lists_report_the_servers_error_and_leave_no_session_open() {
    const CHECKS: usize = 5;
    let peer = peers::typescript();
    let client = client();
    let url = peer.url("/handshake-error");
    for _ in 0..CHECKS {
        let error = client.check(&url, HTTP, TIMEOUT).await.unwrap_err();
        match &error {
            McpError::Rpc { method, code, message, .. } => {
                assert_eq!((*method, *code), ("tools/list", -32050));
                assert_eq!(message, "MCP error -32050: tools are on fire", "the SDK prefixes its message");
            }
            other => panic!("expected the server's JSON-RPC error, got {other:?}"),
        }
        assert!(error.to_string().contains("JSON-RPC error -32050: MCP error -32050: tools are on fire"), "{error}");
    }
    let opened = methods(&ts_log("/handshake-error")).iter().filter(|m| *m == "initialize").count();
    assert_eq!(opened, CHECKS, "one session per check");
    let state = peer.wait_for("/state", SETTLE, |s| s["open"]["handshake-error"] == 0).await;
    assert_eq!(state["open"]["handshake-error"], 0, "sessions left open: {state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_tool_lists_time_out_and_leave_no_session_open() {
    const CHECKS: usize = 3;
    let peer = peers::typescript();
    let client = client();
    let url = peer.url("/handshake-hang");
    let timeout = Duration::from_millis(1500);
    for _ in 0..CHECKS {
        let error = client.check(&url, HTTP, timeout).await.unwrap_err();
        assert_eq!(error, McpError::Timeout(timeout));
    }
    let opened = methods(&ts_log("/handshake-hang")).iter().filter(|m| *m == "tools/list").count();
    assert_eq!(opened, CHECKS, "every check reached tools/list in a session");
    let state = peer.wait_for("/state", SETTLE, |s| s["open"]["handshake-hang"] == 0).await;
    assert_eq!(state["open"]["handshake-hang"], 0, "sessions left open: {state}");
    assert_eq!(open_sessions("handshake-hang"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_sse_transport_of_server_everything_is_spoken_and_dropped() {
    let peer = peers::typescript();
    let report = client().check(&peer.url("/sse"), Transport::Sse, TIMEOUT).await.unwrap();
    assert_eq!(report.protocol_version, Revision::V2024_11_05);
    assert_eq!(report.server_info.clone().unwrap().name, "mcp-servers/everything");
    let state = peer.wait_for("/state", SETTLE, |s| s["open"]["sse"] == 0).await;
    assert_eq!(state["open"]["sse"], 0, "the event stream was dropped: {state}");
    let offered: Vec<&str> = state["everythingTools"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(!offered.is_empty());
    assert_eq!(report.tools, offered, "the tools server-everything registered for this session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_2xx_json_rpc_errors_keep_code_message_and_status() {
    let error = client().check(&peers::typescript().url("/modern"), Transport::Sse, TIMEOUT).await.unwrap_err();
    match &error {
        McpError::Rpc { status: Some(405), message, .. } => assert!(!message.is_empty()),
        McpError::Status { status: 405, .. } => {}
        other => panic!("expected the 405 of a modern-only endpoint, got {other:?}"),
    }
    assert!(error.to_string().contains("405"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_check_ends_its_session() {
    let peer = peers::typescript();
    let url = peer.url("/handshake-cancel");
    let check = tokio::spawn(async move { client().check(&url, HTTP, Duration::from_secs(60)).await });
    let listed = |s: &Value| {
        s["log"].as_array().unwrap().iter().any(|e| e["path"] == "/handshake-cancel" && e["method"] == "tools/list")
            && s["open"]["handshake-cancel"].as_i64() >= Some(1)
    };
    let before = peer.wait_for("/state", SETTLE, listed).await;
    assert!(listed(&before), "the check never reached tools/list: {before}");
    check.abort();
    assert!(check.await.unwrap_err().is_cancelled());
    let state = peer.wait_for("/state", SETTLE, |s| s["open"]["handshake-cancel"] == 0).await;
    assert_eq!(state["open"]["handshake-cancel"], 0, "sessions left open: {state}");
}
