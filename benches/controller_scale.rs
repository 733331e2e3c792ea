//! The controllers at scale, against the fake API server in a child process (so the peak RSS
//! measured is the controller's alone).
//!
//! `cargo run --release --example controller_scale -- SERVERS [DISCOVERED] [GROUPS] [IDLE_SECS]`
//! (`CONCURRENCY=N` in the environment overrides the controllers' concurrency, `RESYNC_SECS=N`
//! their resync period, `REFRESH=30s` the discovery source's refresh interval, 5m by default;
//! set `MIMALLOC_ARENA_EAGER_COMMIT=0`, as the image does, to measure the shipped memory)
//!
//! The child seeds SERVERS MCPServers (container mode, `replicas: 0`, so no health check and no
//! timer moves them after they settle), GROUPS groups splitting them by label, and one
//! Authoritative ConfigMap discovery source listing DISCOVERED more. The parent runs the three
//! controllers (`controller::run`) against it. The child reports the time from the first
//! request until every server has its six children and a state, every group counts its members
//! and the source has created its servers; the write requests (POST, PUT, PATCH, DELETE; events
//! counted apart) during convergence; then the write requests and effective writes (new
//! resourceVersions) during IDLE_SECS without any change. The parent prints its peak RSS, its
//! resident anonymous and file-backed (code) memory at convergence, and its live heap.
//!
//! The floor, measured first in the same run: how fast a plain `kube::Client` creates
//! (server-side apply, 8 at once, as the controller writes) and lists (pages of 500) objects on
//! this fake API.

#[path = "../tests/support/fake_api.rs"]
mod fake_api;

use std::alloc::GlobalAlloc;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use fake_api::FakeApi;
use serde_json::json;

const NS: &str = "scale";

/// The shipped binary's allocator (mimalloc, `src/main.rs`), counting the bytes live and their
/// peak: the heap the controllers hold, apart from what the allocator keeps and the code pages.
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use std::sync::atomic::Ordering::Relaxed;
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(live, Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use std::sync::atomic::Ordering::Relaxed;
        let live = LIVE.fetch_add(new_size, Relaxed) + new_size;
        PEAK.fetch_max(live, Relaxed);
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Live and peak heap of this process, MiB.
fn heap_mib() -> (f64, f64) {
    use std::sync::atomic::Ordering::Relaxed;
    let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
    (mib(LIVE.load(Relaxed)), mib(PEAK.load(Relaxed)))
}
const API: &str = "/apis/mcp-hangar.io/v1alpha1";

struct Args {
    servers: usize,
    discovered: usize,
    groups: usize,
    idle: Duration,
}

fn args() -> Args {
    let mut numbers = std::env::args().skip(1);
    let mut next = |default: usize| numbers.next().and_then(|n| n.parse().ok()).unwrap_or(default);
    let servers = next(1000);
    let discovered = next(1000);
    let groups = next(5);
    let idle = Duration::from_secs(next(60) as u64);
    Args { servers, discovered, groups, idle }
}

fn main() {
    let child = std::env::var("CONTROLLER_SCALE_FAKE").is_ok();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if !child {
        // The controllers run on as many worker threads as `serve` would (WORKERS=N overrides).
        let requested = std::env::var("WORKERS").ok().and_then(|n| n.parse().ok());
        runtime.worker_threads(mcp_hangar::cli::serve_worker_threads(requested, mcp_hangar::cli::available_cpus()));
    }
    let runtime = runtime.enable_all().build().expect("runtime");
    if child {
        runtime.block_on(fake(args()));
    } else {
        runtime.block_on(controllers());
    }
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Write requests in the log by method and resource.
fn writes_by_kind(fake: &FakeApi) -> std::collections::BTreeMap<String, usize> {
    fake.requests().iter().filter(|r| is_write(&r.method)).fold(Default::default(), |mut counts, r| {
        let parts: Vec<&str> = r.path.trim_matches('/').split('/').collect();
        let kind = match parts.as_slice() {
            [.., resource, _, "status"] => format!("{resource}/status"),
            [.., "namespaces", _, resource] => resource.to_string(),
            [.., resource, _] => resource.to_string(),
            _ => r.path.clone(),
        };
        *counts.entry(format!("{} {kind}", r.method)).or_default() += 1;
        counts
    })
}

/// Write requests in the log: (to objects, to events).
fn writes(fake: &FakeApi) -> (usize, usize) {
    let requests = fake.requests();
    let writes: Vec<_> = requests.iter().filter(|r| is_write(&r.method)).collect();
    let events = writes.iter().filter(|r| r.path.contains("/events")).count();
    (writes.len() - events, events)
}

/// Objects written and listed for the floor.
const FLOOR_OBJECTS: usize = 5000;

/// The fake API's own throughput: applies per second (8 in flight) and objects listed per
/// second (pages of 500), through a real `kube::Client`.
async fn floor(fake: &FakeApi) -> (f64, f64) {
    use futures::StreamExt;
    let maps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(fake.client(), "floor");
    let params = kube::api::PatchParams::apply("floor").force();
    let start = Instant::now();
    futures::stream::iter(0..FLOOR_OBJECTS)
        .for_each_concurrent(8, |i| {
            let (maps, params) = (maps.clone(), params.clone());
            async move {
                let name = format!("f{i:05}");
                let body =
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}});
                maps.patch(&name, &params, &kube::api::Patch::Apply(body)).await.expect("floor apply");
            }
        })
        .await;
    let applies = FLOOR_OBJECTS as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut listed = 0;
    let mut token: Option<String> = None;
    loop {
        let mut params = kube::api::ListParams::default().limit(500);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = maps.list(&params).await.expect("floor list");
        listed += page.items.len();
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(listed, FLOOR_OBJECTS);
    let lists = listed as f64 / start.elapsed().as_secs_f64();
    maps.delete_collection(&Default::default(), &Default::default()).await.expect("floor cleanup");
    (applies, lists)
}

