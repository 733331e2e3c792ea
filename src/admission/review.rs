//! AdmissionReview in, AdmissionReview out: a pure function over bytes, so it can be
//! tested and benchmarked without a server.

use kube::core::DynamicObject;
use kube::core::Status;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND};
use kube::core::response::{StatusCause, StatusDetails, StatusSummary};
use serde_json::{Value, json};

use super::Endpoint;
use crate::crd::{GROUP, Kind, VERSION};
use crate::policy::{Engine, FieldError, Operation, Verdict, WorkloadKind};

/// The outcome of one request, ready to send, with labels for metrics.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status: 200 for every decided review (allowed or denied), 400 for unreadable input.
    pub status: u16,
    /// JSON body: an AdmissionReview, or a `Status` for a 400.
    pub body: Value,
    /// The kind reviewed, or `unknown`.
    pub kind: String,
    /// The operation, or `unknown`.
    pub operation: String,
    /// `allowed`, `denied` or `error`.
    pub verdict: &'static str,
}

impl Answer {
    fn bad_request(message: String) -> Self {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": "BadRequest", "code": 400,
        });
        Answer { status: 400, body, kind: "unknown".into(), operation: "unknown".into(), verdict: "error" }
    }
}

/// Answers one AdmissionReview body for `endpoint`.
pub fn answer(engine: &Engine, endpoint: Endpoint, body: &[u8]) -> Answer {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) => return Answer::bad_request(format!("the body is not a valid AdmissionReview: {e}")),
    };
    if review.types.api_version != META_API_VERSION_V1 || review.types.kind != META_KIND {
        return Answer::bad_request(format!(
            "unsupported review {}/{}: send {META_API_VERSION_V1} {META_KIND}",
            review.types.api_version, review.types.kind
        ));
    }
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => return Answer::bad_request("the AdmissionReview has no request".into()),
    };
    if request.uid.is_empty() {
        return Answer::bad_request("request.uid is required".into());
    }
    let operation = operation_of(&request);
    let op_label = format!("{:?}", request.operation).to_uppercase();
    let target = match (target_of(&request), endpoint) {
        (Some(Target::Workload(_)), Endpoint::Mutate) | (None, _) => {
            let response = AdmissionResponse::from(&request).deny(unhandled_message(&request, endpoint));
            return decided(bad_request(response), request.kind.kind.clone(), op_label, "denied");
        }
        (Some(target), _) => target,
    };
    let object = match (&request.object, operation) {
        (_, Operation::Delete | Operation::Connect) => Value::Null,
        (Some(object), _) => match serde_json::to_value(object) {
            Ok(value) => value,
            Err(e) => return Answer::bad_request(format!("request.object could not be read: {e}")),
        },
        (None, _) => {
            let response = AdmissionResponse::from(&request).deny("request.object is required for CREATE and UPDATE");
            return decided(bad_request(response), target.name().to_string(), op_label, "denied");
        }
    };
    let old = request.old_object.as_ref().and_then(|o| serde_json::to_value(o).ok());
    let response = AdmissionResponse::from(&request);
    let kind_label = target.name().to_string();
    match (endpoint, target) {
        (Endpoint::Mutate, Target::Ours(kind)) => {
            let patch = engine.defaults(kind, operation, &object);
            let response = if patch.0.is_empty() {
                response
            } else {
                match response.with_patch(patch) {
                    Ok(r) => r,
                    Err(e) => return Answer::bad_request(format!("could not encode the patch: {e}")),
                }
            };
            decided(response, kind_label, op_label, "allowed")
        }
        (Endpoint::Validate, target) => {
            let verdict = match target {
                Target::Ours(kind) => engine.review(kind, operation, &object, old.as_ref()),
                Target::Workload(kind) => engine.review_workload(kind, operation, &object),
            };
            let name = object_name(&request, old.as_ref().unwrap_or(&object));
            let label = if verdict.allowed() { "allowed" } else { "denied" };
            decided(respond(response, target, operation, &name, &verdict), kind_label, op_label, label)
        }
        (Endpoint::Mutate, Target::Workload(_)) => unreachable!("refused above"),
    }
}

/// What a request is about: one of our kinds, or a workload for the pod-level check.
#[derive(Debug, Clone, Copy)]
enum Target {
    Ours(Kind),
    Workload(WorkloadKind),
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Ours(kind) => kind.as_str(),
            Target::Workload(kind) => kind.as_str(),
        }
    }

    /// The kind qualified by its group, as Kubernetes messages name it (`MCPServer.mcp-hangar.io`, `Deployment.apps`).
    fn qualified(self) -> String {
        match self {
            Target::Ours(kind) => format!("{kind}.{GROUP}"),
            Target::Workload(WorkloadKind::Pod) => "Pod".to_string(),
            Target::Workload(WorkloadKind::Deployment) => "Deployment.apps".to_string(),
        }
    }

    fn group(self) -> &'static str {
        match self {
            Target::Ours(_) => GROUP,
            Target::Workload(WorkloadKind::Pod) => "",
            Target::Workload(WorkloadKind::Deployment) => "apps",
        }
    }
}

