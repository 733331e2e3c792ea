//! `mcp-hangar serve`: wires the engine, TLS, metrics, the listeners and the controller, and
//! stops them gracefully on SIGTERM or Ctrl-C.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::{ServeConfig, TlsSource};
use super::{CliError, LogFormat, PolicySource};
use crate::admission::{self, WebhookState, live_policy, server};
use crate::metrics::Metrics;
use crate::policy::Engine;
use crate::readiness::Readiness;
use crate::shutdown::Shutdown;
use crate::tls::{self, CA_BUNDLE_CONDITION, CERTIFICATE_CONDITION, CertResolver, files, rotate};

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

/// Starts the certificate source of the chosen mode; a Kubernetes client is made only in the
/// self-managed mode, so the files mode runs without a cluster.
async fn start_certificates(
    source: &TlsSource,
    client: Option<kube::Client>,
    resolver: Arc<CertResolver>,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<()>, CliError> {
    match source {
        TlsSource::Files(source) => {
            let initial = files::load(source)?;
            Ok(tokio::spawn(files::run(source.clone(), initial, resolver, readiness, metrics, shutdown)))
        }
        TlsSource::SelfManaged(config) => {
            let config = config.clone();
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

/// Runs `serve` as configured until SIGTERM or Ctrl-C.
pub async fn run(config: ServeConfig) -> Result<(), CliError> {
    init_logging(config.log_format);
    let engine = Arc::new(Engine::new()?);
    let metrics = Metrics::new();
    let readiness = Readiness::new();
    let resolver = Arc::new(CertResolver::empty());
    let shutdown = Shutdown::new();
    let required =
        config.tls_needs_cluster() || config.policy_source == PolicySource::Cluster || config.controller == Some(true);
    let optional = config.policy_source == PolicySource::Auto || config.controller.is_none();
    let client = if required {
        Some(kube::Client::try_default().await.map_err(super::controller::no_cluster)?)
    } else if optional {
        match kube::Client::try_default().await {
            Ok(client) => Some(client),
            Err(e) => {
                if config.controller.is_none() {
                    tracing::warn!(reason = %e, "no Kubernetes client: the controller is off; --controller=false serves the webhook alone without this warning");
                }
                if config.policy_source == PolicySource::Auto {
                    tracing::info!(reason = %e, "no Kubernetes client: the webhook uses the shipped policy");
                }
                None
            }
        }
    } else {
        None
    };
    let run_controller = config.controller != Some(false) && client.is_some();
    if config.webhook.is_none() && !run_controller {
        return Err(CliError::Usage("--webhook=false without a cluster leaves nothing to serve".into()));
    }
    let certificates = if let Some(webhook) = &config.webhook {
        let shutdown = shutdown.stopped();
        Some(
            start_certificates(
                &webhook.tls,
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
    let live_policy = match (&client, config.policy_source) {
        (Some(client), PolicySource::Cluster | PolicySource::Auto) => {
            Some(tokio::spawn(live_policy::run(client.clone(), engine.clone(), readiness.clone(), shutdown.stopped())))
        }
        _ => None,
    };
    let (controller_stop, controller_stopped) = watch::channel(false);
    let controller = match &client {
        Some(client) if run_controller => Some(super::controller::start(
            &config.controller_settings,
            client.clone(),
            engine.clone(),
            metrics.clone(),
            controller_stopped,
        )?),
        _ => None,
    };
    let webhook = if let Some(webhook) = &config.webhook {
        let tls_config = tls::server_config(resolver)?;
        let webhook_listener = bind(webhook.addr).await?;
        tracing::info!(webhook = %webhook.addr, "serving the webhook");
        let router = admission::webhook_router(WebhookState { engine, metrics: metrics.clone() });
        Some(tokio::spawn(server::serve_tls(
            webhook_listener,
            tls_config,
            router,
            shutdown.stopped(),
            config.shutdown_timeout,
        )))
    } else {
        None
    };
    let admin_listener = bind(config.admin_addr).await?;
    tracing::info!(admin = %config.admin_addr, "serving the admin endpoints");
    let admin = tokio::spawn(server::serve_plain(
        admin_listener,
        admission::admin_router(metrics, readiness.clone()),
        shutdown.stopped(),
    ));

    termination_signal().await;
    let _ = controller_stop.send(true);
    shutdown.begin(&readiness, config.shutdown_delay).await;
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
