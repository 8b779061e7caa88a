//! The processes of a run: nats-server, the shipper writing Parquet to
//! `<out>/archive`, the agent tailing `<out>/logs`; started, killed
//! (`SIGKILL`), restarted and stopped (`SIGTERM`), with the CPU time and peak
//! memory of every incarnation read from `/proc` while they live.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::forward::Gate;
use crate::bench::procstat;
use crate::bench::{free_port, BenchError};
use crate::procs::{output, sibling_binary, Proc};

/// The sink (and so the durable consumer `flotilla-archive`) of the archive.
pub const SINK: &str = "archive";
pub const CONSUMER: &str = "flotilla-archive";
pub const HOST: &str = "lt-host";
pub const REGION: &str = "local";

/// CPU and peak RSS of one role (all its incarnations).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProcStats {
    /// CPU seconds (user + system) summed over incarnations.
    pub cpu_s: f64,
    /// The largest peak RSS (VmHWM) of any incarnation.
    pub max_rss_mib: f64,
    pub starts: u32,
}

/// Per-pid samples, folded into [`ProcStats`] per role.
#[derive(Default)]
pub struct Meter {
    /// role → pid → (cpu seconds, VmHWM MiB, at) of the last sample.
    samples: BTreeMap<String, BTreeMap<u32, (f64, f64)>>,
    starts: BTreeMap<String, u32>,
}

impl Meter {
    pub fn started(&mut self, role: &str) {
        *self.starts.entry(role.into()).or_default() += 1;
    }

    /// Read `pid`'s CPU time and peak RSS now (a dead pid keeps its last).
    pub fn sample(&mut self, role: &str, pid: u32) {
        let Ok(cpu) = procstat::cpu(pid) else { return };
        let hwm = procstat::status_kib(pid, "VmHWM").map(|k| k as f64 / 1024.0).unwrap_or(0.0);
        let e = self.samples.entry(role.into()).or_default().entry(pid).or_insert((0.0, 0.0));
        e.0 = e.0.max(cpu.secs);
        e.1 = e.1.max(hwm);
    }

    pub fn stats(&self) -> BTreeMap<String, ProcStats> {
        self.samples
            .iter()
            .map(|(role, pids)| {
                let cpu_s = pids.values().map(|s| s.0).sum();
                let max_rss_mib = pids.values().map(|s| s.1).fold(0.0, f64::max);
                let starts = self.starts.get(role).copied().unwrap_or(1);
                (role.clone(), ProcStats { cpu_s, max_rss_mib, starts })
            })
            .collect()
    }
}

/// A daemon that can be killed and started again with the same config.
pub struct Daemon {
    pub role: &'static str,
    bin: PathBuf,
    args: Vec<String>,
    /// The port that accepts connections once it is up.
    port: u16,
    /// Its HTTP port (`/metrics`, or nats-server's monitoring), if known.
    pub http: Option<u16>,
    log_dir: PathBuf,
    pub proc: Option<Proc>,
    incarnation: u32,
}

impl Daemon {
    /// A Flotilla daemon: `run -c <config>`, up once `http_port` listens.
    pub fn new(role: &'static str, bin: PathBuf, config: &Path, http_port: u16, dirs: &Dirs) -> Daemon {
        let args = vec!["run".into(), "-c".into(), config.to_string_lossy().to_string()];
        Daemon { http: Some(http_port), ..Daemon::command(role, bin, args, http_port, dirs) }
    }

