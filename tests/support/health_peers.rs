//! Real MCP servers built with the official SDKs, started once per test binary on 127.0.0.1.
//!
//! The SDKs are installed by `.ci/peers.sh` (pinned in `tests/peers/`; idempotent and locked,
//! so every test binary may call it). The server scripts live in `tests/peers/`; each prints
//! `PORT <n>` when listening and exits when its stdin closes, which happens when the test
//! process ends (the pipe is held in a static).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running peer process.
pub struct Peer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    _child: Mutex<(Child, ChildStdin)>,
}

impl Peer {
    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// GETs `path` and parses the JSON answer.
    pub fn get_json(&self, path: &str) -> Value {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the peer");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        let (_, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))
    }

    /// Polls `path` until `done` holds for its JSON, for at most `within`; returns the last
    /// answer. Async, so the client's background work (closing sessions) runs meanwhile.
    pub async fn wait_for(&self, path: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.get_json(path);
            if done(&value) || Instant::now() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The peers install root, installing the SDKs first if needed.
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let output = Command::new("bash")
            .arg(repo().join(".ci/peers.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run .ci/peers.sh");
        assert!(
            output.status.success(),
            ".ci/peers.sh failed: the interop tests need npm and python3 with registry access"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        PathBuf::from(stdout.lines().last().expect("peers.sh prints the install root").trim())
    })
}

fn spawn(mut command: Command, what: &str) -> Peer {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let port = loop {
        let line = lines.next().unwrap_or_else(|| panic!("{what} exited before listening")).expect("read stdout");
        if let Some(port) = line.strip_prefix("PORT ") {
            break port.trim().parse().expect("a port");
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Peer { port, _child: Mutex::new((child, stdin)) }
}

/// The TypeScript servers of `tests/peers/health_servers.mjs` (one process).
pub fn typescript() -> &'static Peer {
    static PEER: OnceLock<Peer> = OnceLock::new();
    PEER.get_or_init(|| {
        let root = root();
        let script = root.join("health_servers.mjs");
        std::fs::copy(repo().join("tests/peers/health_servers.mjs"), &script)
            .expect("copy the script next to node_modules");
        let mut command = Command::new("node");
        command.arg(&script).current_dir(root);
        spawn(command, "the TypeScript peers")
    })
}

/// The Python server of `tests/peers/health_server.py`.
pub fn python() -> &'static Peer {
    static PEER: OnceLock<Peer> = OnceLock::new();
    PEER.get_or_init(|| {
        let root = root();
        let mut command = Command::new(root.join("venv/bin/python"));
        command.arg(repo().join("tests/peers/health_server.py")).current_dir(root);
        spawn(command, "the Python peer")
    })
}
