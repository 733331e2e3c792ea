//! Webhook TLS: issuing certificates (rcgen), serving them from memory, and the rustls
//! server configuration. Independent of the CRDs and of the admission rules.

pub mod issue;
pub mod resolver;

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

pub use issue::{CertificateAuthority, IssuedCertificate, ServingCertRequest};
pub use resolver::CertResolver;

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

/// Reads a PEM certificate and key from files.
pub fn certified_key_from_files(cert_file: &str, key_file: &str) -> Result<CertifiedKey, TlsError> {
    let read = |path: &str| std::fs::read(path).map_err(|source| TlsError::Io { path: path.to_string(), source });
    certified_key(&read(cert_file)?, &read(key_file)?)
}
