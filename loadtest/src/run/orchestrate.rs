//! One scenario from start to report:
//!
//! 1. nats-server (JetStream) on a free loopback port, its store in `<out>/var`
//!    (`cluster-node-loss`: three nodes, see [`super::cluster`]).
//! 2. Baseline: a bare async-nats publisher sends `baseline_lines` lines of
//!    the load's shape (512 acks outstanding, no headers) into a stream of
//!    its own (`BASELINE`, deleted after), before anything else runs.
//! 3. The shipper (Parquet to `<out>/archive`, `batch_max_age` 500 ms,
//!    `roll_max_age` 2 s; `object-store-outage`: to S3 on moto, see
//!    [`super::outage`]), a live-tail subscriber on `logs.>`, the proxy and
//!    tenants' tails through it (`slow-subscriber`, `noisy-tenant`: see
//!    [`super::tenants`]), the agent.
//! 4. The load: `rate` lines/s over `files` files for `duration`, faults
//!    spread evenly; then, for `steady`, a backlog written at once.
//! 5. Wait until the stream holds every line and the archive's consumer has
//!    nothing pending or unacknowledged (or nothing moved for 30 s); stop
//!    the agent and the shipper with SIGTERM (open objects are closed).
//! 6. Read the archive back ([`super::verify`]), count loss and duplicates,
//!    latencies, per-second series; write the report and charts.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::faults::{self, Restart, Schedule};
use super::latency::{self, bump};
use super::load::{self, Writers};
use super::outage::{self, Outage};
use super::phases::{self, Phase};
use super::progress::Progress;
use super::report::{Faults, IdleUsage, Machine, Report};
use super::scenarios::{Fault, Load, Scenario};
use super::stack::{self, Dirs, Meter, ShipperOptions, Stack, Watch, LOADTEST_ROLE};
use super::tenants::{self, Tenants};
use super::{burst, charts, cluster, tail, verify};
use crate::bench::baseline::{self, Origin, Shape};
use crate::bench::BenchError;
use crate::procs::{nats_server_binary, output};

/// Nothing moved in the stream or the consumer for this long: stop waiting.
const STALL: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(20);
/// The tail that `latency_ms.live_tail` and the series report.
const DIRECT_TAIL: &str = "direct (core NATS logs.>)";
/// Lines written before the `idle` scenario's quiet window.
const IDLE_LINES: u64 = 100;

pub struct RunOptions {
    pub scenario: &'static Scenario,
    pub quick: bool,
    pub duration: Option<Duration>,
    pub out: std::path::PathBuf,
    /// The command line, for the report.
    pub command: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |e| BenchError::io(path, e)
}

