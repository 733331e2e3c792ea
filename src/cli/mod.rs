//! Command line: `serve`, `validate`, `crds`, `webhooks`, `policy`, `certs`, `render`. Each
//! subcommand parses its flags with clap and calls into the library; nothing here decides a verdict.

mod certs;
pub mod config;
mod controller;
mod crds;
mod gateway;
pub mod policy;
pub mod render;
pub mod serve;
pub mod validate;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use controller::ControllerArgs;
pub use crds::render_crds;
pub use webhooks::render_webhooks;

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
    Serve(Box<ServeArgs>),
    /// Run the webhook's mutate-then-validate on manifest files, without a cluster.
    Validate(ValidateArgs),
    /// Print the CustomResourceDefinitions generated from the Rust types.
    Crds(CrdsArgs),
    /// Print the webhook registrations (MutatingWebhookConfiguration, ValidatingWebhookConfiguration).
    Webhooks(WebhooksArgs),
    /// Work with permission profiles and the admission policy.
    Policy(PolicyArgs),
    /// Certificates for local development.
    Certs(CertsArgs),
    /// Print the objects the controller would apply for MCPServer manifests, without a cluster.
    Render(RenderArgs),
    /// Serve the MCP gateway: every MCPServer and MCPServerGroup behind one MCP-aware proxy.
    Gateway(Box<GatewayArgs>),
}

/// Flags of `gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Address of the MCP listener (plain HTTP).
    #[arg(long, env = "MCP_HANGAR_GATEWAY_ADDR", default_value = "0.0.0.0:8090")]
    pub addr: std::net::SocketAddr,
    /// Address of the admin listener (/metrics, /healthz, /readyz).
    #[arg(long, env = "MCP_HANGAR_GATEWAY_ADMIN_ADDR", default_value = "0.0.0.0:8091")]
    pub admin_addr: std::net::SocketAddr,
    /// File holding the session key shared by every gateway replica (at least 32 bytes), e.g. a
    /// mounted Secret; more lines hold older keys that still verify (rotation).
    #[arg(long, env = "MCP_HANGAR_GATEWAY_SESSION_KEY_FILE")]
    pub session_key_file: Option<PathBuf>,
    /// The session key itself (from a Secret through `valueFrom.secretKeyRef`), when no file is given.
    #[arg(long, env = "MCP_HANGAR_GATEWAY_SESSION_KEY", hide_env_values = true)]
    pub session_key: Option<String>,
    /// Route the MCPServers and MCPServerGroups of this manifest file instead of the cluster's.
    #[arg(long, env = "MCP_HANGAR_GATEWAY_ROUTES_FILE")]
    pub routes_file: Option<PathBuf>,
    /// Who may call: `kubernetes` (a ServiceAccount token with audience mcp-hangar-gateway,
    /// checked with a TokenReview and matched against each server's permission profile) or
    /// `none` (anyone who reaches the gateway; development only).
    #[arg(long, env = "MCP_HANGAR_GATEWAY_AUTH", value_enum, default_value_t = GatewayAuth::Kubernetes)]
    pub auth: GatewayAuth,
    /// Browser Origin allowed to call (repeatable; `*` for any). Requests without Origin always may.
    #[arg(long = "allowed-origin", env = "MCP_HANGAR_GATEWAY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Largest request body, in bytes.
    #[arg(long, env = "MCP_HANGAR_GATEWAY_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest tools/list answer or SSE event read to filter it, in bytes.
    #[arg(long, env = "MCP_HANGAR_GATEWAY_MAX_RESPONSE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_response_bytes: usize,
    /// Time a client gets to send the request headers.
    #[arg(long, env = "MCP_HANGAR_GATEWAY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: std::time::Duration,
    /// Time a client gets to send the request body.
    #[arg(long, env = "MCP_HANGAR_GATEWAY_REQUEST_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_body_timeout: std::time::Duration,
    /// Time to connect to an upstream server.
    #[arg(long, env = "MCP_HANGAR_GATEWAY_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: std::time::Duration,
    /// Time an upstream gets to answer (its headers; streams then flow).
    #[arg(long, env = "MCP_HANGAR_GATEWAY_UPSTREAM_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub upstream_timeout: std::time::Duration,
    /// Longest silence on a streamed answer before it is cut.
    #[arg(long, env = "MCP_HANGAR_GATEWAY_STREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub stream_idle_timeout: std::time::Duration,
    /// Namespace of the demand Leases that wake scale-to-zero servers (the operator's; the
    /// chart passes the release namespace through `POD_NAMESPACE`).
    #[arg(long, env = "POD_NAMESPACE", default_value = crate::controller::resources::DEFAULT_OPERATOR_NAMESPACE)]
    pub operator_namespace: String,
    /// Most requests per server that wait for it to start from zero; more get 503 at once.
    #[arg(long, env = "MCP_HANGAR_GATEWAY_MAX_COLD_START_WAITERS",
          default_value_t = crate::gateway::DEFAULT_MAX_COLD_START_WAITERS)]
    pub max_cold_start_waiters: usize,
    /// Logging and graceful shutdown.
    #[command(flatten)]
    pub process: ProcessArgs,
}

