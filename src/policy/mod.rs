//! Pure admission rules: defaults (mutation) and validation of every mcp-hangar kind.
//!
//! [`Engine::review`] is the one entry point: the webhook and the offline `validate`
//! command both call it, so they always reach the same verdict.

mod discovery;
pub mod field;
pub mod format;
mod group;
pub mod mutate;
pub mod schema;
mod server;

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use discovery::MIN_REFRESH_INTERVAL;
pub use field::{ErrorType, FieldError, FieldPath};
pub use server::{
    ALLOWED_VOLUME_SOURCES, BUILTIN_PROFILES, MAX_SERVER_NAME_LEN, SECRET_ENV_MARKERS, is_secret_env_name,
};

use crate::crd::{Kind, MCPDiscoverySource, MCPServer, MCPServerGroup};
use schema::{StructuralSchema, remove_pointers};

/// Errors of the policy layer itself (not violations of an object).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A generated schema could not be compiled.
    #[error("schema error: {0}")]
    Schema(String),
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

/// The outcome of a review: defaults to apply and everything wrong with the result.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Violations, in stable order; empty when the object is allowed.
    pub errors: Vec<FieldError>,
    /// Warnings for the client.
    pub warnings: Vec<String>,
    /// The defaults, as a JSON Patch against the submitted object.
    pub patch: json_patch::Patch,
}

impl Verdict {
    /// True when the object may be stored.
    pub fn allowed(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Holds the compiled schemas; build it once and share it.
pub struct Engine {
    schemas: HashMap<Kind, StructuralSchema>,
}

impl Engine {
    /// Compiles the strict schema of every kind.
    pub fn new() -> Result<Self, PolicyError> {
        let schemas = Kind::ALL
            .into_iter()
            .map(|kind| Ok((kind, StructuralSchema::from_crd(&kind.crd())?)))
            .collect::<Result<_, PolicyError>>()?;
        Ok(Engine { schemas })
    }

    /// The defaults of one object, as a JSON Patch (empty for DELETE and CONNECT).
    pub fn defaults(&self, kind: Kind, operation: Operation, object: &Value) -> json_patch::Patch {
        match operation {
            Operation::Delete | Operation::Connect => json_patch::Patch::default(),
            Operation::Create | Operation::Update => mutate::defaults_patch(kind, object),
        }
    }

    /// Mutates then validates one object of `kind`. `old` is the stored object on UPDATE.
    pub fn review(&self, kind: Kind, operation: Operation, object: &Value, old: Option<&Value>) -> Verdict {
        if matches!(operation, Operation::Delete | Operation::Connect) {
            return Verdict::default();
        }
        let mutated = mutate::apply_defaults(kind, object);
        let patch = json_patch::diff(object, &mutated);
        let structural = self.schemas[&kind].check(&mutated);
        let mut readable = mutated;
        remove_pointers(&mut readable, &structural.removals);

        let mut findings = Findings::default();
        let typed = match kind {
            Kind::Server => typed::<MCPServer>(readable).map(|server| {
                let old = old.and_then(|o| serde_json::from_value::<MCPServer>(o.clone()).ok());
                server::validate_server(&server, old.as_ref(), &mut findings);
            }),
            Kind::ServerGroup => typed::<MCPServerGroup>(readable).map(|g| group::validate_group(&g, &mut findings)),
            Kind::DiscoverySource => {
                typed::<MCPDiscoverySource>(readable).map(|d| discovery::validate_discovery(&d, &mut findings))
            }
        };
        if let Err(reason) = typed
            && structural.errors.is_empty()
        {
            findings.errors.push(FieldError::invalid(&FieldPath::default(), "", reason));
        }

        // Structural errors win: rules do not speak about a field that is already broken.
        let mut errors = structural.errors;
        findings.errors.retain(|e| !errors.iter().any(|s| field::is_within(&e.field, &s.field) && !s.field.is_empty()));
        errors.append(&mut findings.errors);
        field::sort_errors(&mut errors);
        findings.warnings.dedup();
        Verdict { errors, warnings: findings.warnings, patch }
    }
}

fn typed<T: DeserializeOwned>(object: Value) -> Result<T, String> {
    serde_json::from_value(object).map_err(|e| format!("the object could not be read: {e}"))
}
