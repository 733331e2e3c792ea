//! Structural checks against the JSON Schema generated from the CRD types.
//!
//! The CRD's `openAPIV3Schema` is made strict (unknown fields become errors, `nullable`
//! and int-or-string become plain JSON Schema) and checked with the `jsonschema` crate,
//! which reports every structural error at once with its exact location.

use jsonschema::error::ValidationErrorKind;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Map, Value, json};

use super::PolicyError;
use super::field::{FieldError, FieldPath};

/// Most structural violations one check reports; the object is denied either way.
pub const MAX_STRUCTURAL_ERRORS: usize = 1000;

/// A compiled strict schema of one kind.
pub struct StructuralSchema {
    schema: Value,
    validator: jsonschema::Validator,
}

/// What the structural check found.
#[derive(Debug, Default)]
pub struct StructuralReport {
    /// Every structural violation.
    pub errors: Vec<FieldError>,
    /// JSON pointers of values to drop before the typed rules run, so that the
    /// object still deserializes and the rules can report everything else.
    pub removals: Vec<String>,
}

impl StructuralSchema {
    /// Compiles the strict form of a CRD's schema.
    pub fn from_crd(crd: &CustomResourceDefinition) -> Result<Self, PolicyError> {
        let schema = crd
            .spec
            .versions
            .first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .ok_or_else(|| PolicyError::Schema(format!("CRD {} has no schema", crd.spec.names.kind)))?;
        let mut schema = serde_json::to_value(schema).map_err(|e| PolicyError::Schema(e.to_string()))?;
        make_strict(&mut schema);
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert("apiVersion".into(), json!({"type": "string"}));
            props.insert("kind".into(), json!({"type": "string"}));
            props.insert("metadata".into(), json!({"type": "object"}));
            // Status is written by the controller through its own subresource.
            props.insert("status".into(), json!({}));
        }
        Self::from_schema(schema)
    }

    /// Compiles an already strict JSON Schema.
    pub fn from_schema(schema: Value) -> Result<Self, PolicyError> {
        let validator = jsonschema::options()
            .should_validate_formats(false)
            .build(&schema)
            .map_err(|e| PolicyError::Schema(e.to_string()))?;
        Ok(StructuralSchema { schema, validator })
    }

    /// The strict schema, as JSON.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Checks an object and reports its structural violations, at most
    /// [`MAX_STRUCTURAL_ERRORS`] of them (a hostile object can hold millions).
    pub fn check(&self, object: &Value) -> StructuralReport {
        let mut report = StructuralReport::default();
        for error in self.validator.iter_errors(object).take(MAX_STRUCTURAL_ERRORS) {
            let pointer = error.instance_path().as_str().to_string();
            let path = FieldPath::from_pointer(&pointer);
            match error.kind() {
                ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    report.errors.push(FieldError::required(
                        &path.child(name),
                        required_detail(self.property_schema(&pointer, name)),
                    ));
                    report.removals.push(pointer);
                }
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    let known = self.known_properties(&pointer);
                    for name in unexpected {
                        report
                            .errors
                            .push(FieldError::forbidden(&path.child(name), unknown_field_detail(name, &known)));
                    }
                }
                kind => {
                    report.errors.push(value_error(&path, error.instance(), kind));
                    report.removals.push(pointer);
                }
            }
        }
        report.removals = report.removals.iter().map(|p| removable_parent(p)).collect();
        report.removals.sort();
        report.removals.dedup();
        report
    }

    /// The subschema an instance pointer leads to.
    fn schema_at(&self, pointer: &str) -> Option<&Value> {
        let mut node = &self.schema;
        for token in pointer.split('/').skip(1) {
            node = match node.get("properties").and_then(|p| p.get(token)) {
                Some(child) => child,
                None => match node.get("items") {
                    Some(items) if token.parse::<usize>().is_ok() => items,
                    _ => node.get("additionalProperties").filter(|v| v.is_object())?,
                },
            };
        }
        Some(node)
    }

    fn property_schema(&self, pointer: &str, name: &str) -> Option<&Value> {
        self.schema_at(pointer)?.get("properties")?.get(name)
    }

    fn known_properties(&self, pointer: &str) -> Vec<String> {
        self.schema_at(pointer)
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }
}

fn required_detail(schema: Option<&Value>) -> String {
    match schema.and_then(|s| s.get("description")).and_then(Value::as_str) {
        Some(description) => format!("must be set: {}", first_sentence(description)),
        None => "must be set".to_string(),
    }
}

fn first_sentence(text: &str) -> &str {
    let end = text.find(". ").map_or(text.len(), |i| i + 1);
    &text[..end]
}

