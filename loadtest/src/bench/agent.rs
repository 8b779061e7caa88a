//! `flotilla-loadtest bench agent`: agent → JetStream against a baseline.
//!
//! 1. nats-server with JetStream (temporary store), stream `LOGS` on `logs.>`.
//! 2. One file of `lines` ~200-byte JSON lines at `<tmp>/logs/bench/app/app.log`.
//! 3. Baseline: [`super::baseline`] publishes those lines to the subject the
//!    agent will use, `in_flight` acks outstanding. CPU: this process's.
//! 4. Purge; the `flotilla-agent` next to this binary tails the file with
//!    `max_in_flight = in_flight` until the stream holds every line. CPU and
//!    peak RSS: the agent process's, from exec to the last ack.
//! 5. Purge; the baseline again. The two baseline runs bracket the agent's
//!    (on a shared 2-core machine a single run can be off by 10-20%); the
//!    agent is compared with their mean.
//! 6. Idle: a fresh agent on `idle_files` small files; once their lines are
//!    acked (and a few seconds more), its CPU over `idle_secs` and its RSS.
//!
//! Rates are lines over the span from the first line stored to the last, by
//! the stream's own timestamps: one clock and one definition for both
//! publishers, neither one's start-up (the agent's exec, connect and file
//! discovery) counted. Wall times are reported beside them.
//!
//! nats-server's own CPU is not charged to either side (it is reported
//! apart). Results: a table on stdout, `<out>/report.json`, `<out>/report.md`.

use super::Target;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use flotilla_core::subject::{log_subject, OrgId};

use super::baseline::{self, Origin, Shape};
use super::procstat::{self, cpu};
use super::{Admin, BenchError, Nats, Written};
use crate::procs::{nats_server_binary, output, sibling_binary, Proc};

const ORG: &str = "bench";
const APP: &str = "app";
const IDLE_ORG: &str = "idle";
const REGION: &str = "local";
const HOST: &str = "h1";
const IDLE_LINES_PER_FILE: u64 = 3;
/// After the idle agent's lines are acked, before measuring: checkpoints
/// are written and the agent has gone to sleep.
const IDLE_SETTLE: Duration = Duration::from_secs(5);
const STALL: Duration = Duration::from_secs(60);
const GB: f64 = 1e9;
const MB: f64 = 1e6;
const MIB: f64 = 1024.0 * 1024.0;

