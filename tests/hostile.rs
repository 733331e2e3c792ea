//! Hostile input over real HTTPS, beyond the corpus of `webhook_https.rs`: oversized bodies,
//! kinds that do not match the endpoint, unknown fields and wrong types at every level, huge
//! strings and arrays, duplicate keys, slow, silent and idle clients, TLS versions and plain
//! HTTP on the TLS port. Every bad request gets a clear 4xx or a denial — never an allow —
//! and the server keeps serving.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestWebhook, tls_connect};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mcp_hangar::admission::review::MAX_REPORTED_ERRORS;
use mcp_hangar::admission::server::ConnectionLimits;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The realistic MCPServer CREATE of the benchmarks: allowed as it is.
const MCPSERVER_REVIEW: &str = include_str!("../benches/fixtures/mcpserver-review.json");
/// A server's Pod CREATE of the benchmarks: allowed as it is.
const POD_REVIEW: &str = include_str!("../benches/fixtures/pod-review.json");

fn server_review() -> Value {
    serde_json::from_str(MCPSERVER_REVIEW).unwrap()
}

fn pod_review() -> Value {
    serde_json::from_str(POD_REVIEW).unwrap()
}

/// What an answer decided.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    /// A 4xx, with its status code.
    Refused(u16),
    /// A 200 review that denies, with its status code and message.
    Denied(i64, String),
    /// A 200 review that allows, with its patch (if any).
    Allowed(Option<String>),
}

/// Reads an answer; panics on anything but a clear 4xx or a well-formed review for `uid`.
fn verdict_of(what: &str, status: u16, body: &[u8], uid: Option<&str>) -> Verdict {
    assert!(status == 200 || (400..500).contains(&status), "{what}: status {status}");
    if status != 200 {
        assert!(!body.is_empty(), "{what}: a {status} says why");
        if let Ok(answer) = serde_json::from_slice::<Value>(body) {
            assert_eq!(answer["kind"], "Status", "{what}: {answer}");
            assert!(!answer["message"].as_str().unwrap_or_default().is_empty(), "{what}: {answer}");
        }
        return Verdict::Refused(status);
    }
    let answer: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{what}: a 200 is a review: {e}"));
    assert_eq!(answer["kind"], "AdmissionReview", "{what}: {answer}");
    let response = &answer["response"];
    if let Some(uid) = uid {
        assert_eq!(response["uid"], uid, "{what}: the uid is echoed");
    }
    match response["allowed"].as_bool() {
        Some(true) => Verdict::Allowed(response["patch"].as_str().map(str::to_string)),
        Some(false) => {
            let message = response["status"]["message"].as_str().unwrap_or_default().to_string();
            assert!(!message.is_empty(), "{what}: a denial says why: {answer}");
            Verdict::Denied(response["status"]["code"].as_i64().unwrap_or_default(), message)
        }
        None => panic!("{what}: no verdict: {answer}"),
    }
}

/// Panics unless the answer refuses (4xx) or denies.
fn assert_not_allowed(what: &str, status: u16, body: &[u8]) -> Verdict {
    let verdict = verdict_of(what, status, body, None);
    assert!(!matches!(verdict, Verdict::Allowed(_)), "{what} was allowed");
    verdict
}

/// An HTTP/1.1 keep-alive HTTPS connection that reconnects when the server closed it.
struct KeepAlive {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl KeepAlive {
    fn new(hook: &TestWebhook) -> Self {
        KeepAlive { addr: hook.addr, config: hook.client_config(), sender: None }
    }

    async fn post(&mut self, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let reusable = match self.sender.take() {
            Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
            None => None,
        };
        let mut sender = match reusable {
            Some(sender) => sender,
            None => {
                let tls = tls_connect(self.addr, self.config.clone()).await.unwrap();
                let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
                tokio::spawn(connection);
                sender
            }
        };
        let request = hyper::Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        self.sender = Some(sender);
        (status, bytes)
    }

    async fn post_json(&mut self, path: &str, body: &Value) -> (u16, Vec<u8>) {
        self.post(path, serde_json::to_vec(body).unwrap()).await
    }
}

/// Reads until the peer closes (or fails) or `within` passes; returns what was read and
/// whether the peer closed.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> (Vec<u8>, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (seen, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (seen, true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status code of a raw HTTP/1.1 response.
fn raw_status(response: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(response.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Checks the webhook still answers a valid review with an allow.
async fn assert_still_serving(hook: &TestWebhook) {
    let review = server_review();
    let (status, body) = hook.post("/validate", serde_json::to_vec(&review).unwrap()).await;
    let uid = review["request"]["uid"].as_str().unwrap();
    assert_eq!(verdict_of("a valid review afterwards", status, &body, Some(uid)), Verdict::Allowed(None));
}

#[tokio::test]
async fn ten_mebibyte_bodies_are_refused_without_being_read_whole() {
    let hook = TestWebhook::start().await;
    // A review that would be allowed if read: the padding is a harmless annotation.
    let mut review = server_review();
    review["request"]["object"]["metadata"]["annotations"]["padding"] = json!("x".repeat(10 * 1024 * 1024));
    let body = serde_json::to_vec(&review).unwrap();
    assert!(body.len() > 10 * 1024 * 1024);

    // With a Content-Length: refused on the headers, before the body is sent.
    let tls = tls_connect(hook.addr, hook.client_config()).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(tls);
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    writer.flush().await.unwrap();
    let (response, _) = read_until_closed(&mut reader, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&response), Some(413), "{}", String::from_utf8_lossy(&response));
    drop(writer);
    let (status, answer) = hook.post("/validate", body.clone()).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));

