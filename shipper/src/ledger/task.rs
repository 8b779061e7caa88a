//! The ledger task: heartbeats in, high-waters settled per sink, gauges out,
//! books stored.
//!
//! A heartbeat's high-water counts for a sink only once the sink had the
//! chance to settle it: each tick the task reads the last sequence of every
//! stream the sinks read (every event acked before a heartbeat was sent is
//! at or below the last sequence read after the heartbeat arrived) and each
//! sink consumer's ack floor (everything up to the floor is acked; a
//! consumer with nothing pending or unacked is at the stream's end). A
//! heartbeat tagged with stream sequence `t` is applied to a sink whose floor
//! was at least `t` one tick earlier (so the ledger has seen the commits
//! behind the acks). Batching, a slow sink or a backlog are therefore never
//! reported as missing; events that never reach the sink are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use flotilla_core::metrics::{Gauge, Registry};
use flotilla_core::origin::Stream;

use super::book::{self, StreamBook};
use super::store::{self, Record};
use super::{Ledger, SinkSpec};

/// The heartbeats of every agent.
pub const STATUS_SUBJECTS: &str = "flotilla.agent.*.status";
/// How often heartbeats are tagged, floors read and gauges set.
const TICK: Duration = Duration::from_secs(1);
/// Heartbeats kept per stream while waiting for a sink to catch up (older
/// ones are let go: they only delay the settled high-water).
const MAX_PENDING: usize = 64;
/// A complete stream no heartbeat named for this long leaves the books.
const RETAIN_SECS: i64 = 24 * 3600;
/// Used for the subjects of a stream whose heartbeat names none (an older
/// agent): every log subject.
const ANY_LOG: &str = "logs.>";

pub const MISSING: &str = "flotilla_sink_missing_events";
const MISSING_HELP: &str =
    "Events an agent reported as acked by JetStream that the sink never settled (gaps in its per-source sequences).";

/// The parts of an agent heartbeat the ledger reads.
#[derive(Debug, Deserialize)]
struct Heartbeat {
    host: String,
    #[serde(default)]
    sources: Vec<SourceBeat>,
}

#[derive(Debug, Deserialize)]
struct SourceBeat {
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    high_water: u64,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    files: BTreeMap<String, FileBeat>,
}

#[derive(Debug, Deserialize)]
struct FileBeat {
    #[serde(default)]
    path: String,
    nonce: String,
    #[serde(default)]
    acked_seq: u64,
    #[serde(default)]
    published_seq: Option<u64>,
    #[serde(default)]
    subject: Option<String>,
}

/// One origin stream's line in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub host: String,
    pub stream: String,
    pub source: String,
    pub path: String,
    pub subject: String,
    pub high_water: u64,
}

/// The origin streams a heartbeat reports; `None` if it is not one.
pub fn parse_heartbeat(payload: &[u8]) -> Option<Vec<Reported>> {
    let hb: Heartbeat = serde_json::from_slice(payload).ok()?;
    let mut out = Vec::new();
    for s in hb.sources {
        if s.kind == "file" || s.kind == "docker" || !s.files.is_empty() {
            for f in s.files.into_values() {
                out.push(Reported {
                    host: hb.host.clone(),
                    stream: Stream::File { nonce: &f.nonce }.key(),
                    source: s.name.clone(),
                    path: f.path,
                    subject: f.subject.unwrap_or_else(|| ANY_LOG.into()),
                    high_water: f.published_seq.unwrap_or(f.acked_seq),
                });
            }
        } else if s.high_water > 0 {
            out.push(Reported {
                host: hb.host.clone(),
                stream: Stream::Source { name: &s.name }.key(),
                source: s.name.clone(),
                path: String::new(),
                subject: s.subject.unwrap_or_else(|| ANY_LOG.into()),
                high_water: s.high_water,
            });
        }
    }
    out.retain(|r| r.high_water > 0);
    Some(out)
}

/// A reported high-water waiting for the sinks to catch up: the last
/// sequence of each JetStream stream read after it arrived.
#[derive(Debug)]
struct Pending {
    tags: BTreeMap<String, u64>,
    report: Reported,
}

/// The ledger task's settings.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    /// How often changed books are stored.
    pub save_interval: Duration,
}

/// Run until `stop` (cancel it after the sinks stopped: their last commits
/// are then stored too).
pub async fn run(
    client: async_nats::Client,
    js: jetstream::Context,
    ledger: Ledger,
    registry: Registry,
    cfg: TaskConfig,
    stop: CancellationToken,
) {
    let specs: Vec<SinkSpec> = match ledger.lock() {
        Some(st) => st.sinks.values().filter_map(|s| s.spec.clone()).collect(),
        None => return,
    };
    let mut beats = match client.subscribe(STATUS_SUBJECTS).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "ledger: cannot subscribe to the agents' heartbeats");
            None
        }
    };
    let mut t = Task {
        js,
        ledger,
        registry,
        specs,
        kv: None,
        unsent: Vec::new(),
        pending: HashMap::new(),
        floors: BTreeMap::new(),
        gauges: BTreeMap::new(),
        saved_at: Instant::now(),
        save_interval: cfg.save_interval,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            msg = async { beats.as_mut()?.next().await }, if beats.is_some() => match msg {
                Some(m) => match parse_heartbeat(&m.payload) {
                    Some(reports) => t.unsent.extend(reports),
                    None => tracing::debug!(subject = %m.subject, "ledger: not a heartbeat"),
                },
                None => beats = None,
            },
            _ = tick.tick() => t.tick().await,
        }
    }
    // The sinks have stopped: their last commits go into the books.
    t.set_gauges();
    if t.kv.is_some() {
        t.save(true).await;
    }
}

