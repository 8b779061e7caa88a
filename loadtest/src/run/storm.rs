//! `reconnect-storm`: many agents lose nats-server together and come back;
//! the control traffic must grow linearly with the number of agents.
//!
//! For each fleet size N (`--quick`: 50, 100, 200; full: 100, 300, 1000),
//! in rounds of their own:
//!
//! 1. nats-server with JetStream, monitoring and its trace log (`-DV`) on
//!    free loopback ports, a stream `STORM` for the agents' publishes, and a
//!    watcher subscribed to `flotilla.agent.*.status`.
//! 2. N simulated agents ([`agents`]): async-nats clients with the agent's
//!    connect options and reconnect backoff, its heartbeat task and its
//!    JetStream publish window (one publish acked, then idle).
//! 3. They settle; nats-server is killed (`kill -9`), restarted on the same
//!    port and store `down` seconds later, and the window starts: `window`
//!    seconds from "Server is ready".
//! 4. Counted in the window: the protocol operations the agents sent the
//!    server and it sent them, from the server's trace ([`trace`]); the
//!    agents' connection attempts, refused ones included (client side);
//!    heartbeats the watcher saw; `/varz`. When each agent's `CONNECT`
//!    arrived gives the spread of reconnects (100 ms buckets).
//! 5. Stragglers get until [`DEADLINE`] after the restart (the backoff's
//!    30 s cap and some): full jitter has a long tail. Then every agent
//!    publishes once more through its window and must get its ack.
//!
//! It passes when every agent of every round reconnected by the deadline
//! (server and client agree) and acked its publish, the log-log slopes of messages over N stay
//! below [`SLOPE_BOUND`], and no 100 ms held more than [`SPIKE_BOUND`] of a
//! round's agents.

pub mod agents;
pub mod fit;
pub mod report;
pub mod server;
pub mod trace;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt as _;

use super::orchestrate::RunOptions;
use super::progress::Progress;
use super::report::{Machine, Report};
use super::stack::Meter;
use crate::bench::BenchError;
use crate::procs::{nats_server_binary, output};
use agents::Fleet;
use report::{Observed, Row, StormReport};
use server::Server;

pub const NAME: &str = "reconnect-storm";

/// Messages over agents, log-log: 1.0 is linear, 2.0 quadratic. With N
/// spanning 4x (quick) or 10x, a quadratic term as large as the linear one
/// at the largest N already gives about 1.34 (quick) or 1.26–1.5 (full,
/// depending on where it crosses); the random part of the counts (jittered
/// heartbeats and attempts in a fixed window) moves the slope by a few
/// hundredths. A fixed overhead pulls it below 1, never above.
pub const SLOPE_BOUND: f64 = 1.3;
/// Largest share of a round's agents allowed to reconnect in one 100 ms:
/// with full jitter they spread over seconds (a few percent per 100 ms);
/// without it they come back in step, nearly all in one bucket.
pub const SPIKE_BOUND: f64 = 0.25;
pub const BUCKET_MS: f64 = 100.0;
/// Every agent must be back this long after the restart: the agent's
/// reconnect delay is at most 30 s (`agent/src/backoff.rs`), plus margin.
pub const DEADLINE: Duration = Duration::from_secs(45);
const WATCHER: &str = "storm-watch";
const STARTUP: Duration = Duration::from_secs(120);

/// The rounds of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub agents: Vec<usize>,
    /// Heartbeat interval of the simulated agents (the agent's default is
    /// 30 s; shorter so that a window holds several).
    #[serde(serialize_with = "secs")]
    pub heartbeat: Duration,
    /// Connected and quiet before the kill.
    #[serde(serialize_with = "secs")]
    pub settle: Duration,
    /// `kill -9` → restart.
    #[serde(serialize_with = "secs")]
    pub down: Duration,
    /// Counted from the restarted server's "ready".
    #[serde(serialize_with = "secs")]
    pub window: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Plan {
    pub fn new(quick: bool, window: Option<Duration>) -> Plan {
        let s = Duration::from_secs;
        let mut plan = Plan {
            agents: if quick { vec![50, 100, 200] } else { vec![100, 300, 1000] },
            heartbeat: s(5),
            settle: s(2),
            down: s(3),
            window: if quick { s(15) } else { s(20) },
        };
        if let Some(w) = window {
            plan.window = w;
        }
        plan
    }

    /// Seconds a round takes, roughly (for the progress bar).
    fn round_secs(&self, n: usize) -> u64 {
        (self.settle + self.down + self.window).as_secs() + 3 + n as u64 / 200
    }
}