    /// Any program with `args`, up once `port` accepts connections.
    pub fn command(role: &'static str, bin: PathBuf, args: Vec<String>, port: u16, dirs: &Dirs) -> Daemon {
        Daemon { role, bin, args, port, http: None, log_dir: dirs.daemons.clone(), proc: None, incarnation: 0 }
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::id)
    }

    pub fn start(&mut self, meter: &mut Meter) -> Result<(), BenchError> {
        self.incarnation += 1;
        let name = format!("{}-{}", self.role, self.incarnation);
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut p = Proc::spawn(&name, &self.bin, &args, &[], &self.log_dir)?;
        p.wait_port(self.port, Duration::from_secs(30))?;
        meter.started(self.role);
        meter.sample(self.role, p.id());
        self.proc = Some(p);
        Ok(())
    }

    pub fn sample(&mut self, meter: &mut Meter) {
        if let Some(p) = &self.proc {
            meter.sample(self.role, p.id());
        }
    }

    /// `kill -9`, then reap.
    pub fn kill9(&mut self, meter: &mut Meter) {
        if let Some(mut p) = self.proc.take() {
            meter.sample(self.role, p.id());
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(p.id() as libc::pid_t, libc::SIGKILL);
            }
            p.stop(Duration::from_secs(5));
        }
    }

    /// SIGTERM (the daemon drains) and wait up to `grace`.
    pub fn stop(&mut self, meter: &mut Meter, grace: Duration) {
        if let Some(mut p) = self.proc.take() {
            let pid = p.id();
            // Sample as late as possible: the drain costs CPU too.
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && p.check_alive().is_ok() {
                meter.sample(self.role, pid);
                std::thread::sleep(Duration::from_millis(20));
            }
            p.stop(Duration::from_secs(1));
        }
    }

    pub fn check(&mut self) -> Result<(), BenchError> {
        match self.proc.as_mut() {
            Some(p) => p.check_alive().map_err(Into::into),
            None => Ok(()),
        }
    }

    pub fn version(&self) -> String {
        output(&self.bin, &["--version"]).unwrap_or_else(|e| e.to_string())
    }
}

/// Every process of a run, in start order (nats-server first, agent last).
pub struct Stack {
    pub daemons: Vec<Daemon>,
    pub meter: Meter,
    last_sample: Instant,
    /// `object-store-outage`: the gate of the shipper's way to its store.
    pub gate: Option<Gate>,
}

/// How often [`Stack::sample`] reads `/proc` unless forced.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

impl Stack {
    pub fn new(daemons: Vec<Daemon>, meter: Meter) -> Stack {
        Stack { daemons, meter, last_sample: Instant::now(), gate: None }
    }

    pub fn get(&mut self, role: &str) -> Result<&mut Daemon, BenchError> {
        self.daemons
            .iter_mut()
            .find(|d| d.role == role)
            .ok_or_else(|| BenchError::Failed(format!("no {role} in this stack")))
    }

    /// Start the daemon called `role` (again).
    pub fn start(&mut self, role: &str) -> Result<(), BenchError> {
        let i = self.index(role)?;
        self.daemons[i].start(&mut self.meter)
    }

    /// `kill -9` the daemon called `role`; its pid.
    pub fn kill9(&mut self, role: &str) -> Result<u32, BenchError> {
        let i = self.index(role)?;
        let pid = self.daemons[i].pid().unwrap_or_default();
        self.daemons[i].kill9(&mut self.meter);
        Ok(pid)
    }

    /// SIGTERM the daemon called `role` and wait up to `grace` (a role this
    /// stack does not have is ignored).
    pub fn stop(&mut self, role: &str, grace: Duration) {
        if let Ok(i) = self.index(role) {
            self.daemons[i].stop(&mut self.meter, grace);
        }
    }

    fn index(&self, role: &str) -> Result<usize, BenchError> {
        self.daemons
            .iter()
            .position(|d| d.role == role)
            .ok_or_else(|| BenchError::Failed(format!("no {role} in this stack")))
    }

    pub fn sample(&mut self, force: bool) {
        if !force && self.last_sample.elapsed() < SAMPLE_EVERY {
            return;
        }
        self.last_sample = Instant::now();
        for d in &mut self.daemons {
            d.sample(&mut self.meter);
        }
        self.meter.sample(LOADTEST_ROLE, std::process::id());
    }