async fn fake(args: Args) {
    let fake = FakeApi::start().await;
    fake.register_operator_kinds();
    let (applies, listed) = floor(&fake).await;
    println!("FLOOR objects={FLOOR_OBJECTS} applies_per_s={applies:.0} listed_per_s={listed:.0}");
    fake.put(&format!("/api/v1/namespaces/{NS}"), json!({"metadata": {"name": NS}}));
    let spec = json!({"mode": "container", "image": "ghcr.io/example/tool:1.0.0", "replicas": 0});
    for i in 0..args.servers {
        let name = format!("s{i:05}");
        fake.put(
            &format!("{API}/namespaces/{NS}/mcpservers/{name}"),
            json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServer",
                   "metadata": {"name": name, "namespace": NS, "labels": {"group": format!("g{}", i % args.groups.max(1))}},
                   "spec": spec}),
        );
    }
    for g in 0..args.groups {
        fake.put(
            &format!("{API}/namespaces/{NS}/mcpservergroups/g{g}"),
            json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPServerGroup",
                   "metadata": {"name": format!("g{g}"), "namespace": NS},
                   "spec": {"selector": {"matchLabels": {"group": format!("g{g}")}}, "healthPolicy": {"minHealthyPercentage": 50}}}),
        );
    }
    if args.discovered > 0 {
        let entries: String = (0..args.discovered)
            .map(|i| {
                format!(
                    "- {{name: d{i:05}, labels: {{group: g0}}, spec: {{mode: container, image: 'ghcr.io/example/tool:1.0.0', replicas: 0}}}}\n"
                )
            })
            .collect();
        let refresh = std::env::var("REFRESH").unwrap_or_else(|_| "5m".into());
        fake.put(
            &format!("/api/v1/namespaces/{NS}/configmaps/defs"),
            json!({"metadata": {"name": "defs", "namespace": NS}, "data": {"servers.yaml": entries}}),
        );
        fake.put(
            &format!("{API}/namespaces/{NS}/mcpdiscoverysources/defs"),
            json!({"apiVersion": "mcp-hangar.io/v1alpha1", "kind": "MCPDiscoverySource",
                   "metadata": {"name": "defs", "namespace": NS},
                   "spec": {"type": "ConfigMap", "mode": "Authoritative", "refreshInterval": refresh, "configMapRef": {"name": "defs"}}}),
        );
    }
    fake.clear_requests();
    println!("URL {}", fake.url());
    let _ = std::io::stdout().flush();

    let total = args.servers + args.discovered;
    let mut started = None;
    let cpu_before = cpu_seconds();
    let converged = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if started.is_none() && !fake.requests().is_empty() {
            started = Some(Instant::now());
        }
        let Some(start) = started else { continue };
        if fake.count(&format!("/apis/apps/v1/namespaces/{NS}/deployments"), |_| true) < total {
            continue;
        }
        let servers = fake.count(&format!("{API}/namespaces/{NS}/mcpservers"), |s| s["status"]["state"] == "Cold");
        let groups = fake.count(&format!("{API}/namespaces/{NS}/mcpservergroups"), |g| {
            g["status"]["members"].as_u64().is_some_and(|m| m > 0)
        });
        let source = args.discovered == 0
            || fake
                .get(&format!("{API}/namespaces/{NS}/mcpdiscoverysources/defs"))
                .is_some_and(|s| s["status"]["discovered"].as_u64() == Some(args.discovered as u64));
        if servers == total && groups == args.groups && source {
            break start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(600) {
            println!("NOT CONVERGED after 600 s: {servers}/{total} servers, {groups} groups");
            return;
        }
    };
    // Groups follow the last server states within their debounce: let them settle.
    let fake_cpu = cpu_seconds() - cpu_before;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (object_writes, event_writes) = writes(&fake);
    println!("FAKE cpu_seconds_converging={fake_cpu:.1}");
    println!(
        "CONVERGED servers={total} groups={} discovered={} seconds={:.2} write_requests={object_writes} event_writes={event_writes} by_kind={:?}",
        args.groups,
        args.discovered,
        converged.as_secs_f64(),
        writes_by_kind(&fake)
    );
    fake.clear_requests();
    let rv = fake.resource_version();
    tokio::time::sleep(args.idle).await;
    let (object_writes, event_writes) = writes(&fake);
    let by_path = writes_by_kind(&fake);
    println!(
        "IDLE seconds={} write_requests={object_writes} event_writes={event_writes} effective_writes={} by_kind={by_path:?}",
        args.idle.as_secs(),
        fake.resource_version() - rv
    );
}

