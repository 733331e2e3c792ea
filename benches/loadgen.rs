//! The HTTPS load generator of `benches/load.sh`: drives running webhook servers side by side
//! and reports latency, throughput, CPU time per request and resident memory of each, read
//! from `/proc/<pid>`.
//!
//! Scenarios, each repeated `--repeat` times with the servers interleaved (so that noise of a
//! shared machine hits them alike), medians reported:
//! - fixed rates (open loop, like wrk2): request `i` is due at `t0 + i / rate`; a dedicated
//!   thread releases it on time to a pool of keep-alive connections, and its latency is counted
//!   from when it was due, so queueing behind a slow answer is measured (no coordinated
//!   omission);
//! - the maximum rate with keep-alive: closed loop, every connection sends back to back;
//! - the maximum rate with a new TLS connection per request: closed loop, full handshakes
//!   (no session resumption), `Connection: close`.
//!
//! Every run also reports the requests answered per second of server CPU ("req/s per core"):
//! on a shared machine the server does not always get its whole core, and this figure, unlike
//! the measured rate, does not depend on how much of it it got.
//!
//! Plain HTTP (`--plain`, the gateway) or HTTPS (the webhook); a target may name its own path
//! (`NAME=ADDR=PID=PATH`) and every request carries the `--header`s, so the gateway and the
//! server behind it are driven with the same request.
//!
//! HTTP/1.1 only. The server certificate is not verified: verifying costs the client, not the
//! server, and the load generator must not become the bottleneck on its single core.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::DigitallySignedStruct;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use tokio::sync::{Mutex, mpsc};

/// Flags.
#[derive(Debug, Parser)]
struct Args {
    /// A server to drive, as NAME=ADDR=PID (the PID gives CPU and memory figures). The first
    /// one is compared with the others.
    #[arg(long = "target", required = true)]
    targets: Vec<Target>,
    /// The AdmissionReview to send (JSON; sent compacted).
    #[arg(long)]
    body: PathBuf,
    /// The path to POST to (a target may override it).
    #[arg(long, default_value = "/validate")]
    path: String,
    /// Speak plain HTTP instead of HTTPS.
    #[arg(long)]
    plain: bool,
    /// A header every request carries, as `NAME: VALUE` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Also run the maximum rate with a new connection per request.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    new_connections: bool,
    /// Fixed rates to hold, in requests per second.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,5000")]
    rates: Vec<u32>,
    /// Length of each run, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Runs of every scenario against every target.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Keep-alive connections of the fixed-rate runs.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Concurrent clients of the maximum-rate runs.
    #[arg(long, default_value_t = 32)]
    max_clients: usize,
    /// Writes every run as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A server under test.
#[derive(Debug, Clone)]
struct Target {
    name: String,
    addr: SocketAddr,
    pid: u32,
    /// Its own path, instead of `--path`.
    path: Option<String>,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('=');
        let (Some(name), Some(addr), Some(pid), path, None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{s:?}: expected NAME=ADDR=PID[=PATH]"));
        };
        Ok(Target {
            name: name.to_string(),
            addr: addr.parse().map_err(|e| format!("{addr:?}: {e}"))?,
            pid: pid.parse().map_err(|e| format!("{pid:?}: {e}"))?,
            path: path.map(str::to_string),
        })
    }
}

/// CPU time (user + system) and resident memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy)]
struct ProcSample {
    cpu: Duration,
    rss_kib: u64,
}

fn clock_ticks_per_second() -> u64 {
    // The kernel's USER_HZ is 100 on every Linux architecture we run on.
    100
}

fn proc_sample(pid: u32) -> std::io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Ok(ProcSample { cpu: Duration::from_millis(ticks * 1000 / clock_ticks_per_second()), rss_kib })
}