    /// CPU seconds and current RSS (MiB) of each running daemon, now.
    pub fn cpu_now(&self) -> BTreeMap<String, (f64, f64)> {
        self.daemons
            .iter()
            .filter_map(|d| {
                let pid = d.pid()?;
                let cpu = procstat::cpu(pid).ok()?.secs;
                let rss = procstat::status_kib(pid, "VmRSS").map(|k| k as f64 / 1024.0).unwrap_or(0.0);
                Some((d.role.to_string(), (cpu, rss)))
            })
            .collect()
    }

    /// An error if a daemon that should run has exited.
    pub fn check(&mut self) -> Result<(), BenchError> {
        self.daemons.iter_mut().try_for_each(Daemon::check)
    }
}

/// This process's role in [`Meter`].
pub const LOADTEST_ROLE: &str = "flotilla-loadtest (load, tail, baseline)";

/// Where a run keeps its files.
pub struct Dirs {
    pub out: PathBuf,
    pub logs: PathBuf,
    pub archive: PathBuf,
    pub var: PathBuf,
    pub daemons: PathBuf,
}

impl Dirs {
    /// Fresh `logs/`, `archive/`, `var/` under `out` (an earlier run's are removed).
    pub fn create(out: &Path) -> Result<Dirs, BenchError> {
        std::fs::create_dir_all(out).map_err(|e| BenchError::io(out, e))?;
        let out = out.canonicalize().map_err(|e| BenchError::io(out, e))?;
        let d = Dirs {
            logs: out.join("logs"),
            archive: out.join("archive"),
            var: out.join("var"),
            daemons: out.join("daemons"),
            out,
        };
        for dir in [&d.logs, &d.archive, &d.var, &d.daemons] {
            if dir.exists() {
                std::fs::remove_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
            }
            std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
        }
        Ok(d)
    }
}

/// JSON string escapes are valid TOML basic-string escapes.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Where the shipper's archive goes and how its stream is kept.
#[derive(Debug, Clone, Default)]
pub struct ShipperOptions {
    /// Copies of the stream `LOGS` (0 or 1: one).
    pub replicas: usize,
    /// An object store URL and its `[sinks.storage]` options instead of
    /// `file://<out>/archive`.
    pub store: Option<(String, Vec<(String, String)>)>,
    /// The sink's `ack_wait`: how soon what a killed shipper held is
    /// redelivered.
    pub ack_wait: &'static str,
}

/// The shipper: one Parquet sink on `logs.>`, objects closed within 2 s so
/// data lands quickly, and a short `ack_wait` (10 s, or what `opts` says;
/// the default would be 62.5 s here) so what a killed shipper held unacked
/// is redelivered soon.
pub fn shipper(dirs: &Dirs, nats_url: &str, opts: &ShipperOptions) -> Result<Daemon, BenchError> {
    let bin = sibling_binary("flotilla-shipper")?;
    let http_port = free_port()?;
    let url = match &opts.store {
        Some((url, _)) => url.clone(),
        None => format!("file://{}", dirs.archive.display()),
    };
    let mut text = format!("http_addr = \"127.0.0.1:{http_port}\"\n\n[nats]\nurl = {}\n\n", q(nats_url),);
    if opts.replicas > 1 {
        text += &format!("[[streams]]\nname = \"LOGS\"\nsubjects = [\"logs.>\"]\nreplicas = {}\n\n", opts.replicas);
    }
    text += &format!(
        "[[sinks]]\nname = \"{SINK}\"\ntype = \"parquet\"\n\
         url = {}\nsubjects = [\"logs.>\"]\nbatch_max_age = \"500ms\"\nroll_max_age = \"2s\"\nack_wait = {}\n",
        q(&url),
        q(opts.ack_wait),
    );
    if let Some((_, storage)) = &opts.store {
        text += "\n[sinks.storage]\n";
        for (k, v) in storage {
            text += &format!("{k} = {}\n", q(v));
        }
    }
    let config = dirs.var.join("shipper.toml");
    std::fs::write(&config, text).map_err(|e| BenchError::io(&config, e))?;
    Ok(Daemon::new("shipper", bin, &config, http_port, dirs))
}

