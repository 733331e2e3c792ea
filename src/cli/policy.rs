//! `mcp-hangar policy check DIR`, and loading a policy directory for `validate --policy`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use super::validate::{Document, EXIT_ALLOWED, EXIT_DENIED, EXIT_UNREADABLE, ReadError, read_paths};
use super::{CliError, PolicyArgs, PolicyCommand};
use crate::crd::{API_VERSION, Kind, MCPAdmissionPolicySpec, MCPPermissionProfileSpec};
use crate::policy::{Engine, FieldError, Operation, PolicyState};

/// One violation in a policy manifest, with where it is.
#[derive(Debug, Clone)]
pub struct PolicyProblem {
    /// File of the manifest.
    pub file: String,
    /// Position of its document in the file.
    pub document: usize,
    /// Kind and name, as `MCPPermissionProfile "none"`.
    pub object: String,
    /// The field error.
    pub error: FieldError,
}

/// Everything `policy check` found.
#[derive(Debug, Default)]
pub struct PolicyReport {
    /// Violations.
    pub problems: Vec<PolicyProblem>,
    /// Warnings, already located.
    pub warnings: Vec<String>,
    /// Inputs that could not be read.
    pub unreadable: Vec<ReadError>,
    /// Objects checked.
    pub checked: usize,
}

impl PolicyReport {
    /// 0 when every manifest is valid, 1 with violations, 2 with unreadable input.
    pub fn exit_code(&self) -> u8 {
        if !self.unreadable.is_empty() {
            EXIT_UNREADABLE
        } else if !self.problems.is_empty() {
            EXIT_DENIED
        } else {
            EXIT_ALLOWED
        }
    }
}

fn name_of(doc: &Document) -> String {
    doc.object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Checks every profile and admission policy manifest of a directory (or file) and returns
/// the policy they make (builtins overlaid with the valid ones) with what was wrong.
pub fn check_policy_dir(dir: &Path) -> (PolicyState, PolicyReport) {
    let (documents, unreadable) = read_paths(&[dir.to_path_buf()], true);
    let mut report = PolicyReport { unreadable, ..Default::default() };
    let of_kind = |kind: Kind| {
        documents
            .iter()
            .filter(move |d| d.object["apiVersion"] == API_VERSION && d.object["kind"] == kind.as_str())
            .collect::<Vec<_>>()
    };
    let builtin = PolicyState::builtin();
    let mut profiles = BTreeMap::new();
    let checker = Engine::with_state(builtin.clone()).expect("generated schemas compile");
    for doc in of_kind(Kind::PermissionProfile) {
        let name = name_of(doc);
        if profiles.contains_key(&name) {
            let error = FieldError::duplicate(&crate::policy::FieldPath::new("metadata").child("name"), name.as_str());
            report.problems.push(problem(doc, Kind::PermissionProfile, &name, error));
            continue;
        }
        if let Some(spec) = check_one::<MCPPermissionProfileSpec>(&checker, Kind::PermissionProfile, doc, &mut report) {
            profiles.insert(name, spec);
        }
    }
    let with_profiles = builtin.overlay(profiles, []);
    let checker = Engine::with_state(with_profiles.clone()).expect("generated schemas compile");
    let mut policies = Vec::new();
    for doc in of_kind(Kind::AdmissionPolicy) {
        if let Some(spec) = check_one::<MCPAdmissionPolicySpec>(&checker, Kind::AdmissionPolicy, doc, &mut report) {
            policies.push((name_of(doc), spec));
        }
    }
    (with_profiles.overlay([], policies), report)
}

fn problem(doc: &Document, kind: Kind, name: &str, error: FieldError) -> PolicyProblem {
    PolicyProblem {
        file: doc.file.display().to_string(),
        document: doc.index,
        object: format!("{kind} {name:?}"),
        error,
    }
}

/// Reviews one policy object; returns its spec when it is valid.
fn check_one<T: serde::de::DeserializeOwned>(
    engine: &Engine,
    kind: Kind,
    doc: &Document,
    report: &mut PolicyReport,
) -> Option<T> {
    report.checked += 1;
    let verdict = engine.review(kind, Operation::Create, &doc.object, None);
    let name = name_of(doc);
    for warning in verdict.warnings {
        report.warnings.push(format!("{}: document {}: {kind} {name:?}: {warning}", doc.file.display(), doc.index));
    }
    if !verdict.errors.is_empty() {
        report.problems.extend(verdict.errors.into_iter().map(|e| problem(doc, kind, &name, e)));
        return None;
    }
    serde_json::from_value(doc.object["spec"].clone()).ok()
}

/// The policy of a directory, or what is wrong with it.
pub fn load_policy_dir(dir: &Path) -> Result<PolicyState, PolicyReport> {
    let (state, report) = check_policy_dir(dir);
    if report.exit_code() == EXIT_ALLOWED { Ok(state) } else { Err(report) }
}

/// The report as lines a person reads: `file: document N: Kind "name": field: error`.
pub fn render_problems(report: &PolicyReport) -> String {
    let mut out = String::new();
    for warning in &report.warnings {
        let _ = writeln!(out, "Warning: {warning}");
    }
    for p in &report.problems {
        let _ = writeln!(out, "{}: document {}: {}: {}", p.file, p.document, p.object, p.error);
    }
    for error in &report.unreadable {
        let _ = writeln!(out, "error: {error}");
    }
    if report.exit_code() == EXIT_ALLOWED {
        let _ = writeln!(out, "{} policy objects valid", report.checked);
    }
    out
}

pub(super) fn run(args: &PolicyArgs) -> Result<ExitCode, CliError> {
    match &args.command {
        PolicyCommand::Check { dir } => {
            let (_, report) = check_policy_dir(dir);
            super::emit(&render_problems(&report));
            Ok(ExitCode::from(report.exit_code()))
        }
    }
}