/// Who may call through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GatewayAuth {
    /// ServiceAccount tokens (TokenReview), matched against the servers' permission profiles.
    Kubernetes,
    /// Anyone: no token is asked for.
    None,
}

/// Flags every long-running command shares: logging and graceful shutdown.
#[derive(Debug, Clone, Args)]
pub struct ProcessArgs {
    /// After SIGTERM, how long to keep serving while readiness reports false, so endpoints drain.
    #[arg(long, env = "MCP_HANGAR_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: std::time::Duration,
    /// Longest time open connections, requests and streams get to finish after the listeners close.
    #[arg(long, env = "MCP_HANGAR_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: std::time::Duration,
    /// Log format.
    #[arg(long, env = "MCP_HANGAR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Tokio worker threads. Unset: `serve` runs one per CPU the pod may use, at most 2;
    /// `gateway` one per CPU.
    #[arg(long, env = "MCP_HANGAR_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

/// Most worker threads `serve` starts unless told: each thread keeps its own allocator pages, so
/// more threads than the webhook and the controllers can use (2 serve thousands of reviews a
/// second) would only make the operator's memory grow with the node's cores (BENCHMARKS.md).
pub const SERVE_MAX_WORKER_THREADS: usize = 2;

/// The CPUs this process may use: [`std::thread::available_parallelism`], which counts the
/// CPUs the cgroup's quota allows.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `serve`'s worker threads: `requested`, else the `available` CPUs up to
/// [`SERVE_MAX_WORKER_THREADS`].
pub fn serve_worker_threads(requested: Option<u16>, available: usize) -> usize {
    requested.map_or(available.clamp(1, SERVE_MAX_WORKER_THREADS), usize::from)
}

impl Cli {
    /// The worker threads this command runs, out of the `available` CPUs.
    pub fn worker_threads(&self, available: usize) -> usize {
        match &self.command {
            Command::Serve(args) => serve_worker_threads(args.process.worker_threads, available),
            Command::Gateway(args) => args.process.worker_threads.map_or(available.max(1), usize::from),
            _ => available.max(1),
        }
    }

    /// The runtime this command runs on, out of the [`available_cpus`].
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let threads = self.worker_threads(available_cpus());
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
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
    /// Logging and graceful shutdown.
    #[command(flatten)]
    pub process: ProcessArgs,
    /// Where the webhook's permission profiles and admission policy come from: the cluster
    /// (watched, edits apply at once), the copy shipped in the binary (no cluster needed), or
    /// auto: the cluster when a Kubernetes client can be configured, else the shipped copy.
    #[arg(long, env = "MCP_HANGAR_POLICY_SOURCE", value_enum, default_value_t = PolicySource::Auto)]
    pub policy_source: PolicySource,
    /// Serve the admission webhook; `--webhook=false` runs the controller alone.
    #[arg(long, env = "MCP_HANGAR_WEBHOOK", default_value_t = true, action = clap::ArgAction::Set)]
    pub webhook: bool,
    /// Run the controller: `true` requires a cluster, `false` serves the webhook alone. Unset, it
    /// runs when a Kubernetes configuration is found (in a pod, or through KUBECONFIG).
    #[arg(long, env = "MCP_HANGAR_CONTROLLER", action = clap::ArgAction::Set)]
    pub controller: Option<bool>,
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

/// Where the webhook's certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    /// The pods issue, store (Secret), inject (caBundle) and rotate their own certificates.
    SelfManaged,
    /// PEM files (cert-manager, or your own), reloaded when they change.
    Files,
}

impl TlsArgs {
    /// The mode in force: the one given, else files when a certificate file is given, else self-managed.
    pub fn effective_mode(&self) -> TlsMode {
        self.mode.unwrap_or(if self.tls_cert_file.is_some() { TlsMode::Files } else { TlsMode::SelfManaged })
    }
}

/// Webhook TLS flags of `serve`.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Where the webhook's certificate comes from [default: files when --tls-cert-file is given,
    /// else self-managed].
    #[arg(long = "tls-mode", env = "MCP_HANGAR_TLS_MODE", value_enum)]
    pub mode: Option<TlsMode>,
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
    /// Check, then server-side apply permission profiles and admission policy manifests (profiles
    /// first), retrying while the cluster or the webhook is not ready yet.
    Apply(PolicyApplyArgs),
}

