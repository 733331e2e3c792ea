//! `mcp-hangar certs generate` then `mcp-hangar serve --tls-mode=files`: HTTPS without a
//! cluster, verified against the generated CA.

#[path = "support/https.rs"]
mod https;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mcp_hangar::tls::inspect;

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-hangar");

fn scratch_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let dir = std::env::temp_dir().join(format!("mcp-hangar-certs-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Kills the server when the test ends, even on a failed assertion.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn generated_certificates_serve_https_without_a_cluster() {
    let out = scratch_dir();
    let status = Command::new(BINARY)
        .args([
            "certs",
            "generate",
            "--service",
            "hangar-webhook",
            "--namespace",
            "dev",
            "--san",
            "localhost",
            "--san",
            "127.0.0.1",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let read = |name: &str| std::fs::read(out.join(name)).unwrap();
    let ca = inspect::inspect(&read("ca.crt")).unwrap();
    let leaf = inspect::inspect(&read("tls.crt")).unwrap();
    assert!(ca.is_ca && leaf.is_signed_by(&ca));
    assert_eq!(
        leaf.sans,
        vec!["hangar-webhook.dev.svc", "hangar-webhook.dev.svc.cluster.local", "localhost", "127.0.0.1"]
    );
    assert!(inspect::key_matches(&leaf, &read("tls.key")));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "tls.key"] {
            assert_eq!(
                std::fs::metadata(out.join(key)).unwrap().permissions().mode() & 0o777,
                0o600,
                "{key} is private"
            );
        }
    }

    let (webhook, admin) = (free_port(), free_port());
    let _server = Server(
        Command::new(BINARY)
            .args(["serve", "--tls-mode=files", "--policy-source=shipped", "--log-format", "text"])
            .arg("--tls-cert-file")
            .arg(out.join("tls.crt"))
            .arg("--tls-key-file")
            .arg(out.join("tls.key"))
            .args(["--webhook-addr", &webhook.to_string(), "--admin-addr", &admin.to_string()])
            .env_remove("POD_NAMESPACE")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let config = https::client_config(&read("ca.crt")).unwrap();
    let mut connection = None;
    for _ in 0..100 {
        match https::connect(webhook, "localhost", config.clone()).await {
            Ok(open) => {
                connection = Some(open);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut connection = connection.expect("the server answers HTTPS");
    assert_eq!(connection.peer_certificate, leaf.der);
    let (status, answer) = connection.post_json("/validate", &https::admission_review("cli-1")).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["uid"], "cli-1");

    let readyz = tokio::net::TcpStream::connect(admin).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(readyz)).await.unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get("/readyz")
        .header("host", "admin")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status().as_u16(), 200);
    let _ = std::fs::remove_dir_all(&out);
}
