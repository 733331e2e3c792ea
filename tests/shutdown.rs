//! Graceful shutdown under load, driven the way `mcp-hangar serve` drives it
//! ([`Shutdown::begin`] after SIGTERM): readiness turns false first; the webhook keeps accepting
//! connections for the shutdown delay; then its listener closes, new connections are refused,
//! and the requests in flight still finish with their answer.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls_connect;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mcp_hangar::admission::{self, WebhookState, server};
use mcp_hangar::metrics::Metrics;
use mcp_hangar::policy::Engine;
use mcp_hangar::readiness::Readiness;
use mcp_hangar::shutdown::{RUNNING_CONDITION, Shutdown};
use mcp_hangar::tls::{self, CertResolver, ServingCertRequest};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

/// A request body sent as its parts arrive.
type BodyStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;

/// How long readiness is false before the listener closes.
const SHUTDOWN_DELAY: Duration = Duration::from_millis(1500);
/// How long open connections get to finish after that.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// Workers sending back to back on keep-alive connections.
const WORKERS: usize = 4;

const REVIEW: &str = include_str!("../benches/fixtures/mcpserver-review.json");

fn review_body() -> Vec<u8> {
    serde_json::to_vec(&serde_json::from_str::<Value>(REVIEW).unwrap()).unwrap()
}

/// GET /readyz on the admin listener: the status and body.
async fn readyz(admin: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut tcp = TcpStream::connect(admin).await?;
    tcp.write_all(b"GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await?;
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, answer))
}

/// Whether the answer is an allowed review.
fn allowed(status: u16, body: &[u8]) -> bool {
    status == 200
        && serde_json::from_slice::<Value>(body).is_ok_and(|answer| answer["response"]["allowed"] == Value::Bool(true))
}

/// What the keep-alive workers saw.
#[derive(Default)]
struct Seen {
    ok: u64,
    /// Answers that were not an allow: never expected.
    wrong: Vec<String>,
    /// When each worker first failed to get an answer (its connection closed).
    first_failure: Vec<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_and_connections_are_refused_only_after_readiness_went_false() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = tls::issue::issue_ca("test-ca", Duration::from_secs(3600)).unwrap();
    let request = ServingCertRequest { sans: vec!["localhost".into()], validity: Duration::from_secs(3600) };
    let leaf = tls::issue::issue_serving(&ca, &request).unwrap();
    let key = tls::certified_key(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
    let tls_config = tls::server_config(Arc::new(CertResolver::new(key))).unwrap();
    let client = common::client_config(&ca.cert_pem);
    let mut h2_client = (*client).clone();
    h2_client.alpn_protocols = vec![b"h2".to_vec()];
    let h2_client = Arc::new(h2_client);

    // Wired as `serve` wires them.
    let metrics = Metrics::new();
    let readiness = Readiness::new();
    let shutdown = Shutdown::new();
    let webhook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, admin_addr) = (webhook_listener.local_addr().unwrap(), admin_listener.local_addr().unwrap());
    let router =
        admission::webhook_router(WebhookState { engine: Arc::new(Engine::new().unwrap()), metrics: metrics.clone() });
    let webhook =
        tokio::spawn(server::serve_tls(webhook_listener, tls_config, router, shutdown.stopped(), SHUTDOWN_TIMEOUT));
    let admin = tokio::spawn(server::serve_plain(
        admin_listener,
        admission::admin_router(metrics, readiness.clone()),
        shutdown.stopped(),
    ));
    assert_eq!(readyz(admin_addr).await.unwrap().0, 200);
    let body = review_body();