/// The agent: `<logs>/{org}/{app}/*.log`, JSON lines, straight to nats-server.
pub fn agent(dirs: &Dirs, nats_url: &str) -> Result<Daemon, BenchError> {
    let bin = sibling_binary("flotilla-agent")?;
    let http_port = free_port()?;
    let include = format!("{}/{{org}}/{{app}}/*.log", dirs.logs.display());
    let text = format!(
        "host = \"{HOST}\"\nregion = \"{REGION}\"\ndata_dir = {}\nhttp_addr = \"127.0.0.1:{http_port}\"\n\n\
         [nats]\nurl = {}\n\n[[sources]]\ntype = \"file\"\ninclude = [{}]\ncodec = \"json\"\n",
        q(&dirs.var.join("agent").to_string_lossy()),
        q(nats_url),
        q(&include),
    );
    let config = dirs.var.join("agent.toml");
    std::fs::write(&config, text).map_err(|e| BenchError::io(&config, e))?;
    Ok(Daemon::new("agent", bin, &config, http_port, dirs))
}

/// nats-server with JetStream on a free loopback port, its store in
/// `<out>/var/nats` (a restart keeps both); and its URL.
pub fn nats(bin: &Path, dirs: &Dirs) -> Result<(Daemon, String), BenchError> {
    let store = dirs.var.join("nats");
    std::fs::create_dir_all(&store).map_err(|e| BenchError::io(&store, e))?;
    let port = free_port()?;
    let args =
        ["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd", &store.to_string_lossy()].map(String::from).to_vec();
    let d = Daemon::command("nats-server", bin.to_path_buf(), args, port, dirs);
    Ok((d, format!("nats://127.0.0.1:{port}")))
}

/// The stream and the archive's consumer, as seen from outside.
pub struct Watch {
    js: jetstream::Context,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub stream_messages: u64,
    /// Not yet delivered to the shipper plus delivered and not acked.
    pub consumer_outstanding: u64,
}

impl Watch {
    /// Connected to any of `urls` (the nodes of a cluster).
    pub async fn connect(urls: &[String]) -> Result<Watch, BenchError> {
        let client = async_nats::connect(urls).await.map_err(|e| BenchError::nats("connect", e))?;
        Ok(Watch { js: jetstream::new(client) })
    }

    /// Wait until the shipper has created the stream `LOGS`.
    pub async fn wait_stream(&self, within: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + within;
        loop {
            if self.js.get_stream("LOGS").await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Failed("the shipper did not create the stream LOGS".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn progress(&self) -> Option<Progress> {
        let mut stream = self.js.get_stream("LOGS").await.ok()?;
        let messages = stream.info().await.ok()?.state.messages;
        let outstanding = match stream.get_consumer::<jetstream::consumer::pull::Config>(CONSUMER).await {
            Ok(mut c) => c.info().await.ok().map(|i| i.num_pending + i.num_ack_pending as u64),
            Err(_) => None,
        };
        Some(Progress { stream_messages: messages, consumer_outstanding: outstanding.unwrap_or(u64::MAX) })
    }

    /// A separate stream for the baseline publisher, on `baseline.>`.
    pub async fn create_baseline_stream(&self, replicas: usize) -> Result<(), BenchError> {
        self.js
            .create_or_update_stream(jetstream::stream::Config {
                name: "BASELINE".into(),
                subjects: vec!["baseline.>".into()],
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas.max(1),
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(|e| BenchError::nats("create stream BASELINE", e))
    }

    pub async fn delete_baseline_stream(&self) -> Result<(), BenchError> {
        self.js.delete_stream("BASELINE").await.map(drop).map_err(|e| BenchError::nats("delete stream BASELINE", e))
    }
}
