//! The apiserver's rules for `x-kubernetes-validations`, enforced on every generated CRD, so that
//! a real kube-apiserver accepts them (the offline manifest validator does not know these rules).
//!
//! Mirrors `ValidateCustomResourceDefinitionOpenAPISchema` and `cel.ValidFieldPath` of
//! apiextensions-apiserver: a rule is non-empty; a message is non-empty, at most 2048 bytes and
//! on one line, and required when the rule spans lines; a messageExpression is non-empty; a
//! reason is one of the four `FieldValue*` reasons; a fieldPath is a `.field` / `['key']` path
//! that resolves in the schema at the rule's own level (the root declares only `spec` and
//! `status`, so `.metadata.name` does not resolve); `oldSelf` (a transition rule) never under
//! the items of a list that is not a map list; `optionalOldSelf` only with `oldSelf`. Besides:
//! `self.metadata` only at the root and only `.name` / `.generateName` (all a rule may read of
//! metadata), every `self.a.b` chain names declared properties, every rule has a message, and
//! an upper bound of each rule's estimated cost stays within the apiserver's limits.

use mcp_hangar::crd::{Kind, MAX_SERVER_NAME_LEN};
use mcp_hangar::policy;
use serde_json::{Value, json};

/// `StaticEstimatedCostLimit`: most estimated cost of one rule.
const RULE_COST_LIMIT: u64 = 10_000_000;
/// `StaticEstimatedCRDCostLimit`: most estimated cost of all rules of a CRD.
const CRD_COST_LIMIT: u64 = 100_000_000;
/// The apiserver's largest request; bounds strings without `maxLength` and lists without `maxItems`.
const MAX_REQUEST_BYTES: u64 = 3 * 1024 * 1024;
/// `FieldValue*` reasons the apiserver accepts.
const REASONS: [&str; 4] = ["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"];
/// CEL words whose cost this file does not model; a rule using one must extend [`rule_cost`].
const UNMODELLED: [&str; 6] = ["all(", "exists(", "exists_one(", "map(", "filter(", "split("];

/// Where a rule sits: the schema node, its path, and what the apiserver derives from the path.
struct Node<'a> {
    schema: &'a Value,
    path: String,
    root: bool,
    /// Set under the items of a list that is not a map list: `oldSelf` cannot be correlated there.
    uncorrelatable: Option<String>,
    /// Most instances of this node in one object.
    cardinality: u64,
}

/// Every problem the apiserver (or this file's stricter checks) finds in one CRD's schema.
fn problems(crd: &Value) -> Vec<String> {
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut out = Vec::new();
    let mut total = 0u64;
    let root = Node { schema, path: "openAPIV3Schema".into(), root: true, uncorrelatable: None, cardinality: 1 };
    walk(&root, &mut out, &mut total);
    if total > CRD_COST_LIMIT {
        out.push(format!("estimated cost of all rules {total} exceeds the CRD limit {CRD_COST_LIMIT}"));
    }
    out
}

fn walk(node: &Node, out: &mut Vec<String>, total: &mut u64) {
    if let Some(rules) = node.schema.get("x-kubernetes-validations") {
        for (i, rule) in rules.as_array().into_iter().flatten().enumerate() {
            let at = format!("{}.x-kubernetes-validations[{i}]", node.path);
            check_rule(node, rule, &at, out, total);
        }
    }
    if let Some(props) = node.schema.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            let child = Node {
                schema: child,
                path: format!("{}.properties[{name}]", node.path),
                root: false,
                uncorrelatable: node.uncorrelatable.clone(),
                cardinality: node.cardinality,
            };
            walk(&child, out, total);
        }
    }
    if let Some(child) = node.schema.get("additionalProperties").filter(|v| v.is_object()) {
        let most = node.schema["maxProperties"].as_u64().unwrap_or(MAX_REQUEST_BYTES / 4);
        let child = Node {
            schema: child,
            path: format!("{}.additionalProperties", node.path),
            root: false,
            uncorrelatable: node.uncorrelatable.clone(),
            cardinality: node.cardinality.saturating_mul(most),
        };
        walk(&child, out, total);
    }
    if let Some(items) = node.schema.get("items") {
        let path = format!("{}.items", node.path);
        let map_list = node.schema["x-kubernetes-list-type"] == "map";
        let most = node.schema["maxItems"].as_u64().unwrap_or(MAX_REQUEST_BYTES / 2);
        let child = Node {
            schema: items,
            path: path.clone(),
            root: false,
            uncorrelatable: node.uncorrelatable.clone().or((!map_list).then_some(path)),
            cardinality: node.cardinality.saturating_mul(most),
        };
        walk(&child, out, total);
    }
}

