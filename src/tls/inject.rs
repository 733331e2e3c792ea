//! The CA bundle in the webhook configurations: what each configuration trusts (pure), the
//! JSON patch that writes the bundle into every webhook entry (pure), and the patch call.
//!
//! A JSON patch touches only `clientConfig.caBundle` of each entry, after a `test` of the
//! entry's name, so a configuration changed meanwhile (entries added or reordered by a
//! `helm upgrade`) makes the patch fail instead of writing into the wrong entry.

use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::TlsError;
use super::inspect::inspect_bundle;

/// The two kinds of webhook configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WebhookKind {
    /// `MutatingWebhookConfiguration`
    Mutating,
    /// `ValidatingWebhookConfiguration`
    Validating,
}

impl WebhookKind {
    /// The Kubernetes kind.
    pub fn kind(self) -> &'static str {
        match self {
            WebhookKind::Mutating => "MutatingWebhookConfiguration",
            WebhookKind::Validating => "ValidatingWebhookConfiguration",
        }
    }

    /// The API resource, for a dynamic `Api`.
    pub fn api_resource(self) -> ApiResource {
        match self {
            WebhookKind::Mutating => ApiResource::erase::<MutatingWebhookConfiguration>(&()),
            WebhookKind::Validating => ApiResource::erase::<ValidatingWebhookConfiguration>(&()),
        }
    }
}

/// One webhook configuration to keep injected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfigRef {
    /// Mutating or validating.
    pub kind: WebhookKind,
    /// Object name (cluster-scoped).
    pub name: String,
}

impl WebhookConfigRef {
    /// The dynamic API for this configuration's kind.
    pub fn api(&self, client: Client) -> Api<DynamicObject> {
        Api::all_with(client, &self.kind.api_resource())
    }
}

impl fmt::Display for WebhookConfigRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind.kind(), self.name)
    }
}

