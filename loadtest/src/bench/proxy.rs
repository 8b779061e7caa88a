//! `flotilla-loadtest bench proxy`: tenant delivery through flotilla-proxy
//! next to the same subscribers directly on nats-server, in one run.
//!
//! 1. nats-server (free loopback port) and the `flotilla-proxy` next to this
//!    binary, with a tokens file holding one tenant token per org
//!    (`acme`, `org0`..`org9`), `client_queue = 65536` and raised limits.
//! 2. Idle: the proxy's VmRSS before and 2 s after opening `idle_conns`
//!    tenant connections (one `logs.>` subscription each). Measured first,
//!    on a fresh proxy, so freed memory of later phases is not reused. The
//!    clients live in this process, so this is the proxy's cost only.
//! 3. Throughput, one subscriber: `messages` 200-byte messages published to
//!    nats-server as fast as possible, received (a) directly on `logs.acme.>`
//!    and (b) through the proxy as tenant acme on `logs.>`, alternating
//!    a b a b ... a for `rounds` proxied runs: each is compared with the mean
//!    of the direct runs on either side of it (drift of a shared machine
//!    cancels), and the median round is reported with every round's ratio.
//!    Rate = messages received ÷ (last received − first received).
//! 4. Fan-out: `conns` subscriber connections over 10 orgs (100, and
//!    `--many` if given), same publisher, directly and through the proxy.
//! 5. Latency: a publisher paced every 100 µs (half the measured proxy
//!    peak unless `--latency-rate`) stamps each payload with its number and
//!    send time; a direct and a proxied subscriber receive every message,
//!    and the proxy's added latency is, per message, the proxied arrival
//!    minus the direct one (HDR histograms, µs). Two more paths, measured
//!    the same way, put it in proportion: a second direct subscriber in the
//!    proxy's place (the measurement's own floor: what two identical paths
//!    through nats-server differ by on this machine), and a bare forwarding
//!    thread in its place ([`wire::Hop`]: what any extra hop adds here).
//!    The three take one-second turns, `latency_secs` each, so a busy
//!    spell of the host falls on all of them alike.
//!
//! Core NATS may drop: counts received and the proxy's slow-consumer drops
//! are reported. Results: a table on stdout, `<out>/report.json`, `<out>/report.md`.

use super::Target;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Subject, Subscriber};
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::procstat;
use super::{free_port, wire, BenchError, Nats};
use crate::procs::{nats_server_binary, output, sibling_binary, Proc};

const PAYLOAD: usize = 200;
const ORGS: usize = 10;
/// async-nats drops (client side) when a subscription's channel is full:
/// make it large enough never to be the bottleneck.
const SUB_CAPACITY: usize = 1 << 20;
/// A receiver stops this long after its last message (or 30 s before the first).
const IDLE_END: Duration = Duration::from_secs(2);
/// After subscribing, for the proxy's upstream subscriptions to be in place.
const SETTLE: Duration = Duration::from_millis(500);
/// The latency publisher's step: what is due is sent every 100 µs.
const PACE: Duration = Duration::from_micros(100);

pub struct ProxyBenchOptions {
    /// Messages for the one-subscriber throughput run.
    pub messages: u64,
    /// Proxied one-subscriber runs, each between two direct ones.
    pub rounds: usize,
    /// Deliveries (messages × subscribers) per fan-out run.
    pub fanout_deliveries: u64,
    /// Fan-out connection counts (e.g. 100, 1000).
    pub fanout_conns: Vec<usize>,
    /// Messages/s for the latency run; 0: half the measured proxy peak.
    pub latency_rate: u64,
    pub latency_secs: u64,
    /// Idle tenant connections (0 skips).
    pub idle_conns: usize,
    pub out: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub started: String,
    pub nproc: usize,
    pub proxy_version: String,
    pub nats_server_version: String,
    pub payload_bytes: usize,
    pub one_subscriber: Pair,
    pub fanout: Vec<Pair>,
    pub latency: Latency,
    pub idle: Option<Idle>,
    pub targets: Vec<Target>,
}

