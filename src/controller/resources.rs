//! Pure builders of the objects an MCPServer owns: no I/O, no clock.
//!
//! [`desired_children`] is the single source of what the controller applies and what
//! `mcp-hangar render` prints, every child built here with its owner reference set once:
//! the ServiceAccount, Role, RoleBinding and NetworkPolicy compiled from the permission
//! profile, the Service and the Deployment. It takes the server as
//! [`crate::policy::Engine::review_server`] returns it, defaults applied.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, Service,
    ServiceAccount, ServicePort, ServiceSpec, TCPSocketAction,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde_json::Value;

use crate::crd::{MANAGER, MCPServer, MCPServerSpec, PortRule, Protocol, ServerMode, Transport};
use crate::policy::defaults::{DEFAULT_PORT, DEFAULT_REPLICAS, Settings};
use crate::policy::profile::{EffectiveProfile, ResolvedProfile};

/// Field manager of every server-side apply the controller makes.
pub const FIELD_MANAGER: &str = MANAGER;
/// `app.kubernetes.io/managed-by` label key; the controller watches only children carrying it.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Name of the server container, and of its port.
pub const CONTAINER_NAME: &str = "mcp";
/// Pod annotation naming the permission profile in force.
pub const PROFILE_ANNOTATION: &str = "mcp-hangar.io/permission-profile";
/// Seconds between startup-probe attempts; the startup timeout is spread over them.
pub const STARTUP_PROBE_PERIOD_SECONDS: i32 = 2;

/// Why the children of a server could not be built; all are permanent until the spec changes.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The server has no name.
    #[error("metadata.name is required")]
    MissingName,
    /// The server has no namespace.
    #[error("metadata.namespace is required")]
    MissingNamespace,
    /// The server does not say how it runs.
    #[error("spec.mode is required: container or remote")]
    MissingMode,
    /// Container mode without an image.
    #[error("container mode needs spec.image")]
    MissingImage,
    /// The stdio transport has no network port the operator could serve.
    #[error(
        "transport stdio is not supported by the controller: the server must listen on spec.port; use streamable-http"
    )]
    UnsupportedTransport,
}

/// Identity of the owning MCPServer, shared by every child.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    /// Name of the server, and of every child.
    pub name: String,
    /// Namespace of the server and its children.
    pub namespace: String,
    /// The MCP port.
    pub port: i32,
    /// `spec.serviceAccountName`, when the user brings an account.
    pub service_account: Option<String>,
    /// The controller owner reference (`blockOwnerDeletion` set); absent for objects never
    /// stored (no uid), as in `render`.
    pub reference: Option<OwnerReference>,
    /// Labels of every child and of the pods.
    pub labels: BTreeMap<String, String>,
    /// The pod selector: small and never changed, since a Deployment's selector is immutable.
    pub selector: BTreeMap<String, String>,
}

impl Owner {
    /// Reads the owner's identity from a server.
    pub fn of(server: &MCPServer) -> Result<Owner, ResourceError> {
        let name = server.metadata.name.clone().ok_or(ResourceError::MissingName)?;
        let namespace = server.metadata.namespace.clone().ok_or(ResourceError::MissingNamespace)?;
        let reference = server.controller_owner_ref(&()).map(|mut r| {
            r.block_owner_deletion = Some(true);
            r
        });
        Ok(Owner {
            name,
            namespace,
            port: server.spec.port.unwrap_or(DEFAULT_PORT as i32),
            service_account: server.spec.service_account_name.clone(),
            reference,
            labels: server.child_labels(),
            selector: server.selector_labels(),
        })
    }

    /// The pod selector in its string form (`status.selector`, read by the scale subresource).
    pub fn selector_string(&self) -> String {
        self.selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }

    /// Metadata of a child: same name and namespace as the server, labels, owner reference.
    pub fn child_meta(&self) -> ObjectMeta {
        let mut meta = ObjectMeta {
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels.clone()),
            ..ObjectMeta::default()
        };
        self.own(&mut meta);
        meta
    }

    /// Makes this server the controlling owner of an object, and its only owner.
    pub fn own(&self, meta: &mut ObjectMeta) {
        meta.owner_references = self.reference.clone().map(|r| vec![r]);
    }

    /// The ServiceAccount the pod runs as.
    pub fn service_account_name(&self) -> String {
        self.service_account.clone().unwrap_or_else(|| self.name.clone())
    }
}