fn unknown_field_detail(name: &str, known: &[String]) -> String {
    let closest = known
        .iter()
        .map(|k| (edit_distance(&name.to_ascii_lowercase(), &k.to_ascii_lowercase()), k))
        .filter(|(d, _)| *d <= 2)
        .min();
    match closest {
        Some((_, suggestion)) => format!("unknown field {name:?}: did you mean {suggestion:?}?"),
        None if known.is_empty() => format!("unknown field {name:?}: remove it"),
        None => format!("unknown field {name:?}: remove it or use one of: {}", known.join(", ")),
    }
}

/// Levenshtein distance, on short field names only.
fn edit_distance(a: &str, b: &str) -> usize {
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn value_error(path: &FieldPath, instance: &Value, kind: &ValidationErrorKind) -> FieldError {
    let value = instance.clone();
    match kind {
        ValidationErrorKind::Enum { options } => {
            let supported: Vec<&str> = options.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            FieldError::not_supported(path, value, &supported)
        }
        ValidationErrorKind::Type { kind } => {
            FieldError::invalid(path, value, format!("must be of type {}", describe_type(kind)))
        }
        ValidationErrorKind::AnyOf { .. } => FieldError::invalid(path, value, "must be an integer or a string"),
        ValidationErrorKind::Minimum { limit } => {
            FieldError::invalid(path, value, format!("must be greater than or equal to {}", number(limit)))
        }
        ValidationErrorKind::Maximum { limit } => {
            FieldError::invalid(path, value, format!("must be less than or equal to {}", number(limit)))
        }
        ValidationErrorKind::MaxLength { limit } => FieldError::too_long(path, *limit as usize),
        other => FieldError::invalid(path, value, format!("{other:?}").to_lowercase()),
    }
}

/// A schema limit as a person writes it: `10`, not `10.0`.
fn number(limit: &Value) -> String {
    match limit.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => limit.to_string(),
    }
}

fn describe_type(kind: &jsonschema::error::TypeKind) -> String {
    match kind {
        jsonschema::error::TypeKind::Single(t) => t.to_string(),
        jsonschema::error::TypeKind::Multiple(ts) => {
            ts.iter().map(|t| t.to_string()).filter(|t| t != "null").collect::<Vec<_>>().join(" or ")
        }
    }
}

/// The value to drop for an error at `pointer`: the field that holds the first array on the way,
/// so that indices of the rest of the array keep their meaning.
fn removable_parent(pointer: &str) -> String {
    let mut kept = String::new();
    for token in pointer.split('/').skip(1) {
        if token.parse::<usize>().is_ok() {
            return kept;
        }
        kept.push('/');
        kept.push_str(token);
    }
    kept
}

/// Drops the values at the given pointers (deepest first); the root is never dropped.
pub fn remove_pointers(object: &mut Value, pointers: &[String]) {
    let mut pointers: Vec<&String> = pointers.iter().filter(|p| !p.is_empty()).collect();
    pointers.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for pointer in pointers {
        let Some((parent, last)) = pointer.rsplit_once('/') else { continue };
        let last = last.replace("~1", "/").replace("~0", "~");
        if let Some(Value::Object(map)) = object.pointer_mut(parent) {
            map.remove(&last);
        }
    }
}

/// Makes a Kubernetes structural schema strict JSON Schema, in place.
fn make_strict(node: &mut Value) {
    let Some(map) = node.as_object_mut() else { return };
    if map.remove("nullable") == Some(Value::Bool(true)) {
        allow_null(map);
    }
    if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        map.insert("anyOf".into(), json!([{"type": "integer"}, {"type": "string"}]));
    }
    let preserves_unknown = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserves_unknown {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    if let Some(Value::Object(props)) = map.get_mut("properties") {
        props.values_mut().for_each(make_strict);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = map.get_mut(key) {
            make_strict(child);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(children)) = map.get_mut(key) {
            children.iter_mut().for_each(make_strict);
        }
    }
}

fn allow_null(map: &mut Map<String, Value>) {
    if let Some(Value::String(t)) = map.get("type") {
        let t = t.clone();
        map.insert("type".into(), json!([t, "null"]));
    }
    if let Some(Value::Array(options)) = map.get_mut("enum") {
        options.push(Value::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_for_typos() {
        let known = vec!["image".to_string(), "endpoint".to_string()];
        assert!(unknown_field_detail("imagee", &known).contains("did you mean \"image\""));
        assert!(unknown_field_detail("zzzzzz", &known).contains("one of: image, endpoint"));
    }

    #[test]
    fn removals_stop_at_arrays() {
        assert_eq!(removable_parent("/spec/env/0/name"), "/spec/env");
        assert_eq!(removable_parent("/spec/replicas"), "/spec/replicas");
    }

    #[test]
    fn remove_drops_fields() {
        let mut v = json!({"spec": {"a": 1, "b": {"c": 2}}});
        remove_pointers(&mut v, &["/spec/b/c".into(), "/spec/a".into(), String::new()]);
        assert_eq!(v, json!({"spec": {"b": {}}}));
    }
}
