//! Micro-benchmarks of the pure admission path, without a server: decoding, mutating or
//! validating, and encoding realistic AdmissionReviews (`benches/fixtures/`), which is what a
//! webhook request costs above TLS and HTTP.
//!
//! `cargo bench --bench admission`; criterion prints the time per review and the throughput.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mcp_hangar::admission::{Endpoint, review};
use mcp_hangar::policy::Engine;
use serde_json::Value;

/// The binary's allocator, so that the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An MCPServer CREATE of about 5 KB: env vars, volumes, resources, tolerations, node selector,
/// allow list, labels, annotations and managed fields; allowed, so every rule runs.
const MCPSERVER_REVIEW: &[u8] = include_bytes!("fixtures/mcpserver-review.json");
/// A server's Pod CREATE, for the pod-level check; allowed.
const POD_REVIEW: &[u8] = include_bytes!("fixtures/pod-review.json");

/// The fixture as the apiserver sends it: compact JSON.
fn compact(pretty: &[u8]) -> Vec<u8> {
    let value: Value = serde_json::from_slice(pretty).expect("the fixture is JSON");
    serde_json::to_vec(&value).expect("JSON encodes")
}

/// What the webhook does per request: the pure answer, then the body put on the wire.
fn answer_and_encode(engine: &Engine, endpoint: Endpoint, body: &[u8]) -> Vec<u8> {
    let answer = review::answer(engine, endpoint, body);
    serde_json::to_vec(&answer.body).expect("an answer encodes")
}

/// Fails the run when a fixture no longer takes the full path (a denial would skip work).
fn assert_allowed(engine: &Engine, endpoint: Endpoint, body: &[u8], name: &str) {
    let answer = review::answer(engine, endpoint, body);
    assert_eq!(answer.status, 200, "{name}: {}", answer.body);
    assert_eq!(answer.body["response"]["allowed"], true, "{name} must be allowed: {}", answer.body);
}

fn reviews(c: &mut Criterion) {
    let engine = Engine::new().expect("the shipped policy compiles");
    let server = compact(MCPSERVER_REVIEW);
    let pod = compact(POD_REVIEW);
    assert_allowed(&engine, Endpoint::Mutate, &server, "mcpserver on /mutate");
    assert_allowed(&engine, Endpoint::Validate, &server, "mcpserver on /validate");
    assert_allowed(&engine, Endpoint::Validate, &pod, "pod on /validate");

    let mut group = c.benchmark_group("review");
    group.throughput(Throughput::Bytes(server.len() as u64));
    // The floor of any JSON webhook: reading the body into a JSON tree, nothing else.
    group.bench_function("parse-json-only/mcpserver", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(&server)).expect("parses"))
    });
    group.bench_function("mutate/mcpserver", |b| {
        b.iter(|| answer_and_encode(&engine, Endpoint::Mutate, black_box(&server)))
    });
    group.bench_function("validate/mcpserver", |b| {
        b.iter(|| answer_and_encode(&engine, Endpoint::Validate, black_box(&server)))
    });
    group.throughput(Throughput::Bytes(pod.len() as u64));
    group
        .bench_function("validate/pod", |b| b.iter(|| answer_and_encode(&engine, Endpoint::Validate, black_box(&pod))));
    group.finish();
}

criterion_group!(benches, reviews);
criterion_main!(benches);
