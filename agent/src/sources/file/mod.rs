//! The file source: discover files matching the include patterns, read new
//! lines, publish each as one event with JetStream acks, and checkpoint a
//! file's offset only past lines whose acks arrived. While NATS is away the
//! files are their own buffer: nothing is read ahead, and a failed publish
//! rewinds to the last acknowledged line (the de-duplication id makes the
//! resend harmless).

pub mod checkpoint;
pub mod docker;
pub mod pattern;
pub mod tailer;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use chrono::Utc;

use flotilla_core::codec;
use flotilla_core::event::LogEvent;
use flotilla_core::subject::{log_subject, OrgId};
use flotilla_core::{HDR_MSG_ID, HDR_READ_TS, HDR_SEQ};

use crate::config::{FileSourceConfig, ReadFrom};
use crate::SourceContext;
use checkpoint::Checkpoints;
use pattern::PathPattern;
use tailer::{identity, Line, Tailer};

/// Bytes read from one file before moving to the next (fairness).
const READ_BUDGET: usize = 1024 * 1024;

pub struct FileSource {
    cfg: FileSourceConfig,
    patterns: Vec<PathPattern>,
    poll: Duration,
    tailers: HashMap<String, Tailer>,
    warned: HashSet<String>,
}

struct InFlight {
    ack: PublishAckFuture,
    key: String,
    generation: u64,
    end: u64,
    seq: u64,
}

impl FileSource {
    pub fn new(cfg: FileSourceConfig) -> Self {
        // The config was validated: patterns parse.
        let patterns = cfg.include.iter().filter_map(|p| PathPattern::new(p).ok()).collect();
        let poll = flotilla_core::config::parse_duration(&cfg.poll_interval).unwrap_or(Duration::from_millis(250));
        FileSource { cfg, patterns, poll, tailers: HashMap::new(), warned: HashSet::new() }
    }