/// The same flow directly on nats-server and through the proxy.
#[derive(Debug, Serialize)]
pub struct Pair {
    pub subscribers: usize,
    pub orgs: usize,
    pub direct: Flow,
    pub proxy: Flow,
    /// Proxy msgs/s over direct msgs/s.
    pub ratio: f64,
    /// One subscriber: each round's proxied rate over the mean of the
    /// direct runs on either side of it (the pair above is the median round).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub round_ratios: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct Flow {
    pub published: u64,
    pub publish_msgs_per_sec: f64,
    /// Deliveries expected (published × subscribers of each message).
    pub expected: u64,
    pub received: u64,
    /// Aggregate deliveries per second, first received to last received.
    pub msgs_per_sec: f64,
    pub secs: f64,
    /// The increase of the proxy's drop counters: client queues full
    /// (`flotilla_proxy_slow_consumer_drops_total`) and upstream read too
    /// slowly (`flotilla_proxy_upstream_drops_total`).
    pub proxy_drops: u64,
    pub proxy_cpu_secs: f64,
    pub nats_server_cpu_secs: f64,
    /// This process: the publisher and the subscribers.
    pub load_cpu_secs: f64,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub target_rate: u64,
    pub achieved_rate: f64,
    pub sent: u64,
    pub direct: Percentiles,
    pub proxy: Percentiles,
    /// Per message: arrival through the proxy minus arrival directly, µs.
    pub added: Percentiles,
    /// Per message, in a run of its own: arrival at a second direct
    /// subscriber minus arrival at the first, µs: the floor of `added` on
    /// this machine (no proxy).
    pub control: Percentiles,
    /// Per message, in a run of its own: arrival through a bare forwarding
    /// thread ([`wire::Hop`]) minus arrival directly, µs.
    pub hop: Percentiles,
    /// Share of all CPU time the hypervisor gave to others while this VM
    /// had work (`/proc/stat` steal), during the proxied run, the floor's
    /// and the bare hop's.
    pub steal: f64,
    pub floor_steal: f64,
    pub hop_steal: f64,
    pub proxy_drops: u64,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub received: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

#[derive(Debug, Serialize)]
pub struct Idle {
    pub connections: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub kib_per_connection: f64,
}

struct Stack {
    // Field order is drop order: the proxy stops before nats-server.
    proxy: Proc,
    nats: Nats,
    proxy_url: String,
    http_port: u16,
    /// org → tenant secret.
    secrets: Vec<(String, String)>,
}

impl Stack {
    fn secret(&self, org: &str) -> Result<&str, BenchError> {
        self.secrets
            .iter()
            .find(|(o, _)| o == org)
            .map(|(_, s)| s.as_str())
            .ok_or_else(|| BenchError::Failed(format!("no token for {org}")))
    }

    async fn tenant(&self, org: &str) -> Result<Client, BenchError> {
        ConnectOptions::with_user_and_password(org.into(), self.secret(org)?.into())
            .subscription_capacity(SUB_CAPACITY)
            .connect(&self.proxy_url)
            .await
            .map_err(|e| BenchError::nats(&format!("connect to the proxy as {org}"), e))
    }

    async fn direct(&self) -> Result<Client, BenchError> {
        ConnectOptions::new()
            .subscription_capacity(SUB_CAPACITY)
            .connect(&self.nats.url)
            .await
            .map_err(|e| BenchError::nats("connect to nats-server", e))
    }

    /// Sum of a metric's series (all label sets) on the proxy's /metrics.
    async fn metric(&self, name: &str) -> Result<u64, BenchError> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.http_port))
            .await
            .map_err(|e| BenchError::Failed(format!("proxy /metrics: {e}")))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.map_err(|e| BenchError::Failed(e.to_string()))?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.map_err(|e| BenchError::Failed(e.to_string()))?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    /// Deliveries the proxy dropped, for any reason.
    async fn drops(&self) -> Result<u64, BenchError> {
        Ok(self.metric(DROPS).await? + self.metric(UPSTREAM_DROPS).await?)
    }

    /// CPU seconds so far of the proxy, nats-server and this process (the
    /// publisher and the subscribers).
    fn cpu(&self) -> (f64, f64, f64) {
        let c = |pid| procstat::cpu(pid).map(|c| c.secs).unwrap_or(f64::NAN);
        (c(self.proxy.id()), c(self.nats.proc.id()), c(std::process::id()))
    }
}

