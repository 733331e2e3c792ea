//! The controllers' shared context as the tests build it: a real engine, fresh metrics and an
//! MCP health client that trusts no certificate (the tests' MCP peers speak plain HTTP).

#![allow(dead_code)]

use std::sync::Arc;

use mcp_hangar::controller::{Context, ControllerConfig};
use mcp_hangar::mcp::McpClient;
use mcp_hangar::metrics::Metrics;
use mcp_hangar::policy::Engine;

/// A context for controllers talking to `client` (a fake API's), replica `test-replica`.
pub fn context(client: kube::Client, config: ControllerConfig) -> Arc<Context> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Arc::new(Context::new(
        client,
        Arc::new(Engine::new().expect("generated schemas compile")),
        Metrics::new(),
        McpClient::new(tls),
        config,
        "test-replica",
    ))
}