struct Task {
    js: jetstream::Context,
    ledger: Ledger,
    registry: Registry,
    specs: Vec<SinkSpec>,
    /// The bucket, once the stored books were loaded (never stored before).
    kv: Option<async_nats::jetstream::kv::Store>,
    /// Heartbeat lines not tagged yet.
    unsent: Vec<Reported>,
    /// Tagged lines not yet applied to every sink, by (host, stream).
    pending: HashMap<(String, String), Vec<Pending>>,
    /// Each sink's consumer floor, read at the previous tick.
    floors: BTreeMap<String, u64>,
    gauges: BTreeMap<(String, String, String), Gauge>,
    saved_at: Instant,
    save_interval: Duration,
}

impl Task {
    async fn tick(&mut self) {
        if self.kv.is_none() {
            self.load().await;
        }
        let Some(ends) = self.stream_ends().await else {
            return;
        };
        for report in self.unsent.drain(..) {
            let key = (report.host.clone(), report.stream.clone());
            let list = self.pending.entry(key).or_default();
            list.push(Pending { tags: ends.clone(), report });
            if list.len() > MAX_PENDING {
                list.remove(0);
            }
        }
        self.apply();
        self.floors = self.read_floors(&ends).await;
        self.set_gauges();
        if self.kv.is_some() && self.saved_at.elapsed() >= self.save_interval {
            self.save(false).await;
        }
    }

    /// Merge the stored books into the live ones.
    async fn load(&mut self) {
        let kv = match store::open(&self.js, true).await {
            Ok(kv) => kv,
            Err(e) => return tracing::warn!(error = %e, "ledger: cannot open the bucket; retrying"),
        };
        let mut loaded = BTreeMap::new();
        for spec in &self.specs {
            match store::load(&kv, Some(&spec.name)).await {
                Ok(records) => loaded.extend(records),
                Err(e) => return tracing::warn!(error = %e, "ledger: cannot load the stored books; retrying"),
            }
        }
        if let Some(mut st) = self.ledger.lock() {
            for ((sink, host), record) in loaded {
                let Some(s) = st.sinks.get_mut(&sink) else {
                    continue;
                };
                let books = s.hosts.entry(host).or_default();
                for (stream, stored) in &record.streams {
                    books.entry(stream.clone()).or_default().merge(stored);
                }
            }
        }
        tracing::info!("ledger: stored books loaded");
        self.kv = Some(kv);
    }

    /// The last sequence of every stream the sinks read; `None` if one
    /// cannot be read (nothing is tagged this tick).
    async fn stream_ends(&self) -> Option<BTreeMap<String, u64>> {
        let names: BTreeSet<&str> = self.specs.iter().map(|s| s.stream.as_str()).collect();
        let mut ends = BTreeMap::new();
        for name in names {
            match self.js.get_stream(name).await {
                Ok(s) => ends.insert(name.to_string(), s.cached_info().state.last_sequence),
                Err(e) => {
                    tracing::debug!(stream = name, error = %e, "ledger: cannot read the stream's last sequence");
                    return None;
                }
            };
        }
        Some(ends)
    }