const DROPS: &str = "flotilla_proxy_slow_consumer_drops_total";
const UPSTREAM_DROPS: &str = "flotilla_proxy_upstream_drops_total";

pub async fn run(opts: &ProxyBenchOptions) -> Result<Report, BenchError> {
    let proxy_bin = sibling_binary("flotilla-proxy")?;
    let nats_bin = nats_server_binary()?;
    let logs_dir = opts.out.join("logs");
    std::fs::create_dir_all(&logs_dir).map_err(|e| BenchError::io(&logs_dir, e))?;
    let tmp_dir = tempfile::Builder::new()
        .prefix("flotilla-bench-proxy-")
        .tempdir()
        .map_err(|e| BenchError::io(&std::env::temp_dir(), e))?;
    let tmp = tmp_dir.path();
    let started = chrono::Utc::now();
    let proxy_version = output(&proxy_bin, &["--version"]).unwrap_or_else(|e| e.to_string());
    let nats_server_version = output(&nats_bin, &["--version"]).unwrap_or_else(|e| e.to_string());

    let nats = Nats::start(&nats_bin, &tmp.join("nats"), &logs_dir)?;
    let tokens = tmp.join("tokens.toml");
    std::fs::write(&tokens, "").map_err(|e| BenchError::io(&tokens, e))?;
    let tokens_s = tokens.to_string_lossy().to_string();
    let mut secrets = vec![];
    for org in std::iter::once("acme".to_string()).chain((0..ORGS).map(|i| format!("org{i}"))) {
        let secret = output(&proxy_bin, &["token", "new", "--tokens", &tokens_s, "--role", "tenant", "--org", &org])?;
        secrets.push((org, secret));
    }
    let (port, http_port) = (free_port()?, free_port()?);
    let config = tmp.join("proxy.toml");
    let text = format!(
        "listen = \"127.0.0.1:{port}\"\nhttp_addr = \"127.0.0.1:{http_port}\"\ntokens = {tokens_s:?}\n\
         client_queue = 65536\n{}\n[limits]\nmax_connections_per_ip = 100000\nmax_connections_per_org = 100000\n\
         max_subscriptions = 100000\n\n[upstream]\nurl = {:?}\n",
        std::env::var("FLOTILLA_BENCH_PROXY_EXTRA").unwrap_or_default(),
        nats.url
    );
    std::fs::write(&config, text).map_err(|e| BenchError::io(&config, e))?;
    let config_s = config.to_string_lossy().to_string();
    let mut proxy = Proc::spawn("flotilla-proxy", &proxy_bin, &["run", "--config", &config_s], &[], &logs_dir)?;
    proxy.wait_port(port, Duration::from_secs(20))?;
    let mut stack = Stack { proxy, nats, proxy_url: format!("nats://127.0.0.1:{port}"), http_port, secrets };

    let idle = if opts.idle_conns > 0 {
        eprintln!("idle: {} tenant connections", opts.idle_conns);
        Some(idle(&stack, opts.idle_conns).await?)
    } else {
        None
    };

    let publisher = stack.direct().await?;
    let payload = Bytes::from(vec![b'x'; PAYLOAD]);

    eprintln!("throughput, 1 subscriber: {} messages", opts.messages);
    let subjects = [Subject::from("logs.acme.web.iad.h1")];
    let one_subscriber = {
        // Direct and proxied runs alternate, a direct run on either side of
        // each proxied one; each round compares its proxied run with the
        // mean of the two around it, and the median round is reported.
        let direct_run = || async {
            let c = stack.direct().await?;
            let s = subscribe(&c, "logs.acme.>").await?;
            flow(&stack, &publisher, &subjects, opts.messages, &payload, vec![s]).await
        };
        let proxy_run = || async {
            let c = stack.tenant("acme").await?;
            let s = subscribe(&c, "logs.>").await?;
            flow(&stack, &publisher, &subjects, opts.messages, &payload, vec![s]).await
        };
        let mut directs = vec![direct_run().await?];
        let mut proxies = vec![];
        for _ in 0..opts.rounds.max(1) {
            proxies.push(proxy_run().await?);
            directs.push(direct_run().await?);
        }
        let bracket = |i: usize| mean_flow(&directs[i], &directs[i + 1]);
        let ratios: Vec<f64> =
            proxies.iter().enumerate().map(|(i, p)| p.msgs_per_sec / bracket(i).msgs_per_sec).collect();
        let mut order: Vec<usize> = (0..ratios.len()).collect();
        order.sort_by(|a, b| ratios[*a].total_cmp(&ratios[*b]));
        let m = order[order.len() / 2];
        let mut p = pair(1, 1, bracket(m), proxies.swap_remove(m));
        p.round_ratios = ratios;
        p
    };
    stack.proxy.check_alive()?;

    let mut fanout = vec![];
    let org_subjects: Vec<Subject> = (0..ORGS).map(|i| Subject::from(format!("logs.org{i}.web.iad.h1"))).collect();
    for &conns in &opts.fanout_conns {
        let per_org = (opts.fanout_deliveries / conns as u64).max(1);
        eprintln!("fan-out: {conns} subscribers over {ORGS} orgs, {per_org} messages per org");
        let mut clients = vec![];
        let mut subs = vec![];
        for i in 0..conns {
            let c = stack.direct().await?;
            subs.push(subscribe(&c, &format!("logs.org{}.>", i % ORGS)).await?);
            clients.push(c);
        }
        let direct = flow(&stack, &publisher, &org_subjects, per_org, &payload, subs).await?;
        clients.clear();
        let mut subs = vec![];
        for i in 0..conns {
            let c = stack.tenant(&format!("org{}", i % ORGS)).await?;
            subs.push(subscribe(&c, "logs.>").await?);
            clients.push(c);
        }
        let proxy = flow(&stack, &publisher, &org_subjects, per_org, &payload, subs).await?;
        clients.clear();
        fanout.push(pair(conns, ORGS, direct, proxy));
        stack.proxy.check_alive()?;
    }

    let rate = if opts.latency_rate > 0 {
        opts.latency_rate
    } else {
        ((one_subscriber.proxy.msgs_per_sec / 2.0 / 1000.0).round() as u64).max(1) * 1000
    };
    eprintln!("latency: {rate} messages/s for {} s", opts.latency_secs);
    let latency = latency(&stack, rate, opts.latency_secs).await?;
    stack.proxy.check_alive()?;
    drop(publisher);

    let mut targets = vec![];
    let mut ratio_target = |what: String, p: &Pair| {
        targets.push(Target { what, target: "≥ 0.80 of direct", value: p.ratio, met: p.ratio >= 0.8 })
    };
    ratio_target("msgs/s, 1 subscriber, proxy ÷ direct".into(), &one_subscriber);
    for p in &fanout {
        ratio_target(format!("msgs/s, {} subscribers / {} orgs, proxy ÷ direct", p.subscribers, p.orgs), p);
    }
    let added_ms = latency.added.p99_us as f64 / 1000.0;
    let (floor_ms, hop_ms) = (latency.control.p99_us as f64 / 1000.0, latency.hop.p99_us as f64 / 1000.0);
    targets.push(Target {
        what: format!(
            "added p99 latency at {rate} msgs/s, ms (a second direct subscriber: {floor_ms:.3} ms; a bare hop: {hop_ms:.3} ms)"
        ),
        target: "≤ 0.5 ms",
        value: added_ms,
        met: added_ms <= 0.5,
    });
    if let Some(i) = &idle {
        targets.push(Target {
            what: "proxy RSS per idle connection, KiB".into(),
            target: "≤ 64 KiB",
            value: i.kib_per_connection,
            met: i.kib_per_connection <= 64.0,
        });
    }

    Ok(Report {
        started: started.to_rfc3339(),
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        proxy_version,
        nats_server_version,
        payload_bytes: PAYLOAD,
        one_subscriber,
        fanout,
        latency,
        idle,
        targets,
    })
}

