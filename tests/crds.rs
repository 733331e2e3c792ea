//! The generated CRDs: what `kubectl` users see (printer columns, short names, the `mcp`
//! category, scale and status subresources, field docs) and the CEL rules that hold even
//! when the webhook is down. `crds/` on disk must be exactly what the binary prints.

use mcp_hangar::crd::{Kind, all_crds};
use serde_json::{Value, json};

fn crd(kind: Kind) -> Value {
    serde_json::to_value(kind.crd()).unwrap()
}

fn columns(kind: Kind) -> Vec<String> {
    crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn printer_columns_names_and_categories() {
    assert_eq!(columns(Kind::Server), ["MODE", "STATE", "READY", "TOOLS", "GATEWAY", "AGE"]);
    assert_eq!(columns(Kind::ServerGroup), ["STRATEGY", "MEMBERS", "HEALTHY", "READY", "AGE"]);
    assert_eq!(columns(Kind::DiscoverySource), ["TYPE", "MODE", "DISCOVERED", "AGE"]);
    for kind in Kind::ALL {
        let c = crd(kind);
        assert_eq!(c["spec"]["group"], "mcp-hangar.io");
        assert_eq!(c["spec"]["names"]["categories"], json!(["mcp"]), "{kind}");
        assert_eq!(c["spec"]["names"]["shortNames"].as_array().map(Vec::len), Some(1), "{kind}");
        assert_eq!(c["spec"]["versions"][0]["name"], "v1alpha1");
        assert_eq!(c["spec"]["versions"][0]["storage"], true);
    }
    let scopes: Vec<&str> =
        Kind::ALL.iter().map(|k| if k.crd().spec.scope == "Cluster" { "Cluster" } else { "Namespaced" }).collect();
    assert_eq!(scopes, ["Namespaced", "Namespaced", "Namespaced", "Cluster", "Cluster"]);
}

#[test]
fn mcpserver_scales_through_spec_replicas() {
    let subresources = &crd(Kind::Server)["spec"]["versions"][0]["subresources"];
    assert_eq!(subresources["status"], json!({}));
    assert_eq!(
        subresources["scale"],
        json!({"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"})
    );
}

/// Every property of every schema has a description, so `kubectl explain` documents it.
fn undocumented(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            let child_path = format!("{path}.{name}");
            if child.get("description").is_none() && !["apiVersion", "kind", "metadata"].contains(&name.as_str()) {
                out.push(child_path.clone());
            }
            undocumented(child, &child_path, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undocumented(items, &format!("{path}[]"), out);
    }
}

#[test]
fn every_field_is_documented_for_kubectl_explain() {
    let mut missing = Vec::new();
    for kind in Kind::ALL {
        undocumented(&crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"], kind.as_str(), &mut missing);
    }
    assert!(missing.is_empty(), "fields without a description: {missing:?}");
}

fn rules(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(list)) = map.get("x-kubernetes-validations") {
                out.extend(list.iter().filter_map(|r| r["rule"].as_str().map(str::to_string)));
            }
            map.values().for_each(|v| rules(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| rules(v, out)),
        _ => {}
    }
}

#[test]
fn cel_rules_keep_the_invariants_when_the_webhook_is_down() {
    let mut found = Vec::new();
    rules(&crd(Kind::Server), &mut found);
    for expected in [
        "has(self.spec.mode)",
        "!has(self.mode) || self.mode != 'container' || has(self.image)",
        "!has(self.mode) || self.mode != 'remote' || has(self.endpoint)",
        "!has(oldSelf.spec.mode) || !has(self.spec.mode) || self.spec.mode == oldSelf.spec.mode",
    ] {
        assert!(found.iter().any(|r| r == expected), "missing CEL rule {expected}: {found:?}");
    }
    let mut policy = Vec::new();
    rules(&crd(Kind::AdmissionPolicy), &mut policy);
    assert_eq!(policy, ["self.metadata.name == 'default'"]);
}

#[test]
fn crds_directory_is_what_the_binary_generates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for kind in Kind::ALL {
        let file = dir.join(format!("{}.mcp-hangar.io.yaml", kind.plural()));
        let on_disk: Value = serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(on_disk, crd(kind), "{} drifted: run `cargo run -- crds --out-dir crds`", file.display());
    }
    assert_eq!(all_crds().len(), Kind::ALL.len());
}
