//! The official MCP SDKs as test peers: installed by `.ci/peers.sh` into `.tools/peers`
//! (idempotent, locked), started on 127.0.0.1 and killed when dropped.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The install root of the peers (`.tools/peers`), installing them on first use.
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join(".ci/peers.sh"))
            .current_dir(repo())
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs .ci/peers.sh");
        assert!(out.status.success(), ".ci/peers.sh failed");
        let text = String::from_utf8(out.stdout).expect("a path");
        PathBuf::from(text.lines().last().expect("the install root").trim())
    })
}

/// The Python of the peers' venv (with the `mcp` SDK).
pub fn python() -> PathBuf {
    root().join("venv/bin/python")
}

/// A free port on 127.0.0.1 (free when asked; the peer binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A peer process, killed on drop.
pub struct Peer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(addr: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the peer on {addr} exited: {status}");
        }
        assert!(Instant::now() < deadline, "the peer on {addr} did not listen within 60s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tests/peers/py_server.py`: a Python SDK server named `name`, whose `wait_for_gate` tool
/// waits for the file `gate`.
pub fn python_server(name: &str, gate: &Path) -> Peer {
    python_server_for(name, gate, &[])
}

/// [`python_server`] that also accepts the Host headers `hosts` (`name:*` patterns), as a
/// server behind a Service name would.
pub fn python_server_for(name: &str, gate: &Path, hosts: &[String]) -> Peer {
    let port = free_port();
    let mut child = Command::new(python())
        .arg(repo().join("tests/peers/py_server.py"))
        .arg(port.to_string())
        .arg(name)
        .arg(gate)
        .arg(hosts.join(","))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python starts");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(addr, &mut child);
    Peer { child, addr }
}

/// Runs `tests/peers/py_client.py` (the Python SDK's client) and returns what it printed.
pub async fn python_client(url: &str, mode: &str, scenario: &str) -> serde_json::Value {
    python_client_with_token(url, mode, scenario, None).await
}

/// [`python_client`], sending `Authorization: Bearer <token>` when given.
pub async fn python_client_with_token(url: &str, mode: &str, scenario: &str, token: Option<&str>) -> serde_json::Value {
    let mut command = tokio::process::Command::new(python());
    command.arg(repo().join("tests/peers/py_client.py")).args([url, mode, scenario]).kill_on_drop(true);
    if let Some(token) = token {
        command.env("MCP_BEARER_TOKEN", token);
    }
    let out = command.output();
    let out = tokio::time::timeout(Duration::from_secs(120), out).await.expect("the client finishes").unwrap();
    assert!(
        out.status.success(),
        "py_client {mode} {scenario} failed: {}",
        String::from_utf8_lossy(&out.stderr).lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );
    serde_json::from_slice(&out.stdout).expect("the client prints JSON")
}

/// `tests/peers/ts_peer.mjs`, copied into the install root so that Node resolves the SDK from
/// its `node_modules` (ES modules ignore NODE_PATH).
pub fn ts_script() -> PathBuf {
    static SCRIPT: OnceLock<PathBuf> = OnceLock::new();
    SCRIPT
        .get_or_init(|| {
            let target = root().join("ts_peer.mjs");
            let staged = root().join(format!(".ts_peer.{}.mjs", std::process::id()));
            std::fs::copy(repo().join("tests/peers/ts_peer.mjs"), &staged).expect("copy ts_peer.mjs");
            std::fs::rename(&staged, &target).expect("install ts_peer.mjs");
            target
        })
        .clone()
}

/// A TypeScript SDK server named `name` (sessions, SSE answers).
pub fn ts_server(name: &str) -> Peer {
    let port = free_port();
    let mut child = Command::new("node")
        .arg(ts_script())
        .args(["server", &port.to_string(), name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node starts");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(addr, &mut child);
    Peer { child, addr }
}

/// Runs the TypeScript SDK client against `url` and returns what it printed.
pub async fn ts_client(url: &str) -> serde_json::Value {
    ts_client_with_token(url, None).await
}

/// [`ts_client`], sending `Authorization: Bearer <token>` when given.
pub async fn ts_client_with_token(url: &str, token: Option<&str>) -> serde_json::Value {
    let mut command = tokio::process::Command::new("node");
    command.arg(ts_script()).args(["client", url]).kill_on_drop(true);
    if let Some(token) = token {
        command.env("MCP_BEARER_TOKEN", token);
    }
    let out = command.output();
    let out = tokio::time::timeout(Duration::from_secs(120), out).await.expect("the client finishes").unwrap();
    assert!(out.status.success(), "ts client failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the client prints JSON")
}

/// The JSON-RPC message of an answer, JSON or the last `data:` of an SSE stream.
pub fn message(body: &[u8]) -> serde_json::Value {
    let text = std::str::from_utf8(body).expect("an answer in UTF-8");
    if let Ok(value) = serde_json::from_str(text) {
        return value;
    }
    let mut data = text.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).filter(|d| !d.is_empty());
    serde_json::from_str(data.next_back().expect("an SSE data line")).expect("JSON in the last data line")
}

/// Waits (30 s at most) until something listens on 127.0.0.1:`port`.
pub async fn listening(port: u16) {
    let ready = async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), ready).await.expect("something listens on the port");
}

/// The sum of the samples of `name` whose labels include `labels`: counter and gauge values,
/// histogram sample counts.
pub fn metric(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let families = registry.gather();
    let Some(family) = families.iter().find(|f| f.name() == name) else { return 0.0 };
    family
        .get_metric()
        .iter()
        .filter(|m| labels.iter().all(|(k, v)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v)))
        .map(|m| m.get_counter().get_value() + m.get_gauge().get_value() + m.get_histogram().get_sample_count() as f64)
        .sum()
}
