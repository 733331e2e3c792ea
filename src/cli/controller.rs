//! The controller part of `serve`: its flags, and starting it beside the webhook.

use std::sync::Arc;

use clap::Args;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::CliError;
use crate::controller::leader::{DEFAULT_LEASE_NAME, LeaderElector, LeaseTiming, default_identity};
use crate::controller::resources::DEFAULT_OPERATOR_NAMESPACE;
use crate::controller::{self, Context, ControllerConfig, DEFAULT_CLUSTER_DOMAIN};
use crate::mcp::McpClient;
use crate::metrics::Metrics;
use crate::policy::Engine;

/// Flags of the controller.
#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    /// Elect one reconciling replica through a Lease; `--leader-election=false` reconciles
    /// at once (a single replica only).
    #[arg(long, env = "MCP_HANGAR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the Lease; defaults to `POD_NAMESPACE`, then to the client's namespace.
    #[arg(long, env = "MCP_HANGAR_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, env = "MCP_HANGAR_LEASE_NAME", default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,
    /// Most MCPServers reconciled at once.
    #[arg(long, env = "MCP_HANGAR_CONTROLLER_CONCURRENCY", default_value_t = controller::DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub controller_concurrency: u16,
    /// DNS domain of the cluster, used in the Service URLs written to status.
    #[arg(long, env = "MCP_HANGAR_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Namespace of the operator's and the gateway's pods, admitted by every server's
    /// NetworkPolicy; the chart passes the release namespace through `POD_NAMESPACE`.
    #[arg(long, env = "POD_NAMESPACE", default_value = DEFAULT_OPERATOR_NAMESPACE)]
    pub operator_namespace: String,
    /// Base URL of the MCP gateway (`http://<service>.<namespace>.svc`); each MCPServerGroup
    /// reports its URL under it. Unset: groups report no URL.
    #[arg(long, env = "MCP_HANGAR_GATEWAY_URL")]
    pub gateway_url: Option<String>,
}

/// The controller's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSettings {
    /// What reconciles see.
    pub config: ControllerConfig,
    /// The Lease electing one reconciling replica; `None` reconciles at once.
    pub leader_election: Option<LeaseSettings>,
}

/// Where the leader-election Lease lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Its namespace; `None` means the client's default namespace.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

/// The error when a part that needs a cluster finds none, with how to run without one.
pub(super) fn no_cluster(error: kube::Error) -> CliError {
    CliError::Usage(format!(
        "no Kubernetes client: {error}: run in a cluster or set KUBECONFIG, or serve the webhook alone with --controller=false, certificate files and --policy-source=shipped"
    ))
}

/// Starts the controller; it stops when `shutdown` turns true.
pub(super) fn start(
    settings: &ControllerSettings,
    client: Client,
    engine: Arc<Engine>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, CliError> {
    let health =
        McpClient::with_native_roots(crate::tls::crypto_provider()).map_err(|e| CliError::Usage(e.to_string()))?;
    let identity = default_identity();
    let elector = settings.leader_election.as_ref().map(|lease| {
        let namespace = lease.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
        tracing::info!(%namespace, lease = %lease.name, %identity, "leader election");
        let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
        LeaderElector::new(leases, &lease.name, &identity, LeaseTiming::default())
    });
    let config = settings.config.clone();
    let context = Arc::new(Context::new(client, engine, metrics, health, config, &identity));
    Ok(tokio::spawn(controller::run(context, elector, shutdown)))
}
