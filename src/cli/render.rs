//! `mcp-hangar render`: the child objects the controller would apply for MCPServer
//! manifests, as multi-document YAML, after the webhook's defaults.
//!
//! A server the webhook would deny is not rendered: its field errors are printed exactly
//! as `validate` prints them and the exit code is 1.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use super::validate::{self, Document, EXIT_ALLOWED, EXIT_DENIED, EXIT_UNREADABLE, Report};
use super::{CliError, RenderArgs};
use crate::controller::resources;
use crate::crd::{Kind, MCPServer, ServerMode};
use crate::policy::profile::{ProfileRef, resolve_named};
use crate::policy::{Engine, PolicyState};

/// What `render` prints and how it exits.
#[derive(Debug, Default)]
pub struct Rendered {
    /// The YAML documents, for standard output.
    pub yaml: String,
    /// Denials, skipped objects and unreadable inputs, for standard error.
    pub diagnostics: String,
    /// 0 when everything rendered, 1 when a server was refused, 2 when an input was unreadable.
    pub exit_code: u8,
}

/// Renders the children of every MCPServer in the inputs; servers without a namespace are
/// placed in `namespace`.
pub fn render_paths(engine: &Engine, paths: &[PathBuf], recursive: bool, namespace: &str) -> Rendered {
    let (documents, unreadable) = validate::read_paths(paths, recursive);
    let policy = engine.state();
    let mut rendered = Rendered::default();
    let mut documents_out = Vec::new();
    let mut refused = false;
    for document in documents {
        let document = with_namespace(document, namespace);
        let mut report = Report::default();
        validate::review_documents(engine, std::slice::from_ref(&document), &mut report);
        let Some(result) = report.results.first() else {
            rendered.diagnostics.push_str(&validate::render_text(&report));
            continue;
        };
        if result.kind != Kind::Server.as_str() {
            let _ = writeln!(
                rendered.diagnostics,
                "{}: {} {:?} skipped: render only renders MCPServers",
                result.file, result.kind, result.name
            );
            continue;
        }
        if !result.allowed {
            refused = true;
            rendered.diagnostics.push_str(&validate::render_text(&report));
            continue;
        }
        for warning in &result.warnings {
            let _ = writeln!(rendered.diagnostics, "Warning: {warning}");
        }
        let mut object = document.object.clone();
        match json_patch::patch(&mut object, &result.patch)
            .map_err(|e| e.to_string())
            .and_then(|()| serde_json::from_value::<MCPServer>(object).map_err(|e| e.to_string()))
            .and_then(|server| render_server(&server, &policy))
        {
            Ok(mut docs) => documents_out.append(&mut docs),
            Err(error) => {
                refused = true;
                let _ = writeln!(
                    rendered.diagnostics,
                    "{}: MCPServer {:?} cannot be run: {error}",
                    result.file, result.name
                );
            }
        }
    }
    for error in &unreadable {
        let _ = writeln!(rendered.diagnostics, "error: {error}");
    }
    rendered.yaml = documents_out.join("---\n");
    rendered.exit_code = if !unreadable.is_empty() {
        EXIT_UNREADABLE
    } else if refused {
        EXIT_DENIED
    } else {
        EXIT_ALLOWED
    };
    rendered
}

fn with_namespace(mut document: Document, namespace: &str) -> Document {
    if let Some(Value::Object(metadata)) = document.object.get_mut("metadata")
        && metadata.get("namespace").and_then(Value::as_str).is_none_or(str::is_empty)
    {
        metadata.insert("namespace".into(), Value::String(namespace.to_string()));
    }
    document
}