/// The kinds of object a server may own, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChildKind {
    /// `v1/ServiceAccount`
    ServiceAccount,
    /// `rbac.authorization.k8s.io/v1/Role`
    Role,
    /// `rbac.authorization.k8s.io/v1/RoleBinding`
    RoleBinding,
    /// `networking.k8s.io/v1/NetworkPolicy`
    NetworkPolicy,
    /// `v1/Service`
    Service,
    /// `apps/v1/Deployment`
    Deployment,
}

impl ChildKind {
    /// Every kind, in apply order (identity and policy before the workload).
    pub const ALL: [ChildKind; 6] = [
        ChildKind::ServiceAccount,
        ChildKind::Role,
        ChildKind::RoleBinding,
        ChildKind::NetworkPolicy,
        ChildKind::Service,
        ChildKind::Deployment,
    ];

    /// The `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::ServiceAccount => "ServiceAccount",
            ChildKind::Role => "Role",
            ChildKind::RoleBinding => "RoleBinding",
            ChildKind::NetworkPolicy => "NetworkPolicy",
            ChildKind::Service => "Service",
            ChildKind::Deployment => "Deployment",
        }
    }
}

impl std::fmt::Display for ChildKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One child object.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant, reason = "at most six short-lived values per reconcile; boxing buys nothing")]
pub enum Child {
    /// The pod's ServiceAccount.
    ServiceAccount(ServiceAccount),
    /// The profile's Role.
    Role(Role),
    /// Binds the Role to the pod's ServiceAccount.
    RoleBinding(RoleBinding),
    /// The profile's network rules.
    NetworkPolicy(NetworkPolicy),
    /// The MCP Service.
    Service(Service),
    /// The workload.
    Deployment(Deployment),
}

impl Child {
    /// Its kind.
    pub fn kind(&self) -> ChildKind {
        match self {
            Child::ServiceAccount(_) => ChildKind::ServiceAccount,
            Child::Role(_) => ChildKind::Role,
            Child::RoleBinding(_) => ChildKind::RoleBinding,
            Child::NetworkPolicy(_) => ChildKind::NetworkPolicy,
            Child::Service(_) => ChildKind::Service,
            Child::Deployment(_) => ChildKind::Deployment,
        }
    }

    /// Its metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Child::ServiceAccount(o) => &o.metadata,
            Child::Role(o) => &o.metadata,
            Child::RoleBinding(o) => &o.metadata,
            Child::NetworkPolicy(o) => &o.metadata,
            Child::Service(o) => &o.metadata,
            Child::Deployment(o) => &o.metadata,
        }
    }

    /// The object as JSON, with apiVersion and kind.
    pub fn to_value(&self) -> Value {
        let value = match self {
            Child::ServiceAccount(o) => serde_json::to_value(o),
            Child::Role(o) => serde_json::to_value(o),
            Child::RoleBinding(o) => serde_json::to_value(o),
            Child::NetworkPolicy(o) => serde_json::to_value(o),
            Child::Service(o) => serde_json::to_value(o),
            Child::Deployment(o) => serde_json::to_value(o),
        };
        value.unwrap_or(Value::Null)
    }
}

/// The desired children of one server, by kind; `None` where the server owns no such object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChildSet {
    /// Absent when the server brings its own account (`spec.serviceAccountName`).
    pub service_account: Option<ServiceAccount>,
    /// The profile's Role.
    pub role: Option<Role>,
    /// The Role's binding.
    pub role_binding: Option<RoleBinding>,
    /// The profile's NetworkPolicy.
    pub network_policy: Option<NetworkPolicy>,
    /// The MCP Service.
    pub service: Option<Service>,
    /// The workload.
    pub deployment: Option<Deployment>,
}

