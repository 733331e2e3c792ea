//! The floor of `benches/load.sh`: the webhook's own serving stack — [`serve_tls`] (tokio-rustls,
//! hyper-util, the same connection limits), the same rustls configuration and certificate
//! resolver, an axum router with the same body limit and timeout, the same allocator — answering every POST with
//! one fixed allowed AdmissionReview. What mcp-hangar costs above it is the review itself.
//!
//! ```sh
//! cargo run --release --example floor -- --addr 127.0.0.1:9443 --cert tls.crt --key tls.key
//! ```
//!
//! [`serve_tls`]: mcp_hangar::admission::server::serve_tls

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use clap::Parser;
use mcp_hangar::admission::{MAX_BODY_BYTES, MUTATE_PATH, REQUEST_TIMEOUT, VALIDATE_PATH, server};
use mcp_hangar::tls::{self, CertResolver};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// The binary's allocator, as in `mcp-hangar`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The one answer: an allowed review (the uid is not echoed; the load generator does not check it).
const ALLOWED: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":true,"status":{"metadata":{},"code":200}}}"#;

/// Flags.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9443")]
    addr: SocketAddr,
    /// PEM certificate chain.
    #[arg(long)]
    cert: PathBuf,
    /// PEM private key.
    #[arg(long)]
    key: PathBuf,
}

/// Reads the whole body, as a real handler must, and allows.
async fn allow(body: Bytes) -> impl IntoResponse {
    drop(body);
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], ALLOWED)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let key = tls::certified_key(&std::fs::read(&args.cert)?, &std::fs::read(&args.key)?)?;
    let config = tls::server_config(Arc::new(CertResolver::new(key)))?;
    let router = Router::new()
        .route(MUTATE_PATH, post(allow))
        .route(VALIDATE_PATH, post(allow))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT));
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    eprintln!("floor: serving on {}", args.addr);
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    server::serve_tls(listener, config, router, stop, Duration::from_secs(1)).await;
    Ok(())
}
