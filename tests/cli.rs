//! The binary: `render` and the `serve` switches that decide whether a cluster is needed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mcp-hangar"))
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-hangar-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn render_prints_the_children_as_yaml() {
    let output = binary().args(["render", "-f"]).arg(example("mcpserver-basic.yaml")).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let objects: Vec<Value> = serde_saphyr::from_multiple(&stdout).unwrap();
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(kinds, ["ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "Service", "Deployment"]);
    let deployment = &objects[5];
    assert_eq!(deployment["metadata"]["namespace"], "mcp-servers");
    assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"], "512Mi");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("Warning:"), "the webhook's warnings are shown: {stderr}");
}

#[test]
fn render_refuses_an_invalid_server_with_the_webhook_errors() {
    let dir = scratch("invalid");
    let file = dir.join("server.yaml");
    std::fs::write(
        &file,
        "apiVersion: mcp-hangar.io/v1alpha1\nkind: MCPServer\nmetadata:\n  name: bad\nspec:\n  mode: container\n  image: a/b:1\n  env:\n  - name: API_TOKEN\n    value: hunter2\n",
    )
    .unwrap();
    let output = binary().args(["render", "-f"]).arg(&file).output().unwrap();
    let validate = binary().args(["validate", "-f"]).arg(&file).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("is invalid: spec.env[0].value: Forbidden"), "{stderr}");
    assert_eq!(stderr, String::from_utf8(validate.stdout).unwrap(), "same text as validate");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn test_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, issued.cert.pem()).unwrap();
    std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// `serve` without a cluster: files TLS from `dir`, the shipped policy, no kubeconfig.
fn serve_command(dir: &Path, flags: &[&str]) -> Command {
    let (cert, key) = test_certificate(dir);
    let mut command = binary();
    command
        .args(["serve", "--tls-mode=files", "--policy-source=shipped", "--log-format", "text"])
        .args(flags)
        .args(["--webhook-addr", &format!("127.0.0.1:{}", free_port())])
        .arg("--tls-cert-file")
        .arg(cert)
        .arg("--tls-key-file")
        .arg(key)
        .env("KUBECONFIG", dir.join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST");
    command
}

/// Runs `serve` without a cluster (files TLS, shipped policy) with `extra` flags, waits for
/// readiness, stops it with SIGTERM and returns its standard error.
fn serve_without_a_cluster(extra: &[&str]) -> String {
    let dir = scratch(&format!("serve{}", extra.len()));
    let admin = free_port();
    let child = serve_command(&dir, extra)
        .args(["--shutdown-delay", "0s", "--admin-addr", &format!("127.0.0.1:{admin}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        if let Some(answer) = get(admin, "/readyz") {
            break answer;
        }
        assert!(Instant::now() < deadline, "serve did not come up");
        assert!(server.0.try_wait().unwrap().is_none(), "serve exited early");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    server.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    stderr
}

#[test]
fn serve_without_the_controller_needs_no_cluster() {
    let stderr = serve_without_a_cluster(&["--controller=false"]);
    assert!(!stderr.contains("the controller is off"), "{stderr}");
}

#[test]
fn serve_runs_the_webhook_alone_when_no_cluster_is_configured() {
    let stderr = serve_without_a_cluster(&[]);
    assert!(stderr.contains("the controller is off"), "{stderr}");
}

#[test]
fn a_required_controller_without_a_cluster_says_what_to_do() {
    let dir = scratch("nocluster");
    let run = |flags: &[&str]| {
        serve_command(&dir, flags).args(["--admin-addr", &format!("127.0.0.1:{}", free_port())]).output().unwrap()
    };
    let required = run(&["--controller=true"]);
    let alone = run(&["--webhook=false"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(required.status.code(), Some(2));
    let stderr = String::from_utf8(required.stderr).unwrap();
    assert!(stderr.contains("--controller=false"), "{stderr}");
    assert_eq!(alone.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&alone.stderr).contains("nothing to serve"));
}

#[test]
fn serve_needs_something_to_serve() {
    let output = binary().args(["serve", "--webhook=false", "--controller=false"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing to serve"));
}