/// The YAML documents of one (defaulted) server's children under `policy`, each headed by
/// a comment. ConfigMap profiles live in the cluster, so they cannot be rendered offline.
pub fn render_server(server: &MCPServer, policy: &PolicyState) -> Result<Vec<String>, String> {
    let name = server.metadata.name.clone().unwrap_or_default();
    let namespace = server.metadata.namespace.clone().unwrap_or_default();
    if server.spec.mode == Some(ServerMode::Remote) {
        let endpoint = server.spec.endpoint.clone().unwrap_or_default();
        return Ok(vec![format!(
            "# MCPServer {namespace}/{name}: remote mode runs no workload; the controller health-checks {endpoint}\n"
        )]);
    }
    let profile = match ProfileRef::of(&server.spec, policy).map_err(|e| e.to_string())? {
        ProfileRef::Named(name) => resolve_named(&name, policy).map_err(|e| e.to_string())?,
        ProfileRef::ConfigMap { name, key } => {
            return Err(format!(
                "its permission profile is read from ConfigMap {name:?} (key {key:?}) in the cluster; render only resolves named profiles"
            ));
        }
    };
    let children = resources::desired_children(server, &profile, resources::DEFAULT_OPERATOR_NAMESPACE, false)
        .map_err(|e| e.to_string())?;
    Ok(children
        .into_children()
        .into_iter()
        .map(|child| {
            let yaml = serde_saphyr::to_string(&child.to_value()).unwrap_or_default();
            format!("# {} of MCPServer {namespace}/{name}\n{yaml}", child.kind())
        })
        .collect())
}

pub(super) fn run(args: &RenderArgs) -> Result<ExitCode, CliError> {
    let engine = Engine::new()?;
    let rendered = render_paths(&engine, &args.files, args.recursive, &args.namespace);
    super::emit(&rendered.yaml);
    if !rendered.diagnostics.is_empty() {
        eprint!("{}", rendered.diagnostics);
    }
    Ok(ExitCode::from(rendered.exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
    }

    #[test]
    fn every_example_server_renders() {
        let engine = Engine::new().unwrap();
        let rendered = render_paths(&engine, &[examples()], false, "default");
        assert_eq!(rendered.exit_code, EXIT_ALLOWED, "{}", rendered.diagnostics);
        let objects: Vec<Value> = serde_saphyr::from_multiple(&rendered.yaml).unwrap();
        let deployments = objects.iter().filter(|o| o["kind"] == "Deployment").count();
        assert!(deployments >= 6, "one Deployment per container server, got {deployments}");
        assert!(rendered.yaml.contains("# MCPServer mcp-servers/external-api: remote mode runs no workload"));
        assert!(rendered.diagnostics.contains("MCPServerGroup"));
    }

    #[test]
    fn defaults_are_applied_and_namespace_filled_in() {
        let engine = Engine::new().unwrap();
        let file = examples().join("mcpserver-cold-start.yaml");
        let rendered = render_paths(&engine, &[file], false, "tools");
        assert_eq!(rendered.exit_code, EXIT_ALLOWED, "{}", rendered.diagnostics);
        let objects: Vec<Value> = serde_saphyr::from_multiple(&rendered.yaml).unwrap();
        let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert_eq!(deployment["metadata"]["namespace"], "tools");
        assert_eq!(deployment["spec"]["replicas"], 0);
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["securityContext"]["runAsUser"], 65534);
        assert_eq!(container["ports"][0]["containerPort"], 8080);
    }

    #[test]
    fn invalid_servers_are_refused_with_the_webhook_errors() {
        let engine = Engine::new().unwrap();
        let dir = std::env::temp_dir().join(format!("mcp-hangar-render-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.yaml");
        std::fs::write(
            &file,
            "apiVersion: mcp-hangar.io/v1alpha1\nkind: MCPServer\nmetadata:\n  name: bad\nspec:\n  mode: container\n  securityContext:\n    privileged: true\n",
        )
        .unwrap();
        let rendered = render_paths(&engine, std::slice::from_ref(&file), false, "default");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(rendered.exit_code, EXIT_DENIED);
        assert!(rendered.yaml.is_empty());
        assert!(rendered.diagnostics.contains("The MCPServer \"bad\" is invalid:"), "{}", rendered.diagnostics);
        assert!(rendered.diagnostics.contains("* spec.image: Required value"), "{}", rendered.diagnostics);
        assert!(rendered.diagnostics.contains("spec.securityContext.privileged"), "{}", rendered.diagnostics);
    }

    #[test]
    fn missing_files_are_unreadable() {
        let engine = Engine::new().unwrap();
        let rendered = render_paths(&engine, &[PathBuf::from("/nonexistent/server.yaml")], false, "default");
        assert_eq!(rendered.exit_code, EXIT_UNREADABLE);
    }
}
