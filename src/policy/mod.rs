//! Pure admission rules: defaults (mutation) and validation of every mcp-hangar kind, the
//! permission profiles and admission policy they consult, and the pod-level check.
//!
//! [`Engine::review`] is the one entry point for our kinds: the webhook and the offline
//! `validate` command both call it, so they always reach the same verdict.

mod admission_policy;
mod checks;
pub mod defaults;
pub mod demand;
pub mod discovered;
mod discovery;
mod field;
mod format;
mod group;
pub mod live;
pub mod membership;
mod pod_security;
pub mod profile;
mod schema;
pub mod selector;
mod server;
mod state;
pub mod tools;
mod workload;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::apps::v1::Deployment;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use discovery::MIN_REFRESH_INTERVAL;
pub use field::{ErrorType, FieldError, FieldPath};
pub use format::{format_duration, parse_positive_duration};
pub use server::{MAX_SERVER_NAME_LEN, SECRET_ENV_MARKERS, is_secret_env_name};
pub use state::{FALLBACK_PROFILE, PolicyState};
pub use workload::WorkloadKind;

use crate::crd::{
    Kind, MCPAdmissionPolicy, MCPDiscoverySource, MCPPermissionProfile, MCPServer, MCPServerGroup, PodSecurityLevel,
};
use schema::{StructuralSchema, remove_pointers};

/// Errors of the policy layer itself (not violations of an object).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A generated schema could not be compiled.
    #[error("schema error: {0}")]
    Schema(String),
    /// Policy manifests could not be used.
    #[error("invalid policy: {0}")]
    Invalid(String),
}

/// What an admission request does to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new object.
    Create,
    /// A change to a stored object.
    Update,
    /// A deletion.
    Delete,
    /// A connect (exec, proxy); never used by our kinds.
    Connect,
}

/// Violations and warnings collected by the rules.
#[derive(Debug, Default)]
pub struct Findings {
    /// Every violation, in the order the rules found them.
    pub errors: Vec<FieldError>,
    /// Advice that does not block admission.
    pub warnings: Vec<String>,
}

/// An object as it is stored after review: typed, with its defaults applied.
#[derive(Debug, Clone)]
pub enum Reviewed {
    /// An MCPServer.
    Server(Box<MCPServer>),
    /// An MCPServerGroup.
    ServerGroup(Box<MCPServerGroup>),
    /// An MCPDiscoverySource.
    DiscoverySource(Box<MCPDiscoverySource>),
    /// An MCPPermissionProfile.
    PermissionProfile(Box<MCPPermissionProfile>),
    /// An MCPAdmissionPolicy.
    AdmissionPolicy(Box<MCPAdmissionPolicy>),
}

/// The outcome of a review: defaults to apply and everything wrong with the result.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Violations, in stable order; empty when the object is allowed.
    pub errors: Vec<FieldError>,
    /// Warnings for the client.
    pub warnings: Vec<String>,
    /// The defaults, as a JSON Patch against the submitted object.
    pub patch: json_patch::Patch,
    /// The reviewed object with its defaults, when it could be read (CREATE and UPDATE).
    pub object: Option<Reviewed>,
}

impl Verdict {
    /// True when the object may be stored.
    pub fn allowed(&self) -> bool {
        self.errors.is_empty()
    }

    fn from_findings(mut findings: Findings) -> Self {
        field::sort_errors(&mut findings.errors);
        findings.warnings.dedup();
        Verdict { errors: findings.errors, warnings: findings.warnings, ..Verdict::default() }
    }
}

/// Holds the compiled schemas and the live policy; build it once and share it.
pub struct Engine {
    schemas: HashMap<Kind, StructuralSchema>,
    state: RwLock<Arc<PolicyState>>,
}

impl Engine {
    /// An engine under the policy shipped in `policy/`.
    pub fn new() -> Result<Self, PolicyError> {
        Self::with_state(PolicyState::shipped())
    }