    // Chunked, so the size is not known up front: refused once the limit is crossed.
    let tls = tls_connect(hook.addr, hook.client_config()).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(tls);
    let upload = tokio::spawn(async move {
        let head = "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        writer.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(64 * 1024) {
            writer.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
            writer.write_all(chunk).await?;
            writer.write_all(b"\r\n").await?;
        }
        writer.write_all(b"0\r\n\r\n").await?;
        writer.flush().await
    });
    let (response, closed) = read_until_closed(&mut reader, Duration::from_secs(20)).await;
    assert_eq!(raw_status(&response), Some(413), "{}", String::from_utf8_lossy(&response));
    assert!(closed, "the connection is closed: the rest of the body is never read");
    let _ = upload.await;
    assert_still_serving(&hook).await;
    hook.stop().await;
}

/// A review of `object` as `kind` (group, version, kind).
fn review_as(object: Value, gvk: (&str, &str, &str), resource: &str) -> Value {
    let mut review = server_review();
    let request = &mut review["request"];
    request["kind"] = json!({"group": gvk.0, "version": gvk.1, "kind": gvk.2});
    request["requestKind"] = request["kind"].clone();
    request["resource"] = json!({"group": gvk.0, "version": gvk.1, "resource": resource});
    request["requestResource"] = request["resource"].clone();
    request["object"] = object;
    review
}

#[tokio::test]
async fn kinds_that_do_not_match_the_endpoint_are_denied() {
    let hook = TestWebhook::start().await;
    let server = server_review()["request"]["object"].clone();
    let config_map = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "mcp-servers"},
        "data": {"mode": "container", "image": "ghcr.io/a/b:1.0.0"},
    });
    let mut server_claiming_config_map = server.clone();
    server_claiming_config_map["apiVersion"] = json!("v1");
    server_claiming_config_map["kind"] = json!("ConfigMap");
    let mut server_claiming_group = server.clone();
    server_claiming_group["kind"] = json!("MCPServerGroup");
    let ours = |kind| ("mcp-hangar.io", "v1alpha1", kind);
    let cases = [
        ("a Pod on /mutate", "/mutate", pod_review()),
        ("a ConfigMap on /validate", "/validate", review_as(config_map.clone(), ("", "v1", "ConfigMap"), "configmaps")),
        ("a ConfigMap on /mutate", "/mutate", review_as(config_map.clone(), ("", "v1", "ConfigMap"), "configmaps")),
        (
            "an MCPServer under an unknown version",
            "/validate",
            review_as(server.clone(), ("mcp-hangar.io", "v1beta1", "MCPServer"), "mcpservers"),
        ),
        ("an MCPServer sent as a Pod", "/validate", review_as(server.clone(), ("", "v1", "Pod"), "pods")),
        (
            "an MCPServer sent as a Deployment",
            "/validate",
            review_as(server.clone(), ("apps", "v1", "Deployment"), "deployments"),
        ),
        (
            "an MCPServer sent as an MCPServerGroup",
            "/validate",
            review_as(server.clone(), ours("MCPServerGroup"), "mcpservergroups"),
        ),
        (
            "an MCPServer sent as an MCPServerGroup",
            "/mutate",
            review_as(server.clone(), ours("MCPServerGroup"), "mcpservergroups"),
        ),
        (
            "a ConfigMap sent as an MCPServer",
            "/validate",
            review_as(config_map.clone(), ours("MCPServer"), "mcpservers"),
        ),
        ("a ConfigMap sent as an MCPServer", "/mutate", review_as(config_map, ours("MCPServer"), "mcpservers")),
        (
            "an MCPServer whose object says ConfigMap",
            "/validate",
            review_as(server_claiming_config_map.clone(), ours("MCPServer"), "mcpservers"),
        ),
        (
            "an MCPServer whose object says ConfigMap",
            "/mutate",
            review_as(server_claiming_config_map, ours("MCPServer"), "mcpservers"),
        ),
        (
            "an MCPServer whose object says MCPServerGroup",
            "/validate",
            review_as(server_claiming_group, ours("MCPServer"), "mcpservers"),
        ),
    ];
    let mut connection = KeepAlive::new(&hook);
    for (what, path, review) in cases {
        let (status, body) = connection.post_json(path, &review).await;
        assert_not_allowed(&format!("{what} on {path}"), status, &body);
    }
    assert_still_serving(&hook).await;
    hook.stop().await;
}