/// Flags of `policy apply`.
#[derive(Debug, Args)]
pub struct PolicyApplyArgs {
    /// A file or directory of MCPPermissionProfile and MCPAdmissionPolicy manifests (hidden
    /// entries, such as a mounted ConfigMap's `..data`, are passed over).
    #[arg(short = 'f', long = "filename")]
    pub dir: PathBuf,
    /// Field manager of the server-side apply; fields it set before and no longer sets are removed.
    #[arg(long, default_value = "mcp-hangar-policy")]
    pub field_manager: String,
    /// Give up when the objects are still not applied after this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

/// Flags of `crds`.
#[derive(Debug, Args)]
pub struct CrdsArgs {
    /// Write one file per CRD into this directory instead of printing them (repeatable: the same
    /// files into each, e.g. `crds/` and the chart's `crds/`).
    #[arg(long)]
    pub out_dir: Vec<PathBuf>,
}

/// Flags of `webhooks`.
#[derive(Debug, Args)]
pub struct WebhooksArgs {
    /// Write `mutatingwebhookconfiguration.yaml` and `validatingwebhookconfiguration.yaml` into
    /// this directory instead of printing them.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Namespace of the webhook Service (the operator's namespace; never sent to the pod-level check).
    #[arg(long, default_value = crate::admission::registration::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Name of the webhook Service (`serve --tls-service-name`).
    #[arg(long, default_value = crate::admission::registration::DEFAULT_SERVICE_NAME)]
    pub service: String,
    /// Name of both configurations (`serve --mutating-webhook-config`, `--validating-webhook-config`).
    #[arg(long, default_value = crate::admission::registration::DEFAULT_CONFIGURATION_NAME)]
    pub name: String,
    /// Another namespace the pod-level check never sees (repeatable); `kube-system` and `--namespace`
    /// never are. mcp-hangar kinds are reviewed in every namespace.
    #[arg(long = "exclude-namespace")]
    pub exclude_namespaces: Vec<String>,
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
    /// The cluster when a Kubernetes client can be configured, else the shipped copy.
    Auto,
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
    crate::policy::parse_positive_duration(text)
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
    /// `policy apply` could not apply every object.
    #[error(transparent)]
    Apply(#[from] policy::ApplyError),
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

/// Writes generated files into `dir` (created if missing), each as `(file name, contents)`.
fn write_files(dir: &std::path::Path, files: &[(String, String)]) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| CliError::Io { context: format!("creating {}", dir.display()), source })?;
    for (name, contents) in files {
        let path = dir.join(name);
        std::fs::write(&path, contents)
            .map_err(|source| CliError::Io { context: format!("writing {}", path.display()), source })?;
    }
    Ok(())
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve(args) => serve::run(config::ServeConfig::from_args(&args)?).await.map(|()| ExitCode::SUCCESS),
        Command::Validate(args) => match policy::engine_for(args.policy.as_deref())? {
            Some(engine) => Ok(validate::run(&engine, &args)),
            None => Ok(ExitCode::from(validate::EXIT_UNREADABLE)),
        },
        Command::Crds(args) => crds::run(&args),
        Command::Webhooks(args) => webhooks::run(&args),
        Command::Policy(args) => policy::run(&args).await,
        Command::Certs(args) => certs::run(&args),
        Command::Render(args) => render::run(&args),
        Command::Gateway(args) => gateway::run(*args).await.map(|()| ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_runs_at_most_two_worker_threads_unless_told() {
        let threads = |args: &[&str], available| {
            let cli = Cli::try_parse_from([&["mcp-hangar"], args].concat()).unwrap();
            cli.worker_threads(available)
        };
        assert_eq!(threads(&["serve"], 64), SERVE_MAX_WORKER_THREADS);
        assert_eq!(threads(&["serve"], 1), 1);
        assert_eq!(threads(&["serve", "--worker-threads", "8"], 64), 8);
        assert_eq!(threads(&["gateway"], 64), 64);
        assert_eq!(threads(&["gateway", "--worker-threads", "3"], 64), 3);
        assert_eq!(threads(&["crds"], 4), 4);
        assert!(Cli::try_parse_from(["mcp-hangar", "serve", "--worker-threads", "0"]).is_err());
    }

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
    fn gateway_flags_become_its_plain_config() {
        let cli = Cli::try_parse_from([
            "mcp-hangar",
            "gateway",
            "--allowed-origin",
            "https://a.example,https://b.example",
            "--upstream-timeout",
            "2s",
        ])
        .unwrap();
        let Command::Gateway(args) = cli.command else { panic!("gateway") };
        let config = config::gateway_config(&args);
        assert_eq!(config.allowed_origins, ["https://a.example", "https://b.example"]);
        assert_eq!(config.upstream_timeout, std::time::Duration::from_secs(2));
        let defaults = crate::gateway::GatewayConfig::default();
        assert_eq!(
            (config.max_body_bytes, config.header_read_timeout),
            (defaults.max_body_bytes, defaults.header_read_timeout)
        );
        assert_eq!(args.addr.port(), 8090);
        assert!(args.session_key_file.is_none() && args.routes_file.is_none());
        assert_eq!(args.auth, GatewayAuth::Kubernetes, "callers are checked unless told otherwise");
    }

    #[test]
    fn tls_flags_parse_with_their_defaults() {
        let cli =
            Cli::try_parse_from(["mcp-hangar", "serve", "--tls-san", "localhost", "--tls-san", "10.0.0.1"]).unwrap();
        let Command::Serve(serve) = cli.command else { panic!("serve") };
        assert_eq!(serve.tls.effective_mode(), TlsMode::SelfManaged);
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
        let implied =
            Cli::try_parse_from(["mcp-hangar", "serve", "--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"]);
        let Command::Serve(serve) = implied.unwrap().command else { panic!("serve") };
        assert_eq!(serve.tls.effective_mode(), TlsMode::Files, "certificate files imply the files mode");
    }

    fn serve_config(args: &[&str]) -> Result<config::ServeConfig, CliError> {
        let cli = Cli::try_parse_from(["mcp-hangar", "serve"].iter().chain(args)).unwrap();
        let Command::Serve(serve) = cli.command else { panic!("serve") };
        config::ServeConfig::from_args(&serve)
    }

    #[test]
    fn serve_flags_become_a_plain_config() {
        let files =
            serve_config(&["--tls-cert-file", "c.pem", "--tls-key-file", "k.pem", "--controller=false"]).unwrap();
        let webhook = files.webhook.as_ref().expect("the webhook is served");
        assert!(
            matches!(&webhook.tls, config::TlsSource::Files(source) if source.cert_file == std::path::Path::new("c.pem"))
        );
        assert!(!files.tls_needs_cluster());
        assert_eq!(files.controller, Some(false));

        let managed =
            serve_config(&["--tls-service-namespace", "ops", "--leader-election-namespace", "leases"]).unwrap();
        assert!(managed.tls_needs_cluster());
        let lease = managed.controller_settings.leader_election.as_ref().unwrap();
        assert_eq!((lease.namespace.as_deref(), lease.name.as_str()), (Some("leases"), "mcp-hangar-controller"));

        let controller_only = serve_config(&["--webhook=false", "--leader-election=false"]).unwrap();
        assert!(controller_only.webhook.is_none() && controller_only.controller_settings.leader_election.is_none());
        assert!(matches!(serve_config(&["--webhook=false", "--controller=false"]), Err(CliError::Usage(_))));
    }
}