fn has_line_break(s: &str) -> bool {
    s.contains(['\n', '\r'])
}

fn check_rule(node: &Node, rule: &Value, at: &str, out: &mut Vec<String>, total: &mut u64) {
    let text = rule["rule"].as_str().unwrap_or_default();
    if text.trim().is_empty() {
        out.push(format!("{at}.rule: Required value: rule is not specified"));
        return;
    }
    match rule.get("message").and_then(Value::as_str) {
        None => out.push(format!("{at}.message: every rule needs a message users can act on")),
        Some(m) if m.trim().is_empty() => out.push(format!("{at}.message: message must be non-empty if specified")),
        Some(m) if m.len() > 2048 => out.push(format!("{at}.message: message must have a maximum length of 2048")),
        Some(m) if has_line_break(m.trim()) => out.push(format!("{at}.message: message must not contain line breaks")),
        Some(_) => {}
    }
    if let Some(expr) = rule.get("messageExpression").and_then(Value::as_str)
        && expr.trim().is_empty()
    {
        out.push(format!("{at}.messageExpression: messageExpression must be non-empty if specified"));
    }
    if let Some(reason) = rule.get("reason")
        && !REASONS.iter().any(|r| reason == r)
    {
        out.push(format!("{at}.reason: Unsupported value: {reason}: supported values: {REASONS:?}"));
    }
    if let Some(path) = rule.get("fieldPath").and_then(Value::as_str) {
        if path.trim().is_empty() {
            out.push(format!("{at}.fieldPath: fieldPath must be non-empty if specified"));
        } else if has_line_break(path) {
            out.push(format!("{at}.fieldPath: fieldPath must not contain line breaks"));
        } else if let Err(e) = resolve_field_path(path, node.schema) {
            out.push(format!("{at}.fieldPath: Invalid value: {path:?}: fieldPath must be a valid path: {e}"));
        }
    }
    let uses_old_self = text.contains("oldSelf");
    if uses_old_self && let Some(list) = &node.uncorrelatable {
        out.push(format!(
            "{at}.rule: oldSelf cannot be used on the uncorrelatable portion of the schema within {list}"
        ));
    }
    if rule.get("optionalOldSelf") == Some(&json!(true)) && !uses_old_self {
        out.push(format!("{at}.optionalOldSelf: may not be set if the rule does not use oldSelf"));
    }
    for chain in self_chains(text) {
        if let Err(e) = resolve_chain(&chain, node) {
            out.push(format!("{at}.rule: {}: {e}", chain.join(".")));
        }
    }
    if let Some(word) = UNMODELLED.iter().find(|w| text.contains(**w)) {
        out.push(format!("{at}.rule: uses {word:?}, whose cost this test does not model: extend rule_cost"));
        return;
    }
    let cost = node.cardinality.saturating_mul(rule_cost(text, node));
    if cost > RULE_COST_LIMIT {
        out.push(format!("{at}.rule: estimated rule cost {cost} exceeds the limit {RULE_COST_LIMIT}"));
    }
    *total = total.saturating_add(cost);
}

/// `cel.ValidFieldPath`: `.name` and `['name']` steps, each naming a declared property (or any key
/// of a map with `additionalProperties`); no list indexes.
fn resolve_field_path(path: &str, mut schema: &Value) -> Result<(), String> {
    let mut rest = path;
    while !rest.is_empty() {
        let (name, next) = if let Some(after) = rest.strip_prefix("['") {
            let end = after.find("']").ok_or("expected ']'")?;
            (&after[..end], &after[end + 2..])
        } else if let Some(after) = rest.strip_prefix('[') {
            return Err(format!("expected single quoted string but got {}", after.split(']').next().unwrap_or("")));
        } else if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            if end == 0 {
                return Err("unexpected end of JSON path".into());
            }
            (&after[..end], &after[end..])
        } else {
            return Err(format!("expected [ or . but got: {rest}"));
        };
        schema = if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            props.get(name).ok_or("does not refer to a valid field")?
        } else if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            values
        } else {
            return Err("does not refer to a valid field".into());
        };
        rest = next;
    }
    Ok(())
}

