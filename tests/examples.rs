//! The examples: every seed example is admitted and parses unchanged into the typed CRDs;
//! every file in examples/invalid is denied with exactly the violations its `# expect:` lines name.

mod common;

use std::collections::BTreeSet;

use mcp_hangar::cli::validate::{EXIT_ALLOWED, EXIT_DENIED, validate_paths};
use mcp_hangar::crd::{MCPDiscoverySource, MCPServer, MCPServerGroup};
use mcp_hangar::policy::Engine;
use serde_json::Value;

#[test]
fn every_example_is_admitted() {
    let engine = Engine::new().unwrap();
    let report = validate_paths(&engine, &[common::repo().join("examples")], false);
    assert!(report.results.len() >= 11, "expected every seed example, got {}", report.results.len());
    for result in &report.results {
        assert!(result.allowed, "{} {}: {:?}", result.file, result.name, result.violations);
    }
    assert!(report.skipped.is_empty());
    assert_eq!(report.exit_code(), EXIT_ALLOWED);
}

#[test]
fn latest_tags_are_admitted_with_a_warning() {
    let engine = Engine::new().unwrap();
    let report = validate_paths(&engine, &[common::repo().join("examples/mcpserver-basic.yaml")], false);
    let warnings = &report.results[0].warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("spec.image:") && warnings[0].contains("latest"));
}

/// Typed round trip: what the seed wrote is exactly what the types serialize back.
fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(object: &Value) {
    let typed: T = serde_json::from_value(object.clone()).unwrap();
    let mut back = serde_json::to_value(&typed).unwrap();
    if let Some(meta) = back.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|_, v| !v.is_null());
    }
    assert_eq!(&back, object);
}

#[test]
fn seed_examples_parse_unchanged_into_the_types() {
    for (file, object) in common::objects_in(&common::repo().join("examples")) {
        match object["kind"].as_str() {
            Some("MCPServer") => round_trips::<MCPServer>(&object),
            Some("MCPServerGroup") => round_trips::<MCPServerGroup>(&object),
            Some("MCPDiscoverySource") => round_trips::<MCPDiscoverySource>(&object),
            other => panic!("{}: unexpected kind {other:?}", file.display()),
        }
    }
}

/// The `# expect: FIELD TYPE` lines of an invalid example.
fn expectations(text: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|l| {
            let (field, kind) = l.trim().rsplit_once(' ').expect("expect: FIELD TYPE");
            (field.to_string(), kind.to_string())
        })
        .collect()
}

#[test]
fn every_invalid_example_is_denied_with_its_expected_violations() {
    let engine = Engine::new().unwrap();
    let dir = common::repo().join("examples/invalid");
    let (files, _) = mcp_hangar::cli::validate::manifest_files(&[dir], false);
    assert!(files.len() >= 20);
    for file in files {
        let expected = expectations(&std::fs::read_to_string(&file).unwrap());
        assert!(!expected.is_empty(), "{}: no `# expect:` lines", file.display());
        let report = validate_paths(&engine, std::slice::from_ref(&file), false);
        assert_eq!(report.exit_code(), EXIT_DENIED, "{}", file.display());
        let found: BTreeSet<(String, String)> =
            report.results[0].violations.iter().map(|v| (v.field.clone(), v.error_type.clone())).collect();
        assert_eq!(found, expected, "{}", file.display());
        for v in &report.results[0].violations {
            assert!(v.message.split(": ").count() >= 2, "{}: message without detail: {}", file.display(), v.message);
        }
    }
}