pub async fn run(opts: &RunOptions) -> Result<Report, BenchError> {
    let sc = opts.scenario;
    let fault = sc.fault.ok_or_else(|| BenchError::Failed(format!("scenario {} is not implemented yet", sc.name)))?;
    let load = sc.load(opts.quick, opts.duration);
    let dirs = Dirs::create(&opts.out)?;
    let progress = Progress::new(sc.name, load.duration);
    let started = Utc::now();
    let wall = Instant::now();
    let nats_bin = nats_server_binary()?;
    let mut meter = Meter::default();
    meter.started(LOADTEST_ROLE);
    let clustered = matches!(fault, Fault::ClusterNodeLoss { .. });
    // One URL per node: the daemons get one each (async-nats takes no list
    // in one string) and learn the others from the cluster.
    let (nodes, urls) = if clustered {
        progress.phase("starting a 3-node nats-server cluster");
        cluster::nodes(&nats_bin, &dirs)?
    } else {
        progress.phase("starting nats-server");
        let (d, url) = stack::nats(&nats_bin, &dirs)?;
        (vec![d], vec![url])
    };
    let mut st = Stack::new(nodes, meter);
    for role in st.daemons.iter().map(|d| d.role).collect::<Vec<_>>() {
        st.start(role)?;
    }
    let replicas = if clustered {
        let leader = cluster::wait_ready(&st, Duration::from_secs(60)).await?;
        progress.note(&format!("cluster up, JetStream meta leader {leader}"));
        3
    } else {
        1
    };
    let url = urls[0].clone();
    let watch = Watch::connect(&urls).await?;
    let baseline_eps = baseline(&watch, &url, &dirs, &load, replicas, &progress).await?;

    // The stack.
    let mut outage = match fault {
        Fault::ObjectStoreOutage { .. } => {
            progress.phase("starting the object store (moto) and the forwarder in front of it");
            Some(Outage::start(&dirs, &mut st).await?)
        }
        _ => None,
    };
    progress.phase("starting the shipper, the live tails and the agent");
    let store = outage.as_ref().map(Outage::shipper_store);
    // Every node, as an operator would list them; in a cluster the shipper's
    // list starts at another node than the agent's.
    let node_list =
        |first: usize| (0..urls.len()).map(|i| urls[(first + i) % urls.len()].as_str()).collect::<Vec<_>>().join(",");
    // Kills come every 10 s in `shipper-crash`: with a 10 s ack_wait, what a
    // killed shipper held came back just as the next kill hit, again and
    // again, and was archived only after the load (p99 62 s).
    let ack_wait = if fault == Fault::ShipperCrash { "4s" } else { "10s" };
    st.daemons.push(stack::shipper(&dirs, &node_list(1), &ShipperOptions { replicas, store, ack_wait })?);
    st.start("shipper")?;
    watch.wait_stream(Duration::from_secs(30)).await?;
    let tail_stop = CancellationToken::new();
    let direct_tail = tail::start(&url, tail_stop.clone()).await?;
    let mut tenants = match fault {
        Fault::SlowSubscriber | Fault::NoisyTenant => {
            Some(Tenants::start(fault, &dirs, &url, &mut st, load, tail_stop.clone()).await?)
        }
        _ => None,
    };
    let orgs = if tenants.is_some() { tenants::file_orgs(fault) } else { Vec::new() };
    let mut writers = Writers::create(&dirs.logs, load.files, &orgs).map_err(io(&dirs.logs))?;
    st.daemons.push(stack::agent(&dirs, &node_list(0))?);
    st.start("agent")?;

    // The load, with faults.
    progress.phase(&format!("load: {} lines/s to {} files", load.rate, load.files));
    let idle_start = if fault == Fault::Idle {
        progress.phase(&format!("idle: {IDLE_LINES} lines, then nothing for {} s", load.duration.as_secs()));
        writers.write(IDLE_LINES).map_err(io(&dirs.logs))?;
        wait_archived(&watch, IDLE_LINES, &mut st, &progress).await?;
        // Checkpoints written, objects closed, heartbeats sent: at rest.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Some((Instant::now(), st.cpu_now()))
    } else {
        None
    };
    let t0 = Instant::now();
    let t0_us = Utc::now().timestamp_micros();
    let mut written: Vec<u64> = Vec::new();
    let mut schedule = Schedule::new(&load);
    let mut fault_log = Vec::new();
    // When each fault was in effect: [injected, undone) in seconds of the load.
    let mut fault_windows: Vec<(f64, f64)> = Vec::new();
    let mut restart: Option<Restart> = None;
    loop {
        let el = t0.elapsed();
        if el >= load.duration {
            break;
        }
        let due = match fault {
            Fault::Burst => burst::due(load.rate, el),
            _ => (load.rate as f64 * el.as_secs_f64()) as u64,
        };
        let n = due.saturating_sub(writers.sent.total());
        if n > 0 {
            writers.write(n).map_err(io(&dirs.logs))?;
            bump(&mut written, el.as_secs() as usize, n);
        }
        if restart.is_none() {
            if let Some(k) = schedule.due(el) {
                if let Some((what, r)) = faults::inject(fault, k, el, &mut writers, &mut st).await? {
                    progress.note(&what);
                    fault_log.push(what);
                    fault_windows.push((el.as_secs_f64(), f64::INFINITY));
                    restart = Some(r);
                }
            }
        }
        if let Some(r) = restart.take_if(|r| Instant::now() >= r.at) {
            faults::undo(&r, &mut st)?;
            if let Some(w) = fault_windows.last_mut() {
                w.1 = t0.elapsed().as_secs_f64();
            }
        }
        if let Some(t) = tenants.as_mut() {
            t.tick(el, &progress).await?;
        }
        st.sample(false);
        st.check()?;
        progress.at(el.as_secs());
        tokio::time::sleep(TICK).await;
    }
    if let Some(r) = restart.take() {
        tokio::time::sleep(r.at.saturating_duration_since(Instant::now())).await;
        faults::undo(&r, &mut st)?;
        if let Some(w) = fault_windows.last_mut() {
            w.1 = t0.elapsed().as_secs_f64();
        }
    }
    if let Some(t) = tenants.as_mut() {
        t.end_load().await;
    }
    let load_end_us = Utc::now().timestamp_micros();
    let idle = idle_start.map(|(since, before)| {
        let secs = since.elapsed().as_secs_f64();
        let after = st.cpu_now();
        before
            .into_iter()
            .map(|(role, (cpu0, _))| {
                let (cpu1, rss) = after.get(&role).copied().unwrap_or((cpu0, 0.0));
                (role, IdleUsage { secs, cpu_ms_per_s: (cpu1 - cpu0) * 1000.0 / secs, rss_mib: rss })
            })
            .collect()
    });
    let steady_lines = writers.sent.total();

    // Capacity: a backlog written at once.
    let mut capacity = None;
    if load.capacity_lines > 0 {
        progress.phase(&format!("capacity: {} lines written at once", load.capacity_lines));
        // Let the steady phase settle first, so the backlog is measured alone.
        wait_archived(&watch, steady_lines, &mut st, &progress).await?;
        let tc = Instant::now();
        let mut left = load.capacity_lines;
        while left > 0 {
            let n = left.min(5_000);
            writers.write(n).map_err(io(&dirs.logs))?;
            bump(&mut written, t0.elapsed().as_secs() as usize, n);
            left -= n;
        }
        let done = wait_archived(&watch, writers.sent.total(), &mut st, &progress).await?;
        capacity = Some((load.capacity_lines, tc.elapsed(), done));
    }

    progress.phase("waiting until the archive holds everything");
    let all_done = wait_archived(&watch, writers.sent.total(), &mut st, &progress).await?;
    let t_done = t0.elapsed();
    if !all_done {
        progress.note(&format!("nothing moved for {} s: reading back what the archive holds", STALL.as_secs()));
    }
    progress.phase("stopping the agent and the shipper (SIGTERM)");
    st.stop("agent", Duration::from_secs(20));
    let mut extra = BTreeMap::new();
    let mut tails = BTreeMap::new();
    if let Some(t) = tenants.take() {
        let (more_tails, more_extra) = t.finish(&mut st).await?;
        tails.extend(more_tails);
        extra.extend(more_extra);
    }
    st.stop("shipper", Duration::from_secs(30));
    st.sample(true);
    tail_stop.cancel();
    tails
        .insert(DIRECT_TAIL.to_string(), direct_tail.await.map_err(|e| BenchError::Failed(format!("live tail: {e}")))?);
    if let Some(o) = outage.as_mut() {
        progress.phase("copying the bucket's objects to the archive directory");
        extra.extend(o.collect(&dirs.archive).await?);
    }

    // Read back and report.
    progress.phase("reading the archive back");
    let archive_dir = dirs.archive.clone();
    let archive = tokio::task::spawn_blocking(move || verify::read_archive(&archive_dir))
        .await
        .map_err(|e| BenchError::Failed(format!("readback: {e}")))?;
    let verdict = verify::verify(&writers.sent, &archive.rows);

    let (throughput_eps, throughput_measure) = match capacity {
        Some((lines, took, _)) => (
            lines as f64 / took.as_secs_f64().max(1e-9),
            format!(
                "a backlog of {lines} lines written at once after the steady phase, divided by the time from its \
                 write until the archive's consumer had nothing pending or unacknowledged ({:.2} s; the shipper acks \
                 only complete objects, so this includes up to roll_max_age = 2 s)",
                took.as_secs_f64()
            ),
        ),
        None => (
            verdict.archived as f64 / t_done.as_secs_f64().max(1e-9),
            format!(
                "distinct lines archived divided by the time from the first write until the archive's consumer had \
                 nothing pending or unacknowledged ({:.1} s): bounded by the offered {} lines/s{}",
                t_done.as_secs_f64(),
                load.rate,
                if fault == Fault::Burst { " plus the bursts" } else { "" },
            ),
        ),
    };

    let steady_secs = load.duration.as_secs_f64().ceil() as usize;
    let (series, latency, samples) =
        latency::analyse(&archive.rows, &tails, DIRECT_TAIL, t0_us, load_end_us, steady_secs, written);
    let phase_list = match fault {
        Fault::Burst => {
            extra.extend(burst::extra(&load, &series));
            vec![
                Phase::new("burst", burst::windows(load.duration)),
                Phase::new("between bursts", burst::between(load.duration)),
            ]
        }
        Fault::SlowSubscriber | Fault::NoisyTenant => tenants::phases(fault, load.duration),
        Fault::ObjectStoreOutage { .. } => {
            extra.extend(outage::drains(&fault_windows, &archive.rows, t0_us));
            fault_phases("object store down", "object store up", &fault_windows, load.duration)
        }
        Fault::ClusterNodeLoss { .. } => fault_phases("a node down", "all nodes up", &fault_windows, load.duration),
        _ => Vec::new(),
    };
    let phase_stats = phases::split(&phase_list, t0_us, &samples.archive, &samples.tails);

    let title = format!("{}{}", sc.name, if opts.quick { " --quick" } else { "" });
    charts::throughput(&series, &dirs.out.join("throughput.svg"), &format!("{title}: lines per second"))?;
    charts::latency(&series, &dirs.out.join("latency.svg"), &format!("{title}: latency from the write"))?;

    let mut versions = BTreeMap::new();
    versions.insert("flotilla-loadtest".to_string(), env!("CARGO_PKG_VERSION").to_string());
    for role in ["agent", "shipper", "proxy"] {
        if let Ok(d) = st.get(role) {
            versions.insert(format!("flotilla-{role}"), d.version());
        }
    }
    versions.insert("nats-server".to_string(), output(&nats_bin, &["--version"]).unwrap_or_else(|e| e.to_string()));
    if let Ok(commit) = output(Path::new("git"), &["rev-parse", "--short", "HEAD"]) {
        versions.insert("git commit (of the working directory)".to_string(), commit);
    }
    let ok = verdict.lost == 0
        && verdict.duplicated == 0
        && verdict.unexpected == 0
        && archive.unreadable.is_empty()
        && verdict.expected > 0
        && verdict.archived == verdict.expected;
    progress.finish();
    let rest: Vec<&'static str> = st.daemons.iter().rev().map(|d| d.role).collect();
    for role in rest {
        st.stop(role, Duration::from_secs(10));
    }
    Ok(Report {
        scenario: sc.name.to_string(),
        quick: opts.quick,
        started: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        command: opts.command.clone(),
        load,
        events_sent: verdict.expected,
        events_archived: verdict.archived,
        lost: verdict.lost,
        duplicated: verdict.duplicated,
        verdict,
        archive_objects: archive.objects,
        unreadable_objects: archive.unreadable,
        throughput_measure,
        throughput_eps,
        baseline_eps,
        ratio: throughput_eps / baseline_eps.max(1e-9),
        latency_ms: latency.archive,
        latency,
        faults: Faults { injected: fault_log.len() as u32, log: fault_log },
        processes: st.meter.stats(),
        machine: Machine::read(),
        versions,
        wall_s: wall.elapsed().as_secs_f64(),
        series,
        ok,
        idle,
        phases: phase_stats,
        extra,
    })
}

