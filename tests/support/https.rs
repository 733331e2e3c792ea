//! An HTTPS client for tests that verifies the server against a PEM CA bundle, as the
//! apiserver does with a webhook configuration's `caBundle`, and reports the certificate the
//! server presented.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

/// A client configuration trusting only the CA certificates of `bundle_pem`.
pub fn client_config(bundle_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle_pem) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("empty CA bundle".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(mcp_hangar::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An open HTTP/1.1 connection over TLS.
pub struct Connection {
    /// Sends requests on the connection.
    pub sender: SendRequest<Full<Bytes>>,
    /// The leaf certificate the server presented (DER).
    pub peer_certificate: Vec<u8>,
}

/// Connects to `addr`, verifying the server as `server_name` against `config`.
pub async fn connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Connection, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let tls =
        tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let peer_certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| cert.to_vec())
        .ok_or("no peer certificate")?;
    let (sender, connection) = http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("http handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(Connection { sender, peer_certificate })
}

impl Connection {
    /// POSTs a JSON body; returns the status and the JSON answer.
    pub async fn post_json(&mut self, path: &str, body: &Value) -> Result<(u16, Value), String> {
        self.sender.ready().await.map_err(|e| format!("connection not ready: {e}"))?;
        let request = hyper::Request::post(path)
            .header("host", "webhook")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let response = self.sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        let value = serde_json::from_slice(&bytes).map_err(|e| format!("answer is not JSON: {e}"))?;
        Ok((status, value))
    }
}

/// An AdmissionReview of a CREATE of the basic MCPServer example.
pub fn admission_review(uid: &str) -> Value {
    let object: Value =
        serde_saphyr::from_str(include_str!("../../examples/mcpserver-basic.yaml")).expect("example parses");
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": "mcp-hangar.io", "version": "v1alpha1", "kind": "MCPServer" },
            "resource": { "group": "mcp-hangar.io", "version": "v1alpha1", "resource": "mcpservers" },
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": { "username": "system:test" },
            "object": object,
            "dryRun": false,
        },
    })
}
