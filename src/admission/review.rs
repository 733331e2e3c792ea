//! AdmissionReview in, AdmissionReview out: a pure function over bytes, so it can be
//! tested and benchmarked without a server.
//!
//! The review is decoded once, straight into the few typed fields the webhook reads, with the
//! objects kept as JSON (the rules read them as JSON first); the answer is written in the exact
//! wire format of `admission.k8s.io/v1`.
//!
//! The apiserver runs mutating webhooks, then the CRD's schema and CEL rules (which stop at the
//! first failing set), then validating webhooks. So `/mutate` reviews our kinds in full: it
//! writes the defaults of a valid object, and denies an invalid one with every violation before
//! the schema can pre-empt it. `/validate` reaches the same verdict on the object as stored, after
//! every other webhook's mutations. Warnings about our kinds come from `/mutate` only (it sees
//! the user's object, and its denial is the one users read), so each appears once.

use kube::core::Status;
use kube::core::admission::{META_API_VERSION_V1, META_KIND, Operation as WireOperation};
use kube::core::gvk::{GroupVersionKind, GroupVersionResource};
use kube::core::response::{StatusCause, StatusDetails, StatusSummary};
use serde::Deserialize;
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

/// An AdmissionReview as sent by the apiserver, as far as the webhook reads it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    kind: String,
    #[serde(default)]
    request: Option<Request>,
}

/// Most field errors a denial lists (as causes and in its message); the rest are counted.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// An `admission.k8s.io/v1` AdmissionRequest, read as strictly as `kube`'s own type (the same
/// fields required, the same types), except that the objects stay JSON.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "every field is read so that a malformed review is refused, as kube refuses it")]
struct Request {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    request_kind: Option<GroupVersionKind>,
    #[serde(default)]
    request_resource: Option<GroupVersionResource>,
    #[serde(default)]
    request_sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: WireOperation,
    user_info: k8s_openapi::api::authentication::v1::UserInfo,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    old_object: Option<Value>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    options: Option<Value>,
}

/// An AdmissionResponse being written.
struct Response {
    uid: String,
    allowed: bool,
    status: Status,
    patch: Option<json_patch::Patch>,
    warnings: Vec<String>,
}

impl Response {
    /// Allows, with nothing to say yet.
    fn allow(request: &Request) -> Self {
        Response {
            uid: request.uid.clone(),
            allowed: true,
            status: Status::default(),
            patch: None,
            warnings: Vec::new(),
        }
    }

    /// Denies with a message, as `kube`'s `AdmissionResponse::deny` does.
    fn deny(request: &Request, message: impl Into<String>) -> Self {
        Response::allow(request).denied(message)
    }

    /// This response, denying with a message.
    fn denied(mut self, message: impl Into<String>) -> Self {
        self.allowed = false;
        self.status.message = message.into();
        self
    }

    /// The AdmissionReview carrying this response, in the wire format of `admission.k8s.io/v1`:
    /// `patch` is a Go `[]byte`, i.e. a base64 string; a cause's type is the Go field `Type`,
    /// serialized as `reason`, and clients that read the field name find it under `type` too.
    fn into_review(self) -> Value {
        use base64::Engine as _;
        let mut status = serde_json::to_value(&self.status).unwrap_or_else(|_| json!({}));
        if let Some(Value::Array(causes)) = status.pointer_mut("/details/causes") {
            for cause in causes {
                if let Some(reason) = cause.get("reason").cloned() {
                    cause["type"] = reason;
                }
            }
        }
        let mut response = json!({"uid": self.uid, "allowed": self.allowed, "status": status});
        if let Some(patch) = self.patch {
            let bytes = serde_json::to_vec(&patch).unwrap_or_default();
            response["patch"] = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
            response["patchType"] = json!("JSONPatch");
        }
        if !self.warnings.is_empty() {
            response["warnings"] = json!(self.warnings);
        }
        json!({"apiVersion": META_API_VERSION_V1, "kind": META_KIND, "response": response})
    }
}

