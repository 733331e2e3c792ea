//! The self-managed mode: one long-running task per replica that keeps the Secret's material
//! valid (issuing ahead of expiry), keeps the CA bundle injected into the webhook
//! configurations, serves the Secret's certificate from memory, and sets readiness.
//!
//! It follows the Secret and both configurations with watchers, so a Secret written by another
//! replica, or a `caBundle` reset by a `helm upgrade`, is seen at once. Every decision is made
//! by [`renewal::plan`] on the material as last observed; writes are conditioned on the
//! resourceVersion that material came with, so when replicas race one write wins and the
//! others adopt it.
//!
//! A new certificate is served only once the CA that signed it has been in every
//! configuration's `caBundle` for [`SelfManagedConfig::trust_delay`] (so apiservers, which
//! cache the configurations, have seen it), unless nothing valid is being served. Together
//! with the previous CA kept in the bundle after a CA rotation, no apiserver request fails
//! verification while certificates rotate.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::inject::{self, Injection, WebhookConfigRef};
use super::inspect::{self, CertificateInfo};
use super::material::Material;
use super::renewal::{self, Decision, Requirements};
use super::resolver::CertResolver;
use super::store::{SecretRef, SecretStore, StoredSecret, WriteOutcome};
use super::{CA_BUNDLE_CONDITION, CERTIFICATE_CONDITION, TlsError};
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// Longest sleep between two reviews, whatever the certificates' lifetimes.
const MAX_SLEEP: Duration = Duration::from_secs(300);
/// Longest wait between two attempts after API failures.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Writes attempted in one review before waiting for the next event.
const WRITE_ATTEMPTS: usize = 3;

/// Settings of the self-managed mode.
#[derive(Clone, Debug)]
pub struct SelfManagedConfig {
    /// The Secret holding the material.
    pub secret: SecretRef,
    /// What the material must satisfy, and lifetimes of what is issued.
    pub requirements: Requirements,
    /// The webhook configurations whose `caBundle` is kept injected (none: injection off).
    pub webhook_configs: Vec<WebhookConfigRef>,
    /// How long a new CA must have been in every `caBundle` before certificates it signed
    /// replace a still valid served certificate.
    pub trust_delay: Duration,
    /// First wait after a failed API call; doubles on each failure up to a minute.
    pub retry_interval: Duration,
}

/// What is known of an object.
#[derive(Clone, Debug)]
enum Observed<T> {
    /// Not read yet.
    Unknown,
    /// Does not exist.
    Absent,
    /// As last read.
    Present(T),
}

impl<T> Observed<T> {
    fn present(&self) -> Option<&T> {
        match self {
            Observed::Present(value) => Some(value),
            _ => None,
        }
    }
}

/// Tracks one object through watcher events (the initial list included).
struct Follower<K> {
    listing: Option<Option<K>>,
}

impl<K> Follower<K> {
    fn new() -> Self {
        Follower { listing: None }
    }

    /// The object's new state, when the event settles one.
    fn settle(&mut self, event: watcher::Event<K>) -> Option<Observed<K>> {
        match event {
            watcher::Event::Init => {
                self.listing = Some(None);
                None
            }
            watcher::Event::InitApply(object) => {
                self.listing = Some(Some(object));
                None
            }
            watcher::Event::InitDone => Some(self.listing.take().flatten().map_or(Observed::Absent, Observed::Present)),
            watcher::Event::Apply(object) => Some(Observed::Present(object)),
            watcher::Event::Delete(_) => Some(Observed::Absent),
        }
    }
}

/// True when `candidate` is known to be older than `current` (resource versions that are
/// both integers, as the apiserver's are; otherwise nothing is known).
fn is_older(candidate: Option<&str>, current: Option<&str>) -> bool {
    match (candidate.and_then(|v| v.parse::<u64>().ok()), current.and_then(|v| v.parse::<u64>().ok())) {
        (Some(candidate), Some(current)) => candidate < current,
        _ => false,
    }
}