pub struct AgentBenchOptions {
    pub lines: u64,
    pub in_flight: usize,
    /// 0 skips the idle measurement.
    pub idle_files: usize,
    pub idle_secs: u64,
    /// Also run the diagnostic publishers of [`Shape`].
    pub variants: bool,
    /// nats-server requires TLS: the agent and the baseline speak it.
    pub tls: bool,
    pub out: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub started: String,
    pub nproc: usize,
    pub agent_version: String,
    pub nats_server_version: String,
    pub cpu_clock: &'static str,
    pub lines: u64,
    pub in_flight: usize,
    /// Over TLS (nats-server requiring it).
    pub tls: bool,
    pub file: Written,
    /// The mean of the two baseline runs.
    pub baseline: Throughput,
    /// Before and after the agent's run.
    pub baseline_runs: [Throughput; 2],
    pub agent: Throughput,
    /// Agent lines/s over baseline lines/s.
    pub ratio: f64,
    pub agent_max_rss_mib: f64,
    /// Diagnostic publishers (`--variants`): the baseline plus parts of the
    /// agent's message format.
    pub variants: Vec<Variant>,
    pub idle: Option<Idle>,
    pub targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
pub struct Throughput {
    /// The baseline: first publish to last ack; the agent: from exec (its
    /// start-up included) until the stream was seen to hold every line.
    pub wall_secs: f64,
    /// From the first line stored to the last, by nats-server's timestamps:
    /// the same clock and the same definition for both publishers, neither
    /// one's start-up included.
    pub stored_span_secs: f64,
    /// Lines over the stored span.
    pub lines_per_sec: f64,
    /// File bytes (newlines included) per second, MB = 10^6 bytes.
    pub mb_per_sec: f64,
    pub cpu_secs: f64,
    /// CPU seconds per 10^9 bytes of the file.
    pub cpu_secs_per_gb: f64,
    pub nats_server_cpu_secs: f64,
    /// CPU the rest of the machine used meanwhile (10 ms resolution): a
    /// disturbance indicator, ideally near 0.
    pub other_processes_cpu_secs: f64,
    /// Bytes the stream holds per message (payload, headers, subject, overhead).
    pub stream_bytes_per_msg: f64,
    pub load1_after: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Variant {
    pub publisher: &'static str,
    pub throughput: Throughput,
}

#[derive(Debug, Serialize)]
pub struct Idle {
    pub files: usize,
    pub secs: f64,
    pub cpu_ms_per_sec: f64,
    /// The same from `/proc/<pid>/stat` clock ticks (coarse: a cross-check).
    pub cpu_ms_per_sec_from_ticks: f64,
    pub rss_mib: f64,
    pub max_rss_mib: f64,
}

fn cpu_of(pid: u32, who: &str) -> Result<procstat::Cpu, BenchError> {
    cpu(pid).map_err(|e| BenchError::Failed(format!("cannot read the CPU time of {who} (pid {pid}): {e}")))
}

fn kib_of(pid: u32, field: &str) -> Result<f64, BenchError> {
    procstat::status_kib(pid, field)
        .map(|k| k as f64 * 1024.0 / MIB)
        .map_err(|e| BenchError::Failed(format!("cannot read {field} of pid {pid}: {e}")))
}

pub async fn run(opts: &AgentBenchOptions) -> Result<Report, BenchError> {
    let agent_bin = sibling_binary("flotilla-agent")?;
    let nats_bin = nats_server_binary()?;
    let logs_dir = opts.out.join("logs");
    std::fs::create_dir_all(&logs_dir).map_err(|e| BenchError::io(&logs_dir, e))?;
    let tmp_dir = tempfile::Builder::new()
        .prefix("flotilla-bench-")
        .tempdir()
        .map_err(|e| BenchError::io(&std::env::temp_dir(), e))?;
    let tmp = tmp_dir.path();
    let started = chrono::Utc::now();

    let nats = match opts.tls {
        true => Nats::start_tls(&nats_bin, &tmp.join("nats"), &logs_dir)?,
        false => Nats::start(&nats_bin, &tmp.join("nats"), &logs_dir)?,
    };
    let nats_pid = nats.proc.id();
    let mut admin = Admin::connect(&nats.url, nats.ca()).await?;
    let org = OrgId::new(ORG).map_err(|e| BenchError::Failed(e.to_string()))?;
    let subject = log_subject(&org, APP, REGION, HOST);

    let logs = tmp.join("logs");
    let log_file = logs.join(ORG).join(APP).join("app.log");
    println!("writing {} lines to {}", opts.lines, log_file.display());
    let file = super::write_log(&log_file, opts.lines, started)?;

    // Baseline, then the diagnostic publishers.
    let origin = Origin { org: ORG, app: APP, region: REGION, host: HOST };
    let publisher = Publisher {
        url: &nats.url,
        ca: nats.ca(),
        file: &log_file,
        subject: &subject,
        in_flight: opts.in_flight,
        origin,
    };
    let before = publisher.measure(Shape::Lines, &file, nats_pid, &mut admin).await?;
    let mut variants = Vec::new();
    if opts.variants {
        for shape in [Shape::LinesWithMsgId, Shape::AgentFormat] {
            let throughput = publisher.measure(shape, &file, nats_pid, &mut admin).await?;
            variants.push(Variant { publisher: shape.label(), throughput });
        }
    }

    // Agent.
    println!("agent: tailing the file, max_in_flight = {}", opts.in_flight);
    let cfg = write_config(tmp, "agent", &nats, &logs, opts.in_flight)?;
    let meter = Meter::start(nats_pid)?;
    let t0 = Instant::now();
    let mut agent = Proc::spawn("agent", &agent_bin, &["run", "-c", &cfg.path], &[], &logs_dir)?;
    let pid = agent.id();
    admin.wait_for(file.lines, &mut agent, STALL).await?;
    let wall = t0.elapsed();
    let (acpu, max_rss) = (cpu_of(pid, "the agent")?, kib_of(pid, "VmHWM")?);
    let used = meter.read(acpu.secs)?;
    let state = admin.state().await?;
    agent.stop(Duration::from_secs(15));
    if state.messages != file.lines {
        return Err(BenchError::Failed(format!(
            "agent: the stream holds {} messages, the file has {} lines",
            state.messages, file.lines
        )));
    }
    let agent_tp = throughput(&file, wall, acpu.secs, &used, state);
    drop(agent);
    admin.purge().await?;
    let after = publisher.measure(Shape::Lines, &file, nats_pid, &mut admin).await?;
    let baseline = mean(&before, &after, &file);

    let idle = if opts.idle_files > 0 {
        admin.purge().await?;
        Some(idle(opts, &agent_bin, &nats, tmp, &logs_dir, &mut admin).await?)
    } else {
        None
    };

    let ratio = agent_tp.lines_per_sec / baseline.lines_per_sec;
    let mut targets = vec![
        Target {
            what: "agent lines/s ÷ baseline lines/s".into(), target: "≥ 0.80", value: ratio, met: ratio >= 0.80
        },
        Target {
            what: "agent CPU-s per GB".into(),
            target: "≤ 25",
            value: agent_tp.cpu_secs_per_gb,
            met: agent_tp.cpu_secs_per_gb <= 25.0,
        },
    ];
    if let Some(i) = &idle {
        targets.push(Target {
            what: "idle CPU ms/s".into(),
            target: "< 0.3",
            value: i.cpu_ms_per_sec,
            met: i.cpu_ms_per_sec < 0.3,
        });
        targets.push(Target { what: "idle RSS MiB".into(), target: "< 15", value: i.rss_mib, met: i.rss_mib < 15.0 });
    }
    Ok(Report {
        started: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        agent_version: output(&agent_bin, &["--version"]).unwrap_or_else(|e| e.to_string()),
        nats_server_version: output(&nats_bin, &["--version"]).unwrap_or_else(|e| e.to_string()),
        cpu_clock: acpu.source.as_str(),
        lines: opts.lines,
        in_flight: opts.in_flight,
        tls: opts.tls,
        file,
        baseline,
        baseline_runs: [before, after],
        agent: agent_tp,
        ratio,
        agent_max_rss_mib: max_rss,
        variants,
        idle,
        targets,
    })
}

struct Publisher<'a> {
    url: &'a str,
    ca: Option<&'a Path>,
    file: &'a Path,
    subject: &'a str,
    in_flight: usize,
    origin: Origin<'a>,
}

impl Publisher<'_> {
    /// Publish the file in `shape`, check the stream holds every line, purge.
    /// CPU: this process's (nothing else runs in it meanwhile).
    async fn measure(
        &self,
        shape: Shape,
        file: &Written,
        nats_pid: u32,
        admin: &mut Admin,
    ) -> Result<Throughput, BenchError> {
        println!("publisher: {}, {} in flight", shape.label(), self.in_flight);
        let meter = Meter::start(nats_pid)?;
        let published =
            baseline::publish_file(self.url, self.ca, self.file, self.subject, self.in_flight, shape, &self.origin)
                .await?;
        let used = meter.read(0.0)?;
        let state = admin.state().await?;
        if published.lines != file.lines || state.messages != file.lines {
            return Err(BenchError::Failed(format!(
                "{}: published {} lines, the stream holds {} messages, the file has {}",
                shape.label(),
                published.lines,
                state.messages,
                file.lines
            )));
        }
        admin.purge().await?;
        Ok(throughput(file, published.wall, used.me, &used, state))
    }
}

