//! `mcp-hangar serve`: wires the engine, TLS, metrics, the listeners and the controller, and
//! stops them gracefully on SIGTERM or Ctrl-C.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{CliError, LogFormat, PolicySource, ServeArgs, TlsArgs, TlsMode};
use crate::admission::{self, WebhookState, live_policy, server};
use crate::metrics::Metrics;
use crate::policy::Engine;
use crate::readiness::Readiness;
use crate::shutdown::Shutdown;
use crate::tls::files::{self, FileSource};
use crate::tls::inject::{WebhookConfigRef, WebhookKind};
use crate::tls::issue::service_sans;
use crate::tls::policy::Requirements;
use crate::tls::rotate::{self, SelfManagedConfig};
use crate::tls::store::SecretRef;
use crate::tls::{self, CA_BUNDLE_CONDITION, CERTIFICATE_CONDITION, CertResolver};

/// First wait after a failed Kubernetes call of the self-managed TLS loop.
const TLS_RETRY_INTERVAL: Duration = Duration::from_secs(1);

pub(super) fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub(super) async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, CliError> {
    TcpListener::bind(addr).await.map_err(|source| CliError::Io { context: format!("binding {addr}"), source })
}

/// Completes on SIGTERM or SIGINT.
pub(super) async fn termination_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
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

/// Starts the certificate source of the chosen mode; a Kubernetes client is made only in the
/// self-managed mode, so the files mode runs without a cluster.
async fn start_certificates(
    args: &TlsArgs,
    client: Option<kube::Client>,
    resolver: Arc<CertResolver>,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<()>, CliError> {
    match args.effective_mode() {
        TlsMode::Files => {
            let (Some(cert_file), Some(key_file)) = (args.tls_cert_file.clone(), args.tls_key_file.clone()) else {
                return Err(CliError::Usage("--tls-mode=files needs --tls-cert-file and --tls-key-file".into()));
            };
            let source = FileSource { cert_file, key_file, interval: args.tls_reload_interval };
            let initial = files::load(&source)?;
            Ok(tokio::spawn(files::run(source, initial, resolver, readiness, metrics, shutdown)))
        }
        TlsMode::SelfManaged => {
            let config = self_managed_config(args)?;
            readiness.set_unmet(CERTIFICATE_CONDITION, "starting");
            readiness.set_unmet(CA_BUNDLE_CONDITION, "starting");
            let Some(client) = client else {
                return Err(CliError::Usage("--tls-mode=self-managed needs a Kubernetes client".into()));
            };
            tracing::info!(secret = %config.secret, sans = ?config.requirements.sans, "self-managed webhook TLS");
            Ok(tokio::spawn(rotate::run(client, config, resolver, readiness, metrics, shutdown)))
        }
    }
}

pub(super) async fn run(args: ServeArgs) -> Result<(), CliError> {
    init_logging(args.log_format);
    if !args.webhook && args.controller == Some(false) {
        return Err(CliError::Usage("--webhook=false and --controller=false leave nothing to serve".into()));
    }
    let engine = Arc::new(Engine::new()?);
    let metrics = Metrics::new();
    let readiness = Readiness::new();
    let resolver = Arc::new(CertResolver::empty());
    let shutdown = Shutdown::new();
    let tls_mode = args.tls.effective_mode();
    let required = (args.webhook && tls_mode == TlsMode::SelfManaged)
        || args.policy_source == PolicySource::Cluster
        || args.controller == Some(true);
    let optional = args.policy_source == PolicySource::Auto || args.controller.is_none();
    let client = if required {
        Some(kube::Client::try_default().await.map_err(super::controller::no_cluster)?)
    } else if optional {
        match kube::Client::try_default().await {
            Ok(client) => Some(client),
            Err(e) => {
                if args.controller.is_none() {
                    tracing::warn!(reason = %e, "no Kubernetes client: the controller is off; --controller=false serves the webhook alone without this warning");
                }
                if args.policy_source == PolicySource::Auto {
                    tracing::info!(reason = %e, "no Kubernetes client: the webhook uses the shipped policy");
                }
                None
            }
        }
    } else {
        None
    };
    let run_controller = args.controller != Some(false) && client.is_some();
    if !args.webhook && !run_controller {
        return Err(CliError::Usage("--webhook=false without a cluster leaves nothing to serve".into()));
    }
    let certificates = if args.webhook {
        let shutdown = shutdown.stopped();
        Some(
            start_certificates(
                &args.tls,
                client.clone(),
                resolver.clone(),
                readiness.clone(),
                metrics.clone(),
                shutdown,
            )
            .await?,
        )
    } else {
        None
    };
    let live_policy = match (&client, args.policy_source) {
        (Some(client), PolicySource::Cluster | PolicySource::Auto) => {
            Some(tokio::spawn(live_policy::run(client.clone(), engine.clone(), readiness.clone(), shutdown.stopped())))
        }
        _ => None,
    };
    let (controller_stop, controller_stopped) = watch::channel(false);
    let controller = match &client {
        Some(client) if run_controller => Some(super::controller::start(
            &args.controller_options,
            client.clone(),
            engine.clone(),
            metrics.clone(),
            controller_stopped,
        )?),
        _ => None,
    };
    let webhook = if args.webhook {
        let tls_config = tls::server_config(resolver)?;
        let webhook_listener = bind(args.webhook_addr).await?;
        tracing::info!(webhook = %args.webhook_addr, "serving the webhook");
        let router = admission::webhook_router(WebhookState { engine, metrics: metrics.clone() });
        Some(tokio::spawn(server::serve_tls(
            webhook_listener,
            tls_config,
            router,
            shutdown.stopped(),
            args.shutdown_timeout,
        )))
    } else {
        None
    };
    let admin_listener = bind(args.admin_addr).await?;
    tracing::info!(admin = %args.admin_addr, "serving the admin endpoints");
    let admin = tokio::spawn(server::serve_plain(
        admin_listener,
        admission::admin_router(metrics, readiness.clone()),
        shutdown.stopped(),
    ));

    termination_signal().await;
    let _ = controller_stop.send(true);
    shutdown.begin(&readiness, args.shutdown_delay).await;
    for task in [webhook, controller, certificates].into_iter().flatten() {
        let _ = task.await;
    }
    let _ = admin.await;
    if let Some(live_policy) = live_policy {
        let _ = live_policy.await;
    }
    tracing::info!("stopped");
    Ok(())
}