#[tokio::test]
async fn unknown_fields_are_ignored_in_the_envelope_and_denied_in_the_object() {
    let hook = TestWebhook::start().await;
    let mut connection = KeepAlive::new(&hook);
    let clean = server_review();
    let uid = clean["request"]["uid"].as_str().unwrap().to_string();
    let (status, body) = connection.post_json("/validate", &clean).await;
    assert_eq!(verdict_of("clean", status, &body, Some(&uid)), Verdict::Allowed(None));
    let (status, body) = connection.post_json("/mutate", &clean).await;
    let clean_mutation = verdict_of("clean", status, &body, Some(&uid));
    assert!(matches!(clean_mutation, Verdict::Allowed(Some(_))), "the fixture gets defaults: {clean_mutation:?}");

    // The envelope is Kubernetes' to extend: unknown fields there change nothing.
    for pointer in ["", "/request", "/request/kind", "/request/resource", "/request/userInfo", "/request/options"] {
        let mut review = clean.clone();
        review.pointer_mut(pointer).unwrap()["futureField"] = json!({"nested": [1, "two"]});
        for (path, expected) in [("/validate", Verdict::Allowed(None)), ("/mutate", clean_mutation.clone())] {
            let (status, body) = connection.post_json(path, &review).await;
            assert_eq!(verdict_of(&format!("{pointer}.futureField on {path}"), status, &body, Some(&uid)), expected);
        }
    }

    // In the object every unknown field is denied, naming it.
    for (pointer, field) in [
        ("/request/object", "extra"),
        ("/request/object/spec", "spec.extra"),
        ("/request/object/spec/healthCheck", "spec.healthCheck.extra"),
        ("/request/object/spec/circuitBreaker", "spec.circuitBreaker.extra"),
        ("/request/object/spec/resources", "spec.resources.extra"),
        ("/request/object/spec/env/0", "spec.env[0].extra"),
        ("/request/object/spec/env/5/valueFrom/secretKeyRef", "spec.env[5].valueFrom.secretKeyRef.extra"),
        ("/request/object/spec/volumes/1/configMap", "spec.volumes[1].configMap.extra"),
        ("/request/object/spec/volumeMounts/0", "spec.volumeMounts[0].extra"),
        ("/request/object/spec/securityContext", "spec.securityContext.extra"),
        ("/request/object/spec/tolerations/0", "spec.tolerations[0].extra"),
        ("/request/object/spec/tools", "spec.tools.extra"),
        ("/request/object/spec/tools/rateLimit", "spec.tools.rateLimit.extra"),
        ("/request/object/spec/permissionProfile", "spec.permissionProfile.extra"),
    ] {
        let mut review = clean.clone();
        review.pointer_mut(pointer).unwrap()["extra"] = json!(true);
        let (status, body) = connection.post_json("/validate", &review).await;
        let verdict = verdict_of(&format!("{field} on /validate"), status, &body, Some(&uid));
        let Verdict::Denied(422, message) = verdict.clone() else { panic!("{field}: {verdict:?}") };
        assert!(message.contains(&format!("{field}: Forbidden: unknown field \"extra\"")), "{field}: {message}");
        // The mutating webhook reviews in full too, and denies the same way.
        let (status, body) = connection.post_json("/mutate", &review).await;
        assert_eq!(verdict_of(&format!("{field} on /mutate"), status, &body, Some(&uid)), verdict, "{field}");
    }

    // Unknown metadata fields are the apiserver's to prune; metadata is read as Kubernetes
    // reads it, so they neither crash nor change the verdict.
    let mut review = clean.clone();
    review["request"]["object"]["metadata"]["extra"] = json!({"a": 1});
    let (status, body) = connection.post_json("/validate", &review).await;
    assert_eq!(verdict_of("metadata.extra", status, &body, Some(&uid)), Verdict::Allowed(None));
    hook.stop().await;
}