    /// An engine under the given policy.
    pub fn with_state(state: PolicyState) -> Result<Self, PolicyError> {
        let schemas = Kind::ALL
            .into_iter()
            .map(|kind| Ok((kind, StructuralSchema::from_crd(&kind.crd())?)))
            .collect::<Result<_, PolicyError>>()?;
        Ok(Engine { schemas, state: RwLock::new(Arc::new(state)) })
    }

    /// The policy in force.
    pub fn state(&self) -> Arc<PolicyState> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Puts a new policy in force; the next review uses it.
    pub fn replace_state(&self, state: PolicyState) {
        *self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(state);
    }

    /// The strict schema of a kind, as JSON Schema.
    pub fn schema(&self, kind: Kind) -> &Value {
        self.schemas[&kind].schema()
    }

    /// The defaults of one object, as a JSON Patch (empty for DELETE and CONNECT).
    pub fn defaults(&self, kind: Kind, operation: Operation, object: &Value) -> json_patch::Patch {
        match operation {
            Operation::Delete | Operation::Connect => json_patch::Patch::default(),
            Operation::Create | Operation::Update => {
                defaults::defaults_patch(kind, object, self.state().default_profile())
            }
        }
    }

    /// Mutates then validates one object of `kind`, and returns the defaults as a patch too.
    /// `old` is the stored object on UPDATE and DELETE.
    pub fn review(&self, kind: Kind, operation: Operation, object: &Value, old: Option<&Value>) -> Verdict {
        let state = self.state();
        if !matches!(operation, Operation::Create | Operation::Update) {
            return self.check(kind, operation, Value::Null, old, &state);
        }
        let mutated = defaults::apply_defaults(kind, object, state.default_profile());
        let patch = json_patch::diff(object, &mutated);
        Verdict { patch, ..self.check(kind, operation, mutated, old, &state) }
    }

    /// [`Engine::review`] without the patch (left empty), on an object the caller gives away:
    /// the validating webhook's question, answered without copying the object.
    pub fn verdict(&self, kind: Kind, operation: Operation, object: Value, old: Option<&Value>) -> Verdict {
        let state = self.state();
        let mut mutated = object;
        if matches!(operation, Operation::Create | Operation::Update) {
            defaults::apply_defaults_in_place(kind, &mut mutated, state.default_profile());
        }
        self.check(kind, operation, mutated, old, &state)
    }

    /// Validates an object its defaults were already applied to.
    fn check(
        &self,
        kind: Kind,
        operation: Operation,
        mutated: Value,
        old: Option<&Value>,
        state: &PolicyState,
    ) -> Verdict {
        match operation {
            Operation::Connect => return Verdict::default(),
            Operation::Delete => return Verdict::from_findings(review_delete(kind, old, state)),
            Operation::Create | Operation::Update => {}
        }
        let structural = self.schemas[&kind].check(&mutated);
        let mut readable = mutated;
        remove_pointers(&mut readable, &structural.removals);

        let mut findings = Findings::default();
        let findings_of = &mut findings;
        let typed = match kind {
            Kind::Server => typed::<MCPServer>(readable).map(|server| {
                let old = old.and_then(|o| MCPServer::deserialize(o).ok());
                server::validate_server(&server, old.as_ref(), state, findings_of);
                Reviewed::Server(Box::new(server))
            }),
            Kind::ServerGroup => typed::<MCPServerGroup>(readable).map(|g| {
                group::validate_group(&g, findings_of);
                Reviewed::ServerGroup(Box::new(g))
            }),
            Kind::DiscoverySource => typed::<MCPDiscoverySource>(readable).map(|d| {
                discovery::validate_discovery(&d, state, findings_of);
                Reviewed::DiscoverySource(Box::new(d))
            }),
            Kind::PermissionProfile => typed::<MCPPermissionProfile>(readable).map(|p| {
                profile::validate_profile(&p.spec, findings_of);
                Reviewed::PermissionProfile(Box::new(p))
            }),
            Kind::AdmissionPolicy => typed::<MCPAdmissionPolicy>(readable).map(|p| {
                admission_policy::validate_admission_policy(&p, state, findings_of);
                Reviewed::AdmissionPolicy(Box::new(p))
            }),
        };
        let object = match typed {
            Ok(object) => Some(object),
            Err(reason) => {
                if structural.errors.is_empty() {
                    findings.errors.push(FieldError::invalid(&FieldPath::default(), "", reason));
                }
                None
            }
        };

        // Structural errors win: rules do not speak about a field that is already broken.
        let mut errors = structural.errors;
        findings.errors.retain(|e| !errors.iter().any(|s| !s.field.is_empty() && field::is_within(&e.field, &s.field)));
        errors.append(&mut findings.errors);
        field::sort_errors(&mut errors);
        findings.warnings.dedup();
        Verdict { errors, warnings: findings.warnings, patch: json_patch::Patch::default(), object }
    }

