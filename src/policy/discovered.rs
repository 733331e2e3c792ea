//! What a discovery source wants, computed without I/O: the server definitions found in
//! annotated Services or in a ConfigMap's YAML list, the provider template merged under them,
//! and the labels and annotations that mark a server as the source's.
//!
//! The ConfigMap format: key [`CONFIG_MAP_KEY`] (`servers.yaml`) holds a YAML list of
//! `{name, labels?, spec}` entries, where `spec` is an MCPServer spec (container or remote).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use serde_json::{Map, Value, json};

use super::format::parse_positive_duration;
use crate::crd::{
    API_VERSION, DISCOVERY_HASH_ANNOTATION, DISCOVERY_SOURCE_ANNOTATION, DISCOVERY_SOURCE_LABEL, MCPDiscoverySource,
    SERVICE_ENABLED_ANNOTATION, SERVICE_PATH_ANNOTATION, SERVICE_PORT_ANNOTATION, SERVICE_TRANSPORT_ANNOTATION,
};

pub use crate::crd::CONFIG_MAP_KEY;

/// Path of a discovered Service's MCP endpoint when it does not say.
pub const DEFAULT_PATH: &str = "/mcp";
/// Resync period of a source without `refreshInterval`.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Most entries one ConfigMap may list.
pub const MAX_ENTRIES: usize = 10_000;
/// Most servers a source's status lists.
pub const MAX_LISTED_SERVERS: usize = 100;
/// Most entry errors a source's status lists.
pub const MAX_LISTED_ERRORS: usize = 20;
/// Longest label value Kubernetes accepts.
const MAX_LABEL_VALUE: usize = 63;

/// Spec fields that mean something for a remote server; the rest only shape a container.
const REMOTE_FIELDS: [&str; 6] = ["mode", "endpoint", "transport", "healthCheck", "tools", "circuitBreaker"];
/// Spec fields that mean nothing for a container server.
const CONTAINER_IGNORED_FIELDS: [&str; 1] = ["endpoint"];

/// Why a whole source could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The ConfigMap lacks the key.
    #[error("the ConfigMap has no key {CONFIG_MAP_KEY:?}: put the YAML list of servers there")]
    MissingKey,
    /// The key is not a YAML list.
    #[error("{CONFIG_MAP_KEY} is not a YAML list of {{name, labels, spec}} entries: {0}")]
    InvalidYaml(String),
    /// Too many entries.
    #[error("{CONFIG_MAP_KEY} lists {0} entries; at most {MAX_ENTRIES} are allowed")]
    TooManyEntries(usize),
    /// The namespace selector cannot be used.
    #[error("spec.namespaceSelector is invalid: {0}")]
    InvalidSelector(String),
}

/// One entry the source lists that does not become a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    /// `namespace/name` of the server it would be, when known.
    pub key: Option<ServerKey>,
    /// Where it is in the source, when the key is unknown.
    pub entry: String,
    /// Why.
    pub message: String,
}

impl EntryError {
    fn of(key: ServerKey, message: impl Into<String>) -> EntryError {
        EntryError { entry: key.to_string(), key: Some(key), message: message.into() }
    }
}

/// Namespace and name of a server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One server definition found in a source, before the template.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Where the server goes.
    pub key: ServerKey,
    /// Labels the entry asks for.
    pub labels: BTreeMap<String, String>,
    /// The MCPServer spec as the source wrote it.
    pub spec: Map<String, Value>,
}

/// `<namespace>/<name>` of a source: the value of [`DISCOVERY_SOURCE_ANNOTATION`].
pub fn source_id(source: &MCPDiscoverySource) -> String {
    format!("{}/{}", source.namespace().unwrap_or_default(), source.name_any())
}

/// The value of [`DISCOVERY_SOURCE_LABEL`]: `<namespace>.<name>`, or its first characters and
/// a hash when that is longer than a label value may be.
pub fn source_label(source: &MCPDiscoverySource) -> String {
    let full = format!("{}.{}", source.namespace().unwrap_or_default(), source.name_any());
    if full.len() <= MAX_LABEL_VALUE {
        return full;
    }
    let hash = format!("{:016x}", fnv1a(full.as_bytes()));
    let room = MAX_LABEL_VALUE - hash.len() - 1;
    let prefix = full[..room].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{prefix}-{hash}")
}

/// The source's refresh interval, defaulted.
pub fn refresh_interval(source: &MCPDiscoverySource) -> Duration {
    source
        .spec
        .refresh_interval
        .as_deref()
        .and_then(|text| parse_positive_duration(text).ok())
        .map_or(DEFAULT_REFRESH_INTERVAL, |d| d.max(super::MIN_REFRESH_INTERVAL))
}