/// CPU counters at the start of a measurement: this process, nats-server,
/// and the whole machine.
struct Meter {
    nats_pid: u32,
    me: f64,
    nats: f64,
    busy: f64,
}

/// CPU seconds used since [`Meter::start`].
struct Used {
    me: f64,
    nats: f64,
    /// Busy CPU time of the machine not used by this process, nats-server
    /// or the measured child: someone else's work, disturbing the numbers.
    others: f64,
}

impl Meter {
    fn start(nats_pid: u32) -> Result<Meter, BenchError> {
        Ok(Meter {
            nats_pid,
            me: cpu_of(std::process::id(), "this process")?.secs,
            nats: cpu_of(nats_pid, "nats-server")?.secs,
            busy: busy()?,
        })
    }

    /// `child`: CPU seconds of a measured child process started after `start`.
    fn read(&self, child: f64) -> Result<Used, BenchError> {
        let me = cpu_of(std::process::id(), "this process")?.secs - self.me;
        let nats = cpu_of(self.nats_pid, "nats-server")?.secs - self.nats;
        let others = (busy()? - self.busy - me - nats - child).max(0.0);
        Ok(Used { me, nats, others })
    }
}

fn busy() -> Result<f64, BenchError> {
    procstat::system_busy_secs().map_err(|e| BenchError::Failed(format!("cannot read /proc/stat: {e}")))
}