fn pair(subscribers: usize, orgs: usize, direct: Flow, proxy: Flow) -> Pair {
    let ratio = proxy.msgs_per_sec / direct.msgs_per_sec;
    Pair { subscribers, orgs, direct, proxy, ratio, round_ratios: vec![] }
}

/// Two runs of the same flow as one: their mean rates, times and CPU.
fn mean_flow(a: &Flow, b: &Flow) -> Flow {
    let m = |x: f64, y: f64| (x + y) / 2.0;
    Flow {
        published: a.published,
        publish_msgs_per_sec: m(a.publish_msgs_per_sec, b.publish_msgs_per_sec),
        expected: a.expected,
        received: a.received.min(b.received),
        msgs_per_sec: m(a.msgs_per_sec, b.msgs_per_sec),
        secs: m(a.secs, b.secs),
        proxy_drops: a.proxy_drops + b.proxy_drops,
        proxy_cpu_secs: m(a.proxy_cpu_secs, b.proxy_cpu_secs),
        nats_server_cpu_secs: m(a.nats_server_cpu_secs, b.nats_server_cpu_secs),
        load_cpu_secs: m(a.load_cpu_secs, b.load_cpu_secs),
    }
}

async fn subscribe(c: &Client, subject: &str) -> Result<Subscriber, BenchError> {
    c.subscribe(subject.to_string()).await.map_err(|e| BenchError::nats(&format!("subscribe {subject}"), e))
}