/// The bare async-nats JetStream publisher of the load's lines into a stream
/// of its own (`replicas` copies), before anything else runs: lines/s.
async fn baseline(
    watch: &Watch,
    url: &str,
    dirs: &Dirs,
    load: &Load,
    replicas: usize,
    progress: &Progress,
) -> Result<f64, BenchError> {
    progress.phase(&format!("baseline: bare JetStream publisher, {} lines", load.baseline_lines));
    watch.create_baseline_stream(replicas).await?;
    let bfile = dirs.var.join("baseline").join("app.log");
    load::write_baseline_file(&bfile, load.baseline_lines).map_err(io(&bfile))?;
    let origin = Origin { org: load::ORG, app: "baseline", region: stack::REGION, host: stack::HOST };
    let published = baseline::publish_file(url, None, &bfile, "baseline.loadtest", 512, Shape::Lines, &origin).await?;
    watch.delete_baseline_stream().await?;
    let _ = std::fs::remove_file(&bfile);
    Ok(published.lines as f64 / published.wall.as_secs_f64().max(1e-9))
}

/// Two phases: while a fault was in effect, and the rest of the load.
fn fault_phases(down: &str, up: &str, windows: &[(f64, f64)], duration: Duration) -> Vec<Phase> {
    let end = duration.as_secs_f64();
    let mut rest = Vec::new();
    let mut at = 0.0;
    for &(from, to) in windows {
        if from > at {
            rest.push((at, from));
        }
        at = to;
    }
    if at < end {
        rest.push((at, end));
    }
    vec![Phase::new(down, windows.to_vec()), Phase::new(up, rest)]
}

/// Wait until the stream holds `expected` messages and the archive's
/// consumer has nothing outstanding. False if nothing moved for [`STALL`].
async fn wait_archived(watch: &Watch, expected: u64, st: &mut Stack, progress: &Progress) -> Result<bool, BenchError> {
    let mut last = None;
    let mut since = Instant::now();
    loop {
        st.sample(false);
        st.check()?;
        if let Some(p) = watch.progress().await {
            if p.stream_messages >= expected && p.consumer_outstanding == 0 {
                return Ok(true);
            }
            let now = (p.stream_messages, p.consumer_outstanding);
            if last != Some(now) {
                last = Some(now);
                since = Instant::now();
                progress.status(&format!(
                    "waiting: stream {} of {expected}, {} not yet archived",
                    p.stream_messages,
                    if p.consumer_outstanding == u64::MAX { "?".into() } else { p.consumer_outstanding.to_string() }
                ));
            }
        }
        if since.elapsed() > STALL {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
