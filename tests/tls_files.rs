//! The files mode picks up a Secret mount updated as the kubelet does it (a new timestamped
//! directory and an atomic swap of the `..data` symlink), and never serves a half-updated pair.

#[path = "support/secret_mount.rs"]
mod secret_mount;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mcp_hangar::metrics::Metrics;
use mcp_hangar::readiness::Readiness;
use mcp_hangar::tls::files::{self, FileSource};
use mcp_hangar::tls::issue::{self, IssuedCertificate, ServingCertRequest};
use mcp_hangar::tls::{CERTIFICATE_CONDITION, CertResolver, inspect};
use secret_mount::publish;

fn scratch_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let dir = std::env::temp_dir().join(format!("mcp-hangar-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn issue(name: &str) -> IssuedCertificate {
    let ca = issue::issue_ca("files CA", Duration::from_secs(3600)).unwrap();
    issue::issue_serving(&ca, &ServingCertRequest { sans: vec![name.to_string()], validity: Duration::from_secs(600) })
        .unwrap()
}

fn served(resolver: &CertResolver) -> Option<Vec<u8>> {
    resolver.current().map(|key| key.cert[0].to_vec())
}

fn der(cert: &IssuedCertificate) -> Vec<u8> {
    inspect::inspect(cert.cert_pem.as_bytes()).unwrap().der
}

async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

#[cfg(unix)]
#[tokio::test]
async fn files_mode_picks_up_a_symlink_swapped_secret_mount() {
    let mount = scratch_dir("mount");
    let first = issue("first.example");
    let second = issue("second.example");
    publish(&mount, "2024_01_01_00_00_00.000000001", &first.cert_pem, &first.key_pem);

    let source = FileSource {
        cert_file: mount.join("tls.crt"),
        key_file: mount.join("tls.key"),
        interval: Duration::from_millis(50),
    };
    let initial = files::load(&source).unwrap();
    let resolver = Arc::new(CertResolver::empty());
    let readiness = Readiness::new();
    let metrics = Metrics::new();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task =
        tokio::spawn(files::run(source, initial, resolver.clone(), readiness.clone(), metrics.clone(), async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
    assert!(eventually(Duration::from_secs(2), || served(&resolver) == Some(der(&first))).await);
    assert!(readiness.is_ready());

    // Half an update: the new certificate with the old key. Not served.
    publish(&mount, "2024_01_01_00_00_00.000000002", &second.cert_pem, &first.key_pem);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served(&resolver), Some(der(&first)), "a certificate whose key does not match is never served");

    // The kubelet's next swap completes the pair.
    publish(&mount, "2024_01_01_00_00_00.000000003", &second.cert_pem, &second.key_pem);
    assert!(
        eventually(Duration::from_secs(2), || served(&resolver) == Some(der(&second))).await,
        "the swapped mount is served"
    );
    let not_after = inspect::inspect(second.cert_pem.as_bytes()).unwrap().not_after;
    assert_eq!(metrics.webhook_certificate_expiry.get(), not_after.unix_timestamp() as f64);
    assert!(readiness.is_ready());
    assert!(readiness.unmet().iter().all(|(condition, _)| condition != CERTIFICATE_CONDITION));

    let _ = stop.send(true);
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(&mount);
}

#[tokio::test]
async fn files_mode_refuses_to_start_on_unusable_files() {
    let dir = scratch_dir("bad");
    let cert = issue("x.example");
    let other = issue("y.example");
    std::fs::write(dir.join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &other.key_pem).unwrap();
    let source =
        FileSource { cert_file: dir.join("tls.crt"), key_file: dir.join("tls.key"), interval: Duration::from_secs(1) };
    assert!(files::load(&source).is_err(), "mismatched key");
    let missing = FileSource { cert_file: dir.join("absent.crt"), ..source };
    assert!(files::load(&missing).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