    /// Each sink's consumer floor: every message at or below it is settled.
    async fn read_floors(&self, ends: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        let mut floors = BTreeMap::new();
        for spec in &self.specs {
            let info = match self.js.get_stream(&spec.stream).await {
                Ok(s) => s.consumer_info(&spec.consumer).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match info {
                Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {
                    floors.insert(spec.name.clone(), ends.get(&spec.stream).copied().unwrap_or(0));
                }
                Ok(info) => {
                    floors.insert(spec.name.clone(), info.ack_floor.stream_sequence);
                }
                Err(e) => tracing::debug!(sink = spec.name, error = e, "ledger: cannot read the consumer's ack floor"),
            }
        }
        floors
    }

    /// Raise each sink's high-waters to the reports its floor has passed.
    fn apply(&mut self) {
        let Some(mut st) = self.ledger.lock() else {
            return;
        };
        let now = chrono::Utc::now().timestamp();
        for ((host, stream), list) in self.pending.iter_mut() {
            for spec in &self.specs {
                let Some(&floor) = self.floors.get(&spec.name) else {
                    continue;
                };
                let due = list
                    .iter()
                    .filter(|p| p.tags.get(&spec.stream).is_some_and(|t| *t <= floor))
                    .max_by_key(|p| p.report.high_water);
                let Some(due) = due else {
                    continue;
                };
                if !spec.covers(&due.report.subject) {
                    continue;
                }
                let Some(sink) = st.sinks.get_mut(&spec.name) else {
                    continue;
                };
                let book = sink.hosts.entry(host.clone()).or_default().entry(stream.clone()).or_default();
                let r = &due.report;
                let changed = book.high_water < r.high_water
                    || book.source != r.source
                    || book.path != r.path
                    || book.subject != r.subject;
                book.high_water = book.high_water.max(r.high_water);
                (book.source, book.path, book.subject) = (r.source.clone(), r.path.clone(), r.subject.clone());
                // `seen` alone is refreshed at the next store, not worth one.
                book.seen = now;
                if changed {
                    sink.dirty.insert(host.clone());
                }
            }
            // Done with the reports every sink has passed.
            list.retain(|p| {
                !self.specs.iter().all(|spec| {
                    let floor = self.floors.get(&spec.name);
                    p.tags.get(&spec.stream).is_some_and(|t| floor.is_some_and(|f| t <= f))
                })
            });
        }
        self.pending.retain(|_, list| !list.is_empty());
    }

    fn set_gauges(&mut self) {
        let mut now: BTreeMap<(String, String, String), u64> = BTreeMap::new();
        if let Some(st) = self.ledger.lock() {
            for (sink, s) in &st.sinks {
                for ((host, source), n) in book::missing_by_source(&s.hosts) {
                    now.insert((sink.clone(), host, source), n);
                }
            }
        }
        // Series that went away read 0.
        for (key, g) in &self.gauges {
            if !now.contains_key(key) {
                g.set(0);
            }
        }
        for (key, n) in now {
            let g = self.gauges.entry(key.clone()).or_insert_with(|| {
                let (sink, host, source) = &key;
                self.registry.gauge(MISSING, MISSING_HELP, &[("sink", sink), ("host", host), ("source", source)])
            });
            g.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Store the books of changed hosts (`all`: of every host).
    async fn save(&mut self, all: bool) {
        let Some(kv) = self.kv.clone() else {
            return;
        };
        self.saved_at = Instant::now();
        let mut records = Vec::new();
        let cutoff = chrono::Utc::now().timestamp() - RETAIN_SECS;
        if let Some(mut st) = self.ledger.lock() {
            for (sink, s) in st.sinks.iter_mut() {
                // Complete streams no heartbeat named for long leave the books.
                for (host, streams) in s.hosts.iter_mut() {
                    let before = streams.len();
                    streams.retain(|_, b: &mut StreamBook| b.seen == 0 || b.seen >= cutoff || b.missing() > 0);
                    if streams.len() != before {
                        s.dirty.insert(host.clone());
                    }
                }
                let hosts: Vec<String> = if all {
                    s.hosts.keys().cloned().collect()
                } else {
                    std::mem::take(&mut s.dirty).into_iter().collect()
                };
                if all {
                    s.dirty.clear();
                }
                for host in hosts {
                    let streams = s.hosts.get(&host).cloned().unwrap_or_default();
                    records.push(Record { sink: sink.clone(), host, saved: chrono::Utc::now(), streams });
                }
            }
        }
        for r in records {
            if let Err(e) = store::save(&kv, &r).await {
                tracing::warn!(error = %e, "ledger: cannot store the books; will retry");
                if let Some(mut st) = self.ledger.lock() {
                    if let Some(s) = st.sinks.get_mut(&r.sink) {
                        s.dirty.insert(r.host.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_lines() {
        let hb = br#"{"host":"h1","region":"r","ts":"2026-01-01T00:00:00Z","version":"0","sources":[
            {"name":"app","kind":"file","read":3,"acked":3,"high_water":0,"dropped_rate_limit":0,"dropped_queue_full":0,
             "files":{"1:2":{"path":"/var/log/a.log","nonce":"00ab","acked_seq":9,"published_seq":7,"subject":"logs.o.a.r.h1"},
                      "1:3":{"path":"/var/log/b.log","nonce":"00cd","acked_seq":4}}},
            {"name":"sys","kind":"syslog","read":1,"acked":1,"high_water":5,"subject":"logs.o.*.r.h1","dropped_rate_limit":0,"dropped_queue_full":0},
            {"name":"idle","kind":"stdin","read":0,"acked":0,"high_water":0,"dropped_rate_limit":0,"dropped_queue_full":0}]}"#;
        let r = parse_heartbeat(hb).unwrap();
        let got: Vec<(&str, &str, &str, u64)> =
            r.iter().map(|r| (r.stream.as_str(), r.source.as_str(), r.subject.as_str(), r.high_water)).collect();
        assert_eq!(
            got,
            vec![
                ("f/00ab", "app", "logs.o.a.r.h1", 7),
                ("f/00cd", "app", "logs.>", 4),
                ("sys", "sys", "logs.o.*.r.h1", 5)
            ]
        );
        assert!(parse_heartbeat(b"not json").is_none());
    }
}
