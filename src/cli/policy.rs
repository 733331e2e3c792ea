//! `mcp-hangar policy check DIR`, `mcp-hangar policy apply -f DIR`, and loading a policy
//! directory for `validate --policy`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};

use super::validate::{Document, EXIT_ALLOWED, EXIT_DENIED, EXIT_UNREADABLE, ReadError, read_paths};
use super::{CliError, PolicyApplyArgs, PolicyArgs, PolicyCommand};
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

/// The engine `validate --policy` runs under: the shipped policy, or the policy directory
/// given; a directory with problems prints them and gives no engine.
pub(super) fn engine_for(dir: Option<&Path>) -> Result<Option<Engine>, CliError> {
    let Some(dir) = dir else { return Ok(Some(Engine::new()?)) };
    match load_policy_dir(dir) {
        Ok(state) => Ok(Some(Engine::with_state(state)?)),
        Err(report) => {
            super::emit(&render_problems(&report));
            Ok(None)
        }
    }
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

/// How `policy apply` writes and retries.
#[derive(Debug, Clone)]
pub struct ApplySettings {
    /// Field manager of the server-side apply.
    pub field_manager: String,
    /// Give up after this long.
    pub timeout: std::time::Duration,
    /// First wait after a failed attempt; doubled after each failure up to [`ApplySettings::max_retry_interval`].
    pub retry_interval: std::time::Duration,
    /// Longest wait between attempts.
    pub max_retry_interval: std::time::Duration,
}

/// Why `policy apply` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The directory holds something other than profiles and admission policies.
    #[error(
        "{file}: document {document}: {kind} is not a policy object: policy apply only applies MCPPermissionProfile and MCPAdmissionPolicy"
    )]
    NotPolicy {
        /// File of the object.
        file: String,
        /// Position of its document in the file.
        document: usize,
        /// `apiVersion/kind` of the object.
        kind: String,
    },
    /// The apiserver (or the webhook) refused an object for good.
    #[error("{object} was refused: {source}")]
    Refused {
        /// Kind and name.
        object: String,
        /// The answer.
        source: kube::Error,
    },
    /// Transient failures went on past the timeout.
    #[error("{object} could not be applied within {timeout:?}; last error: {source}")]
    TimedOut {
        /// Kind and name.
        object: String,
        /// The timeout.
        timeout: std::time::Duration,
        /// The last failure.
        source: kube::Error,
    },
}

/// True for failures that go away by themselves while an install settles: the webhook not
/// serving yet (500 `failed calling webhook`), a CRD not established yet (404), RBAC caches (403),
/// conflicts and throttling, and every transport error.
fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => matches!(status.code, 403 | 404 | 409 | 429) || status.code >= 500,
        _ => true,
    }
}

/// The policy objects of `documents`, profiles first (the admission policy names one as the
/// default), each with its API resource.
fn policy_objects(documents: &[Document]) -> Result<Vec<(Kind, DynamicObject)>, ApplyError> {
    let mut objects = Vec::new();
    for doc in documents {
        let kind = (doc.object["apiVersion"] == API_VERSION)
            .then(|| doc.object["kind"].as_str().and_then(Kind::from_kind))
            .flatten()
            .filter(|k| matches!(k, Kind::PermissionProfile | Kind::AdmissionPolicy));
        let object = kind.and_then(|_| serde_json::from_value::<DynamicObject>(doc.object.clone()).ok());
        match (kind, object) {
            (Some(kind), Some(object)) => objects.push((kind, object)),
            _ => {
                return Err(ApplyError::NotPolicy {
                    file: doc.file.display().to_string(),
                    document: doc.index,
                    kind: format!(
                        "{}/{}",
                        doc.object["apiVersion"].as_str().unwrap_or_default(),
                        doc.object["kind"].as_str().unwrap_or_default()
                    ),
                });
            }
        }
    }
    objects.sort_by_key(|(kind, _)| *kind != Kind::PermissionProfile);
    Ok(objects)
}

/// Server-side applies every policy object of `documents` (profiles first), retrying
/// transient failures with a doubling wait until `settings.timeout`; returns what was applied,
/// as `Kind "name"`.
pub async fn apply_policy(
    client: kube::Client,
    documents: &[Document],
    settings: &ApplySettings,
) -> Result<Vec<String>, ApplyError> {
    let objects = policy_objects(documents)?;
    let deadline = tokio::time::Instant::now() + settings.timeout;
    let params = PatchParams::apply(&settings.field_manager).force();
    let mut applied = Vec::new();
    for (kind, object) in objects {
        let gvk = GroupVersionKind::gvk(crate::crd::GROUP, crate::crd::VERSION, kind.as_str());
        let api: Api<DynamicObject> =
            Api::all_with(client.clone(), &ApiResource::from_gvk_with_plural(&gvk, kind.plural()));
        let name = object.metadata.name.clone().unwrap_or_default();
        let label = format!("{kind} {name:?}");
        let mut wait = settings.retry_interval;
        loop {
            match api.patch(&name, &params, &Patch::Apply(&object)).await {
                Ok(_) => break,
                Err(source) if !is_transient(&source) => return Err(ApplyError::Refused { object: label, source }),
                Err(source) if tokio::time::Instant::now() + wait > deadline => {
                    return Err(ApplyError::TimedOut { object: label, timeout: settings.timeout, source });
                }
                Err(source) => {
                    eprintln!("{label}: {source}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(settings.max_retry_interval);
                }
            }
        }
        applied.push(label);
    }
    Ok(applied)
}

async fn apply(args: &PolicyApplyArgs) -> Result<ExitCode, CliError> {
    let (_, report) = check_policy_dir(&args.dir);
    if report.exit_code() != EXIT_ALLOWED {
        super::emit(&render_problems(&report));
        return Ok(ExitCode::from(report.exit_code()));
    }
    let (documents, _) = read_paths(std::slice::from_ref(&args.dir), true);
    let client = kube::Client::try_default().await?;
    let settings = ApplySettings {
        field_manager: args.field_manager.clone(),
        timeout: args.timeout,
        retry_interval: std::time::Duration::from_secs(1),
        max_retry_interval: std::time::Duration::from_secs(10),
    };
    for object in apply_policy(client, &documents, &settings).await? {
        super::emit(&format!("{object} applied\n"));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn run(args: &PolicyArgs) -> Result<ExitCode, CliError> {
    match &args.command {
        PolicyCommand::Check { dir } => {
            let (_, report) = check_policy_dir(dir);
            super::emit(&render_problems(&report));
            Ok(ExitCode::from(report.exit_code()))
        }
        PolicyCommand::Apply(args) => apply(args).await,
    }
}
