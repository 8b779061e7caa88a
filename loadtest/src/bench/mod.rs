//! Benchmarks: `flotilla-loadtest bench <what>`.
//!
//! [`agent`]: the agent tailing one large file into JetStream, next to a
//! minimal async-nats publisher ([`baseline`]) sending the same lines to the
//! same stream in the same run, then the agent's cost while idle. CPU time
//! and memory are read from the kernel ([`procstat`]). Each benchmark starts
//! its own nats-server on a free loopback port with a temporary store.

pub mod agent;
pub mod baseline;
pub mod procstat;
pub mod proxy;
mod wire;

use std::fmt::Display;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream::StorageType};
use chrono::{DateTime, Utc};

use crate::procs::{Proc, ProcError};

/// One target of a benchmark and whether this run met it.
#[derive(Debug, serde::Serialize)]
pub struct Target {
    pub what: String,
    pub target: &'static str,
    pub value: f64,
    pub met: bool,
}

/// The markdown table of targets every report ends with.
pub fn targets_table(targets: &[Target]) -> String {
    let mut s = String::from("\n| target | goal | measured | met |\n|---|---|---:|---|\n");
    for t in targets {
        s += &format!("| {} | {} | {:.3} | {} |\n", t.what, t.target, t.value, if t.met { "yes" } else { "**no**" });
    }
    s
}

/// Write `report.json` and `report.md` (titled `bench <name>`) into `out`.
pub fn save_report<R: serde::Serialize>(
    r: &R,
    name: &str,
    started: &str,
    markdown: String,
    out: &Path,
) -> Result<(), BenchError> {
    let json = serde_json::to_string_pretty(r).map_err(|e| BenchError::Failed(e.to_string()))?;
    let (jp, mp) = (out.join("report.json"), out.join("report.md"));
    std::fs::write(&jp, json + "\n").map_err(|e| BenchError::io(&jp, e))?;
    let md = format!("# flotilla-loadtest bench {name} — {started}\n\n{markdown}");
    std::fs::write(&mp, md).map_err(|e| BenchError::io(&mp, e))
}

/// The stream every benchmark publishes to, as the shipper creates it.
pub const STREAM: &str = "LOGS";

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{context}: {message}")]
    Nats { context: String, message: String },
    #[error("{0}")]
    Failed(String),
}

impl BenchError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        BenchError::Io { path: path.to_path_buf(), source }
    }

    pub fn nats(context: &str, e: impl Display) -> Self {
        BenchError::Nats { context: context.into(), message: e.to_string() }
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; nothing holds it after).
pub fn free_port() -> Result<u16, BenchError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BenchError::Failed(format!("no free loopback port: {e}")))
}

/// A nats-server with JetStream, stopped on drop.
pub struct Nats {
    pub proc: Proc,
    pub url: String,
    /// With TLS: the CA its certificate is signed by (its files live as
    /// long as this).
    pub pki: Option<flotilla_testsupport::tls::Pki>,
}

impl Nats {
    pub fn start(bin: &Path, store: &Path, log_dir: &Path) -> Result<Nats, BenchError> {
        Nats::spawn(bin, store, log_dir, None)
    }

    /// Requiring TLS from every client, with a certificate from a CA made
    /// for the run (clients are not asked for one).
    pub fn start_tls(bin: &Path, store: &Path, log_dir: &Path) -> Result<Nats, BenchError> {
        Nats::spawn(bin, store, log_dir, Some(flotilla_testsupport::tls::Pki::new("flotilla bench CA")))
    }

