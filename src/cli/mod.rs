//! Command line: `serve`, `validate`, `crds`, `policy`, `certs`. Each subcommand parses its flags with
//! clap and calls into the library; nothing here decides a verdict.

mod certs;
mod crds;
pub mod policy;
mod serve;
pub mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Serve the admission webhook (HTTPS) and the admin endpoints (metrics, health).
    Serve(Box<ServeArgs>),
    /// Run the webhook's mutate-then-validate on manifest files, without a cluster.
    Validate(ValidateArgs),
    /// Print the CustomResourceDefinitions generated from the Rust types.
    Crds(CrdsArgs),
    /// Work with permission profiles and the admission policy.
    Policy(PolicyArgs),
    /// Certificates for local development.
    Certs(CertsArgs),
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
    /// Webhook TLS.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// After SIGTERM, how long to keep serving while readiness reports false, so endpoints drain.
    #[arg(long, env = "MCP_HANGAR_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: std::time::Duration,
    /// Longest time open connections get to finish after the listeners close.
    #[arg(long, env = "MCP_HANGAR_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: std::time::Duration,
    /// Log format.
    #[arg(long, env = "MCP_HANGAR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Where the webhook's permission profiles and admission policy come from: the cluster
    /// (watched, edits apply at once) or the copy shipped in the binary (no cluster needed).
    #[arg(long, env = "MCP_HANGAR_POLICY_SOURCE", value_enum, default_value_t = PolicySource::Cluster)]
    pub policy_source: PolicySource,
}

/// Where the webhook's certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    /// The pods issue, store (Secret), inject (caBundle) and rotate their own certificates.
    SelfManaged,
    /// PEM files (cert-manager, or your own), reloaded when they change.
    Files,
}

/// Webhook TLS flags of `serve`.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Where the webhook's certificate comes from.
    #[arg(long = "tls-mode", env = "MCP_HANGAR_TLS_MODE", value_enum, default_value_t = TlsMode::SelfManaged)]
    pub mode: TlsMode,
    /// files mode: PEM certificate (chain) the webhook serves.
    #[arg(long, env = "MCP_HANGAR_TLS_CERT_FILE", required_if_eq("mode", "files"))]
    pub tls_cert_file: Option<PathBuf>,
    /// files mode: PEM private key of the certificate.
    #[arg(long, env = "MCP_HANGAR_TLS_KEY_FILE", required_if_eq("mode", "files"))]
    pub tls_key_file: Option<PathBuf>,
    /// files mode: how often the files are read again to pick up a new certificate.
    #[arg(long, env = "MCP_HANGAR_TLS_RELOAD_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub tls_reload_interval: std::time::Duration,
    /// self-managed mode: the Secret holding the CA and serving certificate.
    #[arg(long, env = "MCP_HANGAR_TLS_SECRET_NAME", default_value = "mcp-hangar-webhook-tls")]
    pub tls_secret_name: String,
    /// self-managed mode: namespace of the Secret [default: the service namespace].
    #[arg(long, env = "MCP_HANGAR_TLS_SECRET_NAMESPACE")]
    pub tls_secret_namespace: Option<String>,
    /// self-managed mode: the webhook Service; the certificate covers `<service>.<namespace>.svc`
    /// and `<service>.<namespace>.svc.cluster.local`.
    #[arg(long, env = "MCP_HANGAR_TLS_SERVICE_NAME", default_value = "mcp-hangar-webhook")]
    pub tls_service_name: String,
    /// self-managed mode: namespace of the webhook Service.
    #[arg(long, env = "POD_NAMESPACE")]
    pub tls_service_namespace: Option<String>,
    /// self-managed mode: an extra DNS name or IP address for the certificate (repeatable), for
    /// webhooks reached by URL.
    #[arg(long = "tls-san", env = "MCP_HANGAR_TLS_SANS", value_delimiter = ',')]
    pub tls_sans: Vec<String>,
    /// self-managed mode: lifetime of an issued CA.
    #[arg(long, env = "MCP_HANGAR_TLS_CA_VALIDITY", default_value = "87600h", value_parser = parse_duration)]
    pub tls_ca_validity: std::time::Duration,
    /// self-managed mode: lifetime of an issued serving certificate.
    #[arg(long, env = "MCP_HANGAR_TLS_CERT_VALIDITY", default_value = "2160h", value_parser = parse_duration)]
    pub tls_cert_validity: std::time::Duration,
    /// self-managed mode: share of its lifetime after which a certificate (CA or serving) is
    /// renewed: a fraction such as 2/3, or a decimal in (0, 1].
    #[arg(long, env = "MCP_HANGAR_TLS_RENEW_FRACTION", default_value = "2/3", value_parser = parse_fraction)]
    pub tls_renew_fraction: f64,
    /// self-managed mode: how long a new CA must have been in every caBundle before the
    /// certificates it signed are served (apiservers cache webhook configurations).
    #[arg(long, env = "MCP_HANGAR_TLS_BUNDLE_PROPAGATION_DELAY", default_value = "10s", value_parser = parse_duration)]
    pub tls_bundle_propagation_delay: std::time::Duration,
    /// self-managed mode: the MutatingWebhookConfiguration whose caBundle is kept injected
    /// (empty: none).
    #[arg(long, env = "MCP_HANGAR_MUTATING_WEBHOOK_CONFIG", default_value = "mcp-hangar")]
    pub mutating_webhook_config: String,
    /// self-managed mode: the ValidatingWebhookConfiguration whose caBundle is kept injected
    /// (empty: none).
    #[arg(long, env = "MCP_HANGAR_VALIDATING_WEBHOOK_CONFIG", default_value = "mcp-hangar")]
    pub validating_webhook_config: String,
}