/// Every `self.a.b` / `oldSelf.a.b` chain of a rule, as `["self", "a", "b"]`, leaving out a
/// trailing function call (`self.a.size()` gives `["self", "a"]`).
fn self_chains(rule: &str) -> Vec<Vec<String>> {
    let mut chains = Vec::new();
    let bytes = rule.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let start_ok = i == 0 || !(ident(bytes[i - 1]) || bytes[i - 1] == b'.' || bytes[i - 1] == b'\'');
        let head = ["oldSelf", "self"].into_iter().find(|h| rule[i..].starts_with(h));
        match head {
            Some(head) if start_ok && !bytes.get(i + head.len()).copied().is_some_and(ident) => {
                let mut chain = vec![head.to_string()];
                let mut j = i + head.len();
                while bytes.get(j) == Some(&b'.') {
                    let end = (j + 1..bytes.len()).find(|&k| !ident(bytes[k])).unwrap_or(bytes.len());
                    if bytes.get(end) == Some(&b'(') {
                        break;
                    }
                    chain.push(rule[j + 1..end].to_string());
                    j = end;
                }
                chains.push(chain);
                i = j;
            }
            _ => i += 1,
        }
    }
    chains
}

/// A chain resolves when every step is a declared property; at the root `apiVersion`, `kind`,
/// `metadata.name` and `metadata.generateName` are readable too, and nothing else of metadata.
fn resolve_chain(chain: &[String], node: &Node) -> Result<(), String> {
    let steps = &chain[1..];
    if let Some(first) = steps.first()
        && ["apiVersion", "kind", "metadata"].contains(&first.as_str())
    {
        if !node.root {
            return Err(format!("{first} is readable only by rules at the root of the schema"));
        }
        return match (first.as_str(), steps.get(1).map(String::as_str), steps.len()) {
            ("apiVersion" | "kind", _, 1) => Ok(()),
            ("metadata", Some("name" | "generateName"), 2) => Ok(()),
            _ => Err("of metadata a rule may read only metadata.name and metadata.generateName".into()),
        };
    }
    let mut schema = node.schema;
    for step in steps {
        schema = schema
            .get("properties")
            .and_then(|p| p.get(step.as_str()))
            .ok_or_else(|| format!("{step} is not a declared property"))?;
    }
    Ok(())
}

/// Most length of the string a chain names: its `maxLength`, or what fits in a request.
fn max_len(chain: &[String], node: &Node) -> u64 {
    let mut schema = node.schema;
    for step in &chain[1..] {
        match schema.get("properties").and_then(|p| p.get(step.as_str())) {
            Some(s) => schema = s,
            None => return MAX_REQUEST_BYTES,
        }
    }
    schema["maxLength"].as_u64().unwrap_or(MAX_REQUEST_BYTES)
}

/// An upper bound of cel-go's estimate for one evaluation: one per token, plus a traversal
/// (factor 0.1 of the string's most length) per string comparison or search, and for `matches`
/// that traversal times 0.25 of the pattern's length.
fn rule_cost(rule: &str, node: &Node) -> u64 {
    let traversal = |len: u64| len.div_ceil(10) + 1;
    let tokens = rule.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').filter(|t| !t.is_empty()).count();
    let mut cost = tokens as u64;
    let comparisons = rule.matches("==").count() + rule.matches("!=").count();
    cost += comparisons as u64 * traversal(MAX_REQUEST_BYTES);
    for chain in self_chains(rule) {
        let call = format!("{}.", chain.join("."));
        for at in rule.match_indices(&call).map(|(at, _)| at + call.len()) {
            let after = &rule[at..];
            let len = max_len(&chain, node);
            if let Some(pattern) = after.strip_prefix("matches('") {
                let pattern_len = pattern.find('\'').unwrap_or(pattern.len()) as u64;
                cost += traversal(len) * (pattern_len.div_ceil(4) + 1);
            } else if ["startsWith(", "endsWith(", "contains("].iter().any(|f| after.starts_with(f)) {
                cost += traversal(len);
            }
        }
    }
    cost
}

fn generated(kind: Kind) -> Value {
    serde_json::to_value(kind.crd()).unwrap()
}

