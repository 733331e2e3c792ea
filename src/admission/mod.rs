//! The admission webhook: HTTP routes over the pure [`review::answer`], and the servers.

pub mod live_policy;
pub mod registration;
pub mod review;
pub mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::metrics::Metrics;
use crate::policy::Engine;
use crate::readiness::Readiness;

/// Path of the mutating webhook.
pub const MUTATE_PATH: &str = "/mutate";
/// Path of the validating webhook.
pub const VALIDATE_PATH: &str = "/validate";
/// Name of the mutating webhook in its MutatingWebhookConfiguration.
pub const MUTATING_WEBHOOK_NAME: &str = "mutate.mcp-hangar.io";
/// Name of the validating webhook in its ValidatingWebhookConfiguration.
pub const VALIDATING_WEBHOOK_NAME: &str = "validate.mcp-hangar.io";
/// Name of the pod-level check (Pods and Deployments of MCPServers) in the ValidatingWebhookConfiguration;
/// served on [`VALIDATE_PATH`] too.
pub const POD_VALIDATING_WEBHOOK_NAME: &str = "pods.validate.mcp-hangar.io";
/// Largest request body accepted (the apiserver's own objects stay well below).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Bodies up to this size are reviewed on the connection's own task; larger ones on the
/// blocking pool (see [`webhook_router`]).
pub const INLINE_REVIEW_MAX_BYTES: usize = 64 * 1024;
/// Longest time one request may take, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The two webhook endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Writes the defaults of a valid object; denies an invalid one with every violation. Warns.
    Mutate,
    /// Checks the object as it will be stored, after every mutation; warns about workloads only.
    Validate,
}

impl Endpoint {
    /// The URL path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Mutate => MUTATE_PATH,
            Endpoint::Validate => VALIDATE_PATH,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// What the webhook handlers share.
#[derive(Clone)]
pub struct WebhookState {
    /// The rules.
    pub engine: Arc<Engine>,
    /// Process metrics.
    pub metrics: Metrics,
}

/// The HTTPS routes: `POST /mutate` and `POST /validate`, with body limit and timeout.
pub fn webhook_router(state: WebhookState) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .route(VALIDATE_PATH, post(validate))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Refuses a body whose Content-Length is over the limit before reading any of it.
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .with_state(state)
}

async fn mutate(State(state): State<WebhookState>, body: Bytes) -> Response {
    handle(state, Endpoint::Mutate, body).await
}

async fn validate(State(state): State<WebhookState>, body: Bytes) -> Response {
    handle(state, Endpoint::Validate, body).await
}

/// Reviews small bodies in place (microseconds); larger ones, which a hostile client can make
/// cost far more, on the blocking pool, so that other connections keep being served meanwhile.
async fn handle(state: WebhookState, endpoint: Endpoint, body: Bytes) -> Response {
    if body.len() <= INLINE_REVIEW_MAX_BYTES {
        return review_and_count(&state, endpoint, &body);
    }
    match tokio::task::spawn_blocking(move || review_and_count(&state, endpoint, &body)).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(error = %e, "review task failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

fn review_and_count(state: &WebhookState, endpoint: Endpoint, body: &[u8]) -> Response {
    let started = Instant::now();
    let answer = review::answer(&state.engine, endpoint, body);
    state
        .metrics
        .admission_requests
        .with_label_values(&[endpoint.label(), &answer.kind, &answer.operation, answer.verdict])
        .inc();
    state.metrics.admission_duration.with_label_values(&[endpoint.label()]).observe(started.elapsed().as_secs_f64());
    tracing::debug!(endpoint = endpoint.label(), kind = %answer.kind, operation = %answer.operation, verdict = answer.verdict, "admission");
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = serde_json::to_vec(&answer.body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn not_found() -> Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
        "message": format!("no such endpoint: use POST {MUTATE_PATH} or POST {VALIDATE_PATH}"),
    });
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `/readyz`: 200 `ok`, or 503 with one line per condition that does not hold.
fn readyz(readiness: &Readiness) -> (StatusCode, String) {
    let unmet = readiness.unmet();
    if unmet.is_empty() {
        return (StatusCode::OK, "ok\n".into());
    }
    let mut body = String::from("not ready\n");
    for (condition, reason) in unmet {
        body.push_str(&format!("{condition}: {reason}\n"));
    }
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

/// The plain-HTTP admin routes: `/metrics`, `/healthz`, `/readyz`.
pub fn admin_router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(move || async move { readyz(&readiness) }))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
}