/// Two runs as one: their mean stored span, wall time, CPU and counts.
fn mean(a: &Throughput, b: &Throughput, file: &Written) -> Throughput {
    let m = |x: f64, y: f64| (x + y) / 2.0;
    let (secs, cpu) = (m(a.stored_span_secs, b.stored_span_secs), m(a.cpu_secs, b.cpu_secs));
    Throughput {
        wall_secs: m(a.wall_secs, b.wall_secs),
        stored_span_secs: secs,
        lines_per_sec: file.lines as f64 / secs,
        mb_per_sec: file.bytes as f64 / MB / secs,
        cpu_secs: cpu,
        cpu_secs_per_gb: cpu / (file.bytes as f64 / GB),
        nats_server_cpu_secs: m(a.nats_server_cpu_secs, b.nats_server_cpu_secs),
        other_processes_cpu_secs: m(a.other_processes_cpu_secs, b.other_processes_cpu_secs),
        stream_bytes_per_msg: m(a.stream_bytes_per_msg, b.stream_bytes_per_msg),
        load1_after: b.load1_after,
    }
}

fn throughput(file: &Written, wall: Duration, cpu: f64, used: &Used, state: super::StreamState) -> Throughput {
    let secs = state.stored_span_secs.max(1e-9);
    Throughput {
        wall_secs: wall.as_secs_f64(),
        stored_span_secs: secs,
        lines_per_sec: file.lines as f64 / secs,
        mb_per_sec: file.bytes as f64 / MB / secs,
        cpu_secs: cpu,
        cpu_secs_per_gb: cpu / (file.bytes as f64 / GB),
        nats_server_cpu_secs: used.nats,
        other_processes_cpu_secs: used.others,
        stream_bytes_per_msg: state.bytes as f64 / state.messages.max(1) as f64,
        load1_after: procstat::load1(),
    }
}

