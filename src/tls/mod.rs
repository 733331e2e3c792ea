//! Webhook TLS: issuing certificates (rcgen), serving them from memory, and the rustls
//! server configuration. Independent of the CRDs and of the admission rules.
//!
//! Pure parts: [`issue`] (CA and serving certificates), [`material`] (the Secret's keys and the
//! CA bundle), [`policy`] (inspect a certificate; keep, renew or replace). I/O: [`store`] (the
//! Secret), [`inject`] (the webhook configurations' `caBundle`), [`rotate`] (the self-managed
//! loop), [`files`] (PEM files reloaded when they change), [`resolver`] (what rustls serves).
//!
//! # RBAC of the self-managed mode
//!
//! In the Secret's namespace (a Role):
//! - `secrets`: `get`, `list`, `watch`, `update` restricted by `resourceNames` to the one Secret
//!   (`list`/`watch` use `fieldSelector=metadata.name=…`, which `resourceNames` authorizes);
//! - `secrets`: `create`, which `resourceNames` cannot restrict (the name is not known to the
//!   authorizer before the object exists).
//!
//! Cluster-wide (a ClusterRole):
//! - `admissionregistration.k8s.io` `mutatingwebhookconfigurations` and
//!   `validatingwebhookconfigurations`: `get`, `list`, `watch`, `patch` restricted by
//!   `resourceNames` to the two configurations.

pub mod files;
pub mod inject;
pub mod inspect;
pub mod issue;
pub mod material;
pub mod renewal;
pub mod resolver;
pub mod rotate;
pub mod store;

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

pub use issue::{CertificateAuthority, IssuedCertificate, ServingCertRequest};
pub use resolver::CertResolver;

/// Readiness condition: a valid certificate is being served.
pub const CERTIFICATE_CONDITION: &str = "webhook-certificate";
/// Readiness condition: every webhook configuration's `caBundle` trusts the served certificate.
pub const CA_BUNDLE_CONDITION: &str = "webhook-ca-bundle";

/// Errors of the TLS layer.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// PEM input could not be read.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// A certificate could not be issued.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kubernetes {
        /// What was being done.
        action: String,
        /// The failure.
        source: Box<kube::Error>,
    },
    /// The TLS settings are inconsistent.
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    /// Wraps a Kubernetes API failure with what was being done.
    pub fn kubernetes(action: impl Into<String>, source: kube::Error) -> Self {
        TlsError::Kubernetes { action: action.into(), source: Box::new(source) }
    }
}

/// The crypto provider every TLS endpoint of the binary uses.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server configuration: TLS 1.2 and 1.3 only, HTTP/2 and HTTP/1.1 by ALPN,
/// certificates from `resolver` (so a rotation reaches new connections at once).
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Builds the key rustls serves from a PEM certificate chain and a PEM private key.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Pem("no certificate in the PEM input".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem(format!("private key: {e}")))?;
    let signing_key = crypto_provider().key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match()?;
    Ok(certified)
}
