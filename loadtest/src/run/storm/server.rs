//! The nats-server of one round: JetStream, monitoring (`-m`) and the
//! trace log (`-DV`) that [`super::trace`] counts; `kill -9` and a restart
//! on the same port and store; `/varz` read over a bare HTTP/1.0 request.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bench::{free_port, BenchError};
use crate::procs::Proc;
use crate::run::stack::Meter;

pub const ROLE: &str = "nats-server";

pub struct Server {
    bin: PathBuf,
    store: PathBuf,
    log_dir: PathBuf,
    /// `nats-n<N>`: incarnations are `<tag>-1`, `<tag>-2`.
    tag: String,
    pub port: u16,
    pub monitor: u16,
    pub proc: Option<Proc>,
    incarnation: u32,
}

/// Figures of `/varz` (counters since this incarnation started).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Varz {
    pub connections: u64,
    pub total_connections: u64,
    pub in_msgs: u64,
    pub out_msgs: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

impl Server {
    pub fn new(bin: &Path, store: PathBuf, log_dir: &Path, tag: String) -> Result<Server, BenchError> {
        std::fs::create_dir_all(&store).map_err(|e| BenchError::io(&store, e))?;
        Ok(Server {
            bin: bin.to_path_buf(),
            store,
            log_dir: log_dir.to_path_buf(),
            tag,
            port: free_port()?,
            monitor: free_port()?,
            proc: None,
            incarnation: 0,
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Start an incarnation; ready once its monitoring port answers (the
    /// client port is not touched: a probe would be a connection too).
    pub fn start(&mut self, meter: &mut Meter) -> Result<(), BenchError> {
        self.incarnation += 1;
        let (port, monitor, store) = (self.port.to_string(), self.monitor.to_string(), self.store.to_string_lossy());
        let args = ["-js", "-a", "127.0.0.1", "-p", &port, "-m", &monitor, "-sd", &store, "-DV"];
        let mut p = Proc::spawn(&format!("{}-{}", self.tag, self.incarnation), &self.bin, &args, &[], &self.log_dir)?;
        p.wait_port(self.monitor, Duration::from_secs(30))?;
        meter.started(ROLE);
        meter.sample(ROLE, p.id());
        self.proc = Some(p);
        Ok(())
    }

    /// The log of the running (or last) incarnation.
    pub fn log(&self) -> PathBuf {
        self.log_dir.join(format!("{}-{}.log", self.tag, self.incarnation))
    }

    pub fn sample(&self, meter: &mut Meter) {
        if let Some(p) = &self.proc {
            meter.sample(ROLE, p.id());
        }
    }

    /// `kill -9`, then reap.
    pub fn kill9(&mut self, meter: &mut Meter) {
        if let Some(mut p) = self.proc.take() {
            meter.sample(ROLE, p.id());
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(p.id() as libc::pid_t, libc::SIGKILL);
            }
            p.stop(Duration::from_secs(5));
        }
    }

    /// SIGTERM, and wait a little.
    pub fn stop(&mut self, meter: &mut Meter) {
        if let Some(mut p) = self.proc.take() {
            meter.sample(ROLE, p.id());
            p.stop(Duration::from_secs(5));
        }
    }

    pub async fn varz(&self) -> Result<Varz, BenchError> {
        let monitor = self.monitor;
        let body = tokio::task::spawn_blocking(move || http_get(monitor, "/varz"))
            .await
            .map_err(|e| BenchError::Failed(format!("varz: {e}")))??;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| BenchError::Failed(format!("/varz is not JSON: {e}")))?;
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        Ok(Varz {
            connections: n("connections"),
            total_connections: n("total_connections"),
            in_msgs: n("in_msgs"),
            out_msgs: n("out_msgs"),
            in_bytes: n("in_bytes"),
            out_bytes: n("out_bytes"),
        })
    }
}

/// The body of `GET path` on the loopback `port` (HTTP/1.0: the server
/// closes the connection after the response).
fn http_get(port: u16, path: &str) -> Result<String, BenchError> {
    let addr = format!("127.0.0.1:{port}");
    let fail = |e: std::io::Error| BenchError::Failed(format!("GET http://{addr}{path}: {e}"));
    let mut s = std::net::TcpStream::connect(&addr).map_err(fail)?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(fail)?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).map_err(fail)?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(fail)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    if !head.starts_with("HTTP/1.") || head.split(' ').nth(1) != Some("200") {
        return Err(BenchError::Failed(format!("GET http://{addr}{path}: {}", head.lines().next().unwrap_or(""))));
    }
    Ok(body.to_string())
}