    pub async fn run(mut self, ctx: SourceContext) {
        let mut first_pass = true;
        let mut failures = 0u32;
        loop {
            self.discover(&ctx, first_pass);
            first_pass = false;
            ctx.metrics.files_tracked.set(self.tailers.len() as i64);
            let delivered = self.pump(&ctx).await;
            self.save(&ctx);
            let pause = if delivered {
                failures = 0;
                self.forget_drained(&ctx);
                self.poll
            } else {
                failures += 1;
                ctx.metrics.publish_errors.inc();
                self.tailers.values_mut().for_each(Tailer::rewind);
                crate::backoff(failures)
            };
            if ctx.shutdown.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = ctx.shutdown.cancelled() => break,
            }
        }
        self.save(&ctx);
    }

    fn discover(&mut self, ctx: &SourceContext, first_pass: bool) {
        self.tailers.values_mut().for_each(|t| t.seen = false);
        for pattern in &self.patterns {
            for path in pattern.matches() {
                let Some(path_str) = path.to_str() else { continue };
                let Some((org, app)) = pattern.captures(path_str) else { continue };
                let (Some(org), Some(app)) = (org.or_else(|| self.cfg.org.clone()), app.or_else(|| self.cfg.app.clone())) else {
                    continue;
                };
                let org = match OrgId::new(&org) {
                    Ok(o) => o,
                    Err(e) => {
                        if self.warned.insert(path_str.to_string()) {
                            tracing::warn!(path = path_str, error = %e, "skipping file: its path names no valid org");
                            ctx.metrics.files_skipped.inc();
                        }
                        continue;
                    }
                };
                let Ok(meta) = std::fs::metadata(&path) else { continue };
                let key = identity(&meta);
                if let Some(t) = self.tailers.get_mut(&key) {
                    t.seen = true;
                    t.path = path;
                    continue;
                }
                let cps = lock(&ctx.checkpoints);
                let start_at_end = first_pass && cps.fresh && self.cfg.read_from == ReadFrom::End;
                match Tailer::open(&path, key.clone(), org, app, cps.get(&key), start_at_end) {
                    Ok(t) => {
                        tracing::info!(path = path_str, "tailing");
                        self.tailers.insert(key, t);
                    }
                    Err(e) => tracing::warn!(path = path_str, error = %e, "cannot open"),
                }
            }
        }
    }

    /// Read and publish everything new, then wait for every ack.
    /// False if a publish or an ack failed.
    async fn pump(&mut self, ctx: &SourceContext) -> bool {
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let keys: Vec<String> = self.tailers.keys().cloned().collect();
        'files: for key in keys {
            loop {
                if ctx.shutdown.is_cancelled() {
                    break 'files;
                }
                let Some(t) = self.tailers.get_mut(&key) else { continue 'files };
                let lines = match t.read_lines(self.cfg.max_line_bytes, READ_BUDGET) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(path = %t.path.display(), error = %e, "read failed");
                        continue 'files;
                    }
                };
                if lines.is_empty() {
                    continue 'files;
                }
                for line in lines {
                    let Some(t) = self.tailers.get(&key) else { continue 'files };
                    let (subject, headers, payload) = event_for(t, &line, &self.cfg, ctx);
                    ctx.metrics.events_read.inc();
                    ctx.metrics.bytes_read.add(line.bytes.len() as u64);
                    let ack = match ctx.js.publish_with_headers(subject, headers, payload.into()).await {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "publish failed");
                            return false;
                        }
                    };
                    let generation = t.generation;
                    inflight.push_back(InFlight { ack, key: key.clone(), generation, end: line.end, seq: line.seq });
                    ctx.metrics.in_flight.set(inflight.len() as i64);
                    while inflight.len() >= ctx.max_in_flight {
                        if !self.settle(&mut inflight, ctx).await {
                            return false;
                        }
                    }
                }
            }
        }
        while !inflight.is_empty() {
            if !self.settle(&mut inflight, ctx).await {
                return false;
            }
        }
        ctx.metrics.in_flight.set(0);
        true
    }

    /// Await the oldest publish's ack and move its file's acked offset.
    async fn settle(&mut self, inflight: &mut VecDeque<InFlight>, ctx: &SourceContext) -> bool {
        let Some(f) = inflight.pop_front() else { return true };
        match f.ack.await {
            Ok(ack) => {
                ctx.metrics.events_acked.inc();
                if ack.duplicate {
                    ctx.metrics.events_duplicate.inc();
                }
                if let Some(t) = self.tailers.get_mut(&f.key) {
                    t.ack(f.generation, f.end, f.seq);
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "no JetStream ack; will resend from the last acknowledged line");
                false
            }
        }
    }

    fn save(&self, ctx: &SourceContext) {
        let mut cps = lock(&ctx.checkpoints);
        for t in self.tailers.values() {
            cps.set(&t.key, t.checkpoint());
        }
        if let Err(e) = cps.save() {
            tracing::error!(error = %e, "cannot write checkpoints");
        }
    }

    /// Let go of files that left the patterns (rotated away or deleted) once
    /// read to their end.
    fn forget_drained(&mut self, ctx: &SourceContext) {
        let gone: Vec<String> = self.tailers.values().filter(|t| !t.seen && t.drained()).map(|t| t.key.clone()).collect();
        for key in gone {
            if let Some(t) = self.tailers.remove(&key) {
                tracing::info!(path = %t.path.display(), "done with file");
                let still_there = std::fs::metadata(&t.path).map(|m| identity(&m) == key).unwrap_or(false);
                if !still_there {
                    lock(&ctx.checkpoints).remove(&key);
                }
            }
        }
    }
}

fn event_for(t: &Tailer, line: &Line, cfg: &FileSourceConfig, ctx: &SourceContext) -> (String, async_nats::HeaderMap, Vec<u8>) {
    let text = String::from_utf8_lossy(&line.bytes);
    let invalid_utf8 = matches!(text, std::borrow::Cow::Owned(_));
    let decoded = codec::decode(cfg.codec, &text);
    let mut fields = decoded.fields;
    if invalid_utf8 {
        fields.insert("invalid_utf8".into(), true.into());
        ctx.metrics.invalid_utf8.inc();
    }
    if line.split {
        fields.insert("split".into(), true.into());
        ctx.metrics.lines_split.inc();
    }
    let now = Utc::now();
    let event = LogEvent {
        ts: decoded.ts.unwrap_or(now),
        org: t.org.to_string(),
        app: t.app.clone(),
        region: ctx.region.clone(),
        host: ctx.host.clone(),
        source: format!("file:{}", t.path.display()),
        level: decoded.level,
        message: decoded.message,
        fields,
        seq: line.seq,
    };
    let subject = log_subject(&t.org, &t.app, &ctx.region, &ctx.host);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HDR_MSG_ID, format!("{}/file/{}.{}/{}", ctx.host, t.key, t.generation, line.offset).as_str());
    headers.insert(HDR_SEQ, line.seq.to_string().as_str());
    headers.insert(HDR_READ_TS, now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).as_str());
    (subject, headers, event.to_json())
}

fn lock(m: &Arc<Mutex<Checkpoints>>) -> std::sync::MutexGuard<'_, Checkpoints> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
