//! The MCP health-check client against a tiny real MCP server over HTTP and HTTPS.

#[path = "support/mcp_server.rs"]
mod mcp_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_hangar::mcp::{McpClient, McpError as HealthError, Revision, Transport};
use mcp_server::{Answer, FUTURE_PROTOCOL, McpTestServer, SERVER_PROTOCOL, SESSION_ID};

const TIMEOUT: Duration = Duration::from_secs(5);

const HTTP: Transport = Transport::StreamableHttp;

fn client() -> McpClient {
    McpClient::with_native_roots(Arc::new(rustls::crypto::ring::default_provider())).expect("client")
}

async fn wait_for_delete(server: &McpTestServer, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.seen().iter().filter(|s| s.http == "DELETE").count() < count {
        assert!(Instant::now() < deadline, "the session was never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn json_answers_give_the_tools_and_the_session_is_honoured() {
    let server = McpTestServer::start(&["search", "fetch", "summarize"]).await;
    let client = client();
    let report = client.check(&server.url(), HTTP, TIMEOUT).await.unwrap();
    assert_eq!(report.tools, ["search", "fetch", "summarize"]);
    let info = report.server_info.clone().unwrap();
    assert_eq!((info.name.as_str(), info.version.as_deref()), ("test-mcp", Some("1.0.0")));
    assert_eq!(report.protocol_version.as_str(), SERVER_PROTOCOL);
    assert_eq!(server.methods(), ["server/discover", "initialize", "notifications/initialized", "tools/list"]);
    let seen = server.seen();
    assert_eq!(seen[0].protocol.as_deref(), Some("2026-07-28"), "the stateless probe names its revision");
    let initialize = &seen[1];
    assert_eq!(initialize.session, None);
    assert_eq!(initialize.protocol, None);
    let accept = initialize.accept.clone().unwrap();
    assert!(accept.contains("application/json") && accept.contains("text/event-stream"));
    for later in &seen[2..4] {
        assert_eq!(later.session.as_deref(), Some(SESSION_ID));
        assert_eq!(later.protocol.as_deref(), Some(SERVER_PROTOCOL));
    }
    wait_for_delete(&server, 1).await;
    let delete = server.seen().into_iter().find(|s| s.http == "DELETE").unwrap();
    assert_eq!(delete.session.as_deref(), Some(SESSION_ID));
    assert_eq!(delete.protocol.as_deref(), Some(SERVER_PROTOCOL));

    assert_eq!(client.remembered(&server.url()), Some(Revision::V2025_06_18));
    let again = client.check(&server.url(), HTTP, TIMEOUT).await.unwrap();
    assert_eq!(again, report);
    assert_eq!(server.methods()[4..], ["initialize", "notifications/initialized", "tools/list"], "no probe twice");
}

#[tokio::test]
async fn a_server_that_changes_revision_is_negotiated_again_in_the_same_check() {
    let server = McpTestServer::start(&["t1", "t2", "t3"]).await;
    server.set_answer(Answer::Stateless);
    server.set_page_size(2);
    let client = client();
    let report = client.check(&server.url(), HTTP, TIMEOUT).await.unwrap();
    assert_eq!(report.protocol_version, Revision::V2026_07_28);
    assert_eq!(report.tools, ["t1", "t2", "t3"]);
    assert_eq!(report.server_info.unwrap().name, "test-mcp-stateless");
    assert_eq!(server.methods(), ["server/discover", "tools/list", "tools/list"]);
    assert!(server.seen().iter().all(|s| s.mcp_method == s.method && s.session.is_none()));
    client.check(&server.url(), HTTP, TIMEOUT).await.unwrap();
    assert_eq!(server.methods()[3..], ["tools/list", "tools/list"], "steady state: no probe");

    server.set_answer(Answer::Json);
    let report = client.check(&server.url(), HTTP, TIMEOUT).await.unwrap();
    assert_eq!(report.protocol_version.as_str(), SERVER_PROTOCOL);
    assert_eq!(report.tools, ["t1", "t2", "t3"]);
    assert_eq!(
        server.methods()[5..],
        ["tools/list", "server/discover", "initialize", "notifications/initialized", "tools/list", "tools/list"]
    );
    assert_eq!(client.remembered(&server.url()), Some(Revision::V2025_06_18));
}

#[tokio::test]
async fn a_server_speaking_only_unknown_revisions_fails_with_its_answer() {
    let server = McpTestServer::start(&["a"]).await;
    server.set_answer(Answer::FutureOnly);
    let error = client().check(&server.url(), HTTP, TIMEOUT).await.unwrap_err();
    match &error {
        HealthError::Rpc { method, code, status, supported, .. } => {
            assert_eq!((*method, *code, *status), ("server/discover", -32022, Some(400)));
            assert_eq!(supported, &[FUTURE_PROTOCOL.to_string()]);
        }
        other => panic!("expected the server's -32022, got {other:?}"),
    }
    assert!(error.to_string().contains("Unsupported protocol version: 2026-07-28"), "{error}");
    assert_eq!(server.methods(), ["server/discover"], "no handshake offered to a server that named its revisions");
}

#[tokio::test]
async fn sessions_are_ended_when_the_check_fails() {
    let server = McpTestServer::start(&["a"]).await;
    server.set_answer(Answer::RpcError);
    client().check(&server.url(), HTTP, TIMEOUT).await.unwrap_err();
    wait_for_delete(&server, 1).await;
}

#[tokio::test]
async fn event_stream_answers_are_read_from_data_lines() {
    let server = McpTestServer::start(&["a", "b"]).await;
    server.set_answer(Answer::Sse);
    let report = client().check(&server.url(), HTTP, TIMEOUT).await.unwrap();
    assert_eq!(report.tools, ["a", "b"]);
}

#[tokio::test]
async fn event_streams_left_open_do_not_block_the_check() {
    let server = McpTestServer::start(&["a"]).await;
    server.set_answer(Answer::SseKeepOpen);
    let started = Instant::now();
    let report = client().check(&server.url(), HTTP, Duration::from_secs(3)).await.unwrap();
    assert_eq!(report.tools, ["a"]);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn tool_pages_are_followed() {
    let server = McpTestServer::start(&["t1", "t2", "t3", "t4", "t5"]).await;
    server.set_page_size(2);
    let report = client().check(&server.url(), HTTP, TIMEOUT).await.unwrap();
    assert_eq!(report.tools, ["t1", "t2", "t3", "t4", "t5"]);
    let lists = server.methods().iter().filter(|m| *m == "tools/list").count();
    assert_eq!(lists, 3);
}

#[tokio::test]
async fn the_older_sse_transport_is_spoken() {
    let server = McpTestServer::start(&["legacy-tool"]).await;
    let report = client().check(&server.legacy_url(), Transport::Sse, TIMEOUT).await.unwrap();
    assert_eq!(report.tools, ["legacy-tool"]);
    assert_eq!(server.methods(), ["initialize", "notifications/initialized", "tools/list"]);
}

#[tokio::test]
async fn http_errors_fail_the_check() {
    let server = McpTestServer::start(&["a"]).await;
    server.set_answer(Answer::Status(500));
    let error = client().check(&server.url(), HTTP, TIMEOUT).await.unwrap_err();
    assert!(matches!(error, HealthError::Status { method: "initialize", status: 500, .. }), "{error}");
    let legacy = client().check(&server.legacy_url(), Transport::Sse, TIMEOUT).await.unwrap_err();
    assert!(matches!(legacy, HealthError::Status { status: 500, .. }), "{legacy}");
}

#[tokio::test]
async fn json_rpc_errors_fail_the_check() {
    let server = McpTestServer::start(&["a"]).await;
    server.set_answer(Answer::RpcError);
    let error = client().check(&server.url(), HTTP, TIMEOUT).await.unwrap_err();
    match error {
        HealthError::Rpc { method, code, message, .. } => {
            assert_eq!((method, code), ("initialize", -32603));
            assert_eq!(message, "internal failure");
        }
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_web_page_is_not_an_mcp_server() {
    let server = McpTestServer::start(&["a"]).await;
    server.set_answer(Answer::NotMcp);
    let error = client().check(&server.url(), HTTP, TIMEOUT).await.unwrap_err();
    assert!(
        matches!(&error, HealthError::Protocol { method: "initialize", detail } if detail.contains("text/html")),
        "{error}"
    );
}

#[tokio::test]
async fn a_hanging_server_times_out() {
    let server = McpTestServer::start(&["a"]).await;
    server.set_answer(Answer::Hang);
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let error = client().check(&server.url(), HTTP, timeout).await.unwrap_err();
    assert_eq!(error, HealthError::Timeout(timeout));
    assert!(started.elapsed() >= timeout);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn refused_connections_and_bad_urls_fail() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}/mcp");
    let error = client().check(&url, HTTP, TIMEOUT).await.unwrap_err();
    assert!(matches!(&error, HealthError::Connection { method: "server/discover", .. }), "{error}");
    for bad in ["not a url", "ftp://example.com/mcp", "file:///etc/passwd"] {
        let error = client().check(bad, HTTP, TIMEOUT).await.unwrap_err();
        assert!(matches!(error, HealthError::InvalidUrl(_)), "{bad}: {error}");
    }
}

/// A CA and a serving certificate for `mcp.example.com`, issued with rcgen.
fn test_pki() -> (rustls::pki_types::CertificateDer<'static>, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf =
        CertificateParams::new(vec!["mcp.example.com".to_string()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    (ca_cert.der().clone(), Arc::new(config))
}

#[tokio::test]
async fn https_endpoints_are_verified() {
    let (ca, server_config) = test_pki();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (server, router) = McpTestServer::prepare(listener.local_addr().unwrap(), &["secure-tool"]);
    let _stop = mcp_server::serve_tls(listener, server_config, router);
    let url = format!("https://mcp.example.com:{}/mcp", server.addr().port());
    let loopback = || [("mcp.example.com".to_string(), server.addr().ip())];

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let trusting = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let report = McpClient::with_host_overrides(trusting, loopback()).check(&url, HTTP, TIMEOUT).await.unwrap();
    assert_eq!(report.tools, ["secure-tool"]);

    let untrusting = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let error = McpClient::with_host_overrides(untrusting, loopback()).check(&url, HTTP, TIMEOUT).await.unwrap_err();
    assert!(
        matches!(&error, HealthError::Connection { detail, .. } if detail.to_lowercase().contains("certificate")),
        "{error}"
    );
}

#[tokio::test]
async fn host_overrides_replace_dns_for_their_names_only() {
    let server = McpTestServer::start(&["a"]).await;
    let port = server.addr().port();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let client = McpClient::with_host_overrides(tls, [("Remote.Tools.svc".to_string(), server.addr().ip())]);
    let url = format!("http://remote.tools.svc:{port}/mcp");
    assert_eq!(client.check(&url, HTTP, TIMEOUT).await.unwrap().tools, ["a"]);
    let other = format!("http://other.invalid:{port}/mcp");
    let error = client.check(&other, HTTP, TIMEOUT).await.unwrap_err();
    assert!(matches!(error, HealthError::Connection { .. }), "{error}");
}
