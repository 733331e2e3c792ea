//! Real HTTPS under load while the certificate rotates several times, a CA rotation included:
//! clients that trust only the caBundle of the webhook configuration (read from the fake API
//! at every new connection, as an apiserver would) see no failed request.

#[path = "support/fake_api.rs"]
mod fake_api;
#[path = "support/https.rs"]
mod https;
#[path = "support/replica.rs"]
mod replica;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fake_api::FakeApi;
use mcp_hangar::admission::{self, WebhookState, server};
use mcp_hangar::metrics::Metrics;
use mcp_hangar::policy::Engine;
use mcp_hangar::tls::policy;
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
}

impl Tally {
    async fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().await;
        if failures.len() < 20 {
            failures.push(what);
        }
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
    let signed_by_new_ca = {
        let new_ca = policy::inspect(final_material.ca_cert.as_deref().unwrap()).unwrap();
        let seen = tally.leaves.lock().await;
        seen.iter().filter(|leaf| policy::inspect(&pem_of(leaf)).is_ok_and(|l| l.is_signed_by(&new_ca))).count()
    };
    let signed_by_first_ca = {
        let old_ca = policy::inspect(&first_ca).unwrap();
        let seen = tally.leaves.lock().await;
        seen.iter().filter(|leaf| policy::inspect(&pem_of(leaf)).is_ok_and(|l| l.is_signed_by(&old_ca))).count()
    };
    assert!(signed_by_first_ca >= 1 && signed_by_new_ca >= 1, "clients verified certificates of both CAs");
    replica.stop().await;
}
