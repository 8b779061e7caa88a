//! One scenario from start to report:
//!
//! 1. nats-server (JetStream) on a free loopback port, its store in `<out>/var`.
//! 2. Baseline: a bare async-nats publisher sends `baseline_lines` lines of
//!    the load's shape (512 acks outstanding, no headers) into a stream of
//!    its own (`BASELINE`, deleted after), before anything else runs.
//! 3. The shipper (Parquet to `<out>/archive`, `batch_max_age` 500 ms,
//!    `roll_max_age` 2 s), a live-tail subscriber on `logs.>`, the agent.
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
use super::load::{self, Writers};
use super::progress::Progress;
use super::report::{Faults, IdleUsage, Latency, Machine, Percentiles, Report, Series};
use super::scenarios::{Fault, Scenario};
use super::stack::{self, Daemon, Dirs, Meter, Watch};
use super::{charts, tail, verify};
use crate::bench::baseline::{self, Origin, Shape};
use crate::bench::BenchError;
use crate::procs::{nats_server_binary, output};

/// Nothing moved in the stream or the consumer for this long: stop waiting.
const STALL: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(20);
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
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

pub struct Stack {
    pub agent: Daemon,
    pub shipper: Daemon,
    pub nats: Daemon,
    pub meter: Meter,
    last_sample: Instant,
}

impl Stack {
    fn sample(&mut self, force: bool) {
        if !force && self.last_sample.elapsed() < SAMPLE_EVERY {
            return;
        }
        self.last_sample = Instant::now();
        self.agent.sample(&mut self.meter);
        self.shipper.sample(&mut self.meter);
        self.nats.sample(&mut self.meter);
        self.meter.sample("flotilla-loadtest (load, tail, baseline)", std::process::id());
    }

    /// CPU seconds and current RSS (MiB) of each running daemon, now.
    fn cpu_now(&self) -> BTreeMap<String, (f64, f64)> {
        [&self.agent, &self.shipper, &self.nats]
            .into_iter()
            .filter_map(|d| {
                let pid = d.proc.as_ref()?.id();
                let cpu = crate::bench::procstat::cpu(pid).ok()?.secs;
                let rss = crate::bench::procstat::status_kib(pid, "VmRSS").map(|k| k as f64 / 1024.0).unwrap_or(0.0);
                Some((d.role.to_string(), (cpu, rss)))
            })
            .collect()
    }

    fn check(&mut self) -> Result<(), BenchError> {
        self.agent.check()?;
        self.shipper.check()?;
        self.nats.check()
    }

    fn restart(&mut self, r: &Restart) -> Result<(), BenchError> {
        match r.role {
            "agent" => self.agent.start(&mut self.meter),
            "nats-server" => self.nats.start(&mut self.meter),
            _ => self.shipper.start(&mut self.meter),
        }
    }
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
    meter.started("flotilla-loadtest (load, tail, baseline)");
    progress.phase("starting nats-server");
    let (mut nats, url) = stack::nats(&nats_bin, &dirs)?;
    nats.start(&mut meter)?;
    let watch = Watch::connect(&url).await?;

    // Baseline.
    progress.phase(&format!("baseline: bare JetStream publisher, {} lines", load.baseline_lines));
    watch.create_baseline_stream().await?;
    let bfile = dirs.var.join("baseline").join("app.log");
    load::write_baseline_file(&bfile, load.baseline_lines).map_err(io(&bfile))?;
    let origin = Origin { org: load::ORG, app: "baseline", region: stack::REGION, host: stack::HOST };
    let published = baseline::publish_file(&url, &bfile, "baseline.loadtest", 512, Shape::Lines, &origin).await?;
    let baseline_eps = published.lines as f64 / published.wall.as_secs_f64().max(1e-9);
    watch.delete_baseline_stream().await?;
    let _ = std::fs::remove_file(&bfile);

