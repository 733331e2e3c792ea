//! `mcp-hangar serve`: wires the engine, TLS, metrics and both listeners, and stops them
//! gracefully on SIGTERM or Ctrl-C.

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
    let engine = Arc::new(Engine::new()?);
    let metrics = Metrics::new();
    let key =
        tls::certified_key_from_files(&args.tls_cert_file.to_string_lossy(), &args.tls_key_file.to_string_lossy())?;
    let resolver = Arc::new(CertResolver::new(key));
    let tls_config = tls::server_config(resolver)?;
    let readiness = Readiness::default();

    let webhook_listener = bind(args.webhook_addr).await?;
    let admin_listener = bind(args.admin_addr).await?;
    tracing::info!(webhook = %args.webhook_addr, admin = %args.admin_addr, "serving");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let router = admission::webhook_router(WebhookState { engine, metrics: metrics.clone() });
    let webhook = tokio::spawn(server::serve_tls(
        webhook_listener,
        tls_config,
        router,
        stopped(stop_rx.clone()),
        args.shutdown_timeout,
    ));
    let admin = tokio::spawn(server::serve_plain(
        admin_listener,
        admission::admin_router(metrics, readiness.clone()),
        stopped(stop_rx),
    ));
    readiness.set(true);

    termination_signal().await;
    tracing::info!(delay = ?args.shutdown_delay, "shutting down: readiness is now false");
    readiness.set(false);
    tokio::time::sleep(args.shutdown_delay).await;
    let _ = stop_tx.send(true);
    let _ = webhook.await;
    let _ = admin.await;
    tracing::info!("stopped");
    Ok(())
}
