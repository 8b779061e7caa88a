//! `object-store-outage`: the shipper's Parquet sink writes to S3 on a moto
//! server, through a [`forward`] gate the faults close (every connection
//! reset) and open again.
//!
//! The bucket is listed every [`POLL`] straight from moto (not through the
//! gate), and each object's first listing is when it became readable: after
//! the run the objects are copied into `<out>/archive` with that time as
//! their modification time, so [`super::verify`] reads them like a local
//! archive and the archive latency means "write → object listed".

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::forward::{self, Forwarder};
use super::http;
use super::stack::{Daemon, Dirs, Stack};
use super::verify::Row;
use crate::bench::{free_port, BenchError};
use crate::procs::moto_server_binary;

pub const ROLE: &str = "object store (moto)";
const BUCKET: &str = "flotilla";
const PREFIX: &str = "archive/";
const POLL: Duration = Duration::from_millis(500);
/// moto answers anonymous requests for objects with 403 but does not check
/// signatures: any AWS4 credential of the right form will do.
const AUTH: (&str, &str) = (
    "Authorization",
    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
);

type Seen = Arc<Mutex<BTreeMap<String, i64>>>;

pub struct Outage {
    moto: u16,
    forwarder: Forwarder,
    stop: CancellationToken,
    /// Key → when it was first listed (µs since the epoch).
    seen: Seen,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Outage {
    /// moto (added to `st` and started), the bucket, the forwarder (its
    /// gate in `st.gate`) and the bucket watcher.
    pub async fn start(dirs: &Dirs, st: &mut Stack) -> Result<Outage, BenchError> {
        let bin = moto_server_binary()?;
        let moto = free_port()?;
        let args = ["-H", "127.0.0.1", "-p", &moto.to_string()].map(String::from).to_vec();
        st.daemons.push(Daemon::command(ROLE, bin, args, moto, dirs));
        st.start(ROLE)?;
        let r = http::request(moto, "PUT", &format!("/{BUCKET}"), &[AUTH], b"", Duration::from_secs(30))
            .await
            .map_err(|e| BenchError::Failed(format!("create bucket: {e}")))?;
        if r.status != 200 {
            return Err(BenchError::Failed(format!("create bucket: HTTP {}: {}", r.status, r.text())));
        }
        let stop = CancellationToken::new();
        let forwarder = forward::start(moto, stop.clone()).await?;
        st.gate = Some(forwarder.gate.clone());
        let seen: Seen = Arc::default();
        let watcher = tokio::spawn(watch(moto, seen.clone(), stop.clone()));
        Ok(Outage { moto, forwarder, stop, seen, watcher: Some(watcher) })
    }

    /// The shipper's sink URL and `[sinks.storage]`: moto behind the gate.
    pub fn shipper_store(&self) -> (String, Vec<(String, String)>) {
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        (
            format!("s3://{BUCKET}/{}", PREFIX.trim_end_matches('/')),
            vec![
                kv("aws_endpoint", &format!("http://127.0.0.1:{}", self.forwarder.port)),
                kv("aws_region", "us-east-1"),
                kv("aws_access_key_id", "testing"),
                kv("aws_secret_access_key", "testing"),
                kv("aws_allow_http", "true"),
                kv("timeout", "5s"),
            ],
        )
    }

    /// Stop watching, copy every object into `archive` (modification time =
    /// first listed); what to add to the report.
    pub async fn collect(&mut self, archive: &Path) -> Result<BTreeMap<String, serde_json::Value>, BenchError> {
        self.stop.cancel();
        if let Some(w) = self.watcher.take() {
            let _ = w.await;
        }
        let keys = list(self.moto).await.map_err(|e| BenchError::Failed(format!("list the bucket: {e}")))?;
        let now = chrono::Utc::now().timestamp_micros();
        let mut unseen = 0;
        for key in &keys {
            let first = self.seen.lock().map(|s| s.get(key).copied()).unwrap_or(None);
            let at = first.unwrap_or_else(|| {
                unseen += 1;
                now
            });
            let r = http::request(
                self.moto,
                "GET",
                &format!("/{BUCKET}/{}", encode(key, false)),
                &[AUTH],
                b"",
                Duration::from_secs(60),
            )
            .await
            .map_err(|e| BenchError::Failed(format!("get {key}: {e}")))?;
            if r.status != 200 {
                return Err(BenchError::Failed(format!("get {key}: HTTP {}", r.status)));
            }
            let rel = key.strip_prefix(PREFIX).unwrap_or(key);
            if rel.split('/').any(|p| p == ".." || p.is_empty()) {
                return Err(BenchError::Failed(format!("odd object key {key:?}")));
            }
            let path = archive.join(rel);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
            }
            let f = std::fs::File::create(&path).map_err(|e| BenchError::io(&path, e))?;
            std::io::Write::write_all(&mut &f, &r.body).map_err(|e| BenchError::io(&path, e))?;
            let mtime = UNIX_EPOCH + Duration::from_micros(at.max(0) as u64);
            f.set_modified(mtime).map_err(|e| BenchError::io(&path, e))?;
        }
        Ok(BTreeMap::from([
            ("bucket_objects".into(), keys.len().into()),
            ("objects_not_seen_before_the_end".into(), unseen.into()),
            ("connections_reset_by_the_outages".into(), self.forwarder.gate.resets().into()),
            (
                "archive_latency_means".into(),
                format!("write → object first listed in the bucket (listed every {} ms)", POLL.as_millis()).into(),
            ),
        ]))
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn watch(moto: u16, seen: Seen, stop: CancellationToken) {
    loop {
        if let Ok(keys) = list(moto).await {
            let now = chrono::Utc::now().timestamp_micros();
            if let Ok(mut s) = seen.lock() {
                for k in keys {
                    s.entry(k).or_insert(now);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Every key under [`PREFIX`] (ListObjectsV2, page by page).
async fn list(moto: u16) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut path = format!("/{BUCKET}?list-type=2&prefix={}", encode(PREFIX, true));
        if let Some(t) = &token {
            path += &format!("&continuation-token={}", encode(t, true));
        }
        let r = http::request(moto, "GET", &path, &[AUTH], b"", Duration::from_secs(10)).await?;
        if r.status != 200 {
            return Err(format!("HTTP {}: {}", r.status, r.text()));
        }
        let xml = r.text();
        keys.extend(tags(&xml, "Key"));
        token = tags(&xml, "NextContinuationToken").into_iter().next();
        if !xml.contains("<IsTruncated>true</IsTruncated>") || token.is_none() {
            return Ok(keys);
        }
    }
}

/// The text of every `<tag>…</tag>`, XML entities decoded.
fn tags(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(
            after[..j]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[j + close.len()..];
    }
    out
}

/// Percent-encode all but unreserved characters (and `/` unless `slash`).
fn encode(s: &str, slash: bool) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b'/' if !slash => "/".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// For each outage `[from, to)` (seconds of the load): how long after the
/// store came back the last line written during the outage was archived.
pub fn drains(windows: &[(f64, f64)], rows: &[Row], t0_us: i64) -> BTreeMap<String, serde_json::Value> {
    let per: Vec<serde_json::Value> = windows
        .iter()
        .map(|&(from, to)| {
            let us = |s: f64| t0_us + (s * 1e6) as i64;
            let during = rows.iter().filter(|r| r.written_us >= us(from) && r.written_us < us(to));
            let (n, last) = during.fold((0u64, i64::MIN), |(n, m), r| (n + 1, m.max(r.archived_us)));
            let drain = (n > 0).then(|| ((last - us(to)) as f64 / 1e6 * 100.0).round() / 100.0);
            serde_json::json!({"down_from_s": from, "down_to_s": to, "lines_written_while_down": n,
                "backlog_drained_s_after_reopen": drain})
        })
        .collect();
    BTreeMap::from([("outages".to_string(), serde_json::Value::Array(per))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_keys_and_tokens_are_read_and_encoded() {
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>archive/org=a/x&amp;y.parquet</Key>\
                   </Contents><Contents><Key>archive/b.parquet</Key></Contents>\
                   <NextContinuationToken>ab+/=</NextContinuationToken></ListBucketResult>";
        assert_eq!(tags(xml, "Key"), ["archive/org=a/x&y.parquet", "archive/b.parquet"]);
        assert_eq!(tags(xml, "NextContinuationToken"), ["ab+/="]);
        assert_eq!(encode("ab+/=", true), "ab%2B%2F%3D");
        assert_eq!(encode("archive/org=a/x y.parquet", false), "archive/org%3Da/x%20y.parquet");
    }

    #[test]
    fn drain_is_the_last_archive_time_of_lines_written_while_down() {
        let t0 = 1_000_000_000_000;
        let row = |w: f64, a: f64| Row {
            file: 0,
            n: 0,
            written_us: t0 + (w * 1e6) as i64,
            archived_us: t0 + (a * 1e6) as i64,
        };
        let rows = [row(1.0, 2.0), row(10.5, 26.0), row(20.0, 27.5), row(24.9, 28.0), row(25.0, 29.0)];
        let d = drains(&[(10.0, 25.0)], &rows, t0);
        let o = &d["outages"][0];
        assert_eq!(o["lines_written_while_down"], 3);
        assert_eq!(o["backlog_drained_s_after_reopen"], 3.0);
        let none = drains(&[(40.0, 45.0)], &rows, t0);
        assert!(none["outages"][0]["backlog_drained_s_after_reopen"].is_null());
    }
}
