//! What a PEM certificate says: its names, validity, key and issuer, read with x509-parser.

use std::fmt;
use std::net::IpAddr;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// What a certificate says, read from its DER.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// DNS names and IP addresses of the subjectAltName extension, as text.
    pub sans: Vec<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Whether basicConstraints says CA.
    pub is_ca: bool,
    /// The subject public key (the bit string of subjectPublicKeyInfo).
    pub public_key: Vec<u8>,
}

impl fmt::Debug for CertificateInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateInfo")
            .field("subject", &self.subject)
            .field("issuer", &self.issuer)
            .field("sans", &self.sans)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("is_ca", &self.is_ca)
            .finish_non_exhaustive()
    }
}

fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    Ok(cert)
}

fn info_of(der: &[u8]) -> Result<CertificateInfo, String> {
    let cert = parse_der(der)?;
    let mut sans = Vec::new();
    if let Ok(Some(extension)) = cert.subject_alternative_name() {
        for name in &extension.value.general_names {
            match name {
                GeneralName::DNSName(dns) => sans.push(dns.to_string()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    sans.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    Ok(CertificateInfo {
        der: der.to_vec(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans,
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        is_ca: cert.is_ca(),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    })
}

/// Reads every certificate of a PEM bundle, in order.
pub fn inspect_bundle(pem: &[u8]) -> Result<Vec<CertificateInfo>, String> {
    let ders =
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| format!("invalid PEM: {e}"))?;
    if ders.is_empty() {
        return Err("no certificate in the PEM input".into());
    }
    ders.iter().map(|der| info_of(der)).collect()
}

/// Reads the first certificate of a PEM input.
pub fn inspect(pem: &[u8]) -> Result<CertificateInfo, String> {
    inspect_bundle(pem).map(|mut certs| certs.remove(0))
}

impl CertificateInfo {
    /// Whether `ca` issued this certificate (issuer name and signature).
    pub fn is_signed_by(&self, ca: &CertificateInfo) -> bool {
        let (Ok(cert), Ok(ca_cert)) = (parse_der(&self.der), parse_der(&ca.der)) else {
            return false;
        };
        cert.issuer().as_raw() == ca_cert.subject().as_raw()
            && cert.verify_signature(Some(ca_cert.public_key())).is_ok()
    }

    /// Whether `now` is inside the validity window.
    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// When `fraction` of the lifetime has passed.
    pub fn renewal_time(&self, fraction: f64) -> OffsetDateTime {
        self.not_before + (self.not_after - self.not_before) * fraction.clamp(0.0, 1.0)
    }

    /// The names of `required` that the certificate does not cover (DNS names compared
    /// without case, IP addresses by value).
    pub fn missing_sans(&self, required: &[String]) -> Vec<String> {
        required.iter().filter(|name| !cert_covers(&self.sans, name)).cloned().collect()
    }
}

fn normal_san(name: &str) -> String {
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => name.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// Whether `name` is among `names` (DNS names without case, IP addresses by value).
pub fn cert_covers(names: &[String], name: &str) -> bool {
    let name = normal_san(name);
    names.iter().any(|n| normal_san(n) == name)
}

/// Whether `key_pem` is the private key of `cert`.
pub fn key_matches(cert: &CertificateInfo, key_pem: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(key_pem) else {
        return false;
    };
    rcgen::KeyPair::from_pem(text).is_ok_and(|key| key.public_key_raw() == cert.public_key.as_slice())
}