impl ChildSet {
    /// The present children, in apply order.
    pub fn into_children(self) -> Vec<Child> {
        [
            self.service_account.map(Child::ServiceAccount),
            self.role.map(Child::Role),
            self.role_binding.map(Child::RoleBinding),
            self.network_policy.map(Child::NetworkPolicy),
            self.service.map(Child::Service),
            self.deployment.map(Child::Deployment),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Whether a child of that kind is wanted.
    pub fn has(&self, kind: ChildKind) -> bool {
        match kind {
            ChildKind::ServiceAccount => self.service_account.is_some(),
            ChildKind::Role => self.role.is_some(),
            ChildKind::RoleBinding => self.role_binding.is_some(),
            ChildKind::NetworkPolicy => self.network_policy.is_some(),
            ChildKind::Service => self.service.is_some(),
            ChildKind::Deployment => self.deployment.is_some(),
        }
    }
}

/// Default namespace of the operator (and the gateway), whose pods every server admits.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "mcp-system";
/// Pod label whose values name the parts of the operator (`operator`, `gateway`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// The components that call MCP servers: the controller's health checks and the gateway.
pub const CLIENT_COMPONENTS: [&str; 2] = ["operator", "gateway"];

/// The replicas a container server's Deployment runs: `spec.replicas`, except that a
/// scale-to-zero server (`replicas: 0`) runs one while it is `awake` (a request arrived
/// within its `idleTTL`, see [`crate::policy::demand`]).
pub fn wanted_replicas(spec: &MCPServerSpec, awake: bool) -> i32 {
    match spec.replicas.unwrap_or(DEFAULT_REPLICAS as i32) {
        0 if awake => 1,
        replicas => replicas,
    }
}

/// Everything a server owns: nothing in remote mode; in container mode the objects of its
/// permission profile, the Service and the Deployment. `server` has its defaults applied;
/// `operator_namespace` is where the operator's and the gateway's pods run; `awake` says
/// whether a scale-to-zero server has demand.
pub fn desired_children(
    server: &MCPServer,
    profile: &ResolvedProfile,
    operator_namespace: &str,
    awake: bool,
) -> Result<ChildSet, ResourceError> {
    let owner = Owner::of(server)?;
    match server.spec.mode {
        None => Err(ResourceError::MissingMode),
        Some(ServerMode::Remote) => Ok(ChildSet::default()),
        Some(ServerMode::Container) => {
            if server.spec.transport == Some(Transport::Stdio) {
                return Err(ResourceError::UnsupportedTransport);
            }
            let effective = EffectiveProfile::of(&profile.spec);
            Ok(ChildSet {
                service_account: owner.service_account.is_none().then(|| service_account(&owner, &effective)),
                role: Some(Role { metadata: owner.child_meta(), rules: Some(effective.rules.clone()) }),
                role_binding: Some(role_binding(&owner)),
                network_policy: Some(network_policy(&owner, &effective, operator_namespace)),
                service: Some(service(&owner)),
                deployment: Some(deployment(server, &owner, profile, &effective, awake)?),
            })
        }
    }
}

/// The server's own account; only when the spec names none (a named account is the user's).
fn service_account(owner: &Owner, profile: &EffectiveProfile) -> ServiceAccount {
    ServiceAccount {
        metadata: owner.child_meta(),
        automount_service_account_token: Some(profile.automount_token),
        ..ServiceAccount::default()
    }
}

/// Binds the profile's Role to the account the pod runs as.
fn role_binding(owner: &Owner) -> RoleBinding {
    RoleBinding {
        metadata: owner.child_meta(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: owner.name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: owner.service_account_name(),
            namespace: Some(owner.namespace.clone()),
            api_group: None,
        }]),
    }
}

fn port(rule: &PortRule) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(rule.port)),
        protocol: Some(rule.protocol.unwrap_or_default().as_str().to_string()),
        end_port: None,
    }
}

