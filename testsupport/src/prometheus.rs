//! A real Prometheus (Debian's `prometheus`, installed by `./scripts/test`)
//! scraping our daemons' `/metrics` every second, and its HTTP API: what a
//! scrape made of them, and what PromQL gives back.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

const INSTALL_HINT: &str =
    "prometheus not found on PATH: run ./scripts/test (installs it), or `apt-get install prometheus`";

/// Prometheus on a random loopback port with a store of its own, killed
/// when dropped.
pub struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrape each `(job, port)`'s `http://127.0.0.1:<port>/metrics` every
    /// second; returns once Prometheus answers.
    pub fn start(jobs: &[(&str, u16)]) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir for Prometheus");
        let mut config = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n");
        for (job, port) in jobs {
            config += &format!("  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n");
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new(std::env::var_os("FLOTILLA_PROMETHEUS").map_or("prometheus".into(), PathBuf::from))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
            Err(e) => panic!("cannot start prometheus: {e}"),
        };
        let mut prometheus = Prometheus { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(port, "/-/ready").map(|(status, _)| status) != Some(200) {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "prometheus not ready within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// `GET <path>` of the HTTP API, as JSON; panics unless it says success.
    pub fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = http_get(self.port, path).unwrap_or_else(|| panic!("no answer from prometheus to {path}"));
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: HTTP {status}, not JSON ({e}): {body}"));
        assert_eq!(json["status"], "success", "{path}: {json}");
        json["data"].clone()
    }

    /// An instant query's result vector (panics if PromQL refuses it).
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(expr)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The sum of an instant query's values (0 for an empty result).
    pub fn value(&self, expr: &str) -> f64 {
        self.query(expr).iter().filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok()).sum()
    }

    /// Every target: (job, health, last scrape error).
    pub fn targets(&self) -> Vec<(String, String, String)> {
        let data = self.api("/api/v1/targets");
        let active = data["activeTargets"].as_array().cloned().unwrap_or_default();
        let field = |t: &serde_json::Value, k: &str| t[k].as_str().unwrap_or_default().to_string();
        active
            .iter()
            .map(|t| {
                (t["labels"]["job"].as_str().unwrap_or_default().into(), field(t, "health"), field(t, "lastError"))
            })
            .collect()
    }

    /// Every metric name scraped so far.
    pub fn names(&self) -> Vec<String> {
        let data = self.api("/api/v1/label/__name__/values");
        data.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.0 GET on loopback: status and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Percent-encode a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_parameters_are_percent_encoded() {
        assert_eq!(super::encode("sum by (org) (x[1m])"), "sum%20by%20%28org%29%20%28x%5B1m%5D%29");
    }
}