/// CPU seconds (user + system) this process has used, from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<f64>().ok()).sum();
    ticks / 100.0
}

/// A field of this process's /proc status, in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Peak resident set size of this process.
fn peak_rss_mib() -> f64 {
    status_mib("VmHWM")
}

async fn controllers() {
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .args(std::env::args().skip(1))
        .env("CONTROLLER_SCALE_FAKE", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the fake API process");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("URL ") {
                    break url.to_string();
                }
                println!("{line}");
            }
            _ => panic!("the fake API process ended early"),
        }
    };
    let client = kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("tls")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let defaults = mcp_hangar::controller::ControllerConfig::default();
    let concurrency = std::env::var("CONCURRENCY").ok().and_then(|c| c.parse().ok()).unwrap_or(defaults.concurrency);
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    println!("CONTROLLER concurrency={concurrency} workers={workers}");
    let resync = std::env::var("RESYNC_SECS").ok().and_then(|s| s.parse().ok()).map(Duration::from_secs);
    let config = mcp_hangar::controller::ControllerConfig {
        gateway_url: Some("http://mcp-hangar-gateway.mcp-hangar.svc".into()),
        concurrency,
        resync: resync.unwrap_or(defaults.resync),
        ..defaults
    };
    let ctx = Arc::new(mcp_hangar::controller::Context::new(
        client,
        Arc::new(mcp_hangar::policy::Engine::new().expect("engine")),
        mcp_hangar::metrics::Metrics::new(),
        mcp_hangar::mcp::McpClient::with_host_overrides(tls, None),
        config,
        "scale",
    ));
    let metrics = ctx.metrics.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(mcp_hangar::controller::run(ctx, None, stopped));
    let report = tokio::task::spawn_blocking(move || {
        for line in lines.map_while(Result::ok) {
            println!("{line}");
            if line.starts_with("CONVERGED") {
                let (live, peak) = heap_mib();
                println!(
                    "CONTROLLER cpu_seconds_at_convergence={:.1} rss_mib_at_convergence={:.1} heap_live_mib={live:.1} heap_peak_mib={peak:.1} rss_anon_mib={:.1} rss_file_mib={:.1}",
                    cpu_seconds(),
                    peak_rss_mib(),
                    status_mib("RssAnon"),
                    status_mib("RssFile")
                );
            }
        }
    });
    let _ = report.await;
    let _ = child.wait();
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    let reconciles = metrics.reconcile_total.with_label_values(&["success"]).get();
    let seconds = metrics.reconcile_duration.get_sample_sum();
    let (_, peak) = heap_mib();
    println!(
        "CONTROLLER peak_rss_mib={:.1} heap_peak_mib={peak:.1} cpu_seconds={:.1} server_reconciles={reconciles} reconcile_seconds_sum={seconds:.1}",
        peak_rss_mib(),
        cpu_seconds()
    );
}