/// The operator's and the gateway's pods, wherever the chart is installed: their namespace by
/// name (the `kubernetes.io/metadata.name` label the apiserver sets) and their component label.
fn operator_peer(operator_namespace: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                operator_namespace.to_string(),
            )])),
            ..LabelSelector::default()
        }),
        pod_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: COMPONENT_LABEL.into(),
                operator: "In".into(),
                values: Some(CLIENT_COMPONENTS.iter().map(|c| c.to_string()).collect()),
            }]),
            ..LabelSelector::default()
        }),
        ip_block: None,
    }
}

/// Ingress to the MCP port from the operator and the gateway and from the namespaces the
/// profile allows; egress as the profile allows (DNS by port only, so node-local caches and
/// any cluster DNS layout keep working).
fn network_policy(owner: &Owner, profile: &EffectiveProfile, operator_namespace: &str) -> NetworkPolicy {
    let ingress = NetworkPolicyIngressRule {
        from: Some(vec![
            NetworkPolicyPeer { namespace_selector: Some(profile.ingress_from.clone()), ..Default::default() },
            operator_peer(operator_namespace),
        ]),
        ports: Some(vec![port(&PortRule { port: owner.port, protocol: Some(Protocol::TCP) })]),
    };
    let mut egress = Vec::new();
    if profile.egress_all {
        egress.push(NetworkPolicyEgressRule::default());
    } else {
        for rule in &profile.egress_rules {
            let ports: Vec<NetworkPolicyPort> = rule.ports.iter().flatten().map(port).collect();
            egress.push(NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    ip_block: Some(IPBlock { cidr: rule.cidr.clone().unwrap_or_default(), except: None }),
                    ..Default::default()
                }]),
                ports: (!ports.is_empty()).then_some(ports),
            });
        }
        if profile.allow_dns {
            egress.push(NetworkPolicyEgressRule {
                to: None,
                ports: Some(vec![
                    port(&PortRule { port: 53, protocol: Some(Protocol::UDP) }),
                    port(&PortRule { port: 53, protocol: Some(Protocol::TCP) }),
                ]),
            });
        }
    }
    NetworkPolicy {
        metadata: owner.child_meta(),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some(owner.selector.clone()), ..Default::default() }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![ingress]),
            egress: Some(egress),
        }),
    }
}

/// The gateway's two kinds of route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/servers/<namespace>/<name>/mcp`
    Servers,
    /// `/groups/<namespace>/<name>/mcp`
    Groups,
}

/// An MCPServer's or MCPServerGroup's URL on the gateway whose base URL is `base`.
pub fn gateway_url(base: &str, route: Route, namespace: &str, name: &str) -> String {
    let collection = match route {
        Route::Servers => "servers",
        Route::Groups => "groups",
    };
    format!("{}/{collection}/{namespace}/{name}/mcp", base.trim_end_matches('/'))
}

/// URL path of the MCP endpoint for a transport.
pub fn mcp_path(transport: Option<Transport>) -> &'static str {
    match transport {
        Some(Transport::Sse) => "/sse",
        _ => "/mcp",
    }
}

/// The in-cluster URL of a container-mode server's Service.
pub fn service_url(server: &MCPServer, cluster_domain: &str) -> Result<String, ResourceError> {
    let owner = Owner::of(server)?;
    Ok(format!(
        "http://{}.{}.svc.{}:{}{}",
        owner.name,
        owner.namespace,
        cluster_domain,
        owner.port,
        mcp_path(server.spec.transport)
    ))
}

