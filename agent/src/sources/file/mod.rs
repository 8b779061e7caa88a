//! The file source: discover files matching the include patterns (woken by
//! inotify, rescanning every `poll_interval` as a safety net), read new
//! lines, publish each event with JetStream acks, and checkpoint a file's
//! offset only past events whose acks arrived. While NATS is away the files
//! are their own buffer: nothing is read ahead, and a failed publish rewinds
//! to the last acknowledged event (its de-duplication id makes the resend
//! harmless).
//!
//! Lines become events through [`units`]: Docker json-file records are
//! unwrapped (and split records rejoined), multi-line events are joined.

pub mod checkpoint;
pub mod docker;
pub mod pattern;
pub mod tailer;
pub mod units;
pub mod watch;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use flotilla_core::event::{origin_json, LogEventRef};
use flotilla_core::origin;
use flotilla_core::subject::{log_subject, OrgId};

use crate::config::{FileSourceConfig, ReadFrom};
use crate::pipeline::acks::{Acks, EventHeaders, Route, Sent};
use crate::ratelimit::{Admit, RateGate};
use crate::stats::{FileStatus, SourceStats};
use checkpoint::Checkpoints;
use pattern::PathPattern;
use tailer::{identity, Tailer};
use units::{Body, Tracked, Unit};

/// Bytes read from one file before moving to the next (fairness).
const READ_BUDGET: usize = 256 * 1024;

/// What a file source needs from the agent.
pub struct FileContext {
    pub route: Route,
    pub stats: Arc<SourceStats>,
    pub checkpoints: Checkpoints,
    pub host: String,
    pub region: String,
    pub max_in_flight: usize,
}

struct InFlight {
    /// `None` for an event dropped by the rate limit: settled at once, in order.
    ack: Option<Sent>,
    key: Arc<str>,
    nonce: Arc<str>,
    end: u64,
    seq: u64,
    /// A published event (not a drop, not a notice).
    published: bool,
}

pub struct FileSource {
    cfg: FileSourceConfig,
    docker: bool,
    patterns: Vec<PathPattern>,
    poll: Duration,
    files: HashMap<String, Tracked>,
    warned: HashSet<String>,
    /// Files found by their checkpoint, no longer by the patterns (renamed
    /// while the agent was down): read to their end, then let go.
    orphans: HashSet<String>,
    gate: Option<RateGate>,
    ctx: FileContext,
    inflight: VecDeque<InFlight>,
}