fn webhooks(config: &Value) -> &[Value] {
    config.get("webhooks").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn decode_bundle(value: Option<&Value>) -> Option<Vec<u8>> {
    serde_json::from_value::<ByteString>(value?.clone()).ok().map(|b| b.0)
}

/// The `caBundle` of every webhook entry, decoded (`None` for an entry without one).
pub fn injected_bundles(config: &Value) -> Vec<Option<Vec<u8>>> {
    webhooks(config).iter().map(|w| decode_bundle(w.pointer("/clientConfig/caBundle"))).collect()
}

/// Whether every webhook entry's `caBundle` holds the CA certificate `ca_der`.
pub fn trusts(config: &Value, ca_der: &[u8]) -> bool {
    injected_bundles(config).iter().all(|bundle| {
        bundle
            .as_deref()
            .and_then(|pem| inspect_bundle(pem).ok())
            .is_some_and(|certs| certs.iter().any(|cert| cert.der == ca_der))
    })
}

/// The JSON patch that sets `bundle` (PEM) as the `caBundle` of every entry that has another
/// one; `None` when all entries already have it.
pub fn ca_bundle_patch(config: &Value, bundle: &[u8]) -> Option<json_patch::Patch> {
    let encoded = serde_json::to_value(ByteString(bundle.to_vec())).ok()?;
    let mut operations = Vec::new();
    for (index, webhook) in webhooks(config).iter().enumerate() {
        if decode_bundle(webhook.pointer("/clientConfig/caBundle")).as_deref() == Some(bundle) {
            continue;
        }
        if let Some(name) = webhook.get("name") {
            operations.push(json!({ "op": "test", "path": format!("/webhooks/{index}/name"), "value": name }));
        }
        if webhook.get("clientConfig").is_some_and(Value::is_object) {
            operations.push(
                json!({ "op": "add", "path": format!("/webhooks/{index}/clientConfig/caBundle"), "value": encoded }),
            );
        } else {
            operations.push(json!({ "op": "add", "path": format!("/webhooks/{index}/clientConfig"), "value": { "caBundle": encoded } }));
        }
    }
    if operations.is_empty() {
        return None;
    }
    serde_json::from_value(Value::Array(operations)).ok()
}

/// What an injection did.
#[derive(Debug)]
pub enum Injection {
    /// Every entry already had the bundle; nothing was written.
    Unchanged,
    /// The bundle was written; the configuration as stored after the patch.
    Patched(Value),
}

/// Writes `bundle` into every entry of `current` (the configuration as last observed).
pub async fn inject(
    client: Client,
    config: &WebhookConfigRef,
    current: &Value,
    bundle: &[u8],
) -> Result<Injection, TlsError> {
    let Some(patch) = ca_bundle_patch(current, bundle) else {
        return Ok(Injection::Unchanged);
    };
    let patched = config
        .api(client)
        .patch(&config.name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(|e| TlsError::kubernetes(format!("injecting the caBundle into {config}"), e))?;
    let value = serde_json::to_value(&patched).map_err(|e| TlsError::Config(format!("{config}: {e}")))?;
    Ok(Injection::Patched(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::inspect::inspect;
    use crate::tls::issue::{DEFAULT_CA_VALIDITY, issue_ca};

    fn config(bundles: &[Option<&[u8]>]) -> Value {
        let webhooks: Vec<Value> = bundles
            .iter()
            .enumerate()
            .map(|(i, bundle)| {
                let mut client_config = json!({ "service": { "name": "svc", "namespace": "ns", "path": "/validate" } });
                if let Some(bundle) = bundle {
                    client_config["caBundle"] = serde_json::to_value(ByteString(bundle.to_vec())).unwrap();
                }
                json!({ "name": format!("w{i}.example.com"), "clientConfig": client_config, "sideEffects": "None" })
            })
            .collect();
        json!({ "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": { "name": "x" }, "webhooks": webhooks })
    }

    #[test]
    fn patch_fills_only_entries_lacking_the_bundle_and_applies() {
        let ca = issue_ca("ca", DEFAULT_CA_VALIDITY).unwrap();
        let other = issue_ca("other", DEFAULT_CA_VALIDITY).unwrap();
        let bundle = ca.cert_pem.as_bytes();
        let ca_der = inspect(bundle).unwrap().der;
        let mut stored = config(&[None, Some(bundle), Some(other.cert_pem.as_bytes())]);
        assert!(!trusts(&stored, &ca_der));
        let patch = ca_bundle_patch(&stored, bundle).expect("two entries need the bundle");
        assert_eq!(patch.0.len(), 4, "a test and an add for each of the two entries");
        json_patch::patch(&mut stored, &patch).unwrap();
        assert!(trusts(&stored, &ca_der));
        assert!(ca_bundle_patch(&stored, bundle).is_none());
        assert_eq!(
            stored["webhooks"][0]["clientConfig"]["service"]["name"], "svc",
            "the rest of the entry is untouched"
        );
        assert_eq!(injected_bundles(&stored), vec![Some(bundle.to_vec()); 3]);
    }

    #[test]
    fn patch_fails_when_entries_moved_since_they_were_read() {
        let ca = issue_ca("ca", DEFAULT_CA_VALIDITY).unwrap();
        let seen = config(&[None, None]);
        let patch = ca_bundle_patch(&seen, ca.cert_pem.as_bytes()).unwrap();
        let mut reordered = seen.clone();
        reordered["webhooks"].as_array_mut().unwrap().reverse();
        assert!(json_patch::patch(&mut reordered, &patch).is_err());
    }

    #[test]
    fn empty_or_garbage_bundles_trust_nothing() {
        let ca = issue_ca("ca", DEFAULT_CA_VALIDITY).unwrap();
        let ca_der = inspect(ca.cert_pem.as_bytes()).unwrap().der;
        assert!(!trusts(&config(&[Some(b"garbage")]), &ca_der));
        assert!(!trusts(&config(&[None]), &ca_der));
        let mut garbage = config(&[None]);
        garbage["webhooks"][0]["clientConfig"]["caBundle"] = json!("%%% not base64");
        assert!(!trusts(&garbage, &ca_der));
        assert!(ca_bundle_patch(&garbage, ca.cert_pem.as_bytes()).is_some());
    }
}
