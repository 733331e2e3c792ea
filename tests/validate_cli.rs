//! The `validate` command as a user runs it: exit codes, text and JSON output.

use std::process::Command;

use serde_json::Value;

fn validate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-hangar"))
        .arg("validate")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn examples_pass_with_exit_zero() {
    let (code, stdout, _) = validate(&["-f", "examples/"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("mcpserver.mcp-hangar.io/sqlite-tools valid"));
    assert!(stdout.contains("Warning: spec.image:"));
}

#[test]
fn invalid_examples_exit_one_with_kubectl_style_lines() {
    let (code, stdout, _) = validate(&["-f", "examples/invalid/container-without-image.yaml"]);
    assert_eq!(code, 1);
    assert!(stdout.contains("The MCPServer \"no-image\" is invalid:"), "{stdout}");
    assert!(stdout.contains("* spec.image: Required value: container mode needs an image"), "{stdout}");
    assert!(stdout.contains("* spec.endpoint: Forbidden:"), "{stdout}");
}

/// kubectl prints a single cause on the summary line (its `MultilineError`), several as a list.
#[test]
fn one_violation_is_printed_on_the_summary_line_as_kubectl_does() {
    let (code, stdout, _) = validate(&["-f", "examples/invalid/image-invalid.yaml"]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains(
            "The MCPServer \"bad-image\" is invalid: spec.image: Invalid value: \"ghcr.io/Example/Server:1.0.0\""
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("\n* "), "{stdout}");
}

#[test]
fn json_output_has_the_documented_shape() {
    let (code, stdout, _) = validate(&[
        "-f",
        "examples/invalid/mode-missing.yaml",
        "-f",
        "examples/mcpserver-remote.yaml",
        "--output",
        "json",
    ]);
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let denied = &results[0];
    for key in ["apiVersion", "kind", "namespace", "name", "allowed", "violations", "warnings", "patch"] {
        assert!(denied.get(key).is_some(), "missing {key}");
    }
    assert_eq!(denied["allowed"], false);
    assert_eq!(denied["violations"][0]["field"], "spec.imagee");
    assert_eq!(denied["violations"][0]["type"], "FieldValueForbidden");
    assert_eq!(denied["violations"][1]["field"], "spec.mode");
    assert_eq!(denied["violations"][1]["type"], "FieldValueRequired");
    let allowed = &results[1];
    assert_eq!(allowed["allowed"], true);
    // The seed's remote example sets everything but healthCheck.failureThreshold.
    assert_eq!(
        allowed["patch"],
        serde_json::json!([{"op": "add", "path": "/spec/healthCheck/failureThreshold", "value": 3}])
    );
}

#[test]
fn other_kinds_are_skipped_and_unreadable_input_exits_two() {
    let dir = tempdir();
    std::fs::write(dir.join("cm.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n").unwrap();
    std::fs::write(dir.join("broken.yaml"), "apiVersion: v1\nkind: [unclosed\n").unwrap();
    let (code, stdout, _) = validate(&["-f", dir.join("cm.yaml").to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("v1/ConfigMap \"x\" skipped"), "{stdout}");
    let (code, stdout, _) = validate(&["-f", dir.join("broken.yaml").to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.contains("broken.yaml:2"), "file and line expected: {stdout}");
    let (code, _, _) = validate(&["-f", "does/not/exist.yaml"]);
    assert_eq!(code, 2);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-hangar-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
