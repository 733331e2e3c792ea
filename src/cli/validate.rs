//! `mcp-hangar validate`: the webhook's verdicts on manifest files, without a cluster.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use super::{OutputFormat, ValidateArgs};
use crate::crd::{API_VERSION, Kind, PodSecurityLevel};
use crate::policy::{Engine, Operation, WorkloadKind};

/// Exit code when every object is allowed.
pub const EXIT_ALLOWED: u8 = 0;
/// Exit code when some object is denied.
pub const EXIT_DENIED: u8 = 1;
/// Exit code when some input could not be read.
pub const EXIT_UNREADABLE: u8 = 2;

/// One object read from a manifest.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file it came from.
    pub file: PathBuf,
    /// 1-based position of the YAML document in its file.
    pub index: usize,
    /// The object.
    pub object: Value,
}

/// An input that could not be read, with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    /// The file (or directory).
    pub file: PathBuf,
    /// The line, when known.
    pub line: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Lists the manifest files under the given paths, like `kubectl -f`: files as given,
/// directories by their `.yaml`, `.yml` and `.json` files (below them too when `recursive`),
/// hidden entries (`.name`) of directories left out.
pub fn manifest_files(paths: &[PathBuf], recursive: bool) -> (Vec<PathBuf>, Vec<ReadError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        collect(path, recursive, true, &mut files, &mut errors);
    }
    (files, errors)
}

fn collect(path: &Path, recursive: bool, top: bool, files: &mut Vec<PathBuf>, errors: &mut Vec<ReadError>) {
    let error = |message: String| ReadError { file: path.to_path_buf(), line: None, message };
    if path.is_dir() {
        if !top && !recursive {
            return;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => return errors.push(error(e.to_string())),
        };
        // Hidden entries are passed over: a mounted ConfigMap holds its files twice, through
        // `..data/` and the links beside it.
        let mut children: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        children.sort();
        for child in children {
            let is_manifest = matches!(child.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"));
            if child.is_dir() || is_manifest {
                collect(&child, recursive, false, files, errors);
            }
        }
    } else if path.exists() {
        files.push(path.to_path_buf());
    } else {
        errors.push(error("no such file or directory".into()));
    }
}

/// Reads every object of a manifest file: multi-document YAML, or JSON; `List`s are expanded.
pub fn read_documents(file: &Path, text: &str) -> Result<Vec<Document>, ReadError> {
    let read_error = |line: Option<u64>, message: String| ReadError { file: file.to_path_buf(), line, message };
    let is_json = file.extension().and_then(|e| e.to_str()) == Some("json");
    let values: Vec<Value> = if is_json {
        let value: Value = serde_json::from_str(text).map_err(|e| read_error(Some(e.line() as u64), e.to_string()))?;
        vec![value]
    } else {
        serde_saphyr::from_multiple(text)
            .map_err(|e| read_error(e.location().map(|l| l.line()), first_line(&e.to_string())))?
    };
    let mut documents = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let index = i + 1;
        match value {
            Value::Null => continue,
            Value::Object(ref map) => {
                let kind = map.get("kind").and_then(Value::as_str);
                let api_version = map.get("apiVersion").and_then(Value::as_str);
                if kind.is_none() || api_version.is_none() {
                    return Err(read_error(None, format!("document {index}: apiVersion and kind must be set")));
                }
                if kind.is_some_and(|k| k.ends_with("List")) && map.get("items").is_some_and(Value::is_array) {
                    for item in map["items"].as_array().into_iter().flatten() {
                        documents.push(Document { file: file.to_path_buf(), index, object: item.clone() });
                    }
                } else {
                    documents.push(Document { file: file.to_path_buf(), index, object: value });
                }
            }
            _ => return Err(read_error(None, format!("document {index}: expected an object"))),
        }
    }
    Ok(documents)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// The verdict on one object, as `--output json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectResult {
    /// apiVersion of the object.
    pub api_version: String,
    /// kind of the object.
    pub kind: String,
    /// namespace, when set.
    pub namespace: Option<String>,
    /// name.
    pub name: String,
    /// True when the webhook would admit it.
    pub allowed: bool,
    /// Every violation, in stable order.
    pub violations: Vec<Violation>,
    /// Warnings the webhook would return.
    pub warnings: Vec<String>,
    /// The defaults the webhook would write (JSON Patch).
    pub patch: json_patch::Patch,
    /// File the object came from.
    pub file: String,
    /// Position of its document in the file.
    pub document: usize,
}