/// Whether `annotations` say the server belongs to the source with id `source_id`.
pub fn is_managed_by(annotations: &BTreeMap<String, String>, source_id: &str) -> bool {
    annotations.get(DISCOVERY_SOURCE_ANNOTATION).is_some_and(|id| id == source_id)
}

/// The server an annotated Service stands for: `None` when it is not annotated
/// `mcp-hangar.io/enabled: "true"`.
pub fn from_service(service: &Service) -> Option<Result<Entry, EntryError>> {
    let annotations = service.metadata.annotations.as_ref()?;
    if annotations.get(SERVICE_ENABLED_ANNOTATION).map(String::as_str) != Some("true") {
        return None;
    }
    let key = ServerKey { namespace: service.namespace().unwrap_or_default(), name: service.name_any() };
    Some(service_entry(service, annotations, key))
}

fn service_entry(
    service: &Service,
    annotations: &BTreeMap<String, String>,
    key: ServerKey,
) -> Result<Entry, EntryError> {
    let port = service_port(service, annotations.get(SERVICE_PORT_ANNOTATION).map(String::as_str))
        .map_err(|message| EntryError::of(key.clone(), message))?;
    let path = annotations.get(SERVICE_PATH_ANNOTATION).map_or(DEFAULT_PATH, String::as_str);
    if !path.starts_with('/') {
        return Err(EntryError::of(key, format!("{SERVICE_PATH_ANNOTATION} must start with '/', got {path:?}")));
    }
    let mut spec = Map::new();
    spec.insert("mode".into(), json!("remote"));
    spec.insert("endpoint".into(), json!(format!("http://{}.{}.svc:{port}{path}", key.name, key.namespace)));
    if let Some(transport) = annotations.get(SERVICE_TRANSPORT_ANNOTATION) {
        if !matches!(transport.as_str(), "streamable-http" | "sse") {
            return Err(EntryError::of(
                key,
                format!(
                    "{SERVICE_TRANSPORT_ANNOTATION} must be streamable-http or sse (a Service is reached over HTTP), got {transport:?}"
                ),
            ));
        }
        spec.insert("transport".into(), json!(transport));
    }
    Ok(Entry { key, labels: BTreeMap::new(), spec })
}

/// The port of the MCP endpoint: the annotation (a port number or name of the Service), else
/// the port named `mcp`, else the only port.
fn service_port(service: &Service, annotation: Option<&str>) -> Result<i32, String> {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default();
    if let Some(wanted) = annotation {
        let found = match wanted.parse::<i32>() {
            Ok(number) => ports.iter().find(|p| p.port == number),
            Err(_) => ports.iter().find(|p| p.name.as_deref() == Some(wanted)),
        };
        return found.map(|p| p.port).ok_or_else(|| {
            format!("{SERVICE_PORT_ANNOTATION} is {wanted:?}, but the Service has no port with that number or name")
        });
    }
    if let Some(port) = ports.iter().find(|p| p.name.as_deref() == Some("mcp")) {
        return Ok(port.port);
    }
    match ports {
        [only] => Ok(only.port),
        [] => Err("the Service has no port".to_string()),
        _ => Err(format!(
            "the Service has {} ports and none is named mcp: name one mcp or set {SERVICE_PORT_ANNOTATION}",
            ports.len()
        )),
    }
}

