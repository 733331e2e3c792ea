//! `mcp-hangar serve`: wires the engine, TLS, metrics, the listeners and the controller,
//! and stops them gracefully on SIGTERM or Ctrl-C.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{CliError, LogFormat, ServeArgs};
use crate::admission::{self, Readiness, WebhookState, server};
use crate::metrics::Metrics;
use crate::policy::Engine;
use crate::tls::{self, CertResolver};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, CliError> {
    TcpListener::bind(addr).await.map_err(|source| CliError::Io { context: format!("binding {addr}"), source })
}

/// Completes on SIGTERM or SIGINT.
async fn termination_signal() {
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

pub(super) async fn run(args: ServeArgs) -> Result<(), CliError> {
    init_logging(args.log_format);
    if !args.webhook && !args.controller {
        return Err(CliError::Usage("--webhook=false and --controller=false leave nothing to serve".into()));
    }
    let engine = Arc::new(Engine::new()?);
    let metrics = Metrics::new();
    let readiness = Readiness::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let webhook = if args.webhook {
        let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) else {
            return Err(CliError::Usage("the webhook needs --tls-cert-file and --tls-key-file".into()));
        };
        let key = tls::certified_key_from_files(&cert.to_string_lossy(), &key.to_string_lossy())?;
        let tls_config = tls::server_config(Arc::new(CertResolver::new(key)))?;
        let webhook_listener = bind(args.webhook_addr).await?;
        tracing::info!(webhook = %args.webhook_addr, "serving the webhook");
        let router = admission::webhook_router(WebhookState { engine: engine.clone(), metrics: metrics.clone() });
        Some(tokio::spawn(server::serve_tls(
            webhook_listener,
            tls_config,
            router,
            stopped(stop_rx.clone()),
            args.shutdown_timeout,
        )))
    } else {
        None
    };
    let (controller_stop, controller_stopped) = watch::channel(false);
    let controller = if args.controller {
        Some(super::controller::start(&args.controller_options, engine, metrics.clone(), controller_stopped).await?)
    } else {
        None
    };
    let admin_listener = bind(args.admin_addr).await?;
    tracing::info!(admin = %args.admin_addr, "serving the admin endpoints");
    let admin = tokio::spawn(server::serve_plain(
        admin_listener,
        admission::admin_router(metrics, readiness.clone()),
        stopped(stop_rx),
    ));
    readiness.set(true);

    termination_signal().await;
    tracing::info!(delay = ?args.shutdown_delay, "shutting down: readiness is now false");
    readiness.set(false);
    let _ = controller_stop.send(true);
    tokio::time::sleep(args.shutdown_delay).await;
    let _ = stop_tx.send(true);
    if let Some(webhook) = webhook {
        let _ = webhook.await;
    }
    if let Some(controller) = controller {
        let _ = controller.await;
    }
    let _ = admin.await;
    tracing::info!("stopped");
    Ok(())
}