/// One violation in `--output json`.
#[derive(Debug, Serialize)]
pub struct Violation {
    /// Field path.
    pub field: String,
    /// `FieldValueRequired`, …
    #[serde(rename = "type")]
    pub error_type: String,
    /// The error without its field (`Required value: …`).
    pub message: String,
}

/// An object of another kind, passed over.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// apiVersion of the object.
    pub api_version: String,
    /// kind of the object.
    pub kind: String,
    /// namespace, when set.
    pub namespace: Option<String>,
    /// name.
    pub name: String,
    /// File the object came from.
    pub file: String,
    /// Why it was passed over.
    pub reason: String,
}

/// Everything `validate` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Verdicts on mcp-hangar objects.
    pub results: Vec<ObjectResult>,
    /// Objects of other kinds.
    pub skipped: Vec<Skipped>,
    /// Inputs that could not be read.
    #[serde(serialize_with = "serialize_display")]
    pub unreadable: Vec<ReadError>,
}

fn serialize_display<S: serde::Serializer>(errors: &[ReadError], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(errors.iter().map(ToString::to_string))
}

impl Report {
    /// 0 when everything is allowed, 1 when something is denied, 2 when something is unreadable.
    pub fn exit_code(&self) -> u8 {
        if !self.unreadable.is_empty() {
            EXIT_UNREADABLE
        } else if self.results.iter().any(|r| !r.allowed) {
            EXIT_DENIED
        } else {
            EXIT_ALLOWED
        }
    }
}

/// What `validate` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// mcp-hangar objects, exactly as the webhook would on CREATE.
    Objects,
    /// Pods and the pod templates of Deployments, against a Pod Security Standards level.
    PodSecurity(PodSecurityLevel),
}

/// Reviews every object of the given documents exactly as the webhook would on CREATE.
pub fn review_documents(engine: &Engine, documents: &[Document], report: &mut Report) {
    review_documents_in(engine, documents, Mode::Objects, report);
}

/// Reviews every object of the given documents in the given mode.
pub fn review_documents_in(engine: &Engine, documents: &[Document], mode: Mode, report: &mut Report) {
    for doc in documents {
        let object = &doc.object;
        let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let api_version = text("apiVersion");
        let kind_name = text("kind");
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_string);
        let file = doc.file.display().to_string();
        let verdict = match mode {
            Mode::Objects => (api_version == API_VERSION)
                .then(|| Kind::from_kind(&kind_name))
                .flatten()
                .map(|kind| engine.review(kind, Operation::Create, object, None)),
            Mode::PodSecurity(level) => {
                let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version.as_str()));
                WorkloadKind::from_gvk(group, version, &kind_name)
                    .map(|kind| engine.check_pod_security(kind, object, level))
            }
        };
        let Some(verdict) = verdict else {
            let reason = match mode {
                Mode::Objects => format!("not a kind of {API_VERSION}"),
                Mode::PodSecurity(_) => "not a Pod or an apps/v1 Deployment".to_string(),
            };
            report.skipped.push(Skipped { api_version, kind: kind_name, namespace, name, file, reason });
            continue;
        };
        let violations = verdict
            .errors
            .iter()
            .map(|e| Violation {
                field: e.field.clone(),
                error_type: e.error_type.reason().to_string(),
                message: e.body(),
            })
            .collect();
        report.results.push(ObjectResult {
            api_version,
            kind: kind_name,
            namespace,
            name,
            allowed: verdict.allowed(),
            violations,
            warnings: verdict.warnings,
            patch: verdict.patch,
            file,
            document: doc.index,
        });
    }
}

