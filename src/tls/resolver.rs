//! Serves the current certificate from memory; swapping it reaches new connections at once,
//! while handshakes already done keep the certificate they got.

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate resolver whose certificate can be replaced while serving. Until it has a
/// certificate, handshakes fail (and readiness keeps the apiserver away).
#[derive(Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertResolver {
    /// Starts serving `key`.
    pub fn new(key: CertifiedKey) -> Self {
        CertResolver { current: RwLock::new(Some(Arc::new(key))) }
    }

    /// A resolver with no certificate yet.
    pub fn empty() -> Self {
        CertResolver::default()
    }

    /// Replaces the served certificate; handshakes already under way keep the old one.
    pub fn replace(&self, key: CertifiedKey) {
        let mut current = self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Some(Arc::new(key));
    }

    /// The certificate being served, if any.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver").field("serving", &self.current().is_some()).finish()
    }
}