#[test]
fn every_generated_crd_meets_the_apiservers_rules_for_x_kubernetes_validations() {
    let mut all = Vec::new();
    let mut count = 0;
    for kind in Kind::ALL {
        let crd = generated(kind);
        count += serde_json::to_string(&crd).unwrap().matches("\"rule\":").count();
        all.extend(problems(&crd).into_iter().map(|p| format!("{kind}: {p}")));
    }
    assert!(
        count >= 10,
        "expected the CEL rules of MCPServer, MCPDiscoverySource and MCPAdmissionPolicy, found {count}"
    );
    assert!(all.is_empty(), "a real apiserver would refuse these CRDs:\n{}", all.join("\n"));
}

#[test]
fn a_field_path_into_metadata_is_refused_as_the_apiserver_refuses_it() {
    let crd = |rules: Value| {
        json!({"spec": {"versions": [{"schema": {"openAPIV3Schema": {
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {
                "mode": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "items": {"type": "array", "maxItems": 10, "items": {"type": "object", "properties": {"a": {"type": "string"}},
                    "x-kubernetes-validations": [{"rule": "self.a == oldSelf.a", "message": "a is immutable"}]}},
            }}},
            "x-kubernetes-validations": rules,
        }}}]}})
    };
    let ok = crd(json!([
        {"rule": "self.metadata.name.size() <= 5", "message": "short names"},
        {"rule": "has(self.spec.mode)", "message": "m", "fieldPath": ".spec.mode", "reason": "FieldValueRequired"},
        {"rule": "true", "message": "m", "fieldPath": ".spec.labels['a.b/c']"},
        {"rule": "true", "message": "m", "fieldPath": ".spec['mode']"},
    ]));
    let found = problems(&ok);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("oldSelf cannot be used on the uncorrelatable portion"), "{found:?}");
    for (rule, expected) in [
        (
            json!({"rule": "self.metadata.name == 'x'", "message": "m", "fieldPath": ".metadata.name"}),
            "fieldPath must be a valid path",
        ),
        (json!({"rule": "true", "message": "m", "fieldPath": ".spec.nope"}), "does not refer to a valid field"),
        (json!({"rule": "true", "message": "m", "fieldPath": ".spec.items[0]"}), "expected single quoted string"),
        (json!({"rule": "true", "message": "m", "fieldPath": "spec"}), "expected [ or ."),
        (json!({"rule": "true", "message": "m", "reason": "Invalid"}), "Unsupported value"),
        (json!({"rule": "true", "message": "two\nlines"}), "line breaks"),
        (json!({"rule": "true", "message": " "}), "non-empty"),
        (json!({"rule": "true"}), "needs a message"),
        (json!({"rule": " ", "message": "m"}), "rule is not specified"),
        (json!({"rule": "true", "message": "m", "optionalOldSelf": true}), "does not use oldSelf"),
        (json!({"rule": "self.metadata.labels.size() < 3", "message": "m"}), "only metadata.name"),
        (json!({"rule": "has(self.spec.mod)", "message": "m"}), "mod is not a declared property"),
        (json!({"rule": "self.spec.items.all(i, has(i.a))", "message": "m"}), "does not model"),
    ] {
        let found = problems(&crd(json!([rule])));
        assert!(found.iter().any(|p| p.contains(expected)), "{rule}: expected {expected:?} in {found:?}");
    }
}

#[test]
fn an_unbounded_regex_in_an_unbounded_list_exceeds_the_cost_limit() {
    let crd = json!({"spec": {"versions": [{"schema": {"openAPIV3Schema": {
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {"names": {"type": "array", "items": {
            "type": "object", "properties": {"n": {"type": "string"}},
            "x-kubernetes-validations": [{"rule": "self.n.matches('^[a-z]+$')", "message": "m"}],
        }}}}},
    }}}]}});
    let found = problems(&crd);
    assert!(found.iter().any(|p| p.contains("exceeds the limit")), "{found:?}");
}

#[test]
fn the_name_limit_is_one_constant_for_the_cel_rule_and_the_webhook() {
    assert_eq!(policy::MAX_SERVER_NAME_LEN, MAX_SERVER_NAME_LEN);
    let crd = serde_json::to_string(&generated(Kind::Server)).unwrap();
    assert!(
        crd.contains(&format!("self.metadata.name.size() <= {MAX_SERVER_NAME_LEN} ")),
        "CEL rule not built from the constant"
    );
    assert!(crd.contains(&format!("at most {MAX_SERVER_NAME_LEN} characters")));
}
