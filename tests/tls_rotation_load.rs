//! Real HTTPS under load while the certificate rotates several times, a CA rotation included:
//! clients that trust only the caBundle of the webhook configuration (read from the fake API
//! at every new connection, as an apiserver would) see no failed request.

#[path = "support/fake_api.rs"]
mod fake_api;
#[path = "support/https.rs"]
mod https;
#[path = "support/replica.rs"]
mod replica;
#[path = "support/secret_mount.rs"]
mod secret_mount;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fake_api::FakeApi;
use mcp_hangar::admission::{self, WebhookState, server};
use mcp_hangar::metrics::Metrics;
use mcp_hangar::policy::Engine;
use mcp_hangar::tls::inspect;
use replica::*;
use tokio::sync::Mutex;

/// How long the load runs.
const LOAD: Duration = Duration::from_secs(9);
/// Workers opening a new connection every few requests.
const RECONNECTING_WORKERS: usize = 4;
/// Requests per connection of a reconnecting worker.
const REQUESTS_PER_CONNECTION: usize = 5;
/// Most requests one worker sends.
const MAX_REQUESTS_PER_WORKER: u64 = 2500;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
    /// Leaf certificates seen at handshakes.
    leaves: Mutex<HashSet<Vec<u8>>>,
    /// Every caBundle clients trusted.
    bundles: Mutex<HashSet<Vec<u8>>>,
}

impl Tally {
    async fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().await;
        if failures.len() < 20 {
            failures.push(what);
        }
    }

    async fn trusted(&self, bundle: &[u8]) {
        self.bundles.lock().await.insert(bundle.to_vec());
    }

    async fn saw(&self, leaf: &[u8]) {
        self.leaves.lock().await.insert(leaf.to_vec());
    }
}

/// PEM of a DER certificate (base64 through `ByteString`).
fn pem_of(der: &[u8]) -> Vec<u8> {
    let encoded = serde_json::to_value(k8s_openapi::ByteString(der.to_vec())).unwrap();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", encoded.as_str().unwrap()).into_bytes()
}

/// The bundle an apiserver would use now: the mutating configuration's first entry.
fn current_bundle(fake: &FakeApi) -> Option<Vec<u8>> {
    injected_bundles(fake, &mutating_path()).into_iter().next().flatten()
}