impl FileSource {
    pub fn new(cfg: FileSourceConfig, docker: bool, ctx: FileContext) -> Self {
        // The config was validated: patterns and durations parse.
        let patterns = cfg.includes(docker).iter().filter_map(|p| PathPattern::new(p).ok()).collect();
        let poll = flotilla_core::config::parse_duration(&cfg.poll_interval).unwrap_or(Duration::from_secs(10));
        let gate = cfg.rate_limit.and_then(RateGate::new);
        FileSource {
            cfg,
            docker,
            patterns,
            poll,
            files: HashMap::new(),
            warned: HashSet::new(),
            orphans: HashSet::new(),
            gate,
            ctx,
            inflight: VecDeque::new(),
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut acks = match Acks::new(self.ctx.route.clone()).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(source = %self.ctx.stats.name, error = %e, "cannot subscribe to the ack inbox");
                return;
            }
        };
        let mut watcher = watch::Watcher::new();
        let mut first_pass = true;
        let mut failures = 0u32;
        loop {
            if let Some(w) = watcher.as_mut() {
                w.prune();
                w.watch(self.patterns.iter().flat_map(|p| watch::dirs_for(p.glob())));
            }
            self.discover(first_pass);
            first_pass = false;
            let delivered = self.pump(&mut acks, &shutdown).await;
            self.save();
            let pause = if delivered {
                failures = 0;
                self.forget_drained();
                self.poll
            } else {
                failures += 1;
                self.ctx.stats.publish_errors.inc();
                self.inflight.clear();
                acks.forget();
                self.files.values_mut().for_each(Tracked::rewind);
                crate::backoff::delay(failures)
            };
            if shutdown.is_cancelled() {
                break;
            }
            let deadline = self.files.values().filter_map(Tracked::deadline).min();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = crate::sources::stdin::sleep_until(deadline), if delivered => {}
                _ = changed(&mut watcher), if delivered => {}
                // Idle: the connection still answers PINGs.
                () = acks.idle(), if delivered => {}
                _ = shutdown.cancelled() => break,
            }
        }
        self.save();
    }

    fn discover(&mut self, first_pass: bool) {
        self.files.values_mut().for_each(|t| t.tailer.seen = false);
        let mut opened = false;
        for pattern in &self.patterns {
            for path in pattern.matches() {
                let Some(path_str) = path.to_str() else {
                    continue;
                };
                let Some((org, app)) = pattern.captures(path_str) else {
                    continue;
                };
                let (Some(org), Some(app)) =
                    (org.or_else(|| self.cfg.org.clone()), app.or_else(|| self.cfg.app.clone()))
                else {
                    continue;
                };
                let org = match OrgId::new(&org) {
                    Ok(o) => o,
                    Err(e) => {
                        if self.warned.insert(path_str.to_string()) {
                            tracing::warn!(path = path_str, error = %e, "skipping file: its path names no valid org");
                        }
                        continue;
                    }
                };
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let key = identity(&meta);
                if let Some(t) = self.files.get_mut(&key) {
                    t.tailer.seen = true;
                    if t.tailer.path != path {
                        t.set_path(path);
                    }
                    continue;
                }
                let start_at_end = first_pass && self.ctx.checkpoints.fresh && self.cfg.read_from == ReadFrom::End;
                match Tailer::open(&path, key.clone(), org, app, self.ctx.checkpoints.get(&key), start_at_end) {
                    Ok(t) => {
                        tracing::info!(source = %self.ctx.stats.name, path = path_str, "tailing");
                        // Persist the incarnation's nonce before anything is published with it.
                        self.ctx.checkpoints.set(&key, t.checkpoint());
                        opened = true;
                        let subject = log_subject(&t.org, &t.app, &self.ctx.region, &self.ctx.host);
                        self.files.insert(key, Tracked::new(t, subject, self.docker, self.cfg.multiline.as_ref()));
                    }
                    Err(e) => tracing::warn!(path = path_str, error = %e, "cannot open"),
                }
            }
        }
        if first_pass {
            opened |= self.adopt_orphans();
        }
        if opened {
            self.save();
        }
    }

    /// Files with a checkpoint that the patterns no longer match, most
    /// likely rotated by rename while the agent was down (`app.log` →
    /// `app.log.1` with only `*.log` included): found by identity in their
    /// old directory and read from their checkpoint to the end, so the
    /// lines written before the rename are not lost.
    fn adopt_orphans(&mut self) -> bool {
        let mut opened = false;
        for (key, cp) in self.ctx.checkpoints.entries() {
            if self.files.contains_key(&key) {
                continue;
            }
            let Some(path) = find_by_identity(&cp.path, &key) else {
                tracing::warn!(path = %cp.path.display(), "a checkpointed file is gone; lines after its checkpoint, if any, cannot be read");
                continue;
            };
            let Some(old) = cp.path.to_str() else { continue };
            let Some((org, app)) = self.patterns.iter().find_map(|p| p.captures(old)) else { continue };
            let (Some(org), Some(app)) = (org.or_else(|| self.cfg.org.clone()), app.or_else(|| self.cfg.app.clone()))
            else {
                continue;
            };
            let Ok(org) = OrgId::new(&org) else { continue };
            match Tailer::open(&path, key.clone(), org, app, Some(&cp), false) {
                Ok(mut t) => {
                    tracing::info!(source = %self.ctx.stats.name, path = %path.display(), was = %cp.path.display(), "finishing a file renamed while the agent was away");
                    t.seen = false;
                    self.ctx.checkpoints.set(&key, t.checkpoint());
                    let subject = log_subject(&t.org, &t.app, &self.ctx.region, &self.ctx.host);
                    self.files.insert(key.clone(), Tracked::new(t, subject, self.docker, self.cfg.multiline.as_ref()));
                    self.orphans.insert(key);
                    opened = true;
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot open"),
            }
        }
        opened
    }

    /// Read and publish everything new (and multi-line events whose time is
    /// up), then wait for every ack. False if a publish or an ack failed.
    async fn pump(&mut self, acks: &mut Acks, shutdown: &CancellationToken) -> bool {
        let keys: Vec<String> = self.files.keys().cloned().collect();
        for key in keys {
            loop {
                if shutdown.is_cancelled() {
                    return self.settle_all(acks).await;
                }
                let Some(t) = self.files.get_mut(&key) else {
                    break;
                };
                let units = match t.read(self.cfg.max_line_bytes, READ_BUDGET, &self.ctx.stats) {
                    Ok(Some(u)) => u,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(path = %t.tailer.path.display(), error = %e, "read failed");
                        break;
                    }
                };
                for unit in units {
                    if !self.send(acks, &key, unit).await {
                        return false;
                    }
                }
            }
            let due = match self.files.get_mut(&key) {
                Some(t) => t.flush_due(Instant::now()),
                None => vec![],
            };
            for unit in due {
                if !self.send(acks, &key, unit).await {
                    return false;
                }
            }
        }
        self.settle_all(acks).await
    }

    /// Publish one event (or drop it under the rate limit), keeping at most
    /// `max_in_flight` publishes awaiting their ack.
    async fn send(&mut self, acks: &mut Acks, key: &str, unit: Unit) -> bool {
        let Some(t) = self.files.get_mut(key) else {
            return true;
        };
        let seq = t.tailer.next_seq();
        let nonce = t.tailer.nonce.clone();
        let file = t.key.clone();
        let subject = t.subject.clone();
        let admit = self.gate.as_mut().map(RateGate::admit).unwrap_or(Admit::Pass { dropped_before: 0 });
        let base = origin::file_msg_id(&self.ctx.host, &nonce, unit.offset);
        match admit {
            Admit::Drop => {
                self.ctx.stats.dropped_rate_limit.inc();
                self.inflight.push_back(InFlight { ack: None, key: file, nonce, end: unit.end, seq, published: false });
                return self.trim_window(acks).await;
            }
            Admit::Pass { dropped_before } if dropped_before > 0 => {
                let notice = crate::ratelimit::notice(dropped_before, &self.ctx.stats.name);
                let body = encode(&self.ctx, t, &Body::Full(notice), 0);
                let msg_id = origin::notice_msg_id(&base);
                let Some(ack) = publish(&self.ctx, acks, subject.clone(), &msg_id, 0, 0, body).await else {
                    return false;
                };
                let end = unit.offset;
                self.inflight.push_back(InFlight {
                    ack: Some(ack),
                    key: file.clone(),
                    nonce: nonce.clone(),
                    end,
                    seq: seq - 1,
                    published: false,
                });
            }
            Admit::Pass { .. } => {}
        }
        let Some(t) = self.files.get_mut(key) else {
            return true;
        };
        let dropped = t.tailer.publishing(seq);
        let end = unit.end;
        let body = encode(&self.ctx, t, &unit.body(self.cfg.codec), seq);
        let Some(ack) = publish(&self.ctx, acks, subject, &base, seq, dropped, body).await else {
            return false;
        };
        self.inflight.push_back(InFlight { ack: Some(ack), key: file, nonce, end, seq, published: true });
        self.ctx.stats.in_flight.set(self.inflight.len() as i64);
        self.trim_window(acks).await
    }
}

