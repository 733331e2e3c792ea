//! Helpers shared by the integration tests: AdmissionReview builders, a webhook served
//! over real HTTPS on loopback, and an HTTPS client that trusts its test CA.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use mcp_hangar::admission::server::ConnectionLimits;
use mcp_hangar::admission::{self, WebhookState};
use mcp_hangar::metrics::Metrics;
use mcp_hangar::policy::Engine;
use mcp_hangar::tls::{self, CertResolver, ServingCertRequest};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An `admission.k8s.io/v1` AdmissionReview for an mcp-hangar object.
pub fn review(uid: &str, operation: &str, object: Option<&Value>, old: Option<&Value>) -> Value {
    let kind = object.or(old).and_then(|o| o["kind"].as_str()).unwrap_or("MCPServer").to_string();
    let plural = format!("{}s", kind.to_lowercase());
    let meta = object.or(old).map(|o| o["metadata"].clone()).unwrap_or(Value::Null);
    let mut request = json!({
        "uid": uid,
        "kind": {"group": "mcp-hangar.io", "version": "v1alpha1", "kind": kind},
        "resource": {"group": "mcp-hangar.io", "version": "v1alpha1", "resource": plural},
        "requestKind": {"group": "mcp-hangar.io", "version": "v1alpha1", "kind": kind},
        "requestResource": {"group": "mcp-hangar.io", "version": "v1alpha1", "resource": plural},
        "name": meta["name"].as_str().unwrap_or_default(),
        "namespace": meta["namespace"].as_str().unwrap_or("default"),
        "operation": operation,
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
        "object": object.cloned().unwrap_or(Value::Null),
        "oldObject": old.cloned().unwrap_or(Value::Null),
        "dryRun": false,
        "options": {"kind": format!("{}Options", operation[..1].to_uppercase() + &operation[1..].to_lowercase()), "apiVersion": "meta.k8s.io/v1"},
    });
    if object.is_none() {
        request.as_object_mut().unwrap().remove("object");
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// A webhook served over HTTPS on 127.0.0.1 with a freshly issued CA and certificate.
pub struct TestWebhook {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA its certificate chains to (PEM).
    pub ca_pem: String,
    /// The resolver serving its certificate, for rotation tests.
    pub resolver: Arc<CertResolver>,
    /// Its metrics.
    pub metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestWebhook {
    /// Issues certificates and starts serving with the default connection limits.
    pub async fn start() -> TestWebhook {
        TestWebhook::start_with(ConnectionLimits::default()).await
    }

    /// Issues certificates and starts serving with the given connection limits.
    pub async fn start_with(limits: ConnectionLimits) -> TestWebhook {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = tls::issue::issue_ca("test-ca", Duration::from_secs(3600)).unwrap();
        let leaf = tls::issue::issue_serving(
            &ca,
            &ServingCertRequest {
                sans: vec!["localhost".into(), "127.0.0.1".into()],
                validity: Duration::from_secs(3600),
            },
        )
        .unwrap();
        let key = tls::certified_key(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
        let resolver = Arc::new(CertResolver::new(key));
        let config = tls::server_config(resolver.clone()).unwrap();
        let metrics = Metrics::new();
        let router = admission::webhook_router(WebhookState {
            engine: Arc::new(Engine::new().unwrap()),
            metrics: metrics.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(admission::server::serve_tls_with(
            listener,
            config,
            router,
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
            limits,
        ));
        TestWebhook { addr, ca_pem: ca.cert_pem, resolver, metrics, stop: Some(stop), task: Some(task) }
    }

    /// Stops serving and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// A TLS client configuration trusting this webhook's CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        client_config(&self.ca_pem)
    }

    /// POSTs `body` to `path` over a new HTTPS connection; returns status and body.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        request(self.addr, self.client_config(), "POST", path, body).await.unwrap()
    }

    /// POSTs a JSON value and parses the JSON answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, bytes) = self.post(path, serde_json::to_vec(body).unwrap()).await;
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// A TLS client configuration trusting the given CA bundle.
pub fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection to `localhost` at `addr`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// One HTTPS request over a new connection.
pub async fn request(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let tls = tls_connect(addr, config).await.map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, bytes.to_vec()))
}

/// Every object in the manifests of a directory (not recursive).
pub fn objects_in(dir: &Path) -> Vec<(PathBuf, Value)> {
    let (files, errors) = mcp_hangar::cli::validate::manifest_files(&[dir.to_path_buf()], false);
    assert!(errors.is_empty(), "{errors:?}");
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in mcp_hangar::cli::validate::read_documents(&file, &text).unwrap() {
            out.push((file.clone(), doc.object));
        }
    }
    out
}