/// The Service in front of the server pods, on the MCP port.
fn service(owner: &Owner) -> Service {
    Service {
        metadata: owner.child_meta(),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(owner.selector.clone()),
            ports: Some(vec![ServicePort {
                name: Some(CONTAINER_NAME.into()),
                port: owner.port,
                target_port: Some(IntOrString::String(CONTAINER_NAME.into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn tcp_probe(period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction { port: IntOrString::String(CONTAINER_NAME.into()), host: None }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(1),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// Startup-probe attempts that fit in the startup timeout (at least one).
fn startup_attempts(timeout: std::time::Duration) -> i32 {
    let attempts = timeout.as_secs().div_ceil(STARTUP_PROBE_PERIOD_SECONDS as u64);
    i32::try_from(attempts).unwrap_or(i32::MAX).max(1)
}

/// The pod securityContext every server pod gets (the restricted Pod Security level asks
/// for both at pod or container level; setting them on the pod covers every container).
pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..PodSecurityContext::default()
    }
}

/// The Deployment running the server image with the secure pod settings; `server` has its
/// defaults applied, so its securityContext is the secure one merged with the overrides.
fn deployment(
    server: &MCPServer,
    owner: &Owner,
    profile: &ResolvedProfile,
    effective: &EffectiveProfile,
    awake: bool,
) -> Result<Deployment, ResourceError> {
    let spec = &server.spec;
    let image = spec.image.clone().ok_or(ResourceError::MissingImage)?;
    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(image),
        args: spec.args.clone(),
        env: spec.env.clone(),
        resources: spec.resources.as_deref().cloned(),
        volume_mounts: spec.volume_mounts.clone(),
        ports: Some(vec![ContainerPort {
            name: Some(CONTAINER_NAME.into()),
            container_port: owner.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        security_context: spec.security_context.as_deref().cloned(),
        startup_probe: Some(tcp_probe(
            STARTUP_PROBE_PERIOD_SECONDS,
            startup_attempts(Settings::of(spec).startup_timeout),
        )),
        readiness_probe: Some(tcp_probe(5, 3)),
        liveness_probe: Some(tcp_probe(10, 3)),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let mut pod_meta = ObjectMeta { labels: Some(owner.labels.clone()), ..ObjectMeta::default() };
    pod_meta.annotations = Some(BTreeMap::from([(PROFILE_ANNOTATION.to_string(), profile.name.clone())]));
    let pod = PodSpec {
        containers: vec![container],
        service_account_name: Some(owner.service_account_name()),
        automount_service_account_token: Some(effective.automount_token),
        enable_service_links: Some(false),
        security_context: Some(pod_security_context()),
        volumes: spec.volumes.clone(),
        node_selector: spec.node_selector.clone(),
        tolerations: spec.tolerations.clone(),
        ..PodSpec::default()
    };
    Ok(Deployment {
        metadata: owner.child_meta(),
        spec: Some(DeploymentSpec {
            replicas: Some(wanted_replicas(spec, awake)),
            selector: LabelSelector { match_labels: Some(owner.selector.clone()), ..LabelSelector::default() },
            template: PodTemplateSpec { metadata: Some(pod_meta), spec: Some(pod) },
            revision_history_limit: Some(3),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Kind, MCPPermissionProfileSpec, MCPServerSpec, ServiceAccountPermissions};
    use crate::policy::PolicyState;
    use crate::policy::defaults::apply_defaults;
    use crate::policy::profile::resolve_named;
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
    use serde_json::json;

    fn container_server(spec: Value) -> MCPServer {
        let mut object = json!({
            "apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer",
            "metadata": {"name": "github-tools", "namespace": "mcp-servers", "uid": "0b1c-uid"},
            "spec": spec,
        });
        object["spec"]["mode"] = json!("container");
        serde_json::from_value(object).unwrap()
    }

    /// The children of a stored server, defaulted once as the controller's review does.
    fn children_under(server: &MCPServer, profile: &ResolvedProfile) -> Result<ChildSet, ResourceError> {
        let defaulted = apply_defaults(Kind::Server, &serde_json::to_value(server).unwrap(), "none");
        desired_children(&serde_json::from_value(defaulted).unwrap(), profile, DEFAULT_OPERATOR_NAMESPACE, false)
    }

    fn children(server: &MCPServer) -> Result<ChildSet, ResourceError> {
        children_under(server, &resolve_named("none", &PolicyState::builtin()).unwrap())
    }

    fn pod_spec(children: &ChildSet) -> PodSpec {
        let deployment = children.deployment.clone().unwrap();
        deployment.spec.unwrap().template.spec.unwrap()
    }

    #[test]
    fn remote_servers_own_nothing() {
        let mut server = container_server(json!({}));
        server.spec.mode = Some(ServerMode::Remote);
        server.spec.endpoint = Some("https://mcp.example.com/mcp".into());
        assert_eq!(children(&server).unwrap(), ChildSet::default());
    }

    #[test]
    fn container_server_owns_six_children_in_apply_order() {
        let server = container_server(json!({"image": "ghcr.io/org/tools:1.0.0"}));
        let kinds: Vec<_> = children(&server).unwrap().into_children().iter().map(Child::kind).collect();
        assert_eq!(kinds, ChildKind::ALL.to_vec());
    }

    #[test]
    fn every_child_is_named_labelled_and_owned() {
        let server = container_server(json!({"image": "ghcr.io/org/tools:1.0.0"}));
        for child in children(&server).unwrap().into_children() {
            let value = child.to_value();
            let meta = &value["metadata"];
            assert_eq!(meta["name"], "github-tools", "{}", child.kind());
            assert_eq!(meta["namespace"], "mcp-servers");
            assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "github-tools");
            assert_eq!(meta["labels"]["app.kubernetes.io/managed-by"], "mcp-hangar");
            assert_eq!(meta["labels"]["app.kubernetes.io/name"], "mcp-server");
            assert_eq!(meta["labels"]["app.kubernetes.io/component"], "mcp-server");
            assert_eq!(meta["labels"]["mcp-hangar.io/mcp-server"], "true");
            let owner = &meta["ownerReferences"][0];
            assert_eq!(owner["kind"], "MCPServer");
            assert_eq!(owner["apiVersion"], "mcp-hangar.io/v1alpha1");
            assert_eq!(owner["uid"], "0b1c-uid");
            assert_eq!(owner["controller"], true);
            assert_eq!(owner["blockOwnerDeletion"], true);
            assert!(value["apiVersion"].is_string() && value["kind"].is_string());
        }
    }

    #[test]
    fn unsaved_servers_render_without_owner_references() {
        let mut server = container_server(json!({"image": "ghcr.io/org/tools:1.0.0"}));
        server.metadata.uid = None;
        for child in children(&server).unwrap().into_children() {
            assert!(child.to_value()["metadata"].get("ownerReferences").is_none());
        }
    }

    #[test]
    fn deployment_carries_the_spec() {
        let server = container_server(json!({
            "image": "ghcr.io/org/tools:1.0.0",
            "replicas": 3,
            "args": ["--verbose"],
            "port": 9000,
            "env": [
                {"name": "LOG_LEVEL", "value": "debug"},
                {"name": "GITHUB_TOKEN", "valueFrom": {"secretKeyRef": {"name": "gh", "key": "token"}}},
            ],
            "resources": {"limits": {"memory": "512Mi"}},
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
            "nodeSelector": {"pool": "tools"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "tools", "effect": "NoSchedule"}],
        }));
        let children = children(&server).unwrap();
        let deployment = children.deployment.clone().unwrap();
        let spec = deployment.spec.clone().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.selector.match_labels.unwrap(),
            BTreeMap::from([
                ("app.kubernetes.io/instance".to_string(), "github-tools".to_string()),
                ("mcp-hangar.io/mcp-server".to_string(), "true".to_string()),
            ])
        );
        let pod = pod_spec(&children);
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("ghcr.io/org/tools:1.0.0"));
        assert_eq!(container.args, Some(vec!["--verbose".to_string()]));
        assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 9000);
        let env = container.env.clone().unwrap();
        assert_eq!(
            env[1],
            EnvVar {
                name: "GITHUB_TOKEN".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector { name: "gh".into(), key: "token".into(), optional: None }),
                    ..EnvVarSource::default()
                }),
            }
        );
        assert!(container.resources.as_ref().unwrap().limits.is_some());
        assert_eq!(container.volume_mounts.as_ref().unwrap()[0].mount_path, "/tmp");
        assert_eq!(pod.volumes.as_ref().unwrap()[0].name, "scratch");
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "tools");
        assert_eq!(pod.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("dedicated"));
        let service = serde_json::to_value(children.service.unwrap()).unwrap();
        assert_eq!(service["spec"]["ports"][0]["port"], 9000);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "mcp");
        assert_eq!(
            service["spec"]["selector"],
            json!({"app.kubernetes.io/instance": "github-tools", "mcp-hangar.io/mcp-server": "true"})
        );
    }

    #[test]
    fn cold_servers_get_zero_replicas_and_defaults_fill_one() {
        let cold = container_server(json!({"image": "a/b:1", "replicas": 0}));
        let deployment = children(&cold).unwrap().deployment.unwrap();
        assert_eq!(deployment.spec.unwrap().replicas, Some(0));
        let default = container_server(json!({"image": "a/b:1"}));
        let deployment = children(&default).unwrap().deployment.unwrap();
        assert_eq!(deployment.spec.unwrap().replicas, Some(1));
    }

    #[test]
    fn a_scale_to_zero_server_runs_one_replica_while_awake() {
        let cold = container_server(json!({"image": "a/b:1", "replicas": 0}));
        let defaulted: MCPServer =
            serde_json::from_value(apply_defaults(Kind::Server, &serde_json::to_value(&cold).unwrap(), "none"))
                .unwrap();
        let profile = resolve_named("none", &PolicyState::builtin()).unwrap();
        let replicas = |awake| {
            let set = desired_children(&defaulted, &profile, DEFAULT_OPERATOR_NAMESPACE, awake).unwrap();
            set.deployment.unwrap().spec.unwrap().replicas
        };
        assert_eq!((replicas(false), replicas(true)), (Some(0), Some(1)));
        let three = MCPServerSpec { replicas: Some(3), ..MCPServerSpec::default() };
        assert_eq!((wanted_replicas(&three, false), wanted_replicas(&three, true)), (3, 3), "demand never scales down");
    }

    #[test]
    fn pod_is_locked_down_even_without_webhook_defaults() {
        let server = container_server(json!({"image": "a/b:1"}));
        assert!(server.spec.security_context.is_none());
        let pod = pod_spec(&children(&server).unwrap());
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.enable_service_links, Some(false));
        assert_eq!(pod.service_account_name.as_deref(), Some("github-tools"));
        let pod_sc = pod.security_context.unwrap();
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        assert_eq!(pod_sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(65534));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
        assert!(pod.host_network.is_none() && pod.host_pid.is_none() && pod.host_ipc.is_none());
    }

    #[test]
    fn user_overrides_merge_under_secure_defaults() {
        let server = container_server(json!({
            "image": "a/b:1",
            "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": false},
        }));
        let pod = pod_spec(&children(&server).unwrap());
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.run_as_user, Some(1000));
        assert_eq!(sc.read_only_root_filesystem, Some(false));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    }

    #[test]
    fn probes_use_the_mcp_port_and_the_startup_timeout() {
        let server = container_server(json!({"image": "a/b:1", "startupTimeout": "61s"}));
        let pod = pod_spec(&children(&server).unwrap());
        let container = &pod.containers[0];
        for probe in
            [container.readiness_probe.clone(), container.liveness_probe.clone(), container.startup_probe.clone()]
        {
            let tcp = probe.unwrap().tcp_socket.unwrap();
            assert_eq!(tcp.port, IntOrString::String("mcp".into()));
            assert!(tcp.host.is_none());
        }
        let startup = container.startup_probe.clone().unwrap();
        assert_eq!(startup.failure_threshold, Some(31));
    }

    #[test]
    fn own_service_account_is_used_and_not_created() {
        let server = container_server(json!({"image": "a/b:1", "serviceAccountName": "team"}));
        let children = children(&server).unwrap();
        assert!(!children.has(ChildKind::ServiceAccount));
        assert_eq!(pod_spec(&children).service_account_name.as_deref(), Some("team"));
    }

    #[test]
    fn stdio_is_refused() {
        let stdio = container_server(json!({"image": "a/b:1", "transport": "stdio"}));
        assert!(matches!(children(&stdio), Err(ResourceError::UnsupportedTransport)));
    }

    #[test]
    fn profile_objects_are_owned_like_every_child() {
        let server = container_server(json!({"image": "a/b:1"}));
        let set = children(&server).unwrap();
        let policy = serde_json::to_value(set.network_policy.unwrap()).unwrap();
        let owner = &policy["metadata"]["ownerReferences"];
        assert_eq!(owner.as_array().unwrap().len(), 1);
        assert_eq!(owner[0]["blockOwnerDeletion"], true);
        assert_eq!(
            policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["mcp-hangar.io/core"],
            "true"
        );
        assert_eq!(set.role.unwrap().rules, Some(vec![]));
        assert_eq!(set.service_account.unwrap().automount_service_account_token, Some(false));
    }

    #[test]
    fn the_operator_and_the_gateway_are_admitted_wherever_they_run() {
        let mut server = container_server(json!({"image": "a/b:1", "port": 9000}));
        server.metadata.namespace = Some("team-a".into());
        let defaulted = apply_defaults(Kind::Server, &serde_json::to_value(&server).unwrap(), "none");
        let profile = resolve_named("none", &PolicyState::builtin()).unwrap();
        let set =
            desired_children(&serde_json::from_value(defaulted).unwrap(), &profile, "platform-ops", false).unwrap();
        let policy = serde_json::to_value(set.network_policy.unwrap()).unwrap();
        let rule = &policy["spec"]["ingress"][0];
        assert_eq!(rule["ports"], json!([{"port": 9000, "protocol": "TCP"}]));
        let operator = &rule["from"][1];
        assert_eq!(
            operator["namespaceSelector"],
            json!({"matchLabels": {"kubernetes.io/metadata.name": "platform-ops"}})
        );
        assert_eq!(
            operator["podSelector"],
            json!({"matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": ["operator", "gateway"]}]})
        );
        let chart = include_str!("../../charts/mcp-hangar/templates/deployment.yaml");
        assert!(chart.contains("app.kubernetes.io/component: operator"), "the operator's pods carry the peer label");
    }

    #[test]
    fn the_profile_decides_egress_and_the_token() {
        let server = container_server(json!({"image": "a/b:1"}));
        let network = resolve_named("network", &PolicyState::builtin()).unwrap();
        let set = children_under(&server, &network).unwrap();
        let policy = serde_json::to_value(set.network_policy.unwrap()).unwrap();
        assert_eq!(policy["spec"]["egress"], json!([{}]));
        let pod = set.deployment.unwrap().spec.unwrap().template;
        let annotations = pod.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[PROFILE_ANNOTATION], "network");

        let with_token = ResolvedProfile {
            name: "api-reader".into(),
            spec: MCPPermissionProfileSpec {
                service_account: Some(ServiceAccountPermissions { automount_token: Some(true), rules: None }),
                ..MCPPermissionProfileSpec::default()
            },
        };
        let set = children_under(&server, &with_token).unwrap();
        assert_eq!(pod_spec(&set).automount_service_account_token, Some(true));
        assert_eq!(set.service_account.unwrap().automount_service_account_token, Some(true));
    }

    #[test]
    fn selector_and_url() {
        let server = container_server(json!({"image": "a/b:1", "port": 3000}));
        let owner = Owner::of(&server).unwrap();
        assert_eq!(owner.selector_string(), "app.kubernetes.io/instance=github-tools,mcp-hangar.io/mcp-server=true");
        assert_eq!(
            service_url(&server, "cluster.local").unwrap(),
            "http://github-tools.mcp-servers.svc.cluster.local:3000/mcp"
        );
        let mut sse = server.clone();
        sse.spec.transport = Some(Transport::Sse);
        assert!(service_url(&sse, "example.org").unwrap().ends_with(".svc.example.org:3000/sse"));
    }

    #[test]
    fn missing_namespace_is_an_error() {
        let mut server = MCPServer::new(
            "x",
            MCPServerSpec {
                mode: Some(ServerMode::Container),
                image: Some("a/b:1".into()),
                ..MCPServerSpec::default()
            },
        );
        assert!(matches!(children(&server), Err(ResourceError::MissingNamespace)));
        server.metadata.namespace = Some("ns".into());
        assert!(children(&server).is_ok());
        server.spec.image = None;
        assert!(matches!(children(&server), Err(ResourceError::MissingImage)));
        server.spec.mode = None;
        assert!(matches!(children(&server), Err(ResourceError::MissingMode)));
    }
}
