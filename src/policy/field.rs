//! Field errors in the Kubernetes style: `spec.image: Required value: …`.

use std::cmp::Ordering;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// The kind of a field error, as `k8s.io/apimachinery/pkg/util/validation/field` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ErrorType {
    /// A required field is missing.
    #[serde(rename = "FieldValueRequired")]
    Required,
    /// A value is malformed or out of range.
    #[serde(rename = "FieldValueInvalid")]
    Invalid,
    /// A field or value is not allowed here.
    #[serde(rename = "FieldValueForbidden")]
    Forbidden,
    /// A value is not one of the supported values.
    #[serde(rename = "FieldValueNotSupported")]
    NotSupported,
    /// A value appears twice where it must be unique.
    #[serde(rename = "FieldValueDuplicate")]
    Duplicate,
    /// A value is longer than allowed.
    #[serde(rename = "FieldValueTooLong")]
    TooLong,
}

impl ErrorType {
    /// The machine-readable cause type (`FieldValueRequired`, …).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::TooLong => "FieldValueTooLong",
        }
    }

    /// The human label Kubernetes prints (`Required value`, …).
    pub fn label(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::TooLong => "Too long",
        }
    }
}

/// One violation: where, what kind, and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Full field path, e.g. `spec.env[2].value`.
    pub field: String,
    /// Kind of error.
    pub error_type: ErrorType,
    /// The offending value, already rendered (`"latest"`, `11`), for the types that show it.
    pub value: Option<String>,
    /// What is wrong and what to do instead.
    pub detail: String,
}

/// Longest rendering of an offending value before it is cut short.
const MAX_RENDERED_VALUE: usize = 80;

/// Renders a value the way Go's `%q`/`%v` would show it in a field error, cut to a readable length.
pub fn render_value(value: &Value) -> String {
    let rendered = match value {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        other => other.to_string(),
    };
    if rendered.len() <= MAX_RENDERED_VALUE {
        return rendered;
    }
    let mut cut = MAX_RENDERED_VALUE;
    while !rendered.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &rendered[..cut])
}

impl FieldError {
    fn new(field: &FieldPath, error_type: ErrorType, value: Option<String>, detail: impl Into<String>) -> Self {
        FieldError { field: field.to_string(), error_type, value, detail: detail.into() }
    }

