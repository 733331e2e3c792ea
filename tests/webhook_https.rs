//! The webhook over real HTTPS: golden AdmissionReviews, hostile input, and agreement
//! with the offline `validate` command on every example.

mod common;

use base64::Engine as _;
use common::TestWebhook;
use mcp_hangar::cli::validate::{Document, Report, review_documents};
use mcp_hangar::policy::Engine;
use serde_json::{Value, json};

fn fixtures() -> std::path::PathBuf {
    common::repo().join("tests/fixtures/admission")
}

/// Decodes the base64 JSON Patch of an answer.
fn patch_of(answer: &Value) -> Value {
    match answer["response"]["patch"].as_str() {
        Some(b64) => serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap(),
        None => json!([]),
    }
}

#[tokio::test]
async fn golden_admission_reviews() {
    let hook = TestWebhook::start().await;
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut files: Vec<_> = std::fs::read_dir(fixtures()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut checked = 0;
    for request_file in files.iter().filter(|p| p.to_string_lossy().ends_with(".request.json")) {
        let name = request_file.file_name().unwrap().to_string_lossy().replace(".request.json", "");
        let path = if name.starts_with("mutate") { "/mutate" } else { "/validate" };
        let request: Value = serde_json::from_slice(&std::fs::read(request_file).unwrap()).unwrap();
        let (status, answer) = hook.post_json(path, &request).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(answer["response"]["uid"], request["request"]["uid"], "{name}: uid must be echoed");
        let golden_file = fixtures().join(format!("{name}.response.json"));
        if update {
            std::fs::write(&golden_file, serde_json::to_string_pretty(&answer).unwrap() + "\n").unwrap();
        }
        let golden: Value = serde_json::from_slice(&std::fs::read(&golden_file).unwrap()).unwrap();
        assert_eq!(answer, golden, "{name} differs from {}", golden_file.display());
        checked += 1;
    }
    assert!(checked >= 9);
    hook.stop().await;
}

#[tokio::test]
async fn denial_is_a_kubernetes_invalid_status_naming_every_field() {
    let hook = TestWebhook::start().await;
    let request: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("validate-denied-container.request.json")).unwrap())
            .unwrap();
    let (_, answer) = hook.post_json("/validate", &request).await;
    let response = &answer["response"];
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(response["allowed"], false);
    let status = &response["status"];
    assert_eq!(status["code"], 422);
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["kind"], "MCPServer");
    assert_eq!(status["details"]["group"], "mcp-hangar.io");
    assert_eq!(status["details"]["name"], "github-tools");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with("MCPServer.mcp-hangar.io \"github-tools\" is invalid: [spec.endpoint: Forbidden: "),
        "{message}"
    );
    let causes = status["details"]["causes"].as_array().unwrap();
    let fields: Vec<&str> = causes.iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["spec.endpoint", "spec.env[0].value", "spec.image", "spec.replicas"]);
    for cause in causes {
        assert_eq!(cause["type"], cause["reason"]);
        let body = cause["message"].as_str().unwrap();
        assert!(!body.starts_with("spec."), "a cause's message carries no field: {body}");
        assert!(message.contains(&format!("{}: {body}", cause["field"].as_str().unwrap())));
    }
    assert_eq!(causes[2]["message"], "Required value: container mode needs an image, e.g. ghcr.io/org/server:1.0.0");
    hook.stop().await;
}

