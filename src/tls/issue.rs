//! Pure certificate issuing with rcgen: a CA and serving certificates it signs (ECDSA P-256).

use std::fmt;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

use super::TlsError;

/// Default CA lifetime: 10 years.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default serving certificate lifetime: 90 days.
pub const DEFAULT_SERVING_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Certificates start up to this long before "now", to absorb clock skew between nodes.
const MAX_BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A CA: its certificate and private key, in PEM.
#[derive(Clone)]
pub struct CertificateAuthority {
    /// The CA certificate (PEM).
    pub cert_pem: String,
    /// The CA private key (PEM, PKCS#8).
    pub key_pem: String,
}

/// A serving certificate and its private key, in PEM.
#[derive(Clone)]
pub struct IssuedCertificate {
    /// The leaf certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM, PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// What a serving certificate must cover.
#[derive(Clone, Debug)]
pub struct ServingCertRequest {
    /// DNS names and IP addresses, the first one also the common name.
    pub sans: Vec<String>,
    /// Lifetime.
    pub validity: Duration,
}

/// The SANs the apiserver uses to reach a webhook Service: `<svc>.<ns>.svc` and `<svc>.<ns>.svc.cluster.local`.
pub fn service_sans(service: &str, namespace: &str) -> Vec<String> {
    vec![format!("{service}.{namespace}.svc"), format!("{service}.{namespace}.svc.cluster.local")]
}

/// How far before "now" a certificate of this lifetime starts: 5 minutes, or a tenth of the
/// lifetime when that is shorter (so that short test lifetimes stay meaningful).
pub fn backdate(validity: Duration) -> Duration {
    MAX_BACKDATE.min(validity / 10)
}

fn validity_window(validity: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - backdate(validity), now + validity)
}

/// Issues a new self-signed CA.
pub fn issue_ca(common_name: &str, validity: Duration) -> Result<CertificateAuthority, TlsError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    (params.not_before, params.not_after) = validity_window(validity);
    let cert = params.self_signed(&key)?;
    Ok(CertificateAuthority { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Issues a serving certificate signed by `ca`; it never outlives the CA.
pub fn issue_serving(ca: &CertificateAuthority, request: &ServingCertRequest) -> Result<IssuedCertificate, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let ca_not_after = super::inspect::inspect(ca.cert_pem.as_bytes()).map_err(TlsError::Pem)?.not_after;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(request.sans.clone())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, request.sans.first().cloned().unwrap_or_default());
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = validity_window(request.validity);
    params.not_after = params.not_after.min(ca_not_after);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(IssuedCertificate { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_certificate_chains_to_its_ca_and_loads() {
        let ca = issue_ca("mcp-hangar-ca", DEFAULT_CA_VALIDITY).unwrap();
        let sans = service_sans("mcp-hangar", "mcp-system");
        let leaf =
            issue_serving(&ca, &ServingCertRequest { sans: sans.clone(), validity: DEFAULT_SERVING_VALIDITY }).unwrap();
        let key = crate::tls::certified_key(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
        assert_eq!(key.cert.len(), 1);
        let (_, parsed) = x509_parser::pem::parse_x509_pem(leaf.cert_pem.as_bytes()).unwrap();
        let cert = parsed.parse_x509().unwrap();
        let (_, ca_parsed) = x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes()).unwrap();
        let ca_cert = ca_parsed.parse_x509().unwrap();
        assert!(cert.verify_signature(Some(ca_cert.public_key())).is_ok());
        let names: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, sans.iter().map(|s| format!("DNSName({s})")).collect::<Vec<_>>());
    }
}