/// The entries of a discovery ConfigMap's [`CONFIG_MAP_KEY`], for servers in `namespace`.
pub fn from_config_map(yaml: &str, namespace: &str) -> Result<Vec<Result<Entry, EntryError>>, SourceError> {
    let document: Value = serde_saphyr::from_str(yaml).map_err(|e| SourceError::InvalidYaml(e.to_string()))?;
    let items = match document {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => return Err(SourceError::InvalidYaml(format!("expected a list, found {}", type_name(&other)))),
    };
    if items.len() > MAX_ENTRIES {
        return Err(SourceError::TooManyEntries(items.len()));
    }
    let mut seen = BTreeSet::new();
    let entries = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let entry = config_entry(item, index, namespace)?;
            if !seen.insert(entry.key.name.clone()) {
                return Err(EntryError {
                    key: None,
                    entry: format!("{CONFIG_MAP_KEY}[{index}]"),
                    message: format!(
                        "name {:?} is listed more than once; only the first entry is used",
                        entry.key.name
                    ),
                });
            }
            Ok(entry)
        })
        .collect();
    Ok(entries)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn config_entry(item: Value, index: usize, namespace: &str) -> Result<Entry, EntryError> {
    let place = format!("{CONFIG_MAP_KEY}[{index}]");
    let fail = |message: String| EntryError { key: None, entry: place.clone(), message };
    let Value::Object(mut item) = item else {
        return Err(fail(format!("expected a mapping with name and spec, found {}", type_name(&item))));
    };
    let name = match item.remove("name") {
        Some(Value::String(name)) if !name.is_empty() => name,
        _ => return Err(fail("name is required: the MCPServer's name".to_string())),
    };
    let key = ServerKey { namespace: namespace.to_string(), name };
    let labels = match item.remove("labels") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(labels) => serde_json::from_value(labels)
            .map_err(|e| EntryError::of(key.clone(), format!("labels must map strings to strings: {e}")))?,
    };
    let spec = match item.remove("spec") {
        Some(Value::Object(spec)) => spec,
        _ => return Err(EntryError::of(key, "spec is required: an MCPServer spec (mode container or remote)")),
    };
    if let Some(unknown) = item.keys().next() {
        return Err(EntryError::of(key, format!("unknown field {unknown:?}: an entry has name, labels and spec")));
    }
    Ok(Entry { key, labels, spec })
}