    /// `Required value: <detail>`.
    pub fn required(field: &FieldPath, detail: impl Into<String>) -> Self {
        Self::new(field, ErrorType::Required, None, detail)
    }

    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(field: &FieldPath, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self::new(field, ErrorType::Invalid, Some(render_value(&value.into())), detail)
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: &FieldPath, detail: impl Into<String>) -> Self {
        Self::new(field, ErrorType::Forbidden, None, detail)
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(field: &FieldPath, value: impl Into<Value>, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self::new(
            field,
            ErrorType::NotSupported,
            Some(render_value(&value.into())),
            format!("supported values: {}", list.join(", ")),
        )
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: &FieldPath, value: impl Into<Value>) -> Self {
        Self::new(field, ErrorType::Duplicate, Some(render_value(&value.into())), "")
    }

    /// `Too long: may not be more than <max> bytes`.
    pub fn too_long(field: &FieldPath, max: usize) -> Self {
        Self::new(field, ErrorType::TooLong, None, format!("may not be more than {max} bytes"))
    }

    /// The error without its field, as a status cause's `message` carries it.
    pub fn body(&self) -> String {
        let mut body = self.error_type.label().to_string();
        if let Some(value) = &self.value {
            body.push_str(": ");
            body.push_str(value);
        }
        if !self.detail.is_empty() {
            body.push_str(": ");
            body.push_str(&self.detail);
        }
        body
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// A field path built segment by segment: `spec`, `.env`, `[2]`, `.value`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(String);

impl FieldPath {
    /// A path starting at a top-level field.
    pub fn new(root: &str) -> Self {
        FieldPath(root.to_string())
    }

    /// `path.name`
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            return FieldPath(name.to_string());
        }
        FieldPath(format!("{}.{name}", self.0))
    }

    /// `path[index]`
    pub fn index(&self, index: usize) -> Self {
        FieldPath(format!("{}[{index}]", self.0))
    }

    /// `path[key]`, for map entries.
    pub fn key(&self, key: &str) -> Self {
        FieldPath(format!("{}[{key}]", self.0))
    }

    /// Builds a path from a JSON pointer (`/spec/env/2/value` → `spec.env[2].value`).
    pub fn from_pointer(pointer: &str) -> Self {
        let mut path = FieldPath::default();
        for token in pointer.split('/').skip(1) {
            let token = token.replace("~1", "/").replace("~0", "~");
            path = match token.parse::<usize>() {
                Ok(index) if !path.0.is_empty() => path.index(index),
                _ => path.child(&token),
            };
        }
        path
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One segment of a rendered field path, for ordering.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Segment<'a> {
    Name(&'a str),
    Index(usize),
    Key(&'a str),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Name(name));
        }
        while let Some(end) = rest.find(']') {
            let inner = &rest[1..end];
            out.push(match inner.parse() {
                Ok(i) => Segment::Index(i),
                Err(_) => Segment::Key(inner),
            });
            rest = &rest[end + 1..];
        }
    }
    out
}

/// Orders field paths segment by segment, array indices numerically (`env[2]` before `env[10]`).
pub fn compare_paths(a: &str, b: &str) -> Ordering {
    segments(a).cmp(&segments(b))
}

/// True when `path` is `prefix` or lies below it.
pub fn is_within(path: &str, prefix: &str) -> bool {
    path == prefix || (path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), Some(b'.') | Some(b'[')))
}

/// Puts errors in their stable order (by field, then type, then text) and drops exact repeats.
pub fn sort_errors(errors: &mut Vec<FieldError>) {
    errors.sort_by(|a, b| {
        compare_paths(&a.field, &b.field).then(a.error_type.cmp(&b.error_type)).then_with(|| a.body().cmp(&b.body()))
    });
    errors.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_kubernetes_wording() {
        let p = FieldPath::new("spec").child("image");
        assert_eq!(
            FieldError::required(&p, "container mode needs an image").to_string(),
            "spec.image: Required value: container mode needs an image"
        );
        assert_eq!(
            FieldError::not_supported(&FieldPath::new("spec").child("mode"), "vm", &["container", "remote"]).body(),
            r#"Unsupported value: "vm": supported values: "container", "remote""#
        );
        assert_eq!(
            FieldError::duplicate(&FieldPath::new("spec").child("env").index(1).child("name"), "A").to_string(),
            r#"spec.env[1].name: Duplicate value: "A""#
        );
        assert_eq!(FieldError::invalid(&p, 11, "too big").body(), "Invalid value: 11: too big");
    }

    #[test]
    fn pointers_become_field_paths() {
        assert_eq!(FieldPath::from_pointer("/spec/env/2/value").as_str(), "spec.env[2].value");
        assert_eq!(FieldPath::from_pointer("/metadata/labels/a~1b").as_str(), "metadata.labels.a/b");
        assert_eq!(FieldPath::from_pointer("").as_str(), "");
    }

    #[test]
    fn paths_sort_numerically_and_nest() {
        let mut v = vec!["spec.env[10].name", "spec.env[2].value", "spec.env", "metadata.name"];
        v.sort_by(|a, b| compare_paths(a, b));
        assert_eq!(v, ["metadata.name", "spec.env", "spec.env[2].value", "spec.env[10].name"]);
        assert!(is_within("spec.env[2].value", "spec.env"));
        assert!(!is_within("spec.envFrom", "spec.env"));
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(1000);
        assert!(render_value(&Value::String(long)).len() < 100);
    }
}
