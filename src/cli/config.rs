//! Plain configuration of `serve`: the flags turned once into structs that say what runs and
//! how, so `serve` only wires the parts together and tests can build a configuration without
//! a command line.

use std::net::SocketAddr;
use std::time::Duration;

use super::controller::{ControllerArgs, ControllerSettings, LeaseSettings};
use super::{CliError, GatewayArgs, LogFormat, PolicySource, ServeArgs, TlsArgs, TlsMode};
use crate::controller::ControllerConfig;
use crate::tls::files::FileSource;
use crate::tls::inject::{WebhookConfigRef, WebhookKind};
use crate::tls::issue::service_sans;
use crate::tls::renewal::Requirements;
use crate::tls::rotate::SelfManagedConfig;
use crate::tls::store::SecretRef;

/// First wait after a failed Kubernetes call of the self-managed TLS loop.
const TLS_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Everything `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Log format.
    pub log_format: LogFormat,
    /// The plain-HTTP admin listener (/metrics, /healthz, /readyz).
    pub admin_addr: SocketAddr,
    /// The HTTPS webhook, when served.
    pub webhook: Option<WebhookConfig>,
    /// Where the webhook's profiles and admission policy come from.
    pub policy_source: PolicySource,
    /// Whether the controller runs: `Some(true)` requires a cluster, `None` runs it when one is
    /// found, `Some(false)` never.
    pub controller: Option<bool>,
    /// The controller's settings, used when it runs.
    pub controller_settings: ControllerSettings,
    /// How long readiness reports false before the listeners close.
    pub shutdown_delay: Duration,
    /// Longest time open connections get to finish.
    pub shutdown_timeout: Duration,
}

/// The webhook listener and its certificates.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// Where the serving certificate comes from.
    pub tls: TlsSource,
}

/// Where the webhook's serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files, reloaded when they change (cert-manager, a mounted Secret, local files).
    Files(FileSource),
    /// Issued, stored and rotated by the operator itself, caBundle injected.
    SelfManaged(SelfManagedConfig),
}

impl ServeConfig {
    /// Reads the flags of `serve`, refusing combinations that leave nothing to serve or name
    /// half of a certificate source.
    pub fn from_args(args: &ServeArgs) -> Result<ServeConfig, CliError> {
        if !args.webhook && args.controller == Some(false) {
            return Err(CliError::Usage("--webhook=false and --controller=false leave nothing to serve".into()));
        }
        let webhook = if args.webhook {
            Some(WebhookConfig { addr: args.webhook_addr, tls: tls_source(&args.tls)? })
        } else {
            None
        };
        Ok(ServeConfig {
            log_format: args.process.log_format,
            admin_addr: args.admin_addr,
            webhook,
            policy_source: args.policy_source,
            controller: args.controller,
            controller_settings: controller_settings(&args.controller_options),
            shutdown_delay: args.process.shutdown_delay,
            shutdown_timeout: args.process.shutdown_timeout,
        })
    }

    /// True when the webhook certificates need a Kubernetes client.
    pub fn tls_needs_cluster(&self) -> bool {
        matches!(self.webhook, Some(WebhookConfig { tls: TlsSource::SelfManaged(_), .. }))
    }
}

fn tls_source(args: &TlsArgs) -> Result<TlsSource, CliError> {
    match args.effective_mode() {
        TlsMode::Files => {
            let (Some(cert_file), Some(key_file)) = (args.tls_cert_file.clone(), args.tls_key_file.clone()) else {
                return Err(CliError::Usage("--tls-mode=files needs --tls-cert-file and --tls-key-file".into()));
            };
            Ok(TlsSource::Files(FileSource { cert_file, key_file, interval: args.tls_reload_interval }))
        }
        TlsMode::SelfManaged => Ok(TlsSource::SelfManaged(self_managed_config(args)?)),
    }
}

/// The controller's settings from its flags.
pub fn controller_settings(args: &ControllerArgs) -> ControllerSettings {
    ControllerSettings {
        config: ControllerConfig {
            concurrency: args.controller_concurrency,
            cluster_domain: args.cluster_domain.clone(),
            operator_namespace: args.operator_namespace.clone(),
            gateway_url: args.gateway_url.clone().filter(|u| !u.is_empty()),
            ..ControllerConfig::default()
        },
        leader_election: args.leader_election.then(|| LeaseSettings {
            namespace: args
                .leader_election_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .filter(|n| !n.is_empty()),
            name: args.lease_name.clone(),
        }),
    }
}

/// The self-managed TLS settings from the flags.
pub fn self_managed_config(args: &TlsArgs) -> Result<SelfManagedConfig, CliError> {
    let namespace = args.tls_service_namespace.clone().filter(|ns| !ns.is_empty()).ok_or_else(|| {
        CliError::Usage(
            "--tls-mode=self-managed needs the service namespace: --tls-service-namespace or POD_NAMESPACE".into(),
        )
    })?;
    let mut sans = service_sans(&args.tls_service_name, &namespace);
    sans.extend(args.tls_sans.iter().map(|san| san.trim().to_string()).filter(|san| !san.is_empty()));
    if let Err(e) = rcgen::CertificateParams::new(sans.clone()) {
        return Err(CliError::Usage(format!("--tls-san: not a DNS name or IP address: {e}")));
    }
    let webhook_configs = [
        (WebhookKind::Mutating, &args.mutating_webhook_config),
        (WebhookKind::Validating, &args.validating_webhook_config),
    ]
    .into_iter()
    .filter(|(_, name)| !name.is_empty())
    .map(|(kind, name)| WebhookConfigRef { kind, name: name.clone() })
    .collect();
    Ok(SelfManagedConfig {
        secret: SecretRef {
            namespace: args
                .tls_secret_namespace
                .clone()
                .filter(|ns| !ns.is_empty())
                .unwrap_or_else(|| namespace.clone()),
            name: args.tls_secret_name.clone(),
        },
        requirements: Requirements {
            sans,
            ca_common_name: format!("mcp-hangar webhook CA ({namespace})"),
            ca_validity: args.tls_ca_validity,
            serving_validity: args.tls_cert_validity,
            renew_fraction: args.tls_renew_fraction,
        },
        webhook_configs,
        trust_delay: args.tls_bundle_propagation_delay,
        retry_interval: TLS_RETRY_INTERVAL,
    })
}

/// The gateway's plain settings from its flags.
pub fn gateway_config(args: &GatewayArgs) -> crate::gateway::GatewayConfig {
    crate::gateway::GatewayConfig {
        max_body_bytes: args.max_body_bytes,
        max_response_bytes: args.max_response_bytes,
        request_body_timeout: args.request_body_timeout,
        connect_timeout: args.connect_timeout,
        upstream_timeout: args.upstream_timeout,
        stream_idle_timeout: args.stream_idle_timeout,
        header_read_timeout: args.header_read_timeout,
        allowed_origins: args.allowed_origins.iter().map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect(),
        max_cold_start_waiters: args.max_cold_start_waiters,
        host_overrides: Default::default(),
    }
}
