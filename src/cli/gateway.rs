//! `mcp-hangar gateway`: the MCP gateway, with its routes from the cluster (reflectors of
//! MCPServers, MCPServerGroups, Namespaces and the policy) or from a file, who may call
//! (`--auth`), and the admin endpoints on their own port. In a cluster it wakes scale-to-zero
//! servers through their demand Leases.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::serve::{bind, init_logging, termination_signal};
use super::{CliError, GatewayArgs, GatewayAuth};
use crate::admission;
use crate::controller::leader::default_identity;
use crate::crd::{MCPAdmissionPolicy, MCPPermissionProfile};
use crate::gateway::auth::{Access, Authenticator, KubeReviewer};
use crate::gateway::condition::{KubeWriter, MIN_WRITE_INTERVAL, Publisher};
use crate::gateway::metrics::GatewayMetrics;
use crate::gateway::wake::{DemandSignal, LeaseDemand};
use crate::gateway::{self, Catalog, Gateway, SessionKey, StaticCatalog, StoreCatalog};
use crate::metrics::Metrics;
use crate::policy::Engine;
use crate::policy::live::LastGood;
use crate::readiness::Readiness;
use crate::shutdown::Shutdown;

/// Readiness condition met once the routes are known.
const ROUTES_CONDITION: &str = "routes";

/// The session keys: the file's lines (the first signs, the others, older keys, still verify),
/// else the env value's, else a random key that only this replica knows (one replica only; a
/// warning says so).
pub fn session_key(file: Option<&Path>, value: Option<&str>) -> Result<SessionKey, CliError> {
    let usage = |e: gateway::session::SessionError| CliError::Usage(format!("gateway session key: {e}"));
    if let Some(file) = file {
        let bytes = std::fs::read(file)
            .map_err(|source| CliError::Io { context: format!("reading {}", file.display()), source })?;
        return SessionKey::from_lines(&bytes).map_err(usage);
    }
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        return SessionKey::from_lines(value.as_bytes()).map_err(usage);
    }
    tracing::warn!("no session key given: sessions opened here are known to this replica only");
    Ok(SessionKey::random())
}

/// Routes read once from a file of manifests: MCPServers and MCPServerGroups, and for the
/// caller check Namespaces (labelled `kubernetes.io/metadata.name` as the apiserver does),
/// MCPPermissionProfiles and the MCPAdmissionPolicy over the builtins. A policy object the
/// rules refuse stops the start.
fn file_catalog(path: &Path) -> Result<StaticCatalog, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| CliError::Io { context: format!("reading {}", path.display()), source })?;
    let usage = |e: &dyn std::fmt::Display| CliError::Usage(format!("{}: {e}", path.display()));
    let catalog = StaticCatalog::default();
    let (mut profiles, mut policies) = (Vec::<MCPPermissionProfile>::new(), Vec::<MCPAdmissionPolicy>::new());
    for document in serde_saphyr::from_multiple::<serde_json::Value>(&text).map_err(|e| usage(&e))? {
        match document.get("kind").and_then(|k| k.as_str()) {
            Some("MCPServer") => catalog.put_server(serde_json::from_value(document).map_err(|e| usage(&e))?),
            Some("MCPServerGroup") => catalog.put_group(serde_json::from_value(document).map_err(|e| usage(&e))?),
            Some("MCPPermissionProfile") => profiles.push(serde_json::from_value(document).map_err(|e| usage(&e))?),
            Some("MCPAdmissionPolicy") => policies.push(serde_json::from_value(document).map_err(|e| usage(&e))?),
            Some("Namespace") => {
                let name = document["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let mut labels: BTreeMap<String, String> =
                    serde_json::from_value(document["metadata"]["labels"].clone()).unwrap_or_default();
                labels.insert("kubernetes.io/metadata.name".into(), name.clone());
                catalog.put_namespace(&name, labels);
            }
            _ => {}
        }
    }
    let engine = Engine::new().map_err(|e| usage(&e))?;
    let (policy, ignored) = LastGood::default().rebuild(&engine, &profiles, &policies);
    if let Some(refused) = ignored.first() {
        return Err(usage(&format!("{} {:?}: {}", refused.kind, refused.name, refused.errors.join("; "))));
    }
    catalog.set_policy(policy);
    Ok(catalog)
}