/// Every JSON pointer of `value` (containers and leaves), root excluded.
fn pointers(value: &Value, prefix: String, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v)).collect(),
        Value::Array(items) => items.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
        _ => return,
    };
    for (key, child) in children {
        let pointer = format!("{prefix}/{key}");
        out.push(pointer.clone());
        pointers(child, pointer, out);
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Quantities are int-or-string: a number is as valid as a string there.
fn quantity(pointer: &str) -> bool {
    pointer.contains("/resources/limits/")
        || pointer.contains("/resources/requests/")
        || pointer.ends_with("/sizeLimit")
}

/// Fields whose value may be of any type, where a replacement can be legitimately allowed.
fn free_form(pointer: &str) -> bool {
    // `options` is a RawExtension; metadata.managedFields[].fieldsV1 is arbitrary JSON; label,
    // annotation and managedFields metadata are not the webhook's to judge (the apiserver
    // validates metadata before calling webhooks).
    pointer.starts_with("/request/options")
        || pointer.starts_with("/request/object/metadata/managedFields")
        || pointer.starts_with("/request/object/metadata/labels")
        || pointer.starts_with("/request/object/metadata/annotations")
        || pointer == "/request/oldObject"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_everywhere_are_refused_or_denied() {
    let hook = TestWebhook::start().await;
    let mut connection = KeepAlive::new(&hook);
    let clean = server_review();
    let mut all = Vec::new();
    pointers(&clean, String::new(), &mut all);
    assert!(all.len() > 150, "the fixture covers many fields: {}", all.len());
    let replacements =
        [json!(true), json!(12345), json!(-1.5), json!("text"), json!([1, 2]), json!({"unexpected": "object"})];
    let mut checked = 0;
    let mut refused = 0;
    for pointer in &all {
        let original = clean.pointer(pointer).unwrap();
        for replacement in &replacements {
            if type_name(replacement) == type_name(original)
                || (type_name(original) == "float" && type_name(replacement) == "integer")
                || free_form(pointer)
                || (quantity(pointer) && replacement.is_number() && replacement.as_f64() >= Some(0.0))
            {
                continue;
            }
            let mut review = clean.clone();
            *review.pointer_mut(pointer).unwrap() = replacement.clone();
            for path in ["/validate", "/mutate"] {
                let (status, body) = connection.post_json(path, &review).await;
                let what = format!("{pointer} = {replacement} on {path}");
                let verdict = verdict_of(&what, status, &body, None);
                if path == "/validate" {
                    assert!(!matches!(verdict, Verdict::Allowed(_)), "{what} was allowed");
                }
                if matches!(verdict, Verdict::Refused(_)) {
                    refused += 1;
                }
            }
            checked += 1;
        }
    }
    eprintln!("{checked} wrong-typed reviews, {refused} answers were 4xx, the rest denials");
    assert!(checked > 500, "{checked}");
    assert_still_serving(&hook).await;
    hook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_strings_and_arrays_are_denied_promptly() {
    let hook = TestWebhook::start().await;
    let mut connection = KeepAlive::new(&hook);
    let clean = server_review();
    let big = "a".repeat(2 * 1024 * 1024);
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut with = |what, pointer: &str, value: Value| {
        let mut review = clean.clone();
        *review.pointer_mut(pointer).unwrap() = value;
        cases.push((what, review));
    };
    with("a 2 MiB image", "/request/object/spec/image", json!(big));
    with("a 2 MiB name", "/request/object/metadata/name", json!(big));
    with(
        "a 2 MiB env value of a secret-looking name",
        "/request/object/spec/env/5",
        json!({"name": "API_TOKEN", "value": big}),
    );
    with("a 2 MiB duration", "/request/object/spec/idleTTL", json!(big));
    with("a 2 MiB mount path", "/request/object/spec/volumeMounts/0/mountPath", json!(format!("/{big}")));
    with("100k duplicate tool names", "/request/object/spec/tools/allowList", json!(vec!["run_query"; 100_000]));
    let names: Vec<String> = (0..100_000).map(|i| format!("tool_{i}")).collect();
    let mut denied = names.clone();
    denied.push("not a tool name".into());
    with(
        "tool names: 100k on both lists",
        "/request/object/spec/tools",
        json!({"allowList": names, "denyList": denied}),
    );
    with(
        "50k env vars of one name",
        "/request/object/spec/env",
        json!(vec![json!({"name": "SAME", "value": "v"}); 50_000]),
    );
    with("200k numbers as env vars", "/request/object/spec/env", json!(vec![7; 200_000]));
    with(
        "20k volumes with a hostPath",
        "/request/object/spec/volumes",
        Value::Array((0..20_000).map(|i| json!({"name": format!("v{i}"), "hostPath": {"path": "/"}})).collect()),
    );
    with("nesting 100 levels deep in the spec", "/request/object/spec/healthCheck", {
        let mut nested = json!(1);
        for _ in 0..100 {
            nested = json!({ "enabled": nested });
        }
        nested
    });
    let mut remote = clean.clone();
    let spec = &mut remote["request"]["object"]["spec"];
    *spec = json!({"mode": "remote", "endpoint": format!("https://{big}.example.com/mcp")});
    cases.push(("a 2 MiB endpoint", remote));
    for (what, review) in cases {
        let started = Instant::now();
        let body = serde_json::to_vec(&review).unwrap();
        assert!(body.len() < 3 * 1024 * 1024, "{what} stays under the body limit: {}", body.len());
        let (status, answer) = connection.post("/validate", body).await;
        assert_not_allowed(what, status, &answer);
        assert!(answer.len() < 64 * 1024, "{what}: the answer stays small: {} bytes", answer.len());
        if let Ok(answer) = serde_json::from_slice::<Value>(&answer)
            && let Some(causes) = answer.pointer("/response/status/details/causes").and_then(Value::as_array)
        {
            assert!(causes.len() <= MAX_REPORTED_ERRORS, "{what}: {} causes", causes.len());
            if what.starts_with("100k") {
                let message = answer["response"]["status"]["message"].as_str().unwrap();
                assert!(message.ends_with("(and 99899 more errors)"), "{what}: {}", &message[message.len() - 80..]);
            }
        }
        let elapsed = started.elapsed();
        eprintln!("{what}: answered in {elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{what} took {elapsed:?}");
    }
    assert_still_serving(&hook).await;
    hook.stop().await;
}

/// The compact fixture with `needle` replaced once by `replacement`.
fn splice(compact: &str, needle: &str, replacement: &str) -> Vec<u8> {
    assert!(compact.contains(needle), "{needle}");
    compact.replacen(needle, replacement, 1).into_bytes()
}

#[tokio::test]
async fn duplicate_keys_are_refused_or_read_as_the_apiserver_reads_them() {
    let hook = TestWebhook::start().await;
    let mut connection = KeepAlive::new(&hook);
    let compact = serde_json::to_string(&server_review()).unwrap();
    let uid = "e3b0c442-98fc-4c14-9afb-f4c8996fb924";

    // Duplicates of the envelope's typed fields are refused whatever their order.
    let envelope = [
        (
            "apiVersion",
            r#""apiVersion":"admission.k8s.io/v1""#,
            r#""apiVersion":"admission.k8s.io/v1","apiVersion":"admission.k8s.io/v1""#,
        ),
        ("kind", r#""kind":"AdmissionReview""#, r#""kind":"AdmissionReview","kind":"AdmissionReview""#),
        ("request.uid", r#""uid":"e3b0"#, r#""uid":"other","uid":"e3b0"#),
        ("request.operation", r#""operation":"CREATE""#, r#""operation":"DELETE","operation":"CREATE""#),
        (
            "request.kind",
            r#""kind":{"group":"mcp-hangar.io""#,
            r#""kind":{"group":"","version":"v1","kind":"ConfigMap"},"kind":{"group":"mcp-hangar.io""#,
        ),
        ("request.dryRun", r#""dryRun":false"#, r#""dryRun":true,"dryRun":false"#),
        (
            "request.object.metadata.name",
            r#""name":"analytics-warehouse-tools","namespace""#,
            r#""name":"x","name":"analytics-warehouse-tools","namespace""#,
        ),
    ];
    for (what, needle, replacement) in envelope {
        for path in ["/validate", "/mutate"] {
            let (status, body) = connection.post(path, splice(&compact, needle, replacement)).await;
            let verdict = verdict_of(&format!("duplicate {what} on {path}"), status, &body, None);
            assert_eq!(verdict, Verdict::Refused(400), "duplicate {what} on {path}");
        }
    }

    // In the object (free-form JSON to the decoder) the last value wins, as in the apiserver's
    // decoder: the verdict is the one of the object the apiserver would store, whatever came
    // first, and the same on every request.
    // (The compact fixture has its keys sorted.)
    let privileged = r#""securityContext":{"capabilities":{"add":["SYS_ADMIN"]},"privileged":true,"runAsUser":0}"#;
    let safe = r#""securityContext":{"readOnlyRootFilesystem":true,"runAsGroup":10001,"runAsUser":10001}"#;
    let cache = r#""volumes":[{"emptyDir":{"sizeLimit":"512Mi"},"name":"cache"}"#;
    let host = r#""volumes":[{"hostPath":{"path":"/"},"name":"cache"}"#;
    let object_cases = [
        ("a privileged securityContext after the safe one", safe, format!("{safe},{privileged}"), false),
        ("the safe securityContext after a privileged one", safe, format!("{privileged},{safe}"), true),
        (
            "a privileged duplicate inside securityContext",
            safe,
            safe.replace("\"runAsUser\":10001", "\"privileged\":true,\"privileged\":false,\"runAsUser\":10001"),
            true,
        ),
        ("a hostPath volume list after the safe one", cache, format!("{cache}],{host}"), false),
        ("the safe volume list after a hostPath one", cache, format!("{host}],{cache}"), true),
    ];
    for (what, needle, replacement, allowed) in object_cases {
        let body = splice(&compact, needle, &replacement);
        let mut verdicts = Vec::new();
        for _ in 0..3 {
            let (status, answer) = connection.post("/validate", body.clone()).await;
            verdicts.push(verdict_of(what, status, &answer, Some(uid)));
        }
        assert!(verdicts.windows(2).all(|w| w[0] == w[1]), "{what}: the verdict is stable: {verdicts:?}");
        // What the apiserver stores: the same bytes read by a last-wins decoder.
        let stored: Value = serde_json::from_slice(&body).unwrap();
        let (status, answer) = connection.post_json("/validate", &stored).await;
        assert_eq!(verdicts[0], verdict_of(what, status, &answer, Some(uid)), "{what}");
        assert_eq!(matches!(verdicts[0], Verdict::Allowed(_)), allowed, "{what}: {:?}", verdicts[0]);
    }
    assert_still_serving(&hook).await;
    hook.stop().await;
}

/// Opens a TLS connection and sends `head`, then one byte of `drip` every `every`.
async fn dripping(
    hook: &TestWebhook,
    head: &'static str,
    drip: &'static [u8],
    every: Duration,
) -> tokio::task::JoinHandle<(Duration, Vec<u8>, bool)> {
    let tls = tls_connect(hook.addr, hook.client_config()).await.unwrap();
    tokio::spawn(async move {
        let started = Instant::now();
        let (mut reader, mut writer) = tokio::io::split(tls);
        let writing = tokio::spawn(async move {
            writer.write_all(head.as_bytes()).await?;
            for byte in drip.iter().cycle() {
                tokio::time::sleep(every).await;
                writer.write_all(&[*byte]).await?;
            }
            Ok::<_, std::io::Error>(())
        });
        let (response, closed) = read_until_closed(&mut reader, Duration::from_secs(30)).await;
        writing.abort();
        (started.elapsed(), response, closed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_cut_off_without_starving_others() {
    let hook = TestWebhook::start().await;
    let limits = ConnectionLimits::default();
    const CLIENTS: usize = 20;
    // Headers that never end.
    let mut slowloris = Vec::new();
    for _ in 0..CLIENTS {
        slowloris.push(
            dripping(&hook, "POST /validate HTTP/1.1\r\nhost: localhost\r\nx-a: ", b"a", Duration::from_millis(500))
                .await,
        );
    }
    // A body that never finishes, still trickling.
    let mut endless = Vec::new();
    for _ in 0..CLIENTS {
        endless.push(
            dripping(
                &hook,
                "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{\"a\":\"",
                b"a",
                Duration::from_millis(500),
            )
            .await,
        );
    }
    // TCP connections that never start TLS, and TLS connections that never send a request.
    let mut silent_tcp = Vec::new();
    let mut silent_tls = Vec::new();
    for _ in 0..CLIENTS {
        let mut tcp = TcpStream::connect(hook.addr).await.unwrap();
        silent_tcp.push(tokio::spawn(async move {
            let started = Instant::now();
            let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(30)).await;
            (started.elapsed(), closed)
        }));
        let mut tls = tls_connect(hook.addr, hook.client_config()).await.unwrap();
        silent_tls.push(tokio::spawn(async move {
            let started = Instant::now();
            let (_, closed) = read_until_closed(&mut tls, Duration::from_secs(30)).await;
            (started.elapsed(), closed)
        }));
    }

    // Meanwhile, a well-behaved client is answered at once, again and again.
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + limits.handshake_timeout + Duration::from_secs(1);
    let mut answered = 0;
    while Instant::now() < until {
        let started = Instant::now();
        assert_still_serving(&hook).await;
        slowest = slowest.max(started.elapsed());
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{answered} requests answered while slow clients hung on; slowest {slowest:?}");
    assert!(slowest < Duration::from_secs(2), "a well-behaved client waited {slowest:?}");

    let margin = Duration::from_secs(3);
    for task in slowloris {
        let (elapsed, response, closed) = task.await.unwrap();
        assert!(closed && elapsed < limits.header_read_timeout + margin, "slowloris held {elapsed:?}");
        assert!(
            raw_status(&response).is_none_or(|s| (400..500).contains(&s)),
            "{}",
            String::from_utf8_lossy(&response)
        );
    }
    for task in endless {
        let (elapsed, response, closed) = task.await.unwrap();
        assert_eq!(raw_status(&response), Some(408), "{}", String::from_utf8_lossy(&response));
        assert!(closed, "the connection of an unfinished body is closed");
        assert!(elapsed < mcp_hangar::admission::REQUEST_TIMEOUT + margin, "an endless body held {elapsed:?}");
    }
    for task in silent_tcp {
        let (elapsed, closed) = task.await.unwrap();
        assert!(closed && elapsed < limits.handshake_timeout + margin, "a silent TCP client held {elapsed:?}");
    }
    for task in silent_tls {
        let (elapsed, closed) = task.await.unwrap();
        assert!(closed && elapsed < limits.first_request_timeout + margin, "a silent TLS client held {elapsed:?}");
    }
    assert_still_serving(&hook).await;
    hook.stop().await;
}

/// An HTTP/2 connection, as the apiserver opens them.
async fn h2_connect(
    hook: &TestWebhook,
) -> (hyper::client::conn::http2::SendRequest<StreamBody<BodyStream>>, tokio::task::JoinHandle<()>) {
    let mut config = (*hook.client_config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tls_connect(hook.addr, Arc::new(config)).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, task)
}

type BodyStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;

/// A body sent in `parts`, one every `every`.
fn trickled(parts: Vec<Vec<u8>>, every: Duration) -> StreamBody<BodyStream> {
    let stream = futures::stream::unfold(parts.into_iter(), move |mut parts| async move {
        let part = parts.next()?;
        tokio::time::sleep(every).await;
        Some((Ok(Frame::data(Bytes::from(part))), parts))
    });
    StreamBody::new(Box::pin(stream))
}

async fn h2_post(
    sender: &mut hyper::client::conn::http2::SendRequest<StreamBody<BodyStream>>,
    body: StreamBody<BodyStream>,
) -> Result<(u16, Vec<u8>), String> {
    let request = hyper::Request::post("https://localhost/validate")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, bytes.to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_busy_ones_are_not() {
    let limits = ConnectionLimits {
        first_request_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(1),
        ..ConnectionLimits::default()
    };
    let hook = TestWebhook::start_with(limits).await;
    let review = serde_json::to_vec(&server_review()).unwrap();

    // HTTP/2: answered, then idle, then closed by the server (GOAWAY).
    let (mut sender, connection) = h2_connect(&hook).await;
    // The server's idle clock starts after it has answered, so never before this instant.
    let idle_since = Instant::now();
    let (status, _) = h2_post(&mut sender, trickled(vec![review.clone()], Duration::ZERO)).await.unwrap();
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!connection.is_finished(), "not closed before the idle timeout");
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap();
    // (The server's idle time starts when it answered, a little before the client read the answer.)
    assert!(idle_since.elapsed() >= limits.idle_timeout / 2, "closed after {:?}", idle_since.elapsed());

    // HTTP/2 with a request in progress longer than the idle timeout: it completes.
    let (mut sender, connection) = h2_connect(&hook).await;
    let parts: Vec<Vec<u8>> = review.chunks(review.len() / 5 + 1).map(<[u8]>::to_vec).collect();
    let started = Instant::now();
    let (status, answer) = h2_post(&mut sender, trickled(parts, Duration::from_millis(500))).await.unwrap();
    assert!(started.elapsed() > limits.idle_timeout * 2, "the request outlasted the idle timeout");
    assert_eq!(verdict_of("a slow HTTP/2 request", status, &answer, None), Verdict::Allowed(None));
    tokio::time::timeout(Duration::from_secs(5), connection).await.expect("then closed once idle").unwrap();

    // HTTP/1.1 keep-alive: closed by the header timer once idle.
    let tls = tls_connect(hook.addr, hook.client_config()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    let connection = tokio::spawn(connection);
    let request =
        hyper::Request::post("/validate").header("host", "localhost").body(Full::new(Bytes::from(review))).unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    // Closed without a TLS close_notify when hyper's header timer fires: the client may see that
    // as an error; either way the connection is gone.
    let _ = tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("an idle HTTP/1.1 connection is closed")
        .unwrap();
    hook.stop().await;
}

/// A ClientHello offering at most `version` (0x0301 TLS 1.0, 0x0302 TLS 1.1, 0x0303 TLS 1.2),
/// with the extensions a modern client sends, and no `supported_versions`.
fn client_hello(version: u16) -> Vec<u8> {
    let mut extensions = Vec::new();
    let mut extension = |kind: u16, data: &[u8]| {
        extensions.extend(kind.to_be_bytes());
        extensions.extend((data.len() as u16).to_be_bytes());
        extensions.extend(data);
    };
    let name = b"localhost";
    let mut sni = ((name.len() + 3) as u16).to_be_bytes().to_vec();
    sni.push(0);
    sni.extend((name.len() as u16).to_be_bytes());
    sni.extend(name);
    extension(0x0000, &sni);
    extension(0x000a, &[0x00, 0x04, 0x00, 0x17, 0x00, 0x1d]); // supported_groups: P-256, X25519
    extension(0x000b, &[0x01, 0x00]); // ec_point_formats: uncompressed
    extension(0x000d, &[0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]); // signature_algorithms
    extension(0x0017, &[]); // extended_master_secret
    extension(0xff01, &[0x00]); // renegotiation_info
    let mut hello = version.to_be_bytes().to_vec();
    hello.extend([0x42; 32]); // random
    hello.push(0); // session id
    let suites: [u16; 6] = [0xc02b, 0xc02f, 0xcca9, 0xc009, 0xc013, 0x002f];
    hello.extend(((suites.len() * 2) as u16).to_be_bytes());
    suites.iter().for_each(|s| hello.extend(s.to_be_bytes()));
    hello.extend([1, 0]); // compression: null
    hello.extend((extensions.len() as u16).to_be_bytes());
    hello.extend(extensions);
    let mut handshake = vec![0x01]; // client_hello
    handshake.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// A client that speaks only `version`.
fn pinned_client(hook: &TestWebhook, version: &'static rustls::SupportedProtocolVersion) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(hook.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(mcp_hangar::tls::crypto_provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_are_spoken_and_plain_http_is_refused() {
    let hook = TestWebhook::start().await;
    let review = serde_json::to_vec(&server_review()).unwrap();
    for (name, version, wire) in [
        ("TLS 1.2", &rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        ("TLS 1.3", &rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let tls = tls_connect(hook.addr, pinned_client(&hook, version)).await.unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(wire), "{name}");
        let (status, body) =
            common::request(hook.addr, pinned_client(&hook, version), "POST", "/validate", review.clone())
                .await
                .unwrap();
        assert_eq!(verdict_of(name, status, &body, None), Verdict::Allowed(None), "{name}");
    }

    // The crafted hello is well formed: offering TLS 1.2, it gets a ServerHello.
    let mut tcp = TcpStream::connect(hook.addr).await.unwrap();
    tcp.write_all(&client_hello(0x0303)).await.unwrap();
    let mut head = [0u8; 6];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!((head[0], head[5]), (0x16, 0x02), "a handshake record holding a ServerHello: {head:?}");

    for (name, version) in [("TLS 1.0", 0x0301), ("TLS 1.1", 0x0302)] {
        let mut tcp = TcpStream::connect(hook.addr).await.unwrap();
        tcp.write_all(&client_hello(version)).await.unwrap();
        let (answer, closed) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
        // One fatal alert record: protocol_version (70), then the connection closes.
        assert_eq!(answer.len(), 7, "{name}: {answer:?}");
        assert_eq!(answer[0], 0x15, "{name}: an alert record");
        assert_eq!((answer[5], answer[6]), (2, 70), "{name}: fatal protocol_version");
        assert!(closed, "{name}: closed");
    }

    // Plain HTTP on the TLS port: closed without an HTTP answer.
    let mut tcp = TcpStream::connect(hook.addr).await.unwrap();
    let mut plain = format!(
        "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        review.len()
    )
    .into_bytes();
    plain.extend(&review);
    tcp.write_all(&plain).await.unwrap();
    let (answer, closed) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(closed, "plain HTTP is closed");
    assert!(answer.is_empty() || answer[0] == 0x15, "at most a TLS alert: {answer:?}");
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/"), "no HTTP answer: {answer:?}");
    assert_still_serving(&hook).await;
    hook.stop().await;
}

/// `mcp-hangar serve` as a child process (files mode, shipped policy), killed when dropped.
struct ServeProcess {
    child: std::process::Child,
    addr: SocketAddr,
    ca_pem: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl ServeProcess {
    async fn start() -> ServeProcess {
        let binary = env!("CARGO_BIN_EXE_mcp-hangar");
        let dir = std::env::temp_dir().join(format!("mcp-hangar-hostile-{}", std::process::id()));
        let status = std::process::Command::new(binary)
            .args(["certs", "generate", "--san", "localhost", "--out"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let (webhook, admin) = (free_port(), free_port());
        let child = std::process::Command::new(binary)
            .args(["serve", "--tls-mode", "files", "--policy-source", "shipped", "--log-format", "text"])
            .arg("--tls-cert-file")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key-file")
            .arg(dir.join("tls.key"))
            .args(["--webhook-addr", &format!("127.0.0.1:{webhook}"), "--admin-addr", &format!("127.0.0.1:{admin}")])
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let ca_pem = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
        let process = ServeProcess { child, addr: SocketAddr::from(([127, 0, 0, 1], webhook)), ca_pem };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(process.addr).await.is_err() {
            assert!(Instant::now() < deadline, "mcp-hangar serve did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process
    }

    /// Resident memory of the server, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_cost_bounded_memory() {
    // Just under the connection cap, which bounds the total.
    const IDLE: usize = 1000;
    const { assert!(IDLE < mcp_hangar::admission::server::MAX_CONNECTIONS) };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = ServeProcess::start().await;
    let mut config = (*common::client_config(&server.ca_pem)).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let config = Arc::new(config);
    let body = Bytes::from(serde_json::to_vec(&server_review()).unwrap());
    let post = |sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>| {
        let request = hyper::Request::post("https://localhost/validate").body(Full::new(body.clone())).unwrap();
        let answer = sender.send_request(request);
        async move {
            let response = answer.await.unwrap();
            let status = response.status().as_u16();
            (status, response.into_body().collect().await.unwrap().to_bytes())
        }
    };
    let connect = || async {
        let tls = tls_connect(server.addr, config.clone()).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        sender
    };
    // Warm up: the allocator's arenas, the policy, the first connections.
    let mut warm = connect().await;
    for _ in 0..50 {
        assert_eq!(post(&mut warm).await.0, 200);
    }
    drop(warm);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = server.rss_kib();

    // Connections as the apiserver leaves them: HTTP/2, one request answered, then idle.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut sender = connect().await;
        assert_eq!(post(&mut sender).await.0, 200);
        idle.push(sender);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let with_idle = server.rss_kib();
    let per_connection = with_idle.saturating_sub(before) as f64 / IDLE as f64;
    eprintln!("server RSS: {before} KiB, {with_idle} KiB with {IDLE} idle connections ({per_connection:.1} KiB each)");
    assert!(per_connection < 64.0, "{per_connection:.1} KiB per idle connection");
    let cap_mib = per_connection * mcp_hangar::admission::server::MAX_CONNECTIONS as f64 / 1024.0;
    eprintln!("at the cap of {} connections: about {cap_mib:.0} MiB", mcp_hangar::admission::server::MAX_CONNECTIONS);

    // Still serving, on the idle connections and on new ones.
    for sender in idle.iter_mut().step_by(100) {
        let (status, answer) = post(sender).await;
        assert_eq!(verdict_of("on an idle connection", status, &answer, None), Verdict::Allowed(None));
    }
    let mut fresh = connect().await;
    assert_eq!(post(&mut fresh).await.0, 200);
}

/// The gateway's plain-HTTP listener runs on the same accept loop: a client that connects and
/// says nothing is cut off after the first-request deadline, and others are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_plain_http_clients_are_cut_off_too() {
    use mcp_hangar::serving::{self, Plain};
    let limits = ConnectionLimits {
        first_request_timeout: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(1),
        ..ConnectionLimits::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serving::serve(
        listener,
        Plain,
        router,
        async {
            let _ = stop_rx.await;
        },
        Duration::from_secs(2),
        limits,
    ));
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    let held = started.elapsed();
    assert!(closed && held < Duration::from_secs(3), "a silent plain client held its connection {held:?}");
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let (answer, _) = read_until_closed(&mut client, Duration::from_secs(5)).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    let _ = stop_tx.send(());
    server.await.unwrap();
}