/// What one subscriber received, and when.
struct Received {
    count: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Count messages until `expected`, or [`IDLE_END`] without one.
async fn receive(mut sub: Subscriber, expected: u64) -> Received {
    use futures::StreamExt as _;
    let mut r = Received { count: 0, first: None, last: None };
    let mut wait = Duration::from_secs(30);
    while r.count < expected {
        match tokio::time::timeout(wait, sub.next()).await {
            Ok(Some(_)) => {
                let now = Instant::now();
                r.first.get_or_insert(now);
                r.last = Some(now);
                r.count += 1;
                wait = IDLE_END;
            }
            _ => break,
        }
    }
    r
}

/// Publish `per_subject` messages to each of `subjects` (interleaved) as
/// fast as possible; each of `subs` expects every message of its subject
/// (`per_subject`).
async fn flow(
    stack: &Stack,
    publisher: &Client,
    subjects: &[Subject],
    per_subject: u64,
    payload: &Bytes,
    subs: Vec<Subscriber>,
) -> Result<Flow, BenchError> {
    tokio::time::sleep(SETTLE).await;
    let drops0 = stack.drops().await?;
    let (pcpu0, ncpu0, lcpu0) = stack.cpu();
    let n_subs = subs.len() as u64;
    let tasks: Vec<_> = subs.into_iter().map(|s| tokio::spawn(receive(s, per_subject))).collect();
    let t0 = Instant::now();
    for _ in 0..per_subject {
        for s in subjects {
            publisher.publish(s.clone(), payload.clone()).await.map_err(|e| BenchError::nats("publish", e))?;
        }
    }
    publisher.flush().await.map_err(|e| BenchError::nats("flush", e))?;
    let publish_secs = t0.elapsed().as_secs_f64();
    let mut received = 0;
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for t in tasks {
        let r = t.await.map_err(|e| BenchError::Failed(format!("receiver: {e}")))?;
        received += r.count;
        first = match (first, r.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last = last.max(r.last);
    }
    let (pcpu1, ncpu1, lcpu1) = stack.cpu();
    let drops1 = stack.drops().await?;
    let secs = match (first, last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let published = per_subject * subjects.len() as u64;
    Ok(Flow {
        published,
        publish_msgs_per_sec: published as f64 / publish_secs,
        expected: per_subject * n_subs,
        received,
        msgs_per_sec: if secs > 0.0 { received as f64 / secs } else { 0.0 },
        secs,
        proxy_drops: drops1.saturating_sub(drops0),
        proxy_cpu_secs: pcpu1 - pcpu0,
        nats_server_cpu_secs: ncpu1 - ncpu0,
        load_cpu_secs: lcpu1 - lcpu0,
    })
}

/// Added latency, message by message: a publisher paced every 100 µs
/// stamps each message with its number and send time; a direct and a
/// proxied subscriber receive every message at once, and the proxy's
/// added latency of a message is its arrival through the proxy minus its
/// arrival directly (0 when the proxy was first). Whatever delays both
/// paths (the publisher, nats-server) cancels out. Publisher and
/// subscribers are bare protocol clients on threads of their own
/// ([`super::wire`]), so the load generator does not queue first.
async fn latency(stack: &Stack, rate: u64, secs: u64) -> Result<Latency, BenchError> {
    let nats_addr = wire::addr(&stack.nats.url);
    let (mut floor, mut hop, mut proxy) = (Paths::new()?, Paths::new()?, Paths::new()?);
    let drops0 = stack.drops().await?;
    // One-second turns of each second subscriber, in rotation, so that a
    // spell of a busy host falls on all three alike.
    for _ in 0..secs.max(1) {
        // The floor: a second direct subscriber in the proxy's place
        // (nats-server delivers each message twice in every run).
        let second = wire::Recorder::open(nats_addr, None, "logs.acme.>")?;
        floor.add(&paced(stack, rate, second).await?);
        let forwarder = wire::Hop::start(nats_addr, "logs.acme.>", "logs.acme.", rate)?;
        let second = wire::Recorder::open(&forwarder.addr, None, "logs.>")?;
        hop.add(&paced(stack, rate, second).await?);
        tokio::task::spawn_blocking(move || forwarder.join())
            .await
            .map_err(|e| BenchError::Failed(format!("hop: {e}")))??;
        let second =
            wire::Recorder::open(wire::addr(&stack.proxy_url), Some(("acme", stack.secret("acme")?)), "logs.>")?;
        proxy.add(&paced(stack, rate, second).await?);
    }
    let drops1 = stack.drops().await?;
    let pct = |h: &Histogram<u64>| Percentiles {
        received: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        mean_us: h.mean(),
    };
    Ok(Latency {
        target_rate: rate,
        achieved_rate: proxy.achieved_rate(),
        sent: proxy.sent,
        direct: pct(&proxy.direct),
        proxy: pct(&proxy.second),
        added: pct(&proxy.added),
        control: pct(&floor.added),
        hop: pct(&hop.added),
        steal: proxy.steal(),
        floor_steal: floor.steal(),
        hop_steal: hop.steal(),
        proxy_drops: drops1.saturating_sub(drops0),
    })
}

/// One kind of second subscriber's turns, added up: µs from send to
/// arrival directly and at the second, and the second's arrival minus the
/// direct one, message by message.
struct Paths {
    direct: Histogram<u64>,
    second: Histogram<u64>,
    added: Histogram<u64>,
    sent: u64,
    secs: f64,
    /// All CPUs' time during these turns.
    cpu: procstat::SystemCpu,
}

impl Paths {
    fn new() -> Result<Paths, BenchError> {
        let h = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| BenchError::Failed(e.to_string()));
        Ok(Paths { direct: h()?, second: h()?, added: h()?, sent: 0, secs: 0.0, cpu: Default::default() })
    }

    fn add(&mut self, run: &Paced) {
        let us = |ns: u64| (ns / 1000).max(1);
        for ((&sent, &d), &s) in run.sent_at.iter().zip(&run.direct).zip(&run.second) {
            if d > 0 {
                self.direct.saturating_record(us(d.saturating_sub(sent)));
            }
            if s > 0 {
                self.second.saturating_record(us(s.saturating_sub(sent)));
            }
            if d > 0 && s > 0 {
                self.added.saturating_record(us(s.saturating_sub(d)));
            }
        }
        self.sent += run.sent_at.len() as u64;
        self.secs += run.secs;
        self.cpu += run.cpu;
    }

    fn achieved_rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.sent as f64 / self.secs
        } else {
            0.0
        }
    }