async fn idle(
    opts: &AgentBenchOptions,
    agent_bin: &Path,
    nats: &Nats,
    tmp: &Path,
    logs_dir: &Path,
    admin: &mut Admin,
) -> Result<Idle, BenchError> {
    let root = tmp.join("idle-logs");
    for i in 0..opts.idle_files {
        let path = root.join(IDLE_ORG).join(format!("app{i:03}")).join("app.log");
        super::write_log(&path, IDLE_LINES_PER_FILE, chrono::Utc::now())?;
    }
    let expected = opts.idle_files as u64 * IDLE_LINES_PER_FILE;
    println!("idle: {} files, {expected} lines, then {}s of sleep", opts.idle_files, opts.idle_secs);
    let cfg = write_config(tmp, "agent-idle", nats, &root, opts.in_flight)?;
    let mut agent = Proc::spawn("agent-idle", agent_bin, &["run", "-c", &cfg.path], &[], logs_dir)?;
    agent.wait_port(cfg.http_port, Duration::from_secs(20))?;
    admin.wait_for(expected, &mut agent, STALL).await?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let pid = agent.id();
    let ticks = |pid| procstat::cpu_ticks(pid).map_err(|e| BenchError::Failed(format!("pid {pid}: {e}")));
    let (c0, k0, t0) = (cpu_of(pid, "the idle agent")?, ticks(pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(opts.idle_secs)).await;
    agent.check_alive()?;
    let (c1, k1, secs) = (cpu_of(pid, "the idle agent")?, ticks(pid)?, t0.elapsed().as_secs_f64());
    let (rss, hwm) = (kib_of(pid, "VmRSS")?, kib_of(pid, "VmHWM")?);
    agent.stop(Duration::from_secs(15));
    Ok(Idle {
        files: opts.idle_files,
        secs,
        cpu_ms_per_sec: (c1.secs - c0.secs) * 1000.0 / secs,
        cpu_ms_per_sec_from_ticks: (k1 - k0) * 1000.0 / secs,
        rss_mib: rss,
        max_rss_mib: hwm,
    })
}

struct AgentConfig {
    path: String,
    http_port: u16,
}

/// An agent config tailing `<logs>/{org}/{app}/*.log` (JSON), host `h1`,
/// region `local`, its own data dir; every other setting is the default.
fn write_config(tmp: &Path, name: &str, nats: &Nats, logs: &Path, in_flight: usize) -> Result<AgentConfig, BenchError> {
    let http_port = super::free_port()?;
    let data = tmp.join(format!("{name}-data"));
    // JSON string escapes are valid TOML basic-string escapes.
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let include = format!("{}/{{org}}/{{app}}/*.log", logs.display());
    // Top-level config lines to try a setting without a rebuild
    // (e.g. `worker_threads = 2`); empty unless set.
    let extra = std::env::var("FLOTILLA_BENCH_AGENT_EXTRA").unwrap_or_default();
    let tls = nats.ca().map(|ca| format!("tls_ca = {}\n", q(&ca.to_string_lossy()))).unwrap_or_default();
    let text = format!(
        "host = \"{HOST}\"\nregion = \"{REGION}\"\ndata_dir = {}\nhttp_addr = \"127.0.0.1:{http_port}\"\n{extra}\n\n\
         [nats]\nurl = {}\nmax_in_flight = {in_flight}\n{tls}\n\
         [[sources]]\ntype = \"file\"\ninclude = [{}]\ncodec = \"json\"\n",
        q(&data.to_string_lossy()),
        q(&nats.url),
        q(&include),
    );
    let path = tmp.join(format!("{name}.toml"));
    std::fs::write(&path, text).map_err(|e| BenchError::io(&path, e))?;
    Ok(AgentConfig { path: path.to_string_lossy().to_string(), http_port })
}

/// The results as Markdown (also what is printed).
pub fn markdown(r: &Report) -> String {
    let (b, a) = (&r.baseline, &r.agent);
    let load = |l: Option<f64>| l.map(|l| format!("{l:.2}")).unwrap_or_else(|| "?".into());
    let mut s = format!(
        "{} lines, {:.1} MB ({:.0} bytes/line), {} in flight, {} cores; {}; {}{}\n\n\
         | | baseline (async-nats), mean of 2 | flotilla-agent | agent ÷ baseline |\n|---|---:|---:|---:|\n\
         | lines/s (first to last line stored) | {:.0} | {:.0} | {:.2} |\n\
         | lines/s, baseline before / after the agent | {:.0} / {:.0} | | |\n\
         | MB/s (file bytes) | {:.1} | {:.1} | |\n\
         | s from first line stored to last (rates above) | {:.2} | {:.2} | |\n\
         | wall s (agent: from exec, start-up included) | {:.2} | {:.2} | |\n\
         | CPU s (publisher process) | {:.2} | {:.2} | |\n\
         | CPU-s per GB | {:.1} | {:.1} | {:.2} |\n\
         | nats-server CPU s (not charged) | {:.2} | {:.2} | |\n\
         | CPU s, publisher + nats-server (baseline ÷ agent) | {:.2} | {:.2} | {:.2} |\n\
         | stream bytes/message | {:.0} | {:.0} | |\n\
         | max RSS MiB | | {:.1} | |\n\
         | other processes' CPU s (disturbance) | {:.2} | {:.2} | |\n\
         | load average (1 min) after | {} | {} | |\n",
        r.file.lines,
        r.file.bytes as f64 / MB,
        r.file.bytes as f64 / r.file.lines.max(1) as f64,
        r.in_flight,
        r.nproc,
        r.agent_version,
        r.nats_server_version,
        if r.tls { "; over TLS (rustls, nats-server --tls)" } else { "" },
        b.lines_per_sec,
        a.lines_per_sec,
        r.ratio,
        r.baseline_runs[0].lines_per_sec,
        r.baseline_runs[1].lines_per_sec,
        b.mb_per_sec,
        a.mb_per_sec,
        b.stored_span_secs,
        a.stored_span_secs,
        b.wall_secs,
        a.wall_secs,
        b.cpu_secs,
        a.cpu_secs,
        b.cpu_secs_per_gb,
        a.cpu_secs_per_gb,
        a.cpu_secs_per_gb / b.cpu_secs_per_gb,
        b.nats_server_cpu_secs,
        a.nats_server_cpu_secs,
        b.cpu_secs + b.nats_server_cpu_secs,
        a.cpu_secs + a.nats_server_cpu_secs,
        (b.cpu_secs + b.nats_server_cpu_secs) / (a.cpu_secs + a.nats_server_cpu_secs),
        b.stream_bytes_per_msg,
        a.stream_bytes_per_msg,
        r.agent_max_rss_mib,
        b.other_processes_cpu_secs,
        a.other_processes_cpu_secs,
        load(b.load1_after),
        load(a.load1_after),
    );
    if !r.variants.is_empty() {
        s += "\nDiagnostic publishers (same file, same window; CPU of the publisher process):\n\n\
              | publisher | lines/s | CPU-s per GB | nats-server CPU s | stream bytes/message | others' CPU s |\n\
              |---|---:|---:|---:|---:|---:|\n";
        let row = |name: &str, t: &Throughput| {
            format!(
                "| {name} | {:.0} | {:.1} | {:.2} | {:.0} | {:.2} |\n",
                t.lines_per_sec,
                t.cpu_secs_per_gb,
                t.nats_server_cpu_secs,
                t.stream_bytes_per_msg,
                t.other_processes_cpu_secs
            )
        };
        s += &row("lines, no headers (baseline, run before the agent)", &r.baseline_runs[0]);
        for v in &r.variants {
            s += &row(v.publisher, &v.throughput);
        }
        s += &row("flotilla-agent", a);
    }
    if let Some(i) = &r.idle {
        s += &format!(
            "\nIdle: {} files, {:.1} s measured: {:.3} ms CPU/s ({:.3} from clock ticks), RSS {:.1} MiB (peak {:.1} MiB)\n",
            i.files, i.secs, i.cpu_ms_per_sec, i.cpu_ms_per_sec_from_ticks, i.rss_mib, i.max_rss_mib
        );
    }
    s += &super::targets_table(&r.targets);
    s
}

/// Write `report.json` and `report.md` into `out`.
pub fn save(r: &Report, out: &Path) -> Result<(), BenchError> {
    super::save_report(r, "agent", &r.started, markdown(r), out)
}