/// Samples a process's resident memory every 50 ms until stopped; returns the peak.
struct RssWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(sample) = proc_sample(pid) {
                    peak = peak.max(sample.rss_kib);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        });
        RssWatch { stop, thread }
    }

    fn peak_kib(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// Accepts any server certificate: the load generator measures the server, not the PKI.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS 1.3 (the rustls default), HTTP/1.1, full handshakes every time.
fn client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

/// What every request to one target needs.
#[derive(Clone)]
struct Client {
    /// `None`: plain HTTP.
    tls: Option<Arc<rustls::ClientConfig>>,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

type Sender = SendRequest<Full<Bytes>>;

impl Client {
    async fn connect(&self, addr: SocketAddr) -> Result<Sender, String> {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await.map_err(|e| format!("http: {e}"))?;
            tokio::spawn(connection);
            return Ok(sender);
        };
        let name = ServerName::try_from("localhost").expect("a valid name");
        let tls = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("http: {e}"))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Sends one request on a kept-alive connection; on failure counts the error and opens a
    /// fresh connection in its place. True when the request succeeded.
    async fn send_or_reconnect(&self, sender: &mut Sender, addr: SocketAddr, tally: &mut Tally) -> bool {
        match self.send(sender, false).await {
            Ok(()) => true,
            Err(e) => {
                tally.error(e);
                match self.connect(addr).await {
                    Ok(fresh) => *sender = fresh,
                    Err(e) => tally.error(e),
                }
                false
            }
        }
    }

    async fn send(&self, sender: &mut Sender, close: bool) -> Result<(), String> {
        sender.ready().await.map_err(|e| format!("connection: {e}"))?;
        let mut request = hyper::Request::post(self.path.as_str())
            .header("host", "localhost")
            .header("content-type", "application/json");
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if close {
            request = request.header("connection", "close");
        }
        let request = request.body(Full::new(self.body.clone())).map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        if status != hyper::StatusCode::OK || body.is_empty() {
            return Err(format!("status {status}"));
        }
        Ok(())
    }
}

/// One run of one scenario against one target.
#[derive(Debug, Clone, Serialize)]
struct Run {
    target: String,
    scenario: String,
    repetition: usize,
    requests: u64,
    errors: u64,
    seconds: f64,
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    cpu_us_per_request: Option<f64>,
    /// Share of one core the server used during the run.
    server_cpu_share: Option<f64>,
    peak_rss_kib: u64,
    first_error: Option<String>,
}

impl Run {
    /// Requests per second of server CPU: what one core given to the server alone would
    /// answer at this load. The machine may be shared, so the server does not always get its
    /// whole core; this figure does not depend on how much of it it got.
    fn per_core(&self) -> Option<f64> {
        self.server_cpu_share.filter(|share| *share > 0.0).map(|share| self.rate / share)
    }
}

/// Latencies of successful requests (ns) and the errors.
#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_ns.extend(other.latencies_ns);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
}

/// Nearest-rank percentile of sorted samples, in microseconds.
fn percentile_us(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted_ns.len() as f64).ceil() as usize).clamp(1, sorted_ns.len());
    sorted_ns[rank - 1] as f64 / 1000.0
}

/// Measures the server process around a scenario.
async fn measured<F: Future<Output = Tally>>(target: &Target, scenario: String, repetition: usize, work: F) -> Run {
    let before = proc_sample(target.pid).ok();
    let watch = RssWatch::start(target.pid);
    let started = Instant::now();
    let mut tally = work.await;
    let seconds = started.elapsed().as_secs_f64();
    let after = proc_sample(target.pid).ok();
    let peak_rss_kib = watch.peak_kib();
    tally.latencies_ns.sort_unstable();
    let requests = tally.latencies_ns.len() as u64;
    let cpu = before.zip(after).map(|(b, a)| a.cpu.saturating_sub(b.cpu).as_secs_f64());
    Run {
        target: target.name.clone(),
        scenario,
        repetition,
        requests,
        errors: tally.errors,
        seconds,
        rate: requests as f64 / seconds,
        p50_us: percentile_us(&tally.latencies_ns, 0.50),
        p99_us: percentile_us(&tally.latencies_ns, 0.99),
        p999_us: percentile_us(&tally.latencies_ns, 0.999),
        cpu_us_per_request: cpu.filter(|_| requests > 0).map(|c| c * 1e6 / requests as f64),
        server_cpu_share: cpu.map(|c| c / seconds),
        peak_rss_kib,
        first_error: tally.first_error,
    }
}

/// Opens `n` keep-alive connections and warms each with a few requests.
async fn open_pool(client: &Client, addr: SocketAddr, n: usize) -> Result<Vec<Sender>, String> {
    let mut pool = Vec::with_capacity(n);
    for _ in 0..n {
        let mut sender = client.connect(addr).await?;
        for _ in 0..3 {
            client.send(&mut sender, false).await?;
        }
        pool.push(sender);
    }
    Ok(pool)
}

