//! `policy apply` against the in-memory API server: profiles first, server-side apply with the
//! field manager, transient failures (the webhook not serving yet) retried, refusals final.

mod common;
#[path = "support/fake_api.rs"]
mod fake_api;

use std::time::Duration;

use axum::http::Method;
use fake_api::FakeApi;
use mcp_hangar::cli::policy::{ApplyError, ApplySettings, apply_policy};
use mcp_hangar::cli::validate::read_paths;

const PROFILES: &str = "/apis/mcp-hangar.io/v1alpha1/mcppermissionprofiles";
const POLICIES: &str = "/apis/mcp-hangar.io/v1alpha1/mcpadmissionpolicies";

fn settings(timeout: Duration) -> ApplySettings {
    ApplySettings {
        field_manager: "mcp-hangar-chart".into(),
        timeout,
        retry_interval: Duration::from_millis(20),
        max_retry_interval: Duration::from_millis(80),
    }
}

fn shipped_policy() -> Vec<mcp_hangar::cli::validate::Document> {
    let (documents, errors) = read_paths(&[common::repo().join("policy")], false);
    assert!(errors.is_empty(), "{errors:?}");
    documents
}

#[tokio::test]
async fn applies_profiles_before_the_admission_policy_with_its_field_manager() {
    let fake = FakeApi::start().await;
    let applied = apply_policy(fake.client(), &shipped_policy(), &settings(Duration::from_secs(5))).await.unwrap();
    assert_eq!(applied.len(), 4);
    assert_eq!(applied.last().unwrap(), "MCPAdmissionPolicy \"default\"");
    assert!(fake.get(&format!("{PROFILES}/none")).is_some());
    assert!(fake.get(&format!("{PROFILES}/restricted-egress")).is_some());
    let policy = fake.get(&format!("{POLICIES}/default")).unwrap();
    assert_eq!(policy["spec"]["defaultProfile"], "none");
    let patches: Vec<_> = fake.requests().into_iter().filter(|r| r.method == Method::PATCH).collect();
    assert_eq!(patches.len(), 4);
    assert!(patches[..3].iter().all(|r| r.path.starts_with(PROFILES)), "profiles first: {patches:?}");
    for request in &patches {
        assert_eq!(request.content_type.as_deref(), Some("application/apply-patch+yaml"));
        assert!(request.query.contains("fieldManager=mcp-hangar-chart") && request.query.contains("force=true"));
    }
    // Applying again changes nothing and still succeeds (post-upgrade).
    let version = fake.resource_version();
    apply_policy(fake.client(), &shipped_policy(), &settings(Duration::from_secs(5))).await.unwrap();
    assert_eq!(fake.resource_version(), version);
}

#[tokio::test]
async fn a_webhook_not_serving_yet_is_waited_for() {
    let fake = FakeApi::start().await;
    // What the apiserver answers while the webhook has no ready endpoint: 500 "failed calling webhook".
    fake.fail_next(3, Some(Method::PATCH), "mcppermissionprofiles/none", 500);
    fake.fail_next(1, Some(Method::PATCH), "mcpadmissionpolicies", 404);
    let applied = apply_policy(fake.client(), &shipped_policy(), &settings(Duration::from_secs(10))).await.unwrap();
    assert_eq!(applied.len(), 4);
    assert!(fake.get(&format!("{PROFILES}/none")).is_some());
    assert!(fake.get(&format!("{POLICIES}/default")).is_some());
}

#[tokio::test]
async fn a_refusal_is_final_and_a_lasting_failure_times_out() {
    let fake = FakeApi::start().await;
    fake.fail_next(1, Some(Method::PATCH), "mcppermissionprofiles/network", 422);
    let error = apply_policy(fake.client(), &shipped_policy(), &settings(Duration::from_secs(30))).await.unwrap_err();
    assert!(
        matches!(&error, ApplyError::Refused { object, .. } if object == "MCPPermissionProfile \"network\""),
        "{error}"
    );
    assert!(fake.get(&format!("{POLICIES}/default")).is_none(), "nothing after a refusal");

    let fake = FakeApi::start().await;
    fake.fail_next(1000, Some(Method::PATCH), "mcppermissionprofiles", 500);
    let started = std::time::Instant::now();
    let error =
        apply_policy(fake.client(), &shipped_policy(), &settings(Duration::from_millis(300))).await.unwrap_err();
    assert!(matches!(error, ApplyError::TimedOut { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10), "gives up at its timeout");
}

#[tokio::test]
async fn only_policy_objects_are_applied() {
    let fake = FakeApi::start().await;
    let (documents, _) = read_paths(&[common::repo().join("examples/mcpserver-basic.yaml")], false);
    let error = apply_policy(fake.client(), &documents, &settings(Duration::from_secs(1))).await.unwrap_err();
    assert!(matches!(error, ApplyError::NotPolicy { .. }), "{error}");
    assert!(fake.requests().is_empty());
}

#[test]
fn the_command_refuses_an_invalid_policy_before_contacting_a_cluster() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-hangar"))
        .args(["policy", "apply", "-f", "examples/invalid/profile-invalid.yaml"])
        .current_dir(common::repo())
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("MCPPermissionProfile"), "{stdout}");
}

/// A mounted ConfigMap holds each file twice (`..data/x` and the link `x`): each object is read once.
#[cfg(unix)]
#[test]
fn a_mounted_config_map_is_read_once() {
    let dir = std::env::temp_dir().join(format!("mcp-hangar-configmap-{}", std::process::id()));
    let data = dir.join("..2026_01_01_00_00_00.000000000");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(common::repo().join("policy/profile-none.yaml"), data.join("profile-none.yaml")).unwrap();
    std::os::unix::fs::symlink(&data, dir.join("..data")).unwrap();
    std::os::unix::fs::symlink(dir.join("..data/profile-none.yaml"), dir.join("profile-none.yaml")).unwrap();
    let (_, report) = mcp_hangar::cli::policy::check_policy_dir(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        report.problems.is_empty(),
        "read twice: {:?}",
        report.problems.iter().map(|p| p.error.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(report.checked, 1);
}
