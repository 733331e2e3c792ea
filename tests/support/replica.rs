//! Self-managed TLS replicas against the fake API server: the usual names, webhook
//! configurations with real shapes, and a handle on each running replica.
//!
//! Needs `mod fake_api;` at the test crate's root.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use mcp_hangar::metrics::Metrics;
use mcp_hangar::readiness::Readiness;
use mcp_hangar::tls::CertResolver;
use mcp_hangar::tls::inject::{WebhookConfigRef, WebhookKind};
use mcp_hangar::tls::inspect;
use mcp_hangar::tls::issue::service_sans;
use mcp_hangar::tls::material::Material;
use mcp_hangar::tls::renewal::{self, Requirements};
use mcp_hangar::tls::rotate::{self, SelfManagedConfig};
use mcp_hangar::tls::store::SecretRef;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::fake_api::FakeApi;

/// Namespace of the Service and the Secret.
pub const NAMESPACE: &str = "hangar-system";
/// The webhook Service.
pub const SERVICE: &str = "hangar-webhook";
/// The Secret.
pub const SECRET: &str = "hangar-webhook-tls";
/// Name of both webhook configurations.
pub const CONFIG: &str = "hangar";
/// The name clients verify the server as.
pub const SERVER_NAME: &str = "hangar-webhook.hangar-system.svc";

/// API path of the Secret.
pub fn secret_path() -> String {
    format!("/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}")
}

/// API path of the MutatingWebhookConfiguration.
pub fn mutating_path() -> String {
    format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{CONFIG}")
}

/// API path of the ValidatingWebhookConfiguration.
pub fn validating_path() -> String {
    format!("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{CONFIG}")
}

/// Settings with the given lifetimes (a propagation delay of 200ms, retries from 100ms).
pub fn config(ca_validity: Duration, serving_validity: Duration, renew_fraction: f64) -> SelfManagedConfig {
    SelfManagedConfig {
        secret: SecretRef { namespace: NAMESPACE.into(), name: SECRET.into() },
        requirements: Requirements {
            sans: service_sans(SERVICE, NAMESPACE),
            ca_common_name: "hangar test CA".into(),
            ca_validity,
            serving_validity,
            renew_fraction,
        },
        webhook_configs: vec![
            WebhookConfigRef { kind: WebhookKind::Mutating, name: CONFIG.into() },
            WebhookConfigRef { kind: WebhookKind::Validating, name: CONFIG.into() },
        ],
        trust_delay: Duration::from_millis(200),
        retry_interval: Duration::from_millis(100),
    }
}

/// Default test settings: lifetimes of an hour and ten minutes, renewal at two thirds.
pub fn default_config() -> SelfManagedConfig {
    config(Duration::from_secs(3600), Duration::from_secs(600), renewal::DEFAULT_RENEW_FRACTION)
}

fn webhook(name: &str, path: &str) -> Value {
    json!({
        "name": name,
        "clientConfig": { "service": { "name": SERVICE, "namespace": NAMESPACE, "path": path, "port": 443 } },
        "rules": [{ "apiGroups": ["mcp-hangar.io"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"], "resources": ["mcpservers"] }],
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
    })
}

/// The two webhook configurations as a chart would install them: no caBundle.
pub fn seed_webhook_configurations(fake: &FakeApi) {
    fake.put(
        &mutating_path(),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": { "name": CONFIG },
            "webhooks": [webhook("mutate.mcp-hangar.io", "/mutate"), webhook("mutate-groups.mcp-hangar.io", "/mutate")],
        }),
    );
    fake.put(
        &validating_path(),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": { "name": CONFIG },
            "webhooks": [webhook("validate.mcp-hangar.io", "/validate")],
        }),
    );
}

/// The Secret's material as stored in the fake.
pub fn stored_material(fake: &FakeApi) -> Option<Material> {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(fake.get(&secret_path())?).ok()?;
    Some(Material::from_secret_data(secret.data.as_ref()?))
}

/// Stores `material` as the Secret's content, as another writer would.
pub fn store_material(fake: &FakeApi, material: &Material) {
    let mut data = std::collections::BTreeMap::new();
    material.merge_into_secret_data(&mut data);
    fake.put(
        &secret_path(),
        json!({ "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "data": data }),
    );
}

/// The decoded caBundle of every entry of the configuration at `path`.
pub fn injected_bundles(fake: &FakeApi, path: &str) -> Vec<Option<Vec<u8>>> {
    fake.get(path).map(|config| mcp_hangar::tls::inject::injected_bundles(&config)).unwrap_or_default()
}

/// DER of the first certificate of a PEM input.
pub fn der_of(pem: &[u8]) -> Vec<u8> {
    inspect::inspect(pem).expect("a certificate").der
}

/// Polls `condition` every 10ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One running self-managed replica.
pub struct Replica {
    /// What it serves.
    pub resolver: Arc<CertResolver>,
    /// Its readiness.
    pub readiness: Readiness,
    /// Its metrics.
    pub metrics: Metrics,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Replica {
    /// Starts a replica talking to `fake`.
    pub fn start(fake: &FakeApi, config: SelfManagedConfig) -> Replica {
        let resolver = Arc::new(CertResolver::empty());
        let readiness = Readiness::new();
        readiness.set_unmet(mcp_hangar::tls::CERTIFICATE_CONDITION, "starting");
        readiness.set_unmet(mcp_hangar::tls::CA_BUNDLE_CONDITION, "starting");
        let metrics = Metrics::new();
        let (stop, mut stopped) = watch::channel(false);
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let handle = tokio::spawn(rotate::run(
            fake.client(),
            config,
            resolver.clone(),
            readiness.clone(),
            metrics.clone(),
            shutdown,
        ));
        Replica { resolver, readiness, metrics, stop, handle }
    }

    /// DER of the certificate served, if any.
    pub fn served(&self) -> Option<Vec<u8>> {
        self.resolver.current().map(|key| key.cert[0].to_vec())
    }

    /// Certificates of `part` (`serving`, `ca`) this replica issued and stored.
    pub fn rotations(&self, part: &str) -> u64 {
        self.metrics.webhook_certificate_rotations.with_label_values(&[part]).get()
    }

    /// Waits until the replica is ready.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let ready = eventually(timeout, || self.readiness.is_ready()).await;
        if !ready {
            eprintln!("not ready: {:?}", self.readiness.unmet());
        }
        ready
    }

    /// Stops the replica and waits for its task to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.handle).await;
    }
}
