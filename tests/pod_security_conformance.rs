//! The Pod Security Standards checker against the upstream conformance fixtures, vendored in
//! `tests/fixtures/psa` (Kubernetes v1.37): every `pass` Pod allowed, every `fail` Pod denied.

use std::path::PathBuf;

use mcp_hangar::crd::PodSecurityLevel;
use mcp_hangar::policy::{Engine, WorkloadKind};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/psa")
}

fn pods(level: &str, outcome: &str) -> Vec<(String, Value)> {
    let dir = fixtures().join(level).join("v1.37").join(outcome);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            (
                f.file_name().unwrap().to_string_lossy().into_owned(),
                serde_saphyr::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap(),
            )
        })
        .collect()
}

fn conformance(level_name: &str, level: PodSecurityLevel) {
    let engine = Engine::new().unwrap();
    let mut wrong = Vec::new();
    let (pass, fail) = (pods(level_name, "pass"), pods(level_name, "fail"));
    assert!(pass.len() >= 10 && fail.len() >= 30, "fixtures missing");
    for (name, pod) in &pass {
        let verdict = engine.check_pod_security(WorkloadKind::Pod, pod, level);
        if !verdict.allowed() {
            wrong.push(format!(
                "pass/{name} denied: {:?}",
                verdict.errors.iter().map(ToString::to_string).collect::<Vec<_>>()
            ));
        }
    }
    for (name, pod) in &fail {
        if engine.check_pod_security(WorkloadKind::Pod, pod, level).allowed() {
            wrong.push(format!("fail/{name} allowed"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{level_name}: {} of {} fixtures disagree:\n{}",
        wrong.len(),
        pass.len() + fail.len(),
        wrong.join("\n")
    );
}

#[test]
fn baseline_agrees_with_upstream_fixtures() {
    conformance("baseline", PodSecurityLevel::Baseline);
}

#[test]
fn restricted_agrees_with_upstream_fixtures() {
    conformance("restricted", PodSecurityLevel::Restricted);
}