/// The certificate being served.
struct Served {
    cert_pem: Vec<u8>,
    info: CertificateInfo,
    /// The CA certificate (DER) that signed it, when known.
    issuer: Option<Vec<u8>>,
}

struct Rotation {
    client: Client,
    config: SelfManagedConfig,
    store: SecretStore,
    resolver: Arc<CertResolver>,
    readiness: Readiness,
    metrics: Metrics,
    secret: Observed<StoredSecret>,
    configs: Vec<Observed<Value>>,
    served: Option<Served>,
    /// CA certificate (DER) → since when every configuration trusts it.
    trusted_since: HashMap<Vec<u8>, Instant>,
    /// The last CA certificate (PEM) seen valid in the Secret.
    remembered_ca: Option<Vec<u8>>,
    /// The last error of the Secret's watch, until it recovers.
    secret_watch_error: Option<String>,
    /// The last error of each configuration's watch, until it recovers.
    config_watch_errors: Vec<Option<String>>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// Runs the self-managed mode until `shutdown` completes. API failures are logged and
/// retried; they never stop the task, and a valid certificate keeps being served meanwhile.
pub async fn run(
    client: Client,
    config: SelfManagedConfig,
    resolver: Arc<CertResolver>,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    let store = SecretStore::new(client.clone(), config.secret.clone());
    let by_name = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut secret_events = watcher(store.api().clone(), by_name(&config.secret.name)).default_backoff().boxed();
    let mut config_events = stream::select_all(config.webhook_configs.iter().enumerate().map(|(index, webhook)| {
        watcher(webhook.api(client.clone()), by_name(&webhook.name)).default_backoff().map(move |e| (index, e)).boxed()
    }));
    let mut secret_follower = Follower::<Secret>::new();
    let mut config_followers: Vec<Follower<DynamicObject>> =
        config.webhook_configs.iter().map(|_| Follower::new()).collect();
    let mut rotation = Rotation {
        configs: config.webhook_configs.iter().map(|_| Observed::Unknown).collect(),
        config_watch_errors: config.webhook_configs.iter().map(|_| None).collect(),
        client,
        config,
        store,
        resolver,
        readiness,
        metrics,
        secret: Observed::Unknown,
        served: None,
        trusted_since: HashMap::new(),
        remembered_ca: None,
        secret_watch_error: None,
        failures: 0,
        retry_at: None,
    };
    tokio::pin!(shutdown);
    loop {
        rotation.review().await;
        let wake = rotation.next_wake();
        tokio::select! {
            event = secret_events.next() => match event {
                Some(Ok(event)) => {
                    rotation.secret_watch_error = None;
                    if let Some(state) = secret_follower.settle(event) {
                        rotation.observe_secret(state);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(secret = %rotation.config.secret, error = %e, "watching the webhook TLS Secret");
                    rotation.secret_watch_error = Some(e.to_string());
                }
                None => return,
            },
            Some((index, event)) = config_events.next() => match event {
                Ok(event) => {
                    rotation.config_watch_errors[index] = None;
                    if let Some(state) = config_followers[index].settle(event) {
                        rotation.observe_config(index, state);
                    }
                }
                Err(e) => {
                    tracing::warn!(config = %rotation.config.webhook_configs[index], error = %e, "watching a webhook configuration");
                    rotation.config_watch_errors[index] = Some(e.to_string());
                }
            },
            () = tokio::time::sleep_until(wake) => {}
            () = &mut shutdown => return,
        }
    }
}

impl Rotation {
    fn observe_secret(&mut self, state: Observed<Secret>) {
        let state = match state {
            Observed::Present(secret) => Observed::Present(StoredSecret::from_secret(secret)),
            Observed::Absent => Observed::Absent,
            Observed::Unknown => Observed::Unknown,
        };
        if let (Observed::Present(new), Observed::Present(current)) = (&state, &self.secret) {
            if is_older(new.resource_version.as_deref(), current.resource_version.as_deref()) {
                return;
            }
            if new.material != current.material {
                tracing::info!(secret = %self.config.secret, "the webhook TLS Secret changed");
            }
        }
        if matches!((&state, &self.secret), (Observed::Absent, Observed::Present(_))) {
            tracing::warn!(secret = %self.config.secret, "the webhook TLS Secret was deleted");
        }
        self.secret = state;
    }

    fn observe_config(&mut self, index: usize, state: Observed<DynamicObject>) {
        self.configs[index] = match state {
            Observed::Present(object) => match serde_json::to_value(&object) {
                Ok(value) => Observed::Present(value),
                Err(_) => Observed::Unknown,
            },
            Observed::Absent => Observed::Absent,
            Observed::Unknown => Observed::Unknown,
        };
    }

    /// One pass: fix the Secret, inject the bundle, choose what to serve, set readiness.
    async fn review(&mut self) {
        let in_backoff = self.retry_at.is_some_and(|at| Instant::now() < at);
        if !in_backoff {
            match self.converge().await {
                Ok(()) => {
                    self.failures = 0;
                    self.retry_at = None;
                }
                Err(e) => {
                    let delay = self.config.retry_interval.saturating_mul(1 << self.failures.min(10)).min(MAX_RETRY);
                    self.failures = self.failures.saturating_add(1);
                    self.retry_at = Some(Instant::now() + delay);
                    tracing::warn!(error = %e, retry_in = ?delay, "webhook TLS: will retry");
                }
            }
        }
        let now = OffsetDateTime::now_utc();
        self.observe_trust();
        self.choose_served(now);
        self.set_readiness(now);
    }

    async fn converge(&mut self) -> Result<(), TlsError> {
        self.ensure_secret().await?;
        self.ensure_injected().await
    }

    /// Writes new material when the stored one is not to be kept.
    async fn ensure_secret(&mut self) -> Result<(), TlsError> {
        for _ in 0..WRITE_ATTEMPTS {
            let base = match &self.secret {
                Observed::Unknown => return Ok(()),
                Observed::Absent => None,
                Observed::Present(stored) => Some(stored.clone()),
            };
            let current = base.as_ref().map(|s| s.material.clone()).unwrap_or_default();
            let now = OffsetDateTime::now_utc();
            let plan = renewal::plan(&current, &self.config.requirements, now);
            if plan.is_keep() {
                self.remembered_ca = current.ca_cert.clone();
                return Ok(());
            }
            let next = plan.execute(&current, &self.config.requirements, self.remembered_ca.as_deref(), now)?;
            match self.store.write(base.as_ref(), &next).await? {
                WriteOutcome::Written(stored) => {
                    self.record_rotation(&plan, &next);
                    self.secret = Observed::Present(*stored);
                }
                WriteOutcome::Lost => {
                    tracing::info!(secret = %self.config.secret, "another replica wrote the webhook TLS Secret first; adopting its certificate");
                    self.secret = match self.store.read().await? {
                        Some(stored) => Observed::Present(stored),
                        None => Observed::Absent,
                    };
                }
            }
        }
        Ok(())
    }

    fn record_rotation(&self, plan: &renewal::Plan, next: &Material) {
        let describe = |decision: &Decision| match decision {
            Decision::Keep => "kept".to_string(),
            Decision::Renew(reason) => format!("renewed: {reason}"),
            Decision::Replace(reason) => format!("replaced: {reason}"),
        };
        if !plan.ca.is_keep() {
            self.metrics.webhook_certificate_rotations.with_label_values(&["ca"]).inc();
        }
        if !plan.serving.is_keep() {
            self.metrics.webhook_certificate_rotations.with_label_values(&["serving"]).inc();
        }
        let not_after =
            next.tls_cert.as_deref().and_then(|pem| inspect::inspect(pem).ok()).map(|c| c.not_after.to_string());
        tracing::info!(
            secret = %self.config.secret,
            ca = %describe(&plan.ca),
            serving = %describe(&plan.serving),
            previous_ca_retired = ?plan.retire_previous_ca.as_ref().map(ToString::to_string),
            keeps_previous_ca = next.previous_ca_cert.is_some(),
            not_after = ?not_after,
            "rotated the webhook certificate",
        );
    }

    /// Writes the bundle into every configuration that lacks it.
    async fn ensure_injected(&mut self) -> Result<(), TlsError> {
        let Some(stored) = self.secret.present() else {
            return Ok(());
        };
        let plan = renewal::plan(&stored.material, &self.config.requirements, OffsetDateTime::now_utc());
        if matches!(plan.ca, Decision::Replace(_)) {
            // Never point the apiserver at a CA that is not valid.
            return Ok(());
        }
        let bundle = stored.material.ca_bundle();
        if bundle.is_empty() {
            return Ok(());
        }
        for index in 0..self.configs.len() {
            let Some(current) = self.configs[index].present() else {
                continue;
            };
            let webhook = &self.config.webhook_configs[index];
            if let Injection::Patched(value) = inject::inject(self.client.clone(), webhook, current, &bundle).await? {
                tracing::info!(config = %webhook, "injected the CA bundle into the webhook configuration");
                self.configs[index] = Observed::Present(value);
            }
        }
        Ok(())
    }

    /// The CA certificates (DER) of interest: those of the stored material and the served one.
    fn known_cas(&self) -> Vec<Vec<u8>> {
        let mut cas = Vec::new();
        if let Some(stored) = self.secret.present() {
            for pem in [&stored.material.ca_cert, &stored.material.previous_ca_cert].into_iter().flatten() {
                if let Ok(info) = inspect::inspect(pem) {
                    cas.push(info.der);
                }
            }
        }
        cas.extend(self.served.as_ref().and_then(|s| s.issuer.clone()));
        cas
    }

    fn trusted_everywhere(&self, ca_der: &[u8]) -> bool {
        self.configs.iter().all(|state| state.present().is_some_and(|config| inject::trusts(config, ca_der)))
    }

    fn observe_trust(&mut self) {
        let now = Instant::now();
        let cas = self.known_cas();
        self.trusted_since.retain(|der, _| cas.contains(der));
        for der in cas {
            if self.trusted_everywhere(&der) {
                self.trusted_since.entry(der).or_insert(now);
            } else {
                self.trusted_since.remove(&der);
            }
        }
    }

    /// How long every configuration has trusted `ca_der`.
    fn trusted_for(&self, ca_der: &[u8]) -> Duration {
        if self.configs.is_empty() {
            return Duration::MAX;
        }
        self.trusted_since.get(ca_der).map(|since| since.elapsed()).unwrap_or_default()
    }

    /// Serves the stored certificate when it is servable and either nothing valid is served or
    /// its CA has been trusted long enough.
    fn choose_served(&mut self, now: OffsetDateTime) {
        let Some(stored) = self.secret.present() else {
            return;
        };
        let material = &stored.material;
        let (Some(cert_pem), Some(key_pem)) = (&material.tls_cert, &material.tls_key) else {
            return;
        };
        if self.served.as_ref().is_some_and(|served| &served.cert_pem == cert_pem) {
            return;
        }
        if matches!(renewal::plan(material, &self.config.requirements, now).serving, Decision::Replace(_)) {
            return;
        }
        let (Ok(key), Ok(info)) = (super::certified_key(cert_pem, key_pem), inspect::inspect(cert_pem)) else {
            return;
        };
        let issuer = [&material.ca_cert, &material.previous_ca_cert]
            .into_iter()
            .flatten()
            .filter_map(|pem| inspect::inspect(pem).ok())
            .find(|ca| info.is_signed_by(ca))
            .map(|ca| ca.der);
        let nothing_valid_served = self.served.as_ref().is_none_or(|served| !served.info.is_valid_at(now));
        let trusted = issuer.as_deref().is_some_and(|der| self.trusted_for(der) >= self.config.trust_delay);
        if !(nothing_valid_served || trusted) {
            return;
        }
        self.resolver.replace(key);
        self.metrics.webhook_certificate_expiry.set(info.not_after.unix_timestamp() as f64);
        tracing::info!(
            subject = %info.subject,
            sans = ?info.sans,
            not_after = %info.not_after,
            "serving a new webhook certificate",
        );
        self.served = Some(Served { cert_pem: cert_pem.clone(), info, issuer });
    }

    fn set_readiness(&self, now: OffsetDateTime) {
        match &self.served {
            None => {
                let why = match &self.secret {
                    Observed::Unknown => match &self.secret_watch_error {
                        Some(error) => {
                            format!("Secret {} not read yet: {error}", self.config.secret)
                        }
                        None => format!("Secret {} not read yet", self.config.secret),
                    },
                    _ => format!("no valid certificate in Secret {} yet", self.config.secret),
                };
                self.readiness.set_unmet(CERTIFICATE_CONDITION, why);
            }
            Some(served) if !served.info.is_valid_at(now) => {
                self.readiness.set_unmet(
                    CERTIFICATE_CONDITION,
                    format!(
                        "the served certificate is outside its validity ({} to {})",
                        served.info.not_before, served.info.not_after
                    ),
                );
            }
            Some(_) => self.readiness.set_met(CERTIFICATE_CONDITION),
        }
        let issuer = self.served.as_ref().and_then(|served| served.issuer.as_deref());
        let mut problems = Vec::new();
        for ((webhook, state), error) in
            self.config.webhook_configs.iter().zip(&self.configs).zip(&self.config_watch_errors)
        {
            match (state, issuer) {
                (Observed::Unknown, _) => match error {
                    Some(error) => problems.push(format!("{webhook} not read yet: {error}")),
                    None => problems.push(format!("{webhook} not read yet")),
                },
                (Observed::Absent, _) => problems.push(format!("{webhook} not found")),
                (Observed::Present(config), Some(der)) if inject::trusts(config, der) => {}
                (Observed::Present(_), _) => {
                    problems.push(format!("the caBundle of {webhook} does not trust the served certificate"))
                }
            }
        }
        if problems.is_empty() {
            self.readiness.set_met(CA_BUNDLE_CONDITION);
        } else {
            self.readiness.set_unmet(CA_BUNDLE_CONDITION, problems.join("; "));
        }
    }

    /// When to review again without an event: the next renewal or expiry, the end of a trust
    /// delay, or a retry; at most [`MAX_SLEEP`] away.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let wall = OffsetDateTime::now_utc();
        let at = |t: OffsetDateTime| {
            let ahead = t - wall + time::Duration::milliseconds(10);
            now + Duration::try_from(ahead).unwrap_or_default()
        };
        let mut candidates = Vec::new();
        if let Some(stored) = self.secret.present() {
            candidates.extend(renewal::next_review(&stored.material, &self.config.requirements).map(at));
            let pending = self.served.as_ref().is_none_or(|s| Some(&s.cert_pem) != stored.material.tls_cert.as_ref());
            if pending {
                candidates.extend(self.trusted_since.values().map(|since| *since + self.config.trust_delay));
            }
        }
        candidates.extend(self.served.as_ref().map(|s| at(s.info.not_after)));
        candidates.extend(self.retry_at);
        candidates.into_iter().filter(|t| *t > now).min().unwrap_or(now + MAX_SLEEP).min(now + MAX_SLEEP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_versions_compare_only_when_numeric() {
        assert!(is_older(Some("9"), Some("10")));
        assert!(!is_older(Some("10"), Some("10")));
        assert!(!is_older(Some("abc"), Some("10")));
        assert!(!is_older(None, Some("10")));
    }

    #[test]
    fn follower_settles_after_the_initial_list_and_on_changes() {
        let mut follower = Follower::<u32>::new();
        assert!(follower.settle(watcher::Event::Init).is_none());
        assert!(follower.settle(watcher::Event::InitDone).is_some_and(|s| matches!(s, Observed::Absent)));
        assert!(follower.settle(watcher::Event::Init).is_none());
        assert!(follower.settle(watcher::Event::InitApply(7)).is_none());
        assert!(matches!(follower.settle(watcher::Event::InitDone), Some(Observed::Present(7))));
        assert!(matches!(follower.settle(watcher::Event::Apply(8)), Some(Observed::Present(8))));
        assert!(matches!(follower.settle(watcher::Event::Delete(8)), Some(Observed::Absent)));
    }
}