/// Reads every manifest under the given paths.
pub fn read_paths(paths: &[PathBuf], recursive: bool) -> (Vec<Document>, Vec<ReadError>) {
    let (files, mut unreadable) = manifest_files(paths, recursive);
    let mut documents = Vec::new();
    for file in files {
        let text = match std::fs::read(&file).map(String::from_utf8) {
            Ok(Ok(text)) => text,
            Ok(Err(_)) => {
                unreadable.push(ReadError { file, line: None, message: "not UTF-8 text".into() });
                continue;
            }
            Err(e) => {
                unreadable.push(ReadError { file, line: None, message: e.to_string() });
                continue;
            }
        };
        match read_documents(&file, &text) {
            Ok(mut docs) => documents.append(&mut docs),
            Err(e) => unreadable.push(e),
        }
    }
    if documents.is_empty() && unreadable.is_empty() {
        let file = paths.first().cloned().unwrap_or_default();
        unreadable.push(ReadError { file, line: None, message: "no objects found".into() });
    }
    (documents, unreadable)
}

/// Reads and reviews every input as the webhook would.
pub fn validate_paths(engine: &Engine, paths: &[PathBuf], recursive: bool) -> Report {
    validate_paths_in(engine, paths, recursive, Mode::Objects)
}

/// Reads and reviews every input in the given mode.
pub fn validate_paths_in(engine: &Engine, paths: &[PathBuf], recursive: bool, mode: Mode) -> Report {
    let (documents, unreadable) = read_paths(paths, recursive);
    let mut report = Report { unreadable, ..Report::default() };
    review_documents_in(engine, &documents, mode, &mut report);
    report
}

/// The report as kubectl would print it.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    for result in &report.results {
        for warning in &result.warnings {
            let _ = writeln!(out, "Warning: {warning}");
        }
        let resource = match result.api_version.split_once('/') {
            Some((group, _)) => format!("{}.{group}", result.kind.to_ascii_lowercase()),
            None => result.kind.to_ascii_lowercase(),
        };
        if result.allowed {
            let _ = writeln!(out, "{}: {resource}/{} valid", result.file, result.name);
        } else {
            // kubectl prints one cause on the line of the summary, several as a list.
            let _ = write!(out, "{}: The {} {:?} is invalid:", result.file, result.kind, result.name);
            match result.violations.as_slice() {
                [one] => {
                    let _ = writeln!(out, " {}: {}", one.field, one.message);
                }
                many => {
                    let _ = writeln!(out);
                    for v in many {
                        let _ = writeln!(out, "* {}: {}", v.field, v.message);
                    }
                }
            }
        }
    }
    for skipped in &report.skipped {
        let _ = writeln!(
            out,
            "{}: {}/{} {:?} skipped: {}",
            skipped.file, skipped.api_version, skipped.kind, skipped.name, skipped.reason
        );
    }
    for error in &report.unreadable {
        let _ = writeln!(out, "error: {error}");
    }
    out
}

/// `validate` under the engine built from `--policy` (see `policy::engine_for`).
pub(super) fn run(engine: &Engine, args: &ValidateArgs) -> ExitCode {
    let mode = match args.pod_security {
        Some(level) => Mode::PodSecurity(level.into()),
        None => Mode::Objects,
    };
    let report = validate_paths_in(engine, &args.files, args.recursive, mode);
    match args.output {
        OutputFormat::Text => super::emit(&render_text(&report)),
        OutputFormat::Json => super::emit(&format!("{}\n", serde_json::to_string_pretty(&report).unwrap_or_default())),
    }
    ExitCode::from(report.exit_code())
}