/// The event's JSON, written from borrowed parts.
fn encode(ctx: &FileContext, t: &mut Tracked, body: &Body, seq: u64) -> Vec<u8> {
    let no_fields = serde_json::Map::new();
    let (ts, level, message, raw_message, fields, raw_fields) = match body {
        Body::Full(d) => (d.ts, d.level.as_str(), d.message.as_str(), None, &d.fields, None),
        Body::Lean(l) => {
            (l.ts, l.level.as_ref(), "", Some(l.message_json.as_ref()), &no_fields, Some(l.fields_json.as_str()))
        }
    };
    if t.origin.is_empty() {
        t.origin = origin_json(t.tailer.org.as_str(), &t.tailer.app, &ctx.region, &ctx.host, &t.source);
    }
    LogEventRef {
        ts: ts.unwrap_or_else(Utc::now),
        origin: &t.origin,
        level,
        message,
        raw_message,
        fields,
        raw_fields,
        seq,
    }
    .to_json()
}

/// Publish one event. `dropped`: seqs right before this one consumed by
/// events dropped under the rate limit.
async fn publish(
    ctx: &FileContext,
    acks: &mut Acks,
    subject: async_nats::Subject,
    msg_id: &str,
    seq: u64,
    dropped: u64,
    body: Vec<u8>,
) -> Option<Sent> {
    match acks.publish(&subject, EventHeaders { msg_id, seq, dropped }, body.into()).await {
        Ok(sent) => {
            ctx.stats.published.inc();
            Some(sent)
        }
        Err(e) => {
            tracing::warn!(source = %ctx.stats.name, error = %e, "publish failed");
            None
        }
    }
}