    /// Steal's share of all CPU time during these turns.
    fn steal(&self) -> f64 {
        self.cpu.steal_share()
    }
}

/// One paced run's send times and arrivals.
struct Paced {
    sent_at: Vec<u64>,
    /// How long the publishing took.
    secs: f64,
    /// At a direct subscriber.
    direct: Vec<u64>,
    /// At `second`.
    second: Vec<u64>,
    /// All CPUs' time during the run.
    cpu: procstat::SystemCpu,
}

/// `rate` messages in one second from the paced publisher, recorded by a
/// direct subscriber and by `second`.
async fn paced(stack: &Stack, rate: u64, second: wire::Recorder) -> Result<Paced, BenchError> {
    let total = rate;
    let nats_addr = wire::addr(&stack.nats.url).to_string();
    let first = wire::Recorder::open(&nats_addr, None, "logs.acme.>")?;
    tokio::time::sleep(SETTLE).await;
    let cpu = || procstat::system_cpu().map_err(|e| BenchError::Failed(format!("cannot read /proc/stat: {e}")));
    let cpu0 = cpu()?;
    let start = Instant::now();
    let (first, second) = (first.spawn(start, total), second.spawn(start, total));
    let (sent_at, achieved_rate) = tokio::task::spawn_blocking(move || {
        wire::pace(&nats_addr, "logs.acme.web.iad.h1", PAYLOAD, start, rate, total, PACE)
    })
    .await
    .map_err(|e| BenchError::Failed(format!("publisher: {e}")))??;
    let (first, second) = tokio::task::spawn_blocking(move || (first.join(), second.join()))
        .await
        .map_err(|e| BenchError::Failed(format!("receivers: {e}")))?;
    let join = |r: std::thread::Result<Vec<u64>>| r.map_err(|_| BenchError::Failed("a receiver panicked".into()));
    let (first, second) = (join(first)?, join(second)?);
    let secs = if achieved_rate > 0.0 { sent_at.len() as f64 / achieved_rate } else { 0.0 };
    Ok(Paced { sent_at, secs, direct: first, second, cpu: cpu()?.since(&cpu0) })
}

