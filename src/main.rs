//! The `mcp-hangar` binary: installs the TLS crypto provider, parses the command line, runs it
//! on a runtime sized for the command (`Cli::runtime`).
//! Memory comes from mimalloc (see BENCHMARKS.md for why).

use std::process::ExitCode;

use clap::Parser;
use mcp_hangar::cli::{self, Cli};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let outcome = match cli.runtime() {
        Ok(runtime) => runtime.block_on(cli::run(cli)),
        Err(source) => Err(cli::CliError::Io { context: "starting the runtime".into(), source }),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(cli::validate::EXIT_UNREADABLE)
        }
    }
}
