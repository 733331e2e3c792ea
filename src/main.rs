//! The `mcp-hangar` binary: installs the TLS crypto provider, parses the command line, runs it.
//! Memory comes from mimalloc (see BENCHMARKS.md for why).

use std::process::ExitCode;

use clap::Parser;
use mcp_hangar::cli::{self, Cli};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(cli::validate::EXIT_UNREADABLE)
        }
    }
}