/// Answers one AdmissionReview body for `endpoint`.
pub fn answer(engine: &Engine, endpoint: Endpoint, body: &[u8]) -> Answer {
    let review: Review = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) => return Answer::bad_request(format!("the body is not a valid AdmissionReview: {e}")),
    };
    if review.api_version != META_API_VERSION_V1 || review.kind != META_KIND {
        return Answer::bad_request(format!(
            "unsupported review {}/{}: send {META_API_VERSION_V1} {META_KIND}",
            review.api_version, review.kind
        ));
    }
    let Some(request) = review.request else {
        return Answer::bad_request("the AdmissionReview has no request".into());
    };
    if request.uid.is_empty() {
        return Answer::bad_request("request.uid is required".into());
    }
    for (field, object) in [("object", &request.object), ("oldObject", &request.old_object)] {
        if object.as_ref().is_some_and(|o| !o.is_object()) {
            return Answer::bad_request(format!("request.{field} must be a JSON object"));
        }
    }
    let operation = operation_of(&request);
    let op_label = format!("{:?}", request.operation).to_uppercase();
    let target = match (target_of(&request), endpoint) {
        (Some(Target::Workload(_)), Endpoint::Mutate) | (None, _) => {
            let response = Response::deny(&request, unhandled_message(&request, endpoint));
            return decided(bad_request(response), request.kind.kind.clone(), op_label, "denied");
        }
        (Some(target), _) => target,
    };
    if let Some(message) = mismatched_object(&request) {
        let response = Response::deny(&request, message);
        return decided(bad_request(response), target.name().to_string(), op_label, "denied");
    }
    let response = Response::allow(&request);
    let object = match (request.object, operation) {
        (_, Operation::Delete | Operation::Connect) => Value::Null,
        (Some(object), _) => object,
        (None, _) => {
            let response = response.denied("request.object is required for CREATE and UPDATE");
            return decided(bad_request(response), target.name().to_string(), op_label, "denied");
        }
    };
    let old = request.old_object;
    let kind_label = target.name().to_string();
    match (endpoint, target) {
        (Endpoint::Mutate, Target::Ours(kind)) => {
            let name = object_name(&request.name, old.as_ref().unwrap_or(&object));
            let verdict = engine.review(kind, operation, &object, old.as_ref());
            let label = if verdict.allowed() { "allowed" } else { "denied" };
            let mut response = respond(response, target, operation, &name, &verdict, Warnings::Send);
            if verdict.allowed() && !verdict.patch.0.is_empty() {
                response.patch = Some(verdict.patch);
            }
            decided(response, kind_label, op_label, label)
        }
        (Endpoint::Validate, target) => {
            let name = object_name(&request.name, old.as_ref().unwrap_or(&object));
            let (verdict, warnings) = match target {
                Target::Ours(kind) => (engine.verdict(kind, operation, object, old.as_ref()), Warnings::LeaveToMutate),
                Target::Workload(kind) => (engine.review_workload(kind, operation, &object), Warnings::Send),
            };
            let label = if verdict.allowed() { "allowed" } else { "denied" };
            decided(respond(response, target, operation, &name, &verdict, warnings), kind_label, op_label, label)
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

fn target_of(request: &Request) -> Option<Target> {
    let gvk = &request.kind;
    if gvk.group == GROUP && gvk.version == VERSION {
        return Kind::from_kind(&gvk.kind).map(Target::Ours);
    }
    WorkloadKind::from_gvk(&gvk.group, &gvk.version, &gvk.kind).map(Target::Workload)
}

fn unhandled_message(request: &Request, endpoint: Endpoint) -> String {
    let gvk = &request.kind;
    let api_version = if gvk.group.is_empty() { gvk.version.clone() } else { format!("{}/{}", gvk.group, gvk.version) };
    let mut handled = format!("{} ({GROUP}/{VERSION})", Kind::ALL.map(Kind::as_str).join(", "));
    if endpoint == Endpoint::Validate {
        handled.push_str(", Pod (v1) and Deployment (apps/v1)");
    }
    format!("kind {} ({api_version}) is not handled by {}: it handles {handled}", gvk.kind, endpoint.path())
}

/// The apiserver sends objects of the kind it names in `request.kind`; an object that says
/// otherwise is not reviewed (it would be judged by the wrong rules).
fn mismatched_object(request: &Request) -> Option<String> {
    let gvk = &request.kind;
    let api_version = if gvk.group.is_empty() { gvk.version.clone() } else { format!("{}/{}", gvk.group, gvk.version) };
    [("object", &request.object), ("oldObject", &request.old_object)].into_iter().find_map(|(field, object)| {
        let object = object.as_ref()?;
        let says = |key: &str, expected: &str| object.get(key).is_some_and(|v| v.as_str() != Some(expected));
        (says("kind", &gvk.kind) || says("apiVersion", &api_version)).then(|| {
            format!(
                "request.{field} is a {} ({}), but request.kind is {} ({api_version})",
                object["kind"], object["apiVersion"], gvk.kind
            )
        })
    })
}

fn bad_request(mut response: Response) -> Response {
    response.status.code = 400;
    response.status.reason = "BadRequest".into();
    response
}

fn operation_of(request: &Request) -> Operation {
    match request.operation {
        WireOperation::Create => Operation::Create,
        WireOperation::Update => Operation::Update,
        WireOperation::Delete => Operation::Delete,
        WireOperation::Connect => Operation::Connect,
    }
}

/// The name the request gives, else the object's name or generateName.
fn object_name(request_name: &str, object: &Value) -> String {
    if !request_name.is_empty() {
        return request_name.to_string();
    }
    let meta = &object["metadata"];
    meta["name"].as_str().or_else(|| meta["generateName"].as_str()).unwrap_or_default().to_string()
}

/// Whether an answer carries the verdict's warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Warnings {
    Send,
    /// Our kinds on `/validate`: `/mutate` has sent them already.
    LeaveToMutate,
}

/// Fills a response from a verdict: the warnings when asked; when denied, a 422 Invalid status,
/// or a 403 Forbidden one for a refused deletion.
fn respond(
    mut response: Response,
    target: Target,
    operation: Operation,
    name: &str,
    verdict: &Verdict,
    warnings: Warnings,
) -> Response {
    if warnings == Warnings::Send {
        response.warnings = verdict.warnings.clone();
    }
    if verdict.allowed() {
        return response;
    }
    response.allowed = false;
    response.status = if operation == Operation::Delete {
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
                message: bounded(e.body()),
                field: e.field.clone(),
            })
            .collect(),
        retry_after_seconds: 0,
    }
}

