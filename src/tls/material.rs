//! The certificate material kept in the webhook's Secret, key by key, and the CA bundle the
//! apiserver is given from it. Pure data: reading and writing the Secret is in `store`.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;

/// Secret key of the CA certificate (PEM).
pub const CA_CERT_KEY: &str = "ca.crt";
/// Secret key of the CA private key (PEM).
pub const CA_KEY_KEY: &str = "ca.key";
/// Secret key of the serving certificate (PEM).
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Secret key of the serving private key (PEM).
pub const TLS_KEY_KEY: &str = "tls.key";
/// Secret key of the CA certificate replaced by the last CA rotation (PEM), kept in the bundle
/// until no serving certificate it signed can still be served.
pub const PREVIOUS_CA_CERT_KEY: &str = "ca-previous.crt";

/// The material as stored: each key's bytes, `None` when the key is absent. Nothing here is
/// known to be valid; `policy` decides.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Material {
    /// `ca.crt`
    pub ca_cert: Option<Vec<u8>>,
    /// `ca.key`
    pub ca_key: Option<Vec<u8>>,
    /// `tls.crt`
    pub tls_cert: Option<Vec<u8>>,
    /// `tls.key`
    pub tls_key: Option<Vec<u8>>,
    /// `ca-previous.crt`
    pub previous_ca_cert: Option<Vec<u8>>,
}

impl Material {
    /// Reads the material from a Secret's `data`; other keys are ignored.
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Material {
        let get = |key: &str| data.get(key).map(|v| v.0.clone()).filter(|v| !v.is_empty());
        Material {
            ca_cert: get(CA_CERT_KEY),
            ca_key: get(CA_KEY_KEY),
            tls_cert: get(TLS_CERT_KEY),
            tls_key: get(TLS_KEY_KEY),
            previous_ca_cert: get(PREVIOUS_CA_CERT_KEY),
        }
    }

    /// Writes the material into a Secret's `data`, keeping keys it does not own and removing
    /// the ones it no longer has.
    pub fn merge_into_secret_data(&self, data: &mut BTreeMap<String, ByteString>) {
        for (key, value) in self.entries() {
            match value {
                Some(bytes) => data.insert(key.to_string(), ByteString(bytes.clone())),
                None => data.remove(key),
            };
        }
    }

    fn entries(&self) -> [(&'static str, &Option<Vec<u8>>); 5] {
        [
            (CA_CERT_KEY, &self.ca_cert),
            (CA_KEY_KEY, &self.ca_key),
            (TLS_CERT_KEY, &self.tls_cert),
            (TLS_KEY_KEY, &self.tls_key),
            (PREVIOUS_CA_CERT_KEY, &self.previous_ca_cert),
        ]
    }

    /// The PEM bundle for the webhook configurations' `caBundle`: the CA, then the previous CA
    /// while it is kept.
    pub fn ca_bundle(&self) -> Vec<u8> {
        let mut bundle = Vec::new();
        for cert in [&self.ca_cert, &self.previous_ca_cert].into_iter().flatten() {
            bundle.extend_from_slice(cert);
            if !bundle.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
        bundle
    }
}

/// Shows which keys are present, never their contents.
impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present: Vec<&str> = self.entries().iter().filter(|(_, v)| v.is_some()).map(|(k, _)| *k).collect();
        f.debug_struct("Material").field("keys", &present).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_data_round_trip_keeps_foreign_keys_and_drops_retired_ones() {
        let material = Material {
            ca_cert: Some(b"CA".to_vec()),
            ca_key: Some(b"CAKEY".to_vec()),
            tls_cert: Some(b"CERT".to_vec()),
            tls_key: Some(b"KEY".to_vec()),
            previous_ca_cert: None,
        };
        let mut data = BTreeMap::from([
            ("other".to_string(), ByteString(b"x".to_vec())),
            (PREVIOUS_CA_CERT_KEY.to_string(), ByteString(b"OLD".to_vec())),
        ]);
        material.merge_into_secret_data(&mut data);
        assert_eq!(data["other"].0, b"x");
        assert!(!data.contains_key(PREVIOUS_CA_CERT_KEY));
        assert_eq!(Material::from_secret_data(&data), material);
        assert_eq!(format!("{material:?}"), r#"Material { keys: ["ca.crt", "ca.key", "tls.crt", "tls.key"] }"#);
    }

    #[test]
    fn bundle_holds_the_current_then_the_previous_ca() {
        let material = Material {
            ca_cert: Some(b"NEW".to_vec()),
            previous_ca_cert: Some(b"OLD\n".to_vec()),
            ..Material::default()
        };
        assert_eq!(material.ca_bundle(), b"NEW\nOLD\n");
        assert!(Material::default().ca_bundle().is_empty());
    }
}