/// Flags of `certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// The `certs` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a CA and a serving certificate it signed (ca.crt, ca.key, tls.crt, tls.key) for local
    /// development, e.g. `serve --tls-mode=files` without a cluster.
    Generate(CertsGenerateArgs),
}

/// Flags of `certs generate`.
#[derive(Debug, Args)]
pub struct CertsGenerateArgs {
    /// The webhook Service name: the certificate covers `<service>.<namespace>.svc` and
    /// `<service>.<namespace>.svc.cluster.local`.
    #[arg(long, default_value = "mcp-hangar-webhook")]
    pub service: String,
    /// The webhook Service namespace.
    #[arg(long, default_value = "mcp-hangar-system")]
    pub namespace: String,
    /// An extra DNS name or IP address (repeatable), e.g. localhost or 127.0.0.1.
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Directory to write the PEM files to (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Lifetime of the CA.
    #[arg(long, default_value = "87600h", value_parser = parse_duration)]
    pub ca_validity: std::time::Duration,
    /// Lifetime of the serving certificate.
    #[arg(long, default_value = "2160h", value_parser = parse_duration)]
    pub cert_validity: std::time::Duration,
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

/// Where the webhook's policy comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicySource {
    /// MCPPermissionProfiles and the MCPAdmissionPolicy in the cluster, watched.
    Cluster,
    /// The defaults shipped in `policy/`, built into the binary.
    Shipped,
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

/// Parses a share of a lifetime: `2/3` or `0.75`, in (0, 1].
fn parse_fraction(text: &str) -> Result<f64, String> {
    const HINT: &str = "must be a fraction such as 2/3 or a decimal such as 0.75, above 0 and at most 1";
    let value = match text.split_once('/') {
        Some((numerator, denominator)) => {
            let numerator: f64 = numerator.trim().parse().map_err(|_| HINT.to_string())?;
            let denominator: f64 = denominator.trim().parse().map_err(|_| HINT.to_string())?;
            numerator / denominator
        }
        None => text.trim().parse().map_err(|_| HINT.to_string())?,
    };
    if value.is_finite() && value > 0.0 && value <= 1.0 { Ok(value) } else { Err(HINT.to_string()) }
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
    /// No Kubernetes client could be configured (self-managed TLS needs one).
    #[error("Kubernetes client: {0}")]
    Kubernetes(#[from] kube::Error),
    /// Flags that do not go together.
    #[error("{0}")]
    Usage(String),
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
        Command::Serve(args) => serve::run(*args).await.map(|()| ExitCode::SUCCESS),
        Command::Validate(args) => validate::run(&args),
        Command::Crds(args) => crds::run(&args),
        Command::Policy(args) => policy::run(&args),
        Command::Certs(args) => certs::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_parse_as_shares_of_a_lifetime() {
        assert!((parse_fraction("2/3").unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(parse_fraction("0.5"), Ok(0.5));
        assert_eq!(parse_fraction("1"), Ok(1.0));
        for bad in ["0", "3/2", "1/0", "-1", "x", "NaN", ""] {
            assert!(parse_fraction(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_flags_parse_with_their_defaults() {
        let cli =
            Cli::try_parse_from(["mcp-hangar", "serve", "--tls-san", "localhost", "--tls-san", "10.0.0.1"]).unwrap();
        let Command::Serve(serve) = cli.command else { panic!("serve") };
        assert_eq!(serve.tls.mode, TlsMode::SelfManaged);
        assert_eq!(serve.tls.tls_sans, vec!["localhost", "10.0.0.1"]);
        assert_eq!(serve.tls.tls_secret_name, "mcp-hangar-webhook-tls");
        assert_eq!(serve.tls.mutating_webhook_config, "mcp-hangar");
        assert_eq!(serve.tls.tls_cert_validity, std::time::Duration::from_secs(90 * 24 * 3600));
        assert!(
            Cli::try_parse_from(["mcp-hangar", "serve", "--tls-mode", "files"]).is_err(),
            "files mode needs the files"
        );
        let files = Cli::try_parse_from([
            "mcp-hangar",
            "serve",
            "--tls-mode=files",
            "--tls-cert-file",
            "c.pem",
            "--tls-key-file",
            "k.pem",
        ]);
        assert!(files.is_ok());
    }
}