fn target_of<T: kube::core::Resource>(request: &AdmissionRequest<T>) -> Option<Target> {
    let gvk = &request.kind;
    if gvk.group == GROUP && gvk.version == VERSION {
        return Kind::from_kind(&gvk.kind).map(Target::Ours);
    }
    WorkloadKind::from_gvk(&gvk.group, &gvk.version, &gvk.kind).map(Target::Workload)
}

fn unhandled_message<T: kube::core::Resource>(request: &AdmissionRequest<T>, endpoint: Endpoint) -> String {
    let gvk = &request.kind;
    let api_version = if gvk.group.is_empty() { gvk.version.clone() } else { format!("{}/{}", gvk.group, gvk.version) };
    let mut handled = format!("{} ({GROUP}/{VERSION})", Kind::ALL.map(Kind::as_str).join(", "));
    if endpoint == Endpoint::Validate {
        handled.push_str(", Pod (v1) and Deployment (apps/v1)");
    }
    format!("kind {} ({api_version}) is not handled by {}: it handles {handled}", gvk.kind, endpoint.path())
}

fn bad_request(mut response: AdmissionResponse) -> AdmissionResponse {
    response.result.code = 400;
    response.result.reason = "BadRequest".into();
    response
}

fn operation_of<T: kube::core::Resource>(request: &AdmissionRequest<T>) -> Operation {
    use kube::core::admission::Operation as Wire;
    match request.operation {
        Wire::Create => Operation::Create,
        Wire::Update => Operation::Update,
        Wire::Delete => Operation::Delete,
        Wire::Connect => Operation::Connect,
    }
}

fn object_name<T: kube::core::Resource>(request: &AdmissionRequest<T>, object: &Value) -> String {
    if !request.name.is_empty() {
        return request.name.clone();
    }
    let meta = &object["metadata"];
    meta["name"].as_str().or_else(|| meta["generateName"].as_str()).unwrap_or_default().to_string()
}

/// Fills a response from a verdict: warnings always; when denied, a 422 Invalid status, or
/// a 403 Forbidden one for a refused deletion.
fn respond(
    mut response: AdmissionResponse,
    target: Target,
    operation: Operation,
    name: &str,
    verdict: &Verdict,
) -> AdmissionResponse {
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings.clone());
    }
    if verdict.allowed() {
        return response;
    }
    response.allowed = false;
    response.result = if operation == Operation::Delete {
        forbidden_status(target, name, &verdict.errors)
    } else {
        invalid_status(target, name, &verdict.errors)
    };
    response
}

fn status_details(target: Target, name: &str, errors: &[FieldError]) -> StatusDetails {
    StatusDetails {
        name: name.to_string(),
        group: target.group().to_string(),
        kind: target.name().to_string(),
        uid: String::new(),
        causes: errors
            .iter()
            .map(|e| StatusCause {
                reason: e.error_type.reason().to_string(),
                message: e.body(),
                field: e.field.clone(),
            })
            .collect(),
        retry_after_seconds: 0,
    }
}

/// The Status Kubernetes' `NewInvalid` builds: code 422, reason Invalid, one cause per field error.
fn invalid_status(target: Target, name: &str, errors: &[FieldError]) -> Status {
    Status {
        status: Some(StatusSummary::Failure),
        code: 422,
        message: format!("{} {name:?} is invalid: {}", target.qualified(), aggregate(errors)),
        metadata: None,
        reason: "Invalid".into(),
        details: Some(status_details(target, name, errors)),
    }
}

/// The Status Kubernetes' `NewForbidden` builds: code 403, reason Forbidden.
fn forbidden_status(target: Target, name: &str, errors: &[FieldError]) -> Status {
    let reasons: Vec<&str> = errors.iter().map(|e| e.detail.as_str()).collect();
    Status {
        status: Some(StatusSummary::Failure),
        code: 403,
        message: format!("{} {name:?} is forbidden: {}", target.qualified(), reasons.join("; ")),
        metadata: None,
        reason: "Forbidden".into(),
        details: Some(status_details(target, name, errors)),
    }
}

/// `e` for one error, `[e1, e2]` for several, as Kubernetes aggregates print.
pub fn aggregate(errors: &[FieldError]) -> String {
    match errors {
        [one] => one.to_string(),
        many => format!("[{}]", many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
    }
}

fn decided(response: AdmissionResponse, kind: String, operation: String, verdict: &'static str) -> Answer {
    let mut body = serde_json::to_value(response.into_review()).unwrap_or(Value::Null);
    to_wire_format(&mut body);
    Answer { status: 200, body, kind, operation, verdict }
}

/// Brings kube's serialization to the exact wire format of `admission.k8s.io/v1`:
/// - `patch` is a Go `[]byte`, i.e. a base64 string (kube writes an array of numbers);
/// - a cause's type is the Go field `Type`, serialized as `reason`; clients that read the
///   field name find it under `type` as well.
fn to_wire_format(body: &mut Value) {
    use base64::Engine as _;
    if let Some(patch) = body.pointer_mut("/response/patch")
        && let Some(bytes) =
            patch.as_array().map(|a| a.iter().filter_map(|b| b.as_u64().map(|b| b as u8)).collect::<Vec<u8>>())
    {
        *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    if let Some(Value::Array(causes)) = body.pointer_mut("/response/status/details/causes") {
        for cause in causes {
            if let Some(reason) = cause.get("reason").cloned() {
                cause["type"] = reason;
            }
        }
    }
}