/// Whether `run --scenario NAME` is this one.
pub fn handles(name: &str) -> bool {
    name == NAME
}

/// Enough file descriptors for `n` clients (the soft limit raised towards
/// the hard one).
fn raise_nofile(n: usize) -> Result<(), BenchError> {
    let want = (n as libc::rlim_t + 256).max(1024);
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if got != 0 {
        return Err(BenchError::Failed(format!("getrlimit: {}", std::io::Error::last_os_error())));
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    lim.rlim_cur = want.min(lim.rlim_max);
    // SAFETY: as above.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    if set != 0 || lim.rlim_cur < want {
        return Err(BenchError::Failed(format!(
            "{n} agents need {want} open files; the hard limit is {} (ulimit -Hn)",
            lim.rlim_max
        )));
    }
    Ok(())
}

/// What a round needs besides its size.
struct Ctx<'a> {
    plan: &'a Plan,
    bin: PathBuf,
    out: PathBuf,
    meter: Meter,
    progress: Progress,
    started: Instant,
    log: Vec<String>,
}

impl Ctx<'_> {
    fn tick(&mut self, status: &str) {
        self.progress.at(self.started.elapsed().as_secs());
        self.progress.status(status);
        self.meter.sample("flotilla-loadtest (simulated agents)", std::process::id());
    }

    async fn sleep(&mut self, d: Duration, status: &str, server: &Server) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.tick(status);
            server.sample(&mut self.meter);
            tokio::time::sleep(Duration::from_millis(200).min(end.saturating_duration_since(Instant::now()))).await;
        }
    }
}