async fn idle(stack: &Stack, n: usize) -> Result<Idle, BenchError> {
    let rss = || {
        procstat::status_kib(stack.proxy.id(), "VmRSS")
            .map_err(|e| BenchError::Failed(format!("cannot read the proxy's VmRSS: {e}")))
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss()?;
    let mut clients = Vec::with_capacity(n);
    let mut subs = Vec::with_capacity(n);
    for i in 0..n {
        let c = stack.tenant(&format!("org{}", i % ORGS)).await?;
        subs.push(subscribe(&c, "logs.>").await?);
        clients.push(c);
    }
    for c in &clients {
        c.flush().await.map_err(|e| BenchError::nats("flush", e))?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss()?;
    drop(subs);
    drop(clients);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(Idle {
        connections: n,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_connection: after.saturating_sub(before) as f64 / n as f64,
    })
}

/// The results as Markdown (also what is printed).
pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "{}-byte messages, publisher on nats-server; {} cores shared by the publisher, nats-server, \
         flotilla-proxy and all subscribers; {}; {}\n\n\
         | flow | direct msgs/s | proxy msgs/s | proxy ÷ direct | received direct / proxy (of expected) | proxy drops | proxy CPU s | publish msgs/s (direct run / proxy run) |\n\
         |---|---:|---:|---:|---|---:|---:|---|\n",
        r.payload_bytes, r.nproc, r.proxy_version, r.nats_server_version,
    );
    for p in std::iter::once(&r.one_subscriber).chain(&r.fanout) {
        s += &format!(
            "| {} subscriber(s), {} org(s) | {:.0} | {:.0} | {:.2} | {} / {} (of {}) | {} | {:.2} | {:.0} / {:.0} |\n",
            p.subscribers,
            p.orgs,
            p.direct.msgs_per_sec,
            p.proxy.msgs_per_sec,
            p.ratio,
            p.direct.received,
            p.proxy.received,
            p.proxy.expected,
            p.proxy.proxy_drops,
            p.proxy.proxy_cpu_secs,
            p.direct.publish_msgs_per_sec,
            p.proxy.publish_msgs_per_sec,
        );
    }
    let (d, p) = (&r.one_subscriber.direct, &r.one_subscriber.proxy);
    let per_m = |cpu: f64, f: &Flow| cpu * 1e6 / f.received.max(1) as f64;
    s += &format!(
        "\n1 subscriber, CPU s per million messages: publisher + subscriber {:.2} direct / {:.2} proxied, \
         nats-server {:.2} / {:.2}, flotilla-proxy {:.2}; all together {:.2} / {:.2} over {:.2} / {:.2} s\n",
        per_m(d.load_cpu_secs, d),
        per_m(p.load_cpu_secs, p),
        per_m(d.nats_server_cpu_secs, d),
        per_m(p.nats_server_cpu_secs, p),
        per_m(p.proxy_cpu_secs, p),
        per_m(d.load_cpu_secs + d.nats_server_cpu_secs, d),
        per_m(p.load_cpu_secs + p.nats_server_cpu_secs + p.proxy_cpu_secs, p),
        d.secs,
        p.secs,
    );
    let rounds = &r.one_subscriber.round_ratios;
    if rounds.len() > 1 {
        let each: Vec<String> = rounds.iter().map(|x| format!("{x:.2}")).collect();
        s += &format!(
            "\n1 subscriber, each round's proxy ÷ mean of the direct runs on either side: {} \
             (the row above is the median round; its direct figures are that mean)\n",
            each.join(", ")
        );
    }
    let l = &r.latency;
    s += &format!(
        "\nLatency at {} msgs/s target ({:.0} achieved, {} sent), publisher → subscriber, µs:\n\n\
         | path | received | p50 | p99 | p99.9 | max | mean |\n|---|---:|---:|---:|---:|---:|---:|\n\
         | direct | {} | {} | {} | {} | {} | {:.0} |\n\
         | proxy | {} | {} | {} | {} | {} | {:.0} |\n\
         | added by the proxy (per message: proxied − direct arrival) | {} | {} | {} | {} | {} | {:.0} |\n\
         | floor: a second direct subscriber − the first (in turns of its own) | {} | {} | {} | {} | {} | {:.0} |\n\
         | added by a bare forwarding thread (in turns of its own) | {} | {} | {} | {} | {} | {:.0} |\n\n\
         CPU time stolen by the hypervisor: {:.1} % during the proxied turns, {:.1} % during the floor's, \
         {:.1} % during the bare hop's\n",
        l.target_rate,
        l.achieved_rate,
        l.sent,
        l.direct.received,
        l.direct.p50_us,
        l.direct.p99_us,
        l.direct.p999_us,
        l.direct.max_us,
        l.direct.mean_us,
        l.proxy.received,
        l.proxy.p50_us,
        l.proxy.p99_us,
        l.proxy.p999_us,
        l.proxy.max_us,
        l.proxy.mean_us,
        l.added.received,
        l.added.p50_us,
        l.added.p99_us,
        l.added.p999_us,
        l.added.max_us,
        l.added.mean_us,
        l.control.received,
        l.control.p50_us,
        l.control.p99_us,
        l.control.p999_us,
        l.control.max_us,
        l.control.mean_us,
        l.hop.received,
        l.hop.p50_us,
        l.hop.p99_us,
        l.hop.p999_us,
        l.hop.max_us,
        l.hop.mean_us,
        l.steal * 100.0,
        l.floor_steal * 100.0,
        l.hop_steal * 100.0,
    );
    if let Some(i) = &r.idle {
        s += &format!(
            "\nIdle: {} tenant connections (one `logs.>` subscription each): proxy VmRSS {} → {} KiB, {:.1} KiB per connection\n",
            i.connections, i.rss_before_kib, i.rss_after_kib, i.kib_per_connection
        );
    }
    s += &super::targets_table(&r.targets);
    s
}

/// Write `report.json` and `report.md` into `out`.
pub fn save(r: &Report, out: &Path) -> Result<(), BenchError> {
    super::save_report(r, "proxy", &r.started, markdown(r), out)
}