/// Who may call: ServiceAccount tokens checked with the cluster's TokenReview API, or anyone.
async fn access(auth: GatewayAuth, client: Option<kube::Client>) -> Result<Access, CliError> {
    match auth {
        GatewayAuth::None => {
            tracing::warn!(
                "--auth none: every caller that reaches the gateway may call every MCP server behind it; \
                 the servers' permission profiles (network.ingress) are NOT enforced for proxied traffic"
            );
            Ok(Access::Open)
        }
        GatewayAuth::Kubernetes => {
            let client = match client {
                Some(client) => client,
                None => kube::Client::try_default().await?,
            };
            Ok(Access::ServiceAccounts(Authenticator::new(KubeReviewer::new(client))))
        }
    }
}

pub(super) async fn run(args: GatewayArgs) -> Result<(), CliError> {
    init_logging(args.process.log_format);
    let key = session_key(args.session_key_file.as_deref(), args.session_key.as_deref())?;
    let metrics = Metrics::new();
    let gateway_metrics =
        GatewayMetrics::new(metrics.registry()).map_err(|e| CliError::Usage(format!("gateway metrics: {e}")))?;
    let readiness = Readiness::new();
    readiness.set_unmet(ROUTES_CONDITION, "starting");
    let shutdown = Shutdown::new();
    let admin_listener = bind(args.admin_addr).await?;
    let admin = tokio::spawn(admission::server::serve_plain(
        admin_listener,
        admission::admin_router(metrics, readiness.clone()),
        shutdown.stopped(),
    ));
    // In a cluster, demand Leases wake scale-to-zero servers, breaker transitions are written on
    // the MCPServers' conditions and callers' tokens are reviewed.
    type ClusterParts = (Option<Arc<dyn DemandSignal>>, Option<Publisher>, Option<kube::Client>);
    let (catalog, (demand, conditions, client)): (Arc<dyn Catalog>, ClusterParts) = match &args.routes_file {
        Some(path) => (Arc::new(file_catalog(path)?), (None, None, None)),
        None => {
            let client = kube::Client::try_default().await?;
            let identity = default_identity();
            let demand = LeaseDemand::new(client.clone(), &args.operator_namespace, &identity);
            let publisher = Publisher::spawn(Arc::new(KubeWriter::new(client.clone())), identity, MIN_WRITE_INTERVAL);
            let catalog = StoreCatalog::watch(client.clone()).await;
            (Arc::new(catalog), (Some(Arc::new(demand)), Some(publisher), Some(client)))
        }
    };
    let access = access(args.auth, client).await?;
    let config = super::config::gateway_config(&args);
    let mut gateway = Gateway::new(catalog, key, config, gateway_metrics).with_access(access);
    if let Some(demand) = demand {
        gateway = gateway.with_demand(demand);
    }
    if let Some(conditions) = conditions {
        gateway = gateway.with_breaker_conditions(conditions);
    }
    let gateway = Arc::new(gateway);
    gateway.set_ready(true);
    readiness.set_met(ROUTES_CONDITION);
    let listener = bind(args.addr).await?;
    tracing::info!(addr = %args.addr, admin = %args.admin_addr, "serving the MCP gateway");
    let server = tokio::spawn(gateway::server::serve(
        listener,
        gateway::router(gateway.clone()),
        args.header_read_timeout,
        shutdown.stopped(),
        args.process.shutdown_timeout,
    ));
    termination_signal().await;
    gateway.set_ready(false);
    shutdown.begin(&readiness, args.process.shutdown_delay).await;
    let _ = server.await;
    let _ = admin.await;
    tracing::info!("stopped");
    Ok(())
}
