//! The load: ~200-byte JSON lines written to `<logs>/<org>/app<i>/app.log`
//! (org `loadtest`, or the scenario's orgs in turn), each carrying a unique
//! id and its write time.
//!
//! A line's `msg` starts with `lt:<file>:<n>` (file index, line number in
//! that file's sequence, rotations included): the key the archive is read
//! back by. Its `ts` is the wall-clock time the line was written, in
//! microseconds; the agent keeps it as the event's `ts`, so the archive's
//! `ts` column and every live-tail message carry the write time.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

pub const ORG: &str = "loadtest";

/// The app (and directory) of file `i`.
pub fn app(i: usize) -> String {
    format!("app{i}")
}

/// The id carried by line `n` of file `file`.
pub fn line_id(file: usize, n: u64) -> String {
    format!("lt:{file}:{n}")
}

/// The id at the start of an archived message, if it has one.
pub fn parse_id(message: &str) -> Option<(usize, u64)> {
    let rest = message.strip_prefix("lt:")?;
    let id = rest.split(' ').next()?;
    let (f, n) = id.split_once(':')?;
    Some((f.parse().ok()?, n.parse().ok()?))
}

/// One line with `id`, written at `ts`.
pub fn line(rng: &mut impl rand::Rng, file: usize, n: u64, ts: DateTime<Utc>) -> String {
    let ts = ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (level, status) = match rng.random_range(0..100) {
        0..=1 => ("error", 500),
        2..=6 => ("warn", 429),
        _ => ("info", 200),
    };
    let paths = ["/", "/login", "/cart", "/checkout", "/static/app.js", "/api/v2/orders"];
    let path = paths[rng.random_range(0..paths.len())];
    let trace: u64 = rng.random();
    format!(
        r#"{{"ts":"{ts}","level":"{level}","msg":"{id} GET {path} {status}","method":"GET","path":"{path}","status":{status},"duration_ms":{},"request_id":"req-{n:08x}","trace_id":"{trace:016x}"}}"#,
        rng.random_range(1..400),
        id = line_id(file, n),
    )
}

/// Lines written so far, per file: line ids `0..written[i]` exist.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Sent {
    pub per_file: Vec<u64>,
}

impl Sent {
    pub fn total(&self) -> u64 {
        self.per_file.iter().sum()
    }
}

/// The writer of every file, with rotation.
pub struct Writers {
    files: Vec<(PathBuf, File)>,
    /// The org of each file.
    orgs: Vec<String>,
    rotations: Vec<u32>,
    pub sent: Sent,
    bytes: u64,
}

impl Writers {
    /// `files` files, file `i` in org `orgs[i % orgs.len()]` ([`ORG`] if none).
    pub fn create(logs: &Path, files: usize, orgs: &[&str]) -> std::io::Result<Writers> {
        let orgs: Vec<String> =
            (0..files).map(|i| orgs.get(i % orgs.len().max(1)).copied().unwrap_or(ORG).to_string()).collect();
        let mut out = Vec::with_capacity(files);
        for (i, org) in orgs.iter().enumerate() {
            let path = logs.join(org).join(app(i)).join("app.log");
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            out.push((path, f));
        }
        Ok(Writers { files: out, orgs, rotations: vec![0; files], sent: Sent { per_file: vec![0; files] }, bytes: 0 })
    }

    /// The org of file `i`.
    pub fn org(&self, i: usize) -> &str {
        self.orgs.get(i).map(String::as_str).unwrap_or(ORG)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Append `count` lines, round robin over the files, stamped now.
    pub fn write(&mut self, count: u64) -> std::io::Result<()> {
        let mut rng = rand::rng();
        let n_files = self.files.len();
        let mut bufs: Vec<String> = vec![String::new(); n_files];
        let start = (self.sent.total() % n_files as u64) as usize;
        let now = Utc::now();
        for k in 0..count {
            let i = (start + k as usize) % n_files;
            let n = self.sent.per_file[i];
            self.sent.per_file[i] += 1;
            let buf = &mut bufs[i];
            buf.push_str(&line(&mut rng, i, n, now));
            buf.push('\n');
        }
        for (i, buf) in bufs.iter().enumerate() {
            if !buf.is_empty() {
                // One write(2) per file: the agent never sees half a batch
                // of lines (a torn last line is still possible and fine).
                self.files[i].1.write_all(buf.as_bytes())?;
                self.bytes += buf.len() as u64;
            }
        }
        Ok(())
    }

    /// Rotate file `i` like logrotate: rename `app.log` to `app.log.<k>`
    /// (out of the agent's `*.log` pattern) and create a new `app.log`.
    pub fn rotate(&mut self, i: usize) -> std::io::Result<PathBuf> {
        let i = i % self.files.len();
        self.rotations[i] += 1;
        let (path, _) = &self.files[i];
        let rotated = path.with_extension(format!("log.{}", self.rotations[i]));
        std::fs::rename(path, &rotated)?;
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        self.files[i].1 = f;
        Ok(rotated)
    }

    pub fn rotations(&self) -> u32 {
        self.rotations.iter().sum()
    }
}

/// `lines` lines like the load's (ids of a file index no run uses) in one
/// file, for the baseline publisher.
pub fn write_baseline_file(path: &Path, lines: u64) -> std::io::Result<u64> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut rng = rand::rng();
    let now = Utc::now();
    let mut bytes = 0;
    for n in 0..lines {
        let l = line(&mut rng, usize::MAX, n, now);
        writeln!(out, "{l}")?;
        bytes += l.len() as u64 + 1;
    }
    out.flush()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_their_id_and_parse_as_json() {
        let mut rng = rand::rng();
        let l = line(&mut rng, 3, 1234, Utc::now());
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        let msg = v["msg"].as_str().unwrap();
        assert_eq!(parse_id(msg), Some((3, 1234)));
        assert!((150..=260).contains(&l.len()), "{} bytes: {l}", l.len());
        assert_eq!(parse_id("something else"), None);
        assert_eq!(parse_id("lt:x:1"), None);
    }
}