/// Open loop: requests due at a fixed rate, latency counted from when each was due.
async fn fixed_rate(client: &Client, addr: SocketAddr, rate: u32, duration: Duration, connections: usize) -> Tally {
    let pool = match open_pool(client, addr, connections).await {
        Ok(pool) => pool,
        Err(e) => {
            let mut tally = Tally::default();
            tally.error(e);
            return tally;
        }
    };
    let total = (u64::from(rate) * duration.as_secs()) as usize;
    let (due_tx, due_rx) = mpsc::unbounded_channel::<Instant>();
    let due_rx = Arc::new(Mutex::new(due_rx));
    let start = Instant::now() + Duration::from_millis(20);
    let period = Duration::from_secs(1).as_secs_f64() / f64::from(rate);
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let due = start + Duration::from_secs_f64(period * i as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if due_tx.send(due).is_err() {
                return;
            }
        }
    });
    let mut workers = Vec::with_capacity(connections);
    for mut sender in pool {
        let (client, due_rx) = (client.clone(), due_rx.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally { latencies_ns: Vec::with_capacity(total / connections + 16), ..Tally::default() };
            loop {
                let Some(due) = due_rx.lock().await.recv().await else { break };
                if client.send_or_reconnect(&mut sender, addr, &mut tally).await {
                    tally.latencies_ns.push(due.elapsed().as_nanos() as u64);
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for worker in workers {
        if let Ok(t) = worker.await {
            tally.merge(t);
        }
    }
    let _ = pacer.join();
    tally
}

/// Closed loop on keep-alive connections: every connection sends back to back.
async fn max_keep_alive(client: &Client, addr: SocketAddr, duration: Duration, clients: usize) -> Tally {
    let pool = match open_pool(client, addr, clients).await {
        Ok(pool) => pool,
        Err(e) => {
            let mut tally = Tally::default();
            tally.error(e);
            return tally;
        }
    };
    let deadline = Instant::now() + duration;
    let mut workers = Vec::with_capacity(clients);
    for mut sender in pool {
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let sent = Instant::now();
                if client.send_or_reconnect(&mut sender, addr, &mut tally).await {
                    tally.latencies_ns.push(sent.elapsed().as_nanos() as u64);
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for worker in workers {
        if let Ok(t) = worker.await {
            tally.merge(t);
        }
    }
    tally
}

/// Closed loop of connect + full TLS handshake + one request + close.
async fn max_new_connections(client: &Client, addr: SocketAddr, duration: Duration, clients: usize) -> Tally {
    let deadline = Instant::now() + duration;
    let mut workers = Vec::with_capacity(clients);
    for _ in 0..clients {
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let started = Instant::now();
                let result = match client.connect(addr).await {
                    Ok(mut sender) => client.send(&mut sender, true).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => tally.latencies_ns.push(started.elapsed().as_nanos() as u64),
                    Err(e) => tally.error(e),
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for worker in workers {
        if let Ok(t) = worker.await {
            tally.merge(t);
        }
    }
    tally
}

fn median(values: &mut Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

/// The median over repetitions of one figure of one scenario of one target.
fn median_of(runs: &[Run], target: &str, scenario: &str, figure: impl Fn(&Run) -> Option<f64>) -> f64 {
    let mut values: Vec<f64> =
        runs.iter().filter(|r| r.target == target && r.scenario == scenario).filter_map(figure).collect();
    median(&mut values)
}

fn print_summary(args: &Args, runs: &[Run], memory: &BTreeMap<String, (u64, u64, u64)>) {
    let scenarios: Vec<String> = scenarios(args).into_iter().map(|(name, _)| name).collect();
    let names: Vec<&str> = args.targets.iter().map(|t| t.name.as_str()).collect();
    println!(
        "\nMedians of {} runs of {} s; latency in µs; CPU in µs per request; ratio = {} / {}",
        args.repeat,
        args.seconds,
        names[0],
        names.get(1).unwrap_or(&"-")
    );
    println!(
        "\n| scenario | server | req/s | req/s per core | p50 | p99 | p99.9 | CPU/req | server CPU share | peak RSS MiB | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for scenario in &scenarios {
        for name in &names {
            let errors: u64 =
                runs.iter().filter(|r| &r.target == name && &r.scenario == scenario).map(|r| r.errors).sum();
            println!(
                "| {scenario} | {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0}% | {:.1} | {errors} |",
                median_of(runs, name, scenario, |r| Some(r.rate)),
                median_of(runs, name, scenario, Run::per_core),
                median_of(runs, name, scenario, |r| Some(r.p50_us)),
                median_of(runs, name, scenario, |r| Some(r.p99_us)),
                median_of(runs, name, scenario, |r| Some(r.p999_us)),
                median_of(runs, name, scenario, |r| r.cpu_us_per_request),
                100.0 * median_of(runs, name, scenario, |r| r.server_cpu_share),
                median_of(runs, name, scenario, |r| Some(r.peak_rss_kib as f64)) / 1024.0,
            );
        }
    }
    if let [ours, floor, ..] = names.as_slice() {
        println!(
            "\n| scenario | {ours} / {floor}: p50 | p99 | req/s | req/s per core | CPU/req | added p50 µs | added p99 µs |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for scenario in &scenarios {
            let ratio = |figure: &dyn Fn(&Run) -> Option<f64>| {
                median_of(runs, ours, scenario, figure) / median_of(runs, floor, scenario, figure)
            };
            let added = |figure: &dyn Fn(&Run) -> Option<f64>| {
                median_of(runs, ours, scenario, figure) - median_of(runs, floor, scenario, figure)
            };
            println!(
                "| {scenario} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} |",
                ratio(&|r| Some(r.p50_us)),
                ratio(&|r| Some(r.p99_us)),
                ratio(&|r| Some(r.rate)),
                ratio(&Run::per_core),
                ratio(&|r| r.cpu_us_per_request),
                added(&|r| Some(r.p50_us)),
                added(&|r| Some(r.p99_us)),
            );
        }
    }
    println!("\n| server | RSS idle MiB | RSS peak under load MiB | RSS after load MiB |");
    println!("|---|---:|---:|---:|");
    for (name, (idle, peak, after)) in memory {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            *idle as f64 / 1024.0,
            *peak as f64 / 1024.0,
            *after as f64 / 1024.0
        );
    }
}

/// The scenarios of every repetition: the fixed rates, then the maximum rates.
fn scenarios(args: &Args) -> Vec<(String, Option<u32>)> {
    let mut scenarios: Vec<(String, Option<u32>)> =
        args.rates.iter().map(|r| (format!("fixed {r}/s"), Some(*r))).collect();
    scenarios.push(("max keep-alive".into(), None));
    if args.new_connections {
        scenarios.push(("max new connection".into(), None));
    }
    scenarios
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let body: serde_json::Value = serde_json::from_slice(&std::fs::read(&args.body)?)?;
    let mut headers = Vec::new();
    for header in &args.headers {
        let (name, value) =
            header.split_once(':').ok_or_else(|| format!("--header {header:?}: expected NAME: VALUE"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let base = Client {
        tls: (!args.plain).then(client_config),
        path: args.path.clone(),
        headers,
        body: Bytes::from(serde_json::to_vec(&body)?),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let duration = Duration::from_secs(args.seconds);
    let mut memory: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for target in &args.targets {
        let idle = proc_sample(target.pid)?.rss_kib;
        memory.insert(target.name.clone(), (idle, 0, 0));
    }
    let mut runs = Vec::new();
    runtime.block_on(async {
        for repetition in 0..args.repeat {
            for (scenario, rate) in scenarios(&args) {
                for target in &args.targets {
                    let client = Client { path: target.path.clone().unwrap_or_else(|| args.path.clone()), ..base.clone() };
                    let work = async {
                        match (rate, scenario.as_str()) {
                            (Some(rate), _) => fixed_rate(&client, target.addr, rate, duration, args.connections).await,
                            (None, "max keep-alive") => {
                                max_keep_alive(&client, target.addr, duration, args.max_clients).await
                            }
                            (None, _) => max_new_connections(&client, target.addr, duration, args.max_clients).await,
                        }
                    };
                    let run = measured(target, scenario.clone(), repetition, work).await;
                    eprintln!(
                        "{} {:<20} #{repetition}: {:>7.0} req/s  p50 {:>7.0} µs  p99 {:>7.0} µs  p99.9 {:>7.0} µs  cpu {:>5.1} µs/req ({:>3.0}%)  rss {:>6} KiB  errors {}{}",
                        run.target,
                        run.scenario,
                        run.rate,
                        run.p50_us,
                        run.p99_us,
                        run.p999_us,
                        run.cpu_us_per_request.unwrap_or(f64::NAN),
                        100.0 * run.server_cpu_share.unwrap_or(f64::NAN),
                        run.peak_rss_kib,
                        run.errors,
                        run.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
                    );
                    if let Some(entry) = memory.get_mut(&target.name) {
                        entry.1 = entry.1.max(run.peak_rss_kib);
                    }
                    runs.push(run);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    for target in &args.targets {
        let after = proc_sample(target.pid)?.rss_kib;
        if let Some(entry) = memory.get_mut(&target.name) {
            entry.2 = after;
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&runs)?)?;
    }
    print_summary(&args, &runs, &memory);
    Ok(())
}