impl FileSource {
    async fn trim_window(&mut self, acks: &mut Acks) -> bool {
        while self.inflight.len() >= self.ctx.max_in_flight || self.inflight.front().is_some_and(|f| f.ack.is_none()) {
            if !self.settle_one(acks).await {
                return false;
            }
        }
        true
    }

    async fn settle_all(&mut self, acks: &mut Acks) -> bool {
        while !self.inflight.is_empty() {
            if !self.settle_one(acks).await {
                return false;
            }
        }
        self.ctx.stats.in_flight.set(0);
        true
    }

    /// Await the oldest publish's ack and move its file's acked offset.
    async fn settle_one(&mut self, acks: &mut Acks) -> bool {
        let Some(mut f) = self.inflight.pop_front() else {
            return true;
        };
        let result = match f.ack.take() {
            None => None,
            Some(sent) => Some(acks.wait(sent).await),
        };
        match result {
            Some(Err(e)) => {
                tracing::warn!(source = %self.ctx.stats.name, error = %e, "no JetStream ack; will resend from the last acknowledged event");
                false
            }
            Some(Ok(ack)) => {
                self.ctx.stats.acked.inc();
                if ack.duplicate {
                    self.ctx.stats.duplicates.inc();
                }
                self.acked(&f);
                true
            }
            None => {
                self.acked(&f);
                true
            }
        }
    }

    fn acked(&mut self, f: &InFlight) {
        if let Some(t) = self.files.get_mut(&*f.key) {
            t.tailer.ack(&f.nonce, f.end, f.seq);
            if f.published {
                t.tailer.ack_published(&f.nonce, f.seq);
            }
        }
    }

    fn save(&mut self) {
        let mut lag = 0;
        for t in self.files.values() {
            let cp = t.tailer.checkpoint();
            lag += t.tailer.lag();
            self.ctx.stats.set_file(
                &t.tailer.key,
                FileStatus {
                    path: cp.path.display().to_string(),
                    nonce: cp.nonce.clone(),
                    acked_seq: cp.seq,
                    published_seq: t.tailer.acked_published_seq(),
                    subject: t.subject.to_string(),
                },
            );
            self.ctx.checkpoints.set(&t.tailer.key, cp);
        }
        self.ctx.stats.lag_bytes.set(lag as i64);
        if let Err(e) = self.ctx.checkpoints.save() {
            tracing::error!(error = %e, "cannot write checkpoints");
        }
    }

    /// Let go of files that left the patterns (rotated away or deleted) once
    /// read to their end.
    fn forget_drained(&mut self) {
        let gone: Vec<String> =
            self.files.values().filter(|t| !t.tailer.seen && t.drained()).map(|t| t.tailer.key.clone()).collect();
        if gone.is_empty() {
            return;
        }
        for key in gone {
            if let Some(t) = self.files.remove(&key) {
                tracing::info!(path = %t.tailer.path.display(), "done with file");
                self.ctx.stats.remove_file(&key);
                let still_there = std::fs::metadata(&t.tailer.path).map(|m| identity(&m) == key).unwrap_or(false);
                // An orphan is done for good: it is not followed again.
                if !still_there || self.orphans.remove(&key) {
                    self.ctx.checkpoints.remove(&key);
                }
            }
        }
        self.save();
    }
}

/// The file in `old`'s directory whose identity is `key`, if any.
fn find_by_identity(old: &std::path::Path, key: &str) -> Option<std::path::PathBuf> {
    let dir = old.parent()?;
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| std::fs::metadata(p).map(|m| m.is_file() && identity(&m) == key).unwrap_or(false))
}

async fn changed(watcher: &mut Option<watch::Watcher>) {
    match watcher {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}
