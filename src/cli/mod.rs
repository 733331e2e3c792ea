//! Command line: `serve`, `validate`, `crds`, `render`. Each subcommand parses its flags with clap
//! and calls into the library; nothing here decides a verdict.

mod controller;
mod crds;
pub mod policy;
pub mod render;
mod serve;
pub mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use controller::ControllerArgs;
pub use crds::render_crds;

/// mcp-hangar: Kubernetes operator for MCP servers.
#[derive(Debug, Parser)]
#[command(name = "mcp-hangar", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhook (HTTPS), the controller and the admin endpoints (metrics, health).
    Serve(ServeArgs),
    /// Run the webhook's mutate-then-validate on manifest files, without a cluster.
    Validate(ValidateArgs),
    /// Print the CustomResourceDefinitions generated from the Rust types.
    Crds(CrdsArgs),
    /// Print the objects the controller would apply for MCPServer manifests, without a cluster.
    Render(RenderArgs),
    /// Work with permission profiles and the admission policy.
    Policy(PolicyArgs),
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS webhook listener.
    #[arg(long, env = "MCP_HANGAR_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub webhook_addr: std::net::SocketAddr,
    /// Address of the plain-HTTP admin listener (/metrics, /healthz, /readyz).
    #[arg(long, env = "MCP_HANGAR_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: std::net::SocketAddr,
    /// PEM certificate (chain) the webhook serves; required with the webhook.
    #[arg(long, env = "MCP_HANGAR_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the certificate; required with the webhook.
    #[arg(long, env = "MCP_HANGAR_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// After SIGTERM, how long to keep serving while readiness reports false, so endpoints drain.
    #[arg(long, env = "MCP_HANGAR_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: std::time::Duration,
    /// Longest time open connections get to finish after the listeners close.
    #[arg(long, env = "MCP_HANGAR_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: std::time::Duration,
    /// Log format.
    #[arg(long, env = "MCP_HANGAR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Serve the admission webhook; `--webhook=false` runs the controller alone.
    #[arg(long, env = "MCP_HANGAR_WEBHOOK", default_value_t = true, action = clap::ArgAction::Set)]
    pub webhook: bool,
    /// Run the controller; `--controller=false` serves the webhook alone, with no cluster.
    #[arg(long, env = "MCP_HANGAR_CONTROLLER", default_value_t = true, action = clap::ArgAction::Set)]
    pub controller: bool,
    /// Controller settings.
    #[command(flatten)]
    pub controller_options: ControllerArgs,
}

/// Flags of `render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// A file or directory of YAML/JSON manifests (multi-document); repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Also read the directories below a directory.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Namespace of servers that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// Flags of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A file or directory of YAML/JSON manifests (multi-document); repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Also read the directories below a directory.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Evaluate under the profiles and admission policy in this directory instead of the shipped `policy/`.
    #[arg(long, value_name = "DIR")]
    pub policy: Option<PathBuf>,
    /// Check Pods and the pod templates of Deployments against a Pod Security Standards level instead.
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub pod_security: Option<PodSecurityArg>,
}

/// A Pod Security Standards level on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PodSecurityArg {
    /// The restricted level.
    Restricted,
    /// The baseline level.
    Baseline,
}

impl From<PodSecurityArg> for crate::crd::PodSecurityLevel {
    fn from(arg: PodSecurityArg) -> Self {
        match arg {
            PodSecurityArg::Restricted => crate::crd::PodSecurityLevel::Restricted,
            PodSecurityArg::Baseline => crate::crd::PodSecurityLevel::Baseline,
        }
    }
}

/// Flags of `policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// What to do with policy manifests.
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// The `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check permission profiles and admission policy manifests; report every error with file, document and field.
    Check {
        /// A file or directory of MCPPermissionProfile and MCPAdmissionPolicy manifests.
        dir: PathBuf,
    },
}

/// Flags of `crds`.
#[derive(Debug, Args)]
pub struct CrdsArgs {
    /// Write one file per CRD into this directory instead of printing them.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// How `validate` prints its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// What kubectl would print.
    Text,
    /// One JSON document with every result.
    Json,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::policy::format::parse_positive_duration(text)
        .or_else(|e| if text == "0s" || text == "0" { Ok(std::time::Duration::ZERO) } else { Err(e) })
}

/// Errors a subcommand reports before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Policy engine could not start.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The serve flags do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// The Kubernetes client could not be set up.
    #[error("kubernetes: {0}")]
    Kube(String),
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The failure.
        source: std::io::Error,
    },
}

/// Writes to standard output; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Validate(args) => validate::run(&args),
        Command::Crds(args) => crds::run(&args),
        Command::Render(args) => render::run(&args),
        Command::Policy(args) => policy::run(&args),
    }
}