/// Heartbeats seen by a plain subscriber on `flotilla.agent.*.status`.
async fn watch(url: &str) -> Result<(async_nats::Client, Arc<AtomicU64>), BenchError> {
    let client = async_nats::ConnectOptions::new()
        .name(WATCHER)
        .connect(url)
        .await
        .map_err(|e| BenchError::nats("connect the watcher", e))?;
    let js = async_nats::jetstream::new(client.clone());
    js.create_or_update_stream(async_nats::jetstream::stream::Config {
        name: "STORM".into(),
        subjects: vec![agents::LOG_SUBJECTS.into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| BenchError::nats("create stream STORM", e))?;
    let mut sub =
        client.subscribe("flotilla.agent.*.status").await.map_err(|e| BenchError::nats("subscribe the watcher", e))?;
    client.flush().await.map_err(|e| BenchError::nats("flush the watcher", e))?;
    let seen = Arc::new(AtomicU64::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while sub.next().await.is_some() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok((client, seen))
}

async fn round(n: usize, ctx: &mut Ctx<'_>) -> Result<(Row, Vec<f64>), BenchError> {
    let plan = ctx.plan.clone();
    let daemons = ctx.out.join("daemons");
    let mut server = Server::new(&ctx.bin, ctx.out.join("var").join(format!("n{n}")), &daemons, format!("nats-n{n}"))?;
    server.start(&mut ctx.meter)?;
    let url = server.url();
    let (watcher, seen) = watch(&url).await?;

    ctx.progress.phase(&format!("{n} agents: connecting"));
    let mut fleet = tokio::time::timeout(STARTUP, Fleet::start(&url, n, plan.heartbeat))
        .await
        .map_err(|_| BenchError::Failed(format!("{n} agents did not connect within {STARTUP:?}")))??;
    ctx.sleep(plan.settle, &format!("{n} agents: settling"), &server).await;

    let (attempts_before, connects_before, seen_before) =
        (fleet.attempts(), fleet.connects(), seen.load(Ordering::Relaxed));
    let killed = Instant::now();
    server.kill9(&mut ctx.meter);
    ctx.progress.phase(&format!("{n} agents: nats-server killed (kill -9)"));
    ctx.sleep(plan.down, &format!("{n} agents: nats-server down"), &server).await;
    server.start(&mut ctx.meter)?;
    let down_s = killed.elapsed().as_secs_f64();
    let up = Instant::now();
    ctx.log.push(format!("{n} agents: kill -9 nats-server, restarted {down_s:.2} s later (same port and store)"));
    ctx.progress.phase(&format!("{n} agents: nats-server restarted"));
    let mut all_back_client: Option<f64> = None;
    let mut counting = true;
    let (mut varz, mut attempts, mut heartbeats_seen) = (Default::default(), 0, 0);
    loop {
        let back = fleet.reconnected(&connects_before);
        if back == n && all_back_client.is_none() {
            all_back_client = Some(up.elapsed().as_secs_f64());
        }
        if counting && up.elapsed() >= plan.window {
            counting = false;
            varz = server.varz().await.unwrap_or_else(|e| {
                ctx.progress.note(&format!("{n} agents: {e}"));
                Default::default()
            });
            attempts = fleet.attempts() - attempts_before;
            heartbeats_seen = seen.load(Ordering::Relaxed) - seen_before;
        }
        if !counting && (back == n || up.elapsed() >= DEADLINE.max(plan.window)) {
            break;
        }
        let what = if counting { "counting" } else { "waiting for stragglers" };
        ctx.tick(&format!("{n} agents: {back}/{n} back, {what}"));
        server.sample(&mut ctx.meter);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reconnected = fleet.reconnected(&connects_before);
    let late_s = up.elapsed().as_secs_f64();

    ctx.progress.phase(&format!("{n} agents: one more publish each"));
    let acked_after = tokio::time::timeout(Duration::from_secs(60), fleet.publish_all()).await.unwrap_or(0);
    fleet.stop().await;
    drop(watcher);
    server.stop(&mut ctx.meter);

    let log = server.log();
    let text = std::fs::read_to_string(&log).map_err(|e| BenchError::io(&log, e))?;
    // Counted in the window; reconnect times until the end of the wait.
    let tally = trace::tally(&text, agents::NAME_PREFIX, plan.window.as_secs_f64() * 1000.0);
    // `late_s` is on the client's clock from a little after "ready": margin.
    let all = trace::tally(&text, agents::NAME_PREFIX, late_s * 1000.0 + 2000.0);
    if !tally.ready {
        return Err(BenchError::Failed(format!("{}: no \"Server is ready\" line", log.display())));
    }
    let mut times: Vec<f64> = all.first_connect_ms.values().copied().collect();
    times.sort_by(f64::total_cmp);
    let seen = Observed { down_s, reconnected, all_back_client, acked_after, attempts, heartbeats_seen, varz };
    let row = Row::new(n, &plan, seen, &tally, &times);
    Ok((row, times))
}

/// Run the scenario; `report.json`, `report.md` and the charts go to
/// `opts.out`. The [`Report`] returned carries the pass/fail and the
/// headline figures for `run --all`.
pub async fn run(opts: &RunOptions) -> Result<Report, BenchError> {
    let wall = Instant::now();
    let started = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let plan = Plan::new(opts.quick, opts.duration);
    raise_nofile(plan.agents.iter().copied().max().unwrap_or(0))?;
    std::fs::create_dir_all(&opts.out).map_err(|e| BenchError::io(&opts.out, e))?;
    let out = opts.out.canonicalize().map_err(|e| BenchError::io(&opts.out, e))?;
    for dir in ["var", "daemons"] {
        let d = out.join(dir);
        if d.exists() {
            std::fs::remove_dir_all(&d).map_err(|e| BenchError::io(&d, e))?;
        }
        std::fs::create_dir_all(&d).map_err(|e| BenchError::io(&d, e))?;
    }
    let bin = nats_server_binary()?;
    let total: u64 = plan.agents.iter().map(|&n| plan.round_secs(n)).sum();
    let mut ctx = Ctx {
        plan: &plan,
        bin: bin.clone(),
        out: out.clone(),
        meter: Meter::default(),
        progress: Progress::new(NAME, Duration::from_secs(total)),
        started: Instant::now(),
        log: Vec::new(),
    };
    let mut rows = Vec::new();
    let mut times = Vec::new();
    for &n in &plan.agents {
        let (row, t) = round(n, &mut ctx).await?;
        ctx.progress.note(&format!(
            "{n} agents: {}/{} back (last {:.2} s after restart), {} messages from agents ({:.2} each), {} attempts",
            row.reconnected_server, n, row.back_max_s, row.received_total, row.per_agent.received, row.attempts
        ));
        rows.push(row);
        times.push((n, t));
    }
    ctx.progress.finish();

    let mut versions = std::collections::BTreeMap::new();
    versions.insert("flotilla-loadtest".to_string(), env!("CARGO_PKG_VERSION").to_string());
    versions.insert("nats-server".to_string(), output(&bin, &["--version"]).unwrap_or_else(|e| e.to_string()));
    if let Ok(commit) = output(Path::new("git"), &["rev-parse", "--short", "HEAD"]) {
        versions.insert("git commit (of the working directory)".to_string(), commit);
    }
    let storm = StormReport::new(
        opts,
        started,
        plan.clone(),
        rows,
        ctx.log,
        ctx.meter.stats(),
        Machine::read(),
        versions,
        wall.elapsed().as_secs_f64(),
    );
    storm.save(&out, &times)?;
    Ok(storm.to_report())
}