/// The errors a denial lists, and how many more it only counts: a hostile object with
/// thousands of errors must not make the answer (and the user's error message) huge.
fn reported(errors: &[FieldError]) -> (&[FieldError], String) {
    match errors.len().checked_sub(MAX_REPORTED_ERRORS) {
        Some(more) if more > 0 => (&errors[..MAX_REPORTED_ERRORS], format!(" (and {more} more errors)")),
        _ => (errors, String::new()),
    }
}

/// The Status Kubernetes' `NewInvalid` builds: code 422, reason Invalid, one cause per field error.
fn invalid_status(target: Target, name: &str, errors: &[FieldError]) -> Status {
    let (errors, more) = reported(errors);
    Status {
        status: Some(StatusSummary::Failure),
        code: 422,
        message: format!("{} {name:?} is invalid: {}{more}", target.qualified(), aggregate(errors)),
        metadata: None,
        reason: "Invalid".into(),
        details: Some(status_details(target, name, errors)),
    }
}

/// The Status Kubernetes' `NewForbidden` builds: code 403, reason Forbidden.
fn forbidden_status(target: Target, name: &str, errors: &[FieldError]) -> Status {
    let (errors, more) = reported(errors);
    let reasons: Vec<String> = errors.iter().map(|e| bounded(e.detail.clone())).collect();
    Status {
        status: Some(StatusSummary::Failure),
        code: 403,
        message: format!("{} {name:?} is forbidden: {}{more}", target.qualified(), reasons.join("; ")),
        metadata: None,
        reason: "Forbidden".into(),
        details: Some(status_details(target, name, errors)),
    }
}

/// `e` for one error, `[e1, e2]` for several, as Kubernetes aggregates print, every error cut to
/// [`MAX_REPORTED_ERROR_LEN`].
pub fn aggregate(errors: &[FieldError]) -> String {
    match errors {
        [one] => bounded(one.to_string()),
        many => format!("[{}]", many.iter().map(|e| bounded(e.to_string())).collect::<Vec<_>>().join(", ")),
    }
}

/// Longest error text a denial repeats (in bytes); a longer one (a list of thousands of
/// supported values, say) is cut with `…`.
pub const MAX_REPORTED_ERROR_LEN: usize = 1024;

fn bounded(mut text: String) -> String {
    if text.len() > MAX_REPORTED_ERROR_LEN {
        let mut end = MAX_REPORTED_ERROR_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

fn decided(response: Response, kind: String, operation: String, verdict: &'static str) -> Answer {
    Answer { status: 200, body: response.into_review(), kind, operation, verdict }
}