    /// Reviews a stored MCPServer as the controller and `render` see it: its defaults applied
    /// (the one time they are), then every rule. The defaulted server when it is allowed,
    /// else every violation (a server that bypassed the webhook).
    pub fn review_server(&self, server: &MCPServer) -> Result<MCPServer, Vec<FieldError>> {
        let object = serde_json::to_value(server).map_err(|e| {
            vec![FieldError::invalid(&FieldPath::default(), "", format!("the object could not be read: {e}"))]
        })?;
        let verdict = self.verdict(Kind::Server, Operation::Create, object, None);
        match verdict.object {
            Some(Reviewed::Server(server)) if verdict.allowed() => Ok(*server),
            _ => Err(verdict.errors),
        }
    }

    /// The pod-level check of a Pod or Deployment: objects labelled as an MCP server's pods
    /// must meet that server's profile; others are not ours to judge.
    pub fn review_workload(&self, kind: WorkloadKind, operation: Operation, object: &Value) -> Verdict {
        if !matches!(operation, Operation::Create | Operation::Update) {
            return Verdict::default();
        }
        let mut findings = Findings::default();
        match workload::pod_template(kind, object) {
            Err(reason) => findings.errors.push(FieldError::invalid(&FieldPath::default(), "", reason)),
            Ok(template) if workload::belongs_to_server(&template) => {
                workload::check_server_pod(&template, &self.state(), &mut findings)
            }
            Ok(_) => {}
        }
        Verdict::from_findings(findings)
    }

    /// Checks a Pod or a Deployment's pod template against a Pod Security Standards level alone.
    pub fn check_pod_security(&self, kind: WorkloadKind, object: &Value, level: PodSecurityLevel) -> Verdict {
        let mut findings = Findings::default();
        match workload::pod_template(kind, object) {
            Err(reason) => findings.errors.push(FieldError::invalid(&FieldPath::default(), "", reason)),
            Ok(template) => workload::check_level(&template, level, &mut findings),
        }
        Verdict::from_findings(findings)
    }

    /// [`Engine::check_pod_security`] of a typed Deployment, as the controller builds it.
    pub fn check_deployment_security(&self, deployment: &Deployment, level: PodSecurityLevel) -> Verdict {
        let mut findings = Findings::default();
        workload::check_level(&workload::PodTemplate::of_deployment(deployment.clone()), level, &mut findings);
        Verdict::from_findings(findings)
    }
}

/// Deleting a profile that servers still use is refused, naming them.
fn review_delete(kind: Kind, old: Option<&Value>, state: &PolicyState) -> Findings {
    let mut findings = Findings::default();
    if kind != Kind::PermissionProfile {
        return findings;
    }
    let Some(name) = old.and_then(|o| o.pointer("/metadata/name")).and_then(Value::as_str) else { return findings };
    let users = state.servers_using(name);
    if !users.is_empty() {
        findings.errors.push(FieldError::forbidden(
            &FieldPath::new("metadata").child("name"),
            format!(
                "profile {name:?} is used by MCPServers {}: move them to another profile before deleting it",
                users.join(", ")
            ),
        ));
    }
    findings
}

fn typed<T: DeserializeOwned>(object: Value) -> Result<T, String> {
    serde_json::from_value(object).map_err(|e| format!("the object could not be read: {e}"))
}