#[tokio::test]
async fn mutation_patch_applies_and_is_idempotent() {
    let hook = TestWebhook::start().await;
    let request: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("mutate-container-defaults.request.json")).unwrap())
            .unwrap();
    let (_, answer) = hook.post_json("/mutate", &request).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let patch: json_patch::Patch = serde_json::from_value(patch_of(&answer)).unwrap();
    let mut object = request["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    assert_eq!(object["spec"]["securityContext"]["runAsUser"], 1000, "the user's value wins");
    assert_eq!(object["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(object["spec"]["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(object["spec"]["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let again = common::review("second", "CREATE", Some(&object), None);
    let (_, answer) = hook.post_json("/mutate", &again).await;
    assert!(answer["response"].get("patch").is_none(), "mutating a mutated object yields no patch: {answer}");
    let (_, verdict) = hook.post_json("/validate", &again).await;
    assert_eq!(verdict["response"]["allowed"], true, "{verdict}");
    hook.stop().await;
}

/// The field, type and message of every cause of a denial.
fn causes_of(answer: &Value) -> Vec<(String, String, String)> {
    answer["response"]["status"]["details"]["causes"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| {
                    (
                        c["field"].as_str().unwrap().into(),
                        c["reason"].as_str().unwrap().into(),
                        c["message"].as_str().unwrap().into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn warnings_of(answer: &Value) -> Vec<String> {
    serde_json::from_value(answer["response"]["warnings"].clone()).unwrap_or_default()
}

/// Every example, valid or not: `/mutate` (which the apiserver calls before its schema and CEL
/// checks), `/validate` and the offline `validate` reach the same verdict with the same
/// violations; `/mutate` carries the warnings and, when it allows, the patch; `/validate` repeats
/// no warning, so kubectl prints each once.
#[tokio::test]
async fn validate_command_and_both_webhooks_agree_on_every_example() {
    let hook = TestWebhook::start().await;
    let engine = Engine::new().unwrap();
    let mut objects = common::objects_in(&common::repo().join("examples"));
    objects.extend(common::objects_in(&common::repo().join("examples/invalid")));
    assert!(objects.len() > 30);
    let (mut denied, mut warned) = (0, 0);
    for (i, (file, object)) in objects.iter().enumerate() {
        let mut report = Report::default();
        review_documents(&engine, &[Document { file: file.clone(), index: 1, object: object.clone() }], &mut report);
        let offline = &report.results[0];
        let violations: Vec<(String, String, String)> =
            offline.violations.iter().map(|v| (v.field.clone(), v.error_type.clone(), v.message.clone())).collect();
        let request = common::review(&format!("uid-{i}"), "CREATE", Some(object), None);
        let (status, mutated) = hook.post_json("/mutate", &request).await;
        assert_eq!(status, 200);
        let (status, validated) = hook.post_json("/validate", &request).await;
        assert_eq!(status, 200);
        for (path, answer) in [("/mutate", &mutated), ("/validate", &validated)] {
            assert_eq!(answer["response"]["allowed"], offline.allowed, "{path} {}", file.display());
            assert_eq!(causes_of(answer), violations, "{path} {}", file.display());
        }
        if !offline.allowed {
            denied += 1;
            assert_eq!(mutated["response"]["status"], validated["response"]["status"], "{}", file.display());
            assert!(mutated["response"].get("patch").is_none(), "a denial carries no patch: {}", file.display());
        } else {
            assert_eq!(patch_of(&mutated), serde_json::to_value(&offline.patch).unwrap(), "{}", file.display());
        }
        assert_eq!(warnings_of(&mutated), offline.warnings, "{}", file.display());
        assert_eq!(warnings_of(&validated), Vec::<String>::new(), "warned twice: {}", file.display());
        warned += usize::from(!offline.warnings.is_empty());
    }
    assert!(denied >= 20 && warned >= 1, "{denied} denied, {warned} with warnings");
    hook.stop().await;
}

/// Every golden review of our kinds (create, update, delete, dry run, groups): `/mutate` and
/// `/validate` reach the same verdict with the same status.
#[tokio::test]
async fn both_endpoints_agree_on_every_golden_review_of_our_kinds() {
    let hook = TestWebhook::start().await;
    let mut compared = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".request.json") {
            continue;
        }
        let request: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if request["request"]["kind"]["group"] != "mcp-hangar.io" {
            continue;
        }
        let (_, mutated) = hook.post_json("/mutate", &request).await;
        let (_, validated) = hook.post_json("/validate", &request).await;
        for field in ["allowed", "status", "uid"] {
            assert_eq!(mutated["response"][field], validated["response"][field], "{field}: {}", path.display());
        }
        assert!(validated["response"].get("warnings").is_none(), "{}", path.display());
        compared += 1;
    }
    assert!(compared >= 9, "{compared}");
    hook.stop().await;
}

#[tokio::test]
async fn hostile_requests_get_clear_client_errors_and_never_an_allow() {
    let hook = TestWebhook::start().await;
    let valid = common::review(
        "u",
        "CREATE",
        Some(
            &json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer", "metadata": {"name": "x"}, "spec": {"mode": "remote", "endpoint": "https://a.example.com"}}),
        ),
        None,
    );
    let mut wrong_version = valid.clone();
    wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut no_request = valid.clone();
    no_request.as_object_mut().unwrap().remove("request");
    let mut no_uid = valid.clone();
    no_uid["request"]["uid"] = json!("");
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty body", Vec::new()),
        ("not JSON", b"hello".to_vec()),
        ("truncated JSON", serde_json::to_vec(&valid).unwrap()[..40].to_vec()),
        ("deeply nested", deep.into_bytes()),
        ("wrong apiVersion", serde_json::to_vec(&wrong_version).unwrap()),
        ("no request", serde_json::to_vec(&no_request).unwrap()),
        ("empty uid", serde_json::to_vec(&no_uid).unwrap()),
        ("invalid UTF-8", vec![b'{', 0xff, 0xfe, b'}']),
        (
            "wrong types",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":5}}"#.to_vec(),
        ),
    ];
    for (name, body) in cases {
        let (status, answer) = hook.post("/validate", body).await;
        assert_eq!(status, 400, "{name}");
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["kind"], "Status", "{name}");
        assert!(!answer["message"].as_str().unwrap().is_empty(), "{name}");
    }
    let (status, _) = hook.post("/validate", vec![b' '; 4 * 1024 * 1024]).await;
    assert_eq!(status, 413, "bodies over 3 MiB are refused");
    let (status, _) = hook.post("/nope", b"{}".to_vec()).await;
    assert_eq!(status, 404);
    let (status, _) = common::request(hook.addr, hook.client_config(), "GET", "/validate", Vec::new()).await.unwrap();
    assert_eq!(status, 405);
    // still serving
    let (status, answer) = hook.post_json("/validate", &valid).await;
    assert_eq!((status, answer["response"]["allowed"].clone()), (200, json!(true)));
    hook.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_by_kind_operation_and_verdict() {
    let hook = TestWebhook::start().await;
    let object = json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer", "metadata": {"name": "x"}, "spec": {"mode": "container"}});
    hook.post_json("/validate", &common::review("a", "CREATE", Some(&object), None)).await;
    hook.post("/validate", b"junk".to_vec()).await;
    let text = hook.metrics.render();
    assert!(
        text.contains(r#"mcp_hangar_admission_requests_total{endpoint="validate",kind="MCPServer",operation="CREATE",verdict="denied"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"verdict="error"} 1"#), "{text}");
    assert!(text.contains("mcp_hangar_admission_duration_seconds_bucket"), "{text}");
    hook.stop().await;
}