    fn spawn(
        bin: &Path,
        store: &Path,
        log_dir: &Path,
        pki: Option<flotilla_testsupport::tls::Pki>,
    ) -> Result<Nats, BenchError> {
        std::fs::create_dir_all(store).map_err(|e| BenchError::io(store, e))?;
        let port = free_port()?;
        let (port_arg, store_arg) = (port.to_string(), store.to_string_lossy().to_string());
        let mut args: Vec<String> =
            ["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd", &store_arg].iter().map(|a| a.to_string()).collect();
        if let Some(pki) = &pki {
            for (flag, path) in [("--tlscert", &pki.server.0), ("--tlskey", &pki.server.1)] {
                args.extend([flag.to_string(), path.to_string_lossy().to_string()]);
            }
            args.push("--tls".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut proc = Proc::spawn("nats-server", bin, &args, &[], log_dir)?;
        proc.wait_port(port, Duration::from_secs(20))?;
        let scheme = if pki.is_some() { "tls" } else { "nats" };
        Ok(Nats { proc, url: format!("{scheme}://127.0.0.1:{port}"), pki })
    }

    /// The CA file clients trust, with TLS.
    pub fn ca(&self) -> Option<&Path> {
        self.pki.as_ref().map(|p| p.ca.as_path())
    }
}

/// An async-nats client to `url`, trusting `ca` (TLS) if given.
pub async fn connect(url: &str, ca: Option<&Path>) -> Result<async_nats::Client, async_nats::ConnectError> {
    let mut opts = async_nats::ConnectOptions::new();
    if let Some(ca) = ca {
        flotilla_core::daemon::install_crypto_provider();
        opts = opts.add_root_certificates(ca.to_path_buf());
    }
    opts.connect(url).await
}

/// A connection for setting up and watching the stream.
pub struct Admin {
    stream: jetstream::stream::Stream,
}

/// Messages and bytes held by the stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamState {
    pub messages: u64,
    pub bytes: u64,
    /// Seconds from the first message stored to the last (nats-server's
    /// own timestamps; 0 with fewer than two messages).
    pub stored_span_secs: f64,
}

impl Admin {
    /// Connect and create [`STREAM`] on `logs.>` (file storage, 2 minutes of
    /// de-duplication: the shipper's defaults).
    pub async fn connect(url: &str, ca: Option<&Path>) -> Result<Admin, BenchError> {
        let client = connect(url, ca).await.map_err(|e| BenchError::nats("connect", e))?;
        let js = jetstream::new(client);
        js.create_or_update_stream(jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec!["logs.>".into()],
            storage: StorageType::File,
            num_replicas: 1,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| BenchError::nats("create stream LOGS", e))?;
        let stream = js.get_stream(STREAM).await.map_err(|e| BenchError::nats("get stream LOGS", e))?;
        Ok(Admin { stream })
    }

    pub async fn state(&mut self) -> Result<StreamState, BenchError> {
        let info = self.stream.info().await.map_err(|e| BenchError::nats("stream info", e))?;
        let s = &info.state;
        let stored_span_secs = match s.messages {
            0 | 1 => 0.0,
            _ => (s.last_timestamp - s.first_timestamp).as_seconds_f64().max(0.0),
        };
        Ok(StreamState { messages: s.messages, bytes: s.bytes, stored_span_secs })
    }

    pub async fn purge(&mut self) -> Result<(), BenchError> {
        self.stream.purge().await.map(drop).map_err(|e| BenchError::nats("purge stream LOGS", e))
    }

