//! The upstream of `benches/gateway.sh`: a stateless (2026-07-28) MCP server on the gateway's
//! own serving stack ([`serving::serve`], plain HTTP, the same allocator) whose one tool, `echo`,
//! answers a `tools/call` with its `text` argument. Driven directly, it is the baseline the
//! gateway is measured against: what the gateway costs is the difference.
//!
//! ```sh
//! cargo run --release --example mcp_upstream -- --addr 127.0.0.1:9090
//! ```
//!
//! [`serving::serve`]: mcp_hangar::serving::serve

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use clap::Parser;
use mcp_hangar::serving::{self, ConnectionLimits, Plain};
use serde_json::{Value, json};

/// The binary's allocator, as in `mcp-hangar`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Flags.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9090")]
    addr: SocketAddr,
}

/// Answers one JSON-RPC request: `tools/call` of `echo` returns the text it was given,
/// `tools/list` the one tool, `server/discover` the server's description.
async fn mcp(body: Bytes) -> impl IntoResponse {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], Vec::new());
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let result = match request.get("method").and_then(Value::as_str) {
        Some("tools/call") => {
            let text = request.pointer("/params/arguments/text").cloned().unwrap_or(json!(""));
            json!({"content": [{"type": "text", "text": text}], "isError": false})
        }
        Some("tools/list") => json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}),
        _ => json!({"serverInfo": {"name": "mcp-upstream", "version": "1"}, "capabilities": {"tools": {}}}),
    };
    let answer = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "result": result})).unwrap_or_default();
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], answer)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let router = Router::new().route("/mcp", post(mcp));
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    eprintln!("mcp_upstream: serving on {}", args.addr);
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serving::serve(listener, Plain, router, stop, Duration::from_secs(1), ConnectionLimits::default()).await;
    Ok(())
}