async fn send(connection: &mut https::Connection, uid: &str) -> Result<(), String> {
    let (status, answer) = connection.post_json(admission::VALIDATE_PATH, &https::admission_review(uid)).await?;
    if status != 200 || answer["response"]["uid"] != uid {
        return Err(format!("status {status}: {answer}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_keeps_answering_while_certificates_and_the_ca_rotate() {
    let fake = Arc::new(FakeApi::start().await);
    seed_webhook_configurations(&fake);
    // Serving certificates of 4s renewed at half-life (every ~2s); the CA of 12s rotates after 6s.
    let replica = Replica::start(&fake, config(Duration::from_secs(12), Duration::from_secs(4), 0.5));
    assert!(replica.ready(Duration::from_secs(10)).await);
    let first_ca = stored_material(&fake).unwrap().ca_cert.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router =
        admission::webhook_router(WebhookState { engine: Arc::new(Engine::new().unwrap()), metrics: Metrics::new() });
    let tls = mcp_hangar::tls::server_config(replica.resolver.clone()).unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(server::serve_tls(
        listener,
        tls,
        router,
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
        Duration::from_secs(5),
    ));

    let tally = Arc::new(Tally::default());
    let deadline = tokio::time::Instant::now() + LOAD;
    let mut workers = Vec::new();
    for worker in 0..RECONNECTING_WORKERS {
        let (fake, tally) = (fake.clone(), tally.clone());
        workers.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while tokio::time::Instant::now() < deadline && sent < MAX_REQUESTS_PER_WORKER {
                let bundle = current_bundle(&fake).expect("a caBundle is injected");
                tally.trusted(&bundle).await;
                let config = match https::client_config(&bundle) {
                    Ok(config) => config,
                    Err(e) => {
                        tally.fail(format!("bundle: {e}")).await;
                        continue;
                    }
                };
                let mut connection = match https::connect(addr, SERVER_NAME, config).await {
                    Ok(connection) => connection,
                    Err(e) => {
                        tally.fail(format!("worker {worker}: {e}")).await;
                        sent += 1;
                        continue;
                    }
                };
                tally.saw(&connection.peer_certificate).await;
                for _ in 0..REQUESTS_PER_CONNECTION {
                    sent += 1;
                    match send(&mut connection, &format!("w{worker}-{sent}")).await {
                        Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tally.fail(format!("worker {worker}: {e}")).await;
                            0
                        }
                    };
                }
            }
        }));
    }
    // One connection kept open through every rotation: requests in flight never fail.
    {
        let (fake, tally) = (fake.clone(), tally.clone());
        workers.push(tokio::spawn(async move {
            let config = https::client_config(&current_bundle(&fake).unwrap()).unwrap();
            let mut connection = https::connect(addr, SERVER_NAME, config).await.expect("long-lived connection");
            let mut sent = 0u64;
            while tokio::time::Instant::now() < deadline && sent < MAX_REQUESTS_PER_WORKER {
                sent += 1;
                match send(&mut connection, &format!("long-{sent}")).await {
                    Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tally.fail(format!("long-lived: {e}")).await;
                        0
                    }
                };
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let _ = stop.send(true);
    let _ = server.await;

    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let leaves = tally.leaves.lock().await.len();
    let final_material = stored_material(&fake).unwrap();
    eprintln!(
        "{ok} requests answered, {failed} failed, {leaves} certificates seen, rotations: serving {} ca {}",
        replica.rotations("serving"),
        replica.rotations("ca")
    );
    assert_eq!(failed, 0, "failures: {:?}", tally.failures.lock().await);
    assert!(ok >= 300, "enough load: {ok} requests");
    assert!(replica.rotations("serving") >= 4, "the serving certificate rotated several times");
    assert!(replica.rotations("ca") >= 2, "the CA rotated");
    assert_ne!(final_material.ca_cert.as_ref(), Some(&first_ca));
    assert!(leaves >= 4, "new connections saw the new certificates ({leaves} seen)");
    // Every CA the clients were given to trust, and which of them signed the leaves they
    // verified: a rotation that clients lived through shows leaves of two CAs or more. (Under a
    // loaded machine the first leaf seen may already come from a CA that was staged before the
    // load began, so the first and last CAs are not asked for by name.)
    let signing_cas = {
        let bundles = tally.bundles.lock().await;
        let mut cas: Vec<_> = bundles.iter().flat_map(|b| inspect::inspect_bundle(b).unwrap_or_default()).collect();
        cas.sort_by(|a, b| a.der.cmp(&b.der));
        cas.dedup_by(|a, b| a.der == b.der);
        let seen = tally.leaves.lock().await;
        let leaves: Vec<_> = seen.iter().filter_map(|leaf| inspect::inspect(&pem_of(leaf)).ok()).collect();
        cas.iter().filter(|ca| leaves.iter().any(|leaf| leaf.is_signed_by(ca))).count()
    };
    assert!(signing_cas >= 2, "clients verified leaves of {signing_cas} CA(s); a CA rotation shows two or more");
    replica.stop().await;
}

/// Replaces the certificate files as the kubelet updates a Secret mount.
#[cfg(unix)]
fn publish(mount: &std::path::Path, generation: &str, certificate: &mcp_hangar::tls::IssuedCertificate) {
    secret_mount::publish(mount, generation, &certificate.cert_pem, &certificate.key_pem);
}

/// The files mode (cert-manager, or any Secret mount) under sustained load: when the files
/// change, new connections get the new certificate within 2 s, and no request fails, neither
/// on connections opened before nor after.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_file_is_served_within_two_seconds_under_load() {
    use mcp_hangar::readiness::Readiness;
    use mcp_hangar::tls::files::{self, FileSource};
    use mcp_hangar::tls::issue::{issue_ca, issue_serving};
    use mcp_hangar::tls::{CertResolver, ServingCertRequest};
    use std::time::Instant;

    const KEEP_ALIVE_WORKERS: usize = 2;
    const RECONNECTING_WORKERS: usize = 3;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = issue_ca("drill CA", Duration::from_secs(3600)).unwrap();
    let request = ServingCertRequest { sans: vec![SERVER_NAME.to_string()], validity: Duration::from_secs(3600) };
    let (first, second) = (issue_serving(&ca, &request).unwrap(), issue_serving(&ca, &request).unwrap());
    let second_der = der_of(second.cert_pem.as_bytes());
    let mount = std::env::temp_dir().join(format!("mcp-hangar-drill-{}-{:?}", std::process::id(), Instant::now()));
    std::fs::create_dir_all(&mount).unwrap();
    publish(&mount, "1", &first);

    // Reloaded as often as `serve` reloads by default.
    let cli = <mcp_hangar::cli::Cli as clap::Parser>::parse_from([
        "mcp-hangar",
        "serve",
        "--tls-mode",
        "files",
        "--tls-cert-file",
        "c",
        "--tls-key-file",
        "k",
    ]);
    let mcp_hangar::cli::Command::Serve(serve) = cli.command else { unreachable!("a serve command") };
    let interval = serve.tls.tls_reload_interval;
    let source = FileSource { cert_file: mount.join("tls.crt"), key_file: mount.join("tls.key"), interval };
    let resolver = Arc::new(CertResolver::empty());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let reloader = tokio::spawn(files::run(
        source.clone(),
        files::load(&source).unwrap(),
        resolver.clone(),
        Readiness::new(),
        Metrics::new(),
        until_stopped(stopped.clone()),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router =
        admission::webhook_router(WebhookState { engine: Arc::new(Engine::new().unwrap()), metrics: Metrics::new() });
    let tls = mcp_hangar::tls::server_config(resolver).unwrap();
    let server = tokio::spawn(server::serve_tls(listener, tls, router, until_stopped(stopped), Duration::from_secs(5)));
    // Full handshakes, as the apiserver makes them: a resumed session would keep the
    // certificate of the session it resumes.
    let mut client = (*https::client_config(ca.cert_pem.as_bytes()).unwrap()).clone();
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);

    let tally = Arc::new(Tally::default());
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let first_new = Arc::new(Mutex::new(None::<Instant>));
    let mut workers = Vec::new();
    for worker in 0..KEEP_ALIVE_WORKERS {
        let (client, tally, running) = (client.clone(), tally.clone(), running.clone());
        workers.push(tokio::spawn(async move {
            let mut connection = https::connect(addr, SERVER_NAME, client).await.expect("connects");
            let mut sent = 0u64;
            while running.load(Ordering::Relaxed) {
                sent += 1;
                match send(&mut connection, &format!("k{worker}-{sent}")).await {
                    Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tally.fail(format!("keep-alive {worker}: {e}")).await;
                        0
                    }
                };
            }
        }));
    }
    for worker in 0..RECONNECTING_WORKERS {
        let (client, tally, running, first_new, second_der) =
            (client.clone(), tally.clone(), running.clone(), first_new.clone(), second_der.clone());
        workers.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while running.load(Ordering::Relaxed) {
                sent += 1;
                let mut connection = match https::connect(addr, SERVER_NAME, client.clone()).await {
                    Ok(connection) => connection,
                    Err(e) => {
                        tally.fail(format!("reconnecting {worker}: {e}")).await;
                        continue;
                    }
                };
                if connection.peer_certificate == second_der {
                    first_new.lock().await.get_or_insert_with(Instant::now);
                }
                match send(&mut connection, &format!("r{worker}-{sent}")).await {
                    Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tally.fail(format!("reconnecting {worker}: {e}")).await;
                        0
                    }
                };
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = tally.ok.load(Ordering::Relaxed);
    assert!(first_new.lock().await.is_none(), "the second certificate is not served before it is published");
    publish(&mount, "2", &second);
    let published = Instant::now();
    while first_new.lock().await.is_none() && published.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let _ = stop.send(true);
    let _ = server.await;
    let _ = reloader.await;
    let _ = std::fs::remove_dir_all(&mount);

    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let served_after = first_new.lock().await.map(|t| t.duration_since(published));
    eprintln!(
        "{ok} requests ({before} before the swap), {failed} failed; new certificate served after {served_after:?}"
    );
    assert_eq!(failed, 0, "failures: {:?}", tally.failures.lock().await);
    assert!(ok > before, "the load went on across the swap");
    let served_after = served_after.expect("the new certificate is served");
    assert!(served_after <= Duration::from_secs(2), "new certificate served only after {served_after:?}");
}