    // The stack.
    progress.phase("starting the shipper, the live tail and the agent");
    let mut st = Stack {
        agent: stack::agent(&dirs, &url)?,
        shipper: stack::shipper(&dirs, &url)?,
        nats,
        meter,
        last_sample: Instant::now(),
    };
    st.shipper.start(&mut st.meter)?;
    watch.wait_stream(Duration::from_secs(30)).await?;
    let tail_stop = CancellationToken::new();
    let tail = tail::start(&url, tail_stop.clone()).await?;
    let mut writers = Writers::create(&dirs.logs, load.files).map_err(io(&dirs.logs))?;
    st.agent.start(&mut st.meter)?;

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
    let mut restart: Option<Restart> = None;
    loop {
        let el = t0.elapsed();
        if el >= load.duration {
            break;
        }
        let due = (load.rate as f64 * el.as_secs_f64()) as u64;
        let n = due.saturating_sub(writers.sent.total());
        if n > 0 {
            writers.write(n).map_err(io(&dirs.logs))?;
            bump(&mut written, el.as_secs() as usize, n);
        }
        if restart.is_none() {
            if let Some(k) = schedule.due(el) {
                if let Some((what, r)) = faults::inject(fault, k, el, &mut writers, &mut st)? {
                    progress.note(&what);
                    fault_log.push(what);
                    restart = Some(r);
                }
            }
        }
        if let Some(r) = restart.take_if(|r| Instant::now() >= r.at) {
            st.restart(&r)?;
        }
        st.sample(false);
        st.check()?;
        progress.at(el.as_secs());
        tokio::time::sleep(TICK).await;
    }
    if let Some(r) = restart.take() {
        tokio::time::sleep(r.at.saturating_duration_since(Instant::now())).await;
        st.restart(&r)?;
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
    st.agent.stop(&mut st.meter, Duration::from_secs(20));
    st.shipper.stop(&mut st.meter, Duration::from_secs(30));
    st.sample(true);
    tail_stop.cancel();
    let tail = tail.await.map_err(|e| BenchError::Failed(format!("live tail: {e}")))?;

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
                 nothing pending or unacknowledged ({:.1} s): bounded by the offered {} lines/s",
                t_done.as_secs_f64(),
                load.rate
            ),
        ),
    };

    let mut series = Series { written, ..Series::default() };
    let sec_of = |us: i64| ((us - t0_us).max(0) / 1_000_000) as usize;
    let (mut arch_lat, mut tail_lat) = (Vec::new(), Vec::new());
    let mut arch_by_sec: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    let mut tail_by_sec: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    for r in &archive.rows {
        bump(&mut series.archived, sec_of(r.archived_us), 1);
        if r.written_us <= load_end_us {
            let lat = r.archived_us - r.written_us;
            arch_lat.push(lat);
            arch_by_sec.entry(sec_of(r.written_us)).or_default().push(lat);
        }
    }
    for &(arrival, lat) in &tail.arrivals {
        bump(&mut series.live_tail, sec_of(arrival), 1);
        if arrival - lat <= load_end_us {
            tail_lat.push(lat);
            tail_by_sec.entry(sec_of(arrival - lat)).or_default().push(lat);
        }
    }
    let secs = series.written.len().max(series.archived.len()).max(series.live_tail.len());
    for v in [&mut series.written, &mut series.archived, &mut series.live_tail] {
        v.resize(secs, 0);
    }
    let per_sec = |m: &mut BTreeMap<usize, Vec<i64>>, n: usize| -> (Vec<Option<f64>>, Vec<Option<f64>>) {
        (0..n)
            .map(|s| match m.get_mut(&s) {
                Some(v) => {
                    let p = Percentiles::of(v);
                    (Some(p.p50), Some(p.p99))
                }
                None => (None, None),
            })
            .unzip()
    };
    let steady_secs = load.duration.as_secs_f64().ceil() as usize;
    (series.archive_p50_ms, series.archive_p99_ms) = per_sec(&mut arch_by_sec, steady_secs);
    (series.tail_p50_ms, series.tail_p99_ms) = per_sec(&mut tail_by_sec, steady_secs);
    let latency = Latency { archive: Percentiles::of(&mut arch_lat), live_tail: Percentiles::of(&mut tail_lat) };

    let title = format!("{}{}", sc.name, if opts.quick { " --quick" } else { "" });
    charts::throughput(&series, &dirs.out.join("throughput.svg"), &format!("{title}: lines per second"))?;
    charts::latency(&series, &dirs.out.join("latency.svg"), &format!("{title}: latency from the write"))?;

    let mut versions = BTreeMap::new();
    versions.insert("flotilla-loadtest".to_string(), env!("CARGO_PKG_VERSION").to_string());
    versions.insert("flotilla-agent".to_string(), st.agent.version());
    versions.insert("flotilla-shipper".to_string(), st.shipper.version());
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
    st.nats.stop(&mut st.meter, Duration::from_secs(10));
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
    })
}

fn bump(v: &mut Vec<u64>, i: usize, n: u64) {
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] += n;
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