/// `entry` with the template merged under it (the entry wins, objects merge key by key) and
/// the template's fields that do not apply to the resulting mode removed; returns the spec and
/// the names of the removed fields.
pub fn merge_template(
    entry: &Map<String, Value>,
    template: Option<&Map<String, Value>>,
) -> (Map<String, Value>, Vec<String>) {
    let Some(template) = template else {
        return (entry.clone(), Vec::new());
    };
    let mut merged = template.clone();
    for (key, value) in entry {
        match (merged.get_mut(key), value) {
            (Some(Value::Object(base)), Value::Object(over)) => merge_objects(base, over),
            _ => {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    let applies = |field: &str| match merged.get("mode").and_then(Value::as_str) {
        Some("remote") => REMOTE_FIELDS.contains(&field),
        Some("container") => !CONTAINER_IGNORED_FIELDS.contains(&field),
        _ => true,
    };
    let ignored: Vec<String> = template.keys().filter(|k| !entry.contains_key(*k) && !applies(k)).cloned().collect();
    for field in &ignored {
        merged.remove(field);
    }
    (merged, ignored)
}

fn merge_objects(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(Value::Object(inner)), Value::Object(over)) => merge_objects(inner, over),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The MCPServer a source applies for an entry, and the template fields it ignored.
pub struct Desired {
    /// The apply body.
    pub object: Value,
    /// Hash of what the source wants; stored in [`DISCOVERY_HASH_ANNOTATION`].
    pub hash: String,
    /// Template fields that do not apply to this server's mode.
    pub ignored: Vec<String>,
}

/// The apply body for `entry`: its spec over the template, its labels plus the source label,
/// and the source and hash annotations.
pub fn desired(source: &MCPDiscoverySource, entry: &Entry) -> Desired {
    let template = source
        .spec
        .provider_template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .and_then(|spec| serde_json::to_value(spec).ok())
        .and_then(|v| match v {
            Value::Object(map) => Some(map),
            _ => None,
        });
    let (spec, ignored) = merge_template(&entry.spec, template.as_ref());
    let mut labels = entry.labels.clone();
    labels.insert(DISCOVERY_SOURCE_LABEL.to_string(), source_label(source));
    let hash = format!("{:016x}", fnv1a(json!({"labels": labels, "spec": spec}).to_string().as_bytes()));
    let object = json!({
        "apiVersion": API_VERSION,
        "kind": "MCPServer",
        "metadata": {
            "name": entry.key.name,
            "namespace": entry.key.namespace,
            "labels": labels,
            "annotations": {DISCOVERY_SOURCE_ANNOTATION: source_id(source), DISCOVERY_HASH_ANNOTATION: hash},
        },
        "spec": spec,
    });
    Desired { object, hash, ignored }
}

/// 64-bit FNV-1a: a stable hash (std's hasher may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MCPServerSpec, ProviderTemplate};
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};

    fn service(annotations: &[(&str, &str)], ports: &[(Option<&str>, i32)]) -> Service {
        let mut service = Service::default();
        service.metadata.name = Some("weather".into());
        service.metadata.namespace = Some("team-a".into());
        service.metadata.annotations = Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        service.spec = Some(ServiceSpec {
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| ServicePort {
                        name: name.map(str::to_string),
                        port: *port,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        service
    }

    fn endpoint(service: &Service) -> Result<String, String> {
        match from_service(service) {
            None => Err("not discovered".into()),
            Some(Err(e)) => Err(e.message),
            Some(Ok(entry)) => Ok(entry.spec["endpoint"].as_str().unwrap().to_string()),
        }
    }

    #[test]
    fn services_opt_in_with_the_enabled_annotation() {
        assert!(from_service(&service(&[], &[(None, 80)])).is_none());
        assert!(from_service(&service(&[(SERVICE_ENABLED_ANNOTATION, "false")], &[(None, 80)])).is_none());
        let entry = from_service(&service(&[(SERVICE_ENABLED_ANNOTATION, "true")], &[(None, 80)])).unwrap().unwrap();
        assert_eq!(entry.key, ServerKey { namespace: "team-a".into(), name: "weather".into() });
        assert_eq!(
            Value::Object(entry.spec),
            json!({"mode": "remote", "endpoint": "http://weather.team-a.svc:80/mcp"})
        );
    }

    #[test]
    fn the_port_comes_from_the_annotation_the_mcp_port_or_the_only_port() {
        let on = (SERVICE_ENABLED_ANNOTATION, "true");
        let two = [(Some("http"), 80), (Some("mcp"), 9000)];
        assert_eq!(endpoint(&service(&[on], &two)).unwrap(), "http://weather.team-a.svc:9000/mcp");
        assert_eq!(
            endpoint(&service(&[on, (SERVICE_PORT_ANNOTATION, "80")], &two)).unwrap(),
            "http://weather.team-a.svc:80/mcp"
        );
        assert_eq!(
            endpoint(&service(&[on, (SERVICE_PORT_ANNOTATION, "http")], &two)).unwrap(),
            "http://weather.team-a.svc:80/mcp"
        );
        assert!(endpoint(&service(&[on, (SERVICE_PORT_ANNOTATION, "81")], &two)).unwrap_err().contains("no port"));
        let unnamed = [(Some("a"), 80), (Some("b"), 81)];
        assert!(endpoint(&service(&[on], &unnamed)).unwrap_err().contains("none is named mcp"));
        assert!(endpoint(&service(&[on], &[])).unwrap_err().contains("no port"));
    }

    #[test]
    fn path_and_transport_come_from_annotations() {
        let on = (SERVICE_ENABLED_ANNOTATION, "true");
        let s = service(
            &[on, (SERVICE_PATH_ANNOTATION, "/v1/mcp"), (SERVICE_TRANSPORT_ANNOTATION, "sse")],
            &[(None, 8080)],
        );
        let entry = from_service(&s).unwrap().unwrap();
        assert_eq!(entry.spec["endpoint"], "http://weather.team-a.svc:8080/v1/mcp");
        assert_eq!(entry.spec["transport"], "sse");
        assert!(
            endpoint(&service(&[on, (SERVICE_PATH_ANNOTATION, "mcp")], &[(None, 80)]))
                .unwrap_err()
                .contains("start with")
        );
        let stdio = service(&[on, (SERVICE_TRANSPORT_ANNOTATION, "stdio")], &[(None, 80)]);
        assert!(endpoint(&stdio).unwrap_err().contains("streamable-http or sse"));
    }

    #[test]
    fn config_maps_list_entries_and_report_bad_ones_alone() {
        let yaml = "
- name: weather
  labels: {team: a}
  spec: {mode: remote, endpoint: 'https://weather.example.com/mcp'}
- name: fetch
  spec: {mode: container, image: 'ghcr.io/org/fetch:1.0.0'}
- spec: {mode: remote}
- name: weather
  spec: {mode: remote, endpoint: 'https://other.example.com/mcp'}
- name: extra
  spec: {mode: remote}
  replicas: 2
- just a string
";
        let entries = from_config_map(yaml, "tools").unwrap();
        assert_eq!(entries.len(), 6);
        let weather = entries[0].as_ref().unwrap();
        assert_eq!(weather.key.to_string(), "tools/weather");
        assert_eq!(weather.labels["team"], "a");
        assert!(entries[1].is_ok());
        assert!(entries[2].as_ref().unwrap_err().message.contains("name is required"));
        assert!(entries[3].as_ref().unwrap_err().message.contains("more than once"));
        let extra = entries[4].as_ref().unwrap_err();
        assert_eq!((extra.entry.as_str(), extra.key.is_some()), ("tools/extra", true));
        assert!(extra.message.contains("unknown field \"replicas\""));
        assert!(entries[5].as_ref().unwrap_err().message.contains("found a string"));
    }

    #[test]
    fn config_maps_that_are_not_lists_are_refused() {
        assert!(matches!(from_config_map("name: x", "ns"), Err(SourceError::InvalidYaml(_))));
        assert!(matches!(from_config_map("[unclosed", "ns"), Err(SourceError::InvalidYaml(_))));
        assert_eq!(from_config_map("", "ns").unwrap().len(), 0);
        let many = "- {}\n".repeat(MAX_ENTRIES + 1);
        assert_eq!(from_config_map(&many, "ns").unwrap_err(), SourceError::TooManyEntries(MAX_ENTRIES + 1));
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn the_template_goes_under_and_container_fields_are_dropped_for_remote_servers() {
        let template = object(json!({
            "idleTTL": "5m",
            "resources": {"requests": {"memory": "64Mi"}},
            "healthCheck": {"interval": "1m", "timeout": "5s"},
            "transport": "sse",
        }));
        let entry = object(json!({
            "mode": "remote", "endpoint": "http://x.ns.svc:80/mcp",
            "healthCheck": {"timeout": "2s"}, "transport": "streamable-http",
        }));
        let (merged, ignored) = merge_template(&entry, Some(&template));
        assert_eq!(
            Value::Object(merged),
            json!({
                "mode": "remote", "endpoint": "http://x.ns.svc:80/mcp", "transport": "streamable-http",
                "healthCheck": {"interval": "1m", "timeout": "2s"},
            })
        );
        assert_eq!(ignored, ["idleTTL", "resources"]);
        let container = object(json!({"mode": "container", "image": "a/b:1"}));
        let (merged, ignored) = merge_template(&container, Some(&template));
        assert_eq!(merged["idleTTL"], "5m");
        assert!(ignored.is_empty());
    }

    fn source(namespace: &str, name: &str) -> MCPDiscoverySource {
        let mut source = MCPDiscoverySource::new(name, Default::default());
        source.metadata.namespace = Some(namespace.into());
        source
    }

    #[test]
    fn desired_servers_carry_the_source_label_annotation_and_a_stable_hash() {
        let mut src = source("mcp-system", "team");
        src.spec.provider_template =
            Some(ProviderTemplate { spec: Some(MCPServerSpec { idle_ttl: Some("5m".into()), ..Default::default() }) });
        let entry = Entry {
            key: ServerKey { namespace: "a".into(), name: "w".into() },
            labels: BTreeMap::from([(DISCOVERY_SOURCE_LABEL.to_string(), "forged".to_string())]),
            spec: object(json!({"mode": "remote", "endpoint": "http://w.a.svc:80/mcp"})),
        };
        let first = desired(&src, &entry);
        assert_eq!(first.object["metadata"]["labels"][DISCOVERY_SOURCE_LABEL], "mcp-system.team");
        assert_eq!(first.object["metadata"]["annotations"][DISCOVERY_SOURCE_ANNOTATION], "mcp-system/team");
        assert_eq!(first.object["metadata"]["annotations"][DISCOVERY_HASH_ANNOTATION], first.hash.as_str());
        assert_eq!(first.ignored, ["idleTTL"]);
        assert_eq!(desired(&src, &entry).hash, first.hash);
        let mut changed = entry.clone();
        changed.spec.insert("transport".into(), json!("sse"));
        assert_ne!(desired(&src, &changed).hash, first.hash);
    }

    #[test]
    fn long_source_names_make_valid_distinct_labels() {
        let long = "n".repeat(60);
        let a = source_label(&source("team-a", &long));
        let b = source_label(&source("team-b", &long));
        assert!(a.len() <= MAX_LABEL_VALUE && b.len() <= MAX_LABEL_VALUE);
        assert_ne!(a, b);
        assert!(a.chars().last().unwrap().is_ascii_alphanumeric());
        assert_eq!(source_label(&source("ns", "short")), "ns.short");
    }

    #[test]
    fn refresh_interval_defaults_and_floors() {
        let mut src = source("ns", "s");
        assert_eq!(refresh_interval(&src), DEFAULT_REFRESH_INTERVAL);
        src.spec.refresh_interval = Some("1m".into());
        assert_eq!(refresh_interval(&src), Duration::from_secs(60));
        src.spec.refresh_interval = Some("1s".into());
        assert_eq!(refresh_interval(&src), super::super::MIN_REFRESH_INTERVAL);
    }
}