    /// Wait until the stream holds `target` messages; fail if `proc` exits or
    /// the count stops growing for `stall`.
    pub async fn wait_for(&mut self, target: u64, proc: &mut Proc, stall: Duration) -> Result<(), BenchError> {
        let (mut last, mut last_change) = (u64::MAX, Instant::now());
        loop {
            proc.check_alive()?;
            let n = self.state().await?.messages;
            if n >= target {
                return Ok(());
            }
            if n != last {
                (last, last_change) = (n, Instant::now());
            } else if last_change.elapsed() > stall {
                return Err(BenchError::Failed(format!(
                    "the stream holds {n} of {target} messages and has not changed for {}s; {} log: {}",
                    stall.as_secs(),
                    proc.name,
                    proc.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Lines and bytes (newlines included) written to a log file.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Written {
    pub lines: u64,
    pub bytes: u64,
}

/// Append `lines` realistic JSON log lines of about 200 bytes to `path`
/// (created with its directories), timestamps 100 µs apart from `start`.
pub fn write_log(path: &Path, lines: u64, start: DateTime<Utc>) -> Result<Written, BenchError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
    }
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| BenchError::io(path, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut rng = rand::rng();
    let mut bytes = 0u64;
    for n in 0..lines {
        let ts = start + chrono::Duration::microseconds(n as i64 * 100);
        let line = json_line(&mut rng, ts, n);
        writeln!(out, "{line}").map_err(|e| BenchError::io(path, e))?;
        bytes += line.len() as u64 + 1;
    }
    out.flush().map_err(|e| BenchError::io(path, e))?;
    Ok(Written { lines, bytes })
}

/// One line like an app's JSON log: a web request, an API call or a job,
/// each with a trace id (about 200 bytes).
fn json_line(rng: &mut impl rand::Rng, ts: DateTime<Utc>, n: u64) -> String {
    let ts = ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (level, status) = match rng.random_range(0..100) {
        0..=1 => ("error", 500),
        2..=6 => ("warn", 429),
        _ => ("info", 200),
    };
    let trace: u64 = rng.random();
    match n % 3 {
        0 => {
            let path = pick(rng, &["/", "/login", "/cart", "/checkout", "/static/app.js", "/api/v2/orders"]);
            let method = pick(rng, &["GET", "GET", "GET", "POST"]);
            format!(
                r#"{{"ts":"{ts}","level":"{level}","msg":"{method} {path} {status}","method":"{method}","path":"{path}","status":{status},"duration_ms":{},"request_id":"req-{n:08x}","trace_id":"{trace:016x}"}}"#,
                rng.random_range(1..400),
            )
        }
        1 => {
            let op = pick(rng, &["ListOrders", "GetOrder", "CreateOrder", "UpdateStock"]);
            let msg = match level {
                "error" => format!("{op} failed: upstream timeout"),
                "warn" => format!("{op} rate limited"),
                _ => format!("{op} ok"),
            };
            format!(
                r#"{{"ts":"{ts}","level":"{level}","msg":"{msg}","rpc":"{op}","latency_ms":{},"seq_no":{n},"tenant":"t-{:04}","peer":"10.0.{}.{}:443","trace_id":"{trace:016x}"}}"#,
                rng.random_range(2..250),
                rng.random_range(0..5000),
                rng.random_range(0..255),
                rng.random_range(1..255),
            )
        }
        _ => {
            let job = pick(rng, &["send-email", "resize-image", "nightly-report", "sync-crm"]);
            let msg = match level {
                "error" => format!("job {job} failed, will retry"),
                "warn" => format!("job {job} slow"),
                _ => format!("job {job} done"),
            };
            format!(
                r#"{{"ts":"{ts}","level":"{level}","msg":"{msg}","job":"{job}","attempt":{},"job_id":{n},"queue":"default","elapsed_ms":{},"trace_id":"{trace:016x}"}}"#,
                1 + n % 3,
                rng.random_range(5..60_000),
            )
        }
    }
}

fn pick<'a>(rng: &mut impl rand::Rng, xs: &[&'a str]) -> &'a str {
    xs.get(rng.random_range(0..xs.len().max(1))).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_objects_of_about_200_bytes() {
        let mut rng = rand::rng();
        let lines: Vec<String> = (0..3000).map(|n| json_line(&mut rng, Utc::now(), n)).collect();
        for l in &lines {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v.is_object() && v["level"].is_string(), "{l}");
        }
        let mean = lines.iter().map(String::len).sum::<usize>() / lines.len();
        assert!((185..=215).contains(&mean), "mean line length {mean}");
    }
}