    // Load: keep-alive workers sending back to back until their connection closes.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (client, seen, body) = (client.clone(), seen.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let tls = tls_connect(addr, client).await.unwrap();
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(connection);
            loop {
                let request = hyper::Request::post("/validate")
                    .header("host", "localhost")
                    .body(http_body_util::Full::new(Bytes::from(body.clone())))
                    .unwrap();
                let answer = match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        response.into_body().collect().await.map(|b| (status, b.to_bytes()))
                    }
                    Err(e) => Err(e),
                };
                let mut seen = seen.lock().await;
                match answer {
                    Ok((status, bytes)) if allowed(status, &bytes) => seen.ok += 1,
                    Ok((status, bytes)) => seen.wrong.push(format!("{status}: {}", String::from_utf8_lossy(&bytes))),
                    Err(_) => {
                        seen.first_failure.push(Instant::now());
                        return;
                    }
                }
            }
        }));
    }

    // Requests in flight across the whole shutdown: headers and half of the body now.
    let (half, rest) = body.split_at(body.len() / 2);
    let mut slow_h1 = tls_connect(addr, client.clone()).await.unwrap();
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    slow_h1.write_all(head.as_bytes()).await.unwrap();
    slow_h1.write_all(half).await.unwrap();
    slow_h1.flush().await.unwrap();
    let tls = tls_connect(addr, h2_client.clone()).await.unwrap();
    let (mut h2, h2_connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(h2_connection);
    let (parts, part_rx) = mpsc::unbounded_channel::<Bytes>();
    let stream: BodyStream = Box::pin(futures::stream::unfold(part_rx, |mut rx| async move {
        rx.recv().await.map(|part| (Ok::<_, Infallible>(Frame::data(part)), rx))
    }));
    parts.send(Bytes::copy_from_slice(half)).unwrap();
    let slow_h2 = tokio::spawn(async move {
        let request = hyper::Request::post("https://localhost/validate").body(StreamBody::new(stream)).unwrap();
        let response = h2.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>((status, bytes))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(seen.lock().await.ok > 0, "the load is running");

    // SIGTERM.
    let began = Instant::now();
    let stopping = {
        let readiness = readiness.clone();
        tokio::spawn(async move {
            shutdown.begin(&readiness, SHUTDOWN_DELAY).await;
            shutdown
        })
    };

    // Readiness goes false first...
    let unready_at = loop {
        let (status, answer) = readyz(admin_addr).await.unwrap();
        if status == 503 {
            assert!(answer.contains(&format!("{RUNNING_CONDITION}: shutting down")), "{answer}");
            break Instant::now();
        }
        assert!(began.elapsed() < Duration::from_secs(2), "readiness did not turn false");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // ...while new connections are still served...
    let (status, answer) = common::request(addr, client.clone(), "POST", "/validate", body.clone()).await.unwrap();
    assert!(allowed(status, &answer), "a new connection during the delay is served");
    let served_after_unready = Instant::now();
    assert!(served_after_unready < began + SHUTDOWN_DELAY, "the check ran within the delay");
    // ...until the listener closes.
    let refused_at = loop {
        match common::request(addr, client.clone(), "POST", "/validate", body.clone()).await {
            Ok((status, answer)) => assert!(allowed(status, &answer), "served until refused"),
            Err(_) => break Instant::now(),
        }
        assert!(began.elapsed() < SHUTDOWN_DELAY + Duration::from_secs(3), "the listener never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(refused_at >= began + SHUTDOWN_DELAY, "refused only after the delay");
    assert!(unready_at < served_after_unready && served_after_unready < refused_at);
    let shutdown = stopping.await.unwrap();
    assert!(shutdown.is_stopping());
    assert!(TcpStream::connect(addr).await.is_err(), "new TCP connections are refused");

    // The requests begun before the stop are still waited for, and finish with their answer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!webhook.is_finished(), "the server waits for the requests in flight");
    slow_h1.write_all(rest).await.unwrap();
    slow_h1.flush().await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow_h1.read_to_end(&mut response))
        .await
        .expect("the HTTP/1.1 request in flight is answered, then closed")
        .ok();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let json = &response[text.find("\r\n\r\n").unwrap() + 4..];
    assert!(allowed(200, json), "{text}");
    parts.send(Bytes::copy_from_slice(rest)).unwrap();
    drop(parts);
    let (status, answer) = tokio::time::timeout(Duration::from_secs(5), slow_h2).await.unwrap().unwrap().unwrap();
    assert!(allowed(status, &answer), "the HTTP/2 request in flight is answered: {status}");

    // Then the server is done, well within the shutdown timeout.
    tokio::time::timeout(Duration::from_secs(5), webhook).await.expect("the webhook server returns").unwrap();
    tokio::time::timeout(Duration::from_secs(5), admin).await.expect("the admin server returns").unwrap().unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    let seen = seen.lock().await;
    eprintln!(
        "{} requests answered under load; workers' connections closed {:?} after the stop",
        seen.ok,
        seen.first_failure.iter().map(|t| t.saturating_duration_since(began + SHUTDOWN_DELAY)).collect::<Vec<_>>()
    );
    assert!(seen.wrong.is_empty(), "every answer was an allow: {:?}", seen.wrong);
    assert_eq!(seen.first_failure.len(), WORKERS);
    for failure in &seen.first_failure {
        assert!(*failure >= began + SHUTDOWN_DELAY, "a keep-alive connection failed before the stop");
    }
}

#[tokio::test]
async fn a_connection_that_never_finishes_does_not_hold_the_shutdown_past_its_timeout() {
    let hook = common::TestWebhook::start().await;
    // TestWebhook drains for 5 s; a request whose body never ends holds its connection.
    let mut stuck = tls_connect(hook.addr, hook.client_config()).await.unwrap();
    stuck.write_all(b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1000\r\n\r\n{").await.unwrap();
    stuck.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), hook.stop()).await.expect("the server returns");
    let elapsed = started.elapsed();
    // It waited for the request (up to the drain time of 5 s), not for the request timeout (10 s).
    assert!(elapsed > Duration::from_secs(4) && elapsed < Duration::from_secs(9), "stopped after {elapsed:?}");
    drop(stuck);
}
