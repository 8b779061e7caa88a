//! A generator of realistic application logs: JSON lines for web, api and
//! worker apps of several orgs, written to `<dir>/<org>/<app>/app.log`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use rand::seq::IndexedRandom as _;
use rand::Rng as _;
use tokio_util::sync::CancellationToken;

pub const ORGS: [&str; 2] = ["acme", "globex"];
pub const APPS: [&str; 3] = ["web", "api", "worker"];

/// One realistic JSON log line for `app`.
pub fn line(app: &str, n: u64) -> String {
    let mut rng = rand::rng();
    let roll: u32 = rng.random_range(0..100);
    let (level, status) = match roll {
        0..=1 => ("error", 500),
        2..=6 => ("warn", 429),
        _ => ("info", 200),
    };
    let ts = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let value = match app {
        "web" => {
            let path = ["/", "/login", "/cart", "/checkout", "/static/app.js"].choose(&mut rng).copied().unwrap_or("/");
            let method = ["GET", "GET", "GET", "POST"].choose(&mut rng).copied().unwrap_or("GET");
            serde_json::json!({"ts": ts, "level": level, "msg": format!("{method} {path} {status}"), "method": method, "path": path,
                "status": status, "duration_ms": rng.random_range(1..400), "request_id": format!("req-{n:08x}")})
        }
        "api" => {
            let op = ["ListOrders", "GetOrder", "CreateOrder", "UpdateStock"]
                .choose(&mut rng)
                .copied()
                .unwrap_or("GetOrder");
            let msg = match level {
                "error" => format!("{op} failed: upstream timeout"),
                "warn" => format!("{op} rate limited"),
                _ => format!("{op} ok"),
            };
            serde_json::json!({"ts": ts, "level": level, "msg": msg, "rpc": op, "latency_ms": rng.random_range(2..250), "seq_no": n})
        }
        _ => {
            let job = ["send-email", "resize-image", "nightly-report", "sync-crm"]
                .choose(&mut rng)
                .copied()
                .unwrap_or("send-email");
            let msg = match level {
                "error" => format!("job {job} failed, will retry"),
                "warn" => format!("job {job} slow"),
                _ => format!("job {job} done"),
            };
            serde_json::json!({"ts": ts, "level": level, "msg": msg, "job": job, "attempt": 1 + (n % 3), "job_id": n})
        }
    };
    value.to_string()
}

pub fn log_path(dir: &Path, org: &str, app: &str) -> PathBuf {
    dir.join(org).join(app).join("app.log")
}

/// Write about `rate` lines per second in total, spread over every org and
/// app, until `stop`.
pub async fn run(dir: PathBuf, rate: u32, stop: CancellationToken) -> std::io::Result<()> {
    let mut files = Vec::new();
    for org in ORGS {
        for app in APPS {
            let path = log_path(&dir, org, app);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            files.push((app, f));
        }
    }
    let tick = Duration::from_millis(100);
    let per_tick = (rate as f64 / 10.0).max(0.0);
    let mut carry = 0.0;
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.cancelled() => return Ok(()),
        }
        carry += per_tick;
        while carry >= 1.0 {
            carry -= 1.0;
            n += 1;
            let i = rand::rng().random_range(0..files.len());
            let (app, f) = &mut files[i];
            writeln!(f, "{}", line(app, n))?;
        }
    }
}
