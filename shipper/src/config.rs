//! Shipper configuration: raw TOML structs (`deny_unknown_fields`) and a
//! `validate()` that reports every problem with its key path.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use flotilla_core::config::{parse_bytes, parse_duration, Validate, Validator};
use flotilla_core::subject::is_valid_subject;

use crate::stream::covering_stream;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `/metrics` and `/healthz`.
    #[serde(default = "default_http_addr")]
    pub http_addr: String,
    pub nats: NatsConfig,
    /// Streams created (or updated) at start.
    #[serde(default = "default_streams")]
    pub streams: Vec<StreamConfig>,
    pub sinks: Vec<SinkConfig>,
    /// The completeness ledger (see `ledger`).
    #[serde(default)]
    pub ledger: LedgerConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// PEM CAs that sign the servers' TLS certificates, trusted instead of
    /// the system's roots.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The TLS handshake first, before the server's INFO (nats-server's
    /// `handshake_first`).
    #[serde(default)]
    pub tls_first: bool,
}

impl NatsConfig {
    pub fn tls_files(&self) -> flotilla_core::nats::TlsFiles<'_> {
        flotilla_core::nats::TlsFiles {
            ca: self.tls_ca.as_deref(),
            cert: self.tls_cert.as_deref(),
            key: self.tls_key.as_deref(),
            first: self.tls_first,
        }
    }
}

/// A JetStream stream the shipper makes sure exists.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub name: String,
    pub subjects: Vec<String>,
    /// Oldest message kept (`7d`); unlimited when absent.
    pub max_age: Option<String>,
    /// Largest stream size in bytes; unlimited when absent.
    pub max_bytes: Option<u64>,
    /// Window in which a repeated `Nats-Msg-Id` is dropped.
    #[serde(default = "default_duplicate_window")]
    pub duplicate_window: String,
    /// Copies kept by a cluster: 1 on a single server, 3 on a cluster.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
}

fn default_replicas() -> usize {
    1
}

/// One sink: its own durable consumer `flotilla-<name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub name: String,
    /// `nats` sinks: prepended (with a dot) to each subject on the other cluster.
    #[serde(default)]
    pub subject_prefix: String,
    /// `parquet`, or an external sink: `http`, `loki`, `elasticsearch`,
    /// `datadog_logs`, `file`, `stdout`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where objects go: `file:///path` for now. `http`: the endpoint;
    /// `file`: `file:///path/to/events.ndjson`; `stdout`: none.
    #[serde(default)]
    pub url: String,
    #[serde(default = "default_sink_subjects")]
    pub subjects: Vec<String>,
    /// Commit when this many events are held...
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// ...or when the first held event is this old...
    #[serde(default = "default_batch_max_age")]
    pub batch_max_age: String,
    /// ...or when the held payloads add up to this size.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: String,
    /// Object store options (see the `object_store` crate's config keys),
    /// e.g. `aws_endpoint`, `aws_region`, `aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_allow_http`, `timeout`. The usual AWS,
    /// Google and Azure environment variables are read too.
    #[serde(default)]
    pub storage: std::collections::BTreeMap<String, String>,
    /// How long a delivered message may stay unacked before JetStream
    /// redelivers it (default: `batch_max_age` + 60s, plus `roll_max_age`
    /// for Parquet sinks, whose events are acked when their object closes).
    pub ack_wait: Option<String>,

    // --- Parquet sinks; see `sinks::parquet`.
    /// Close an object once it holds about this many bytes...
    #[serde(default = "default_roll_max_bytes")]
    pub roll_max_bytes: String,
    /// ...or once it has been open this long.
    #[serde(default = "default_roll_max_age")]
    pub roll_max_age: String,
    /// Objects open at once (at most one per partition); opening one more
    /// closes the oldest first.
    #[serde(default = "default_max_open_objects")]
    pub max_open_objects: usize,
    /// Events in open objects, not yet acked (the consumer's
    /// `max_ack_pending`); at the limit the object holding most is closed.
    #[serde(default = "default_max_unacked_events")]
    pub max_unacked_events: usize,
    /// Memory for the open objects' encoders and upload buffers; over it,
    /// the largest object is closed.
    #[serde(default = "default_max_buffer_bytes")]
    pub max_buffer_bytes: String,
    /// Rows per Parquet row group.
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// The `ts` column's unit: `us` (default) or `ns`.
    #[serde(default = "default_timestamp_unit")]
    pub timestamp_unit: String,

    // --- External sinks (`http`, `file`, `stdout`); see `sinks::delivery`.
    /// Events outside these orgs/apps/levels are acked without being sent.
    #[serde(default)]
    pub filter: FilterConfig,
    /// One send attempt may take this long.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Attempts per batch before it goes to the dead-letter stream.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles up to `retry_max_backoff`
    /// (full jitter: a random wait between 0 and that).
    #[serde(default = "default_retry_initial_backoff")]
    pub retry_initial_backoff: String,
    #[serde(default = "default_retry_max_backoff")]
    pub retry_max_backoff: String,
    /// `http`: request headers added to every request.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// `http`: `none` or `gzip`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// `http`: basic or bearer authentication.
    pub auth: Option<AuthConfig>,
    /// Slows the sink's pull to these rates (never drops).
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// External sinks: after this many failed sends in a row, pause.
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
    /// `elasticsearch`: the index written to (default `flotilla-logs`).
    pub index: Option<String>,
    /// `datadog_logs`: sent as the `DD-API-KEY` header (required).
    pub api_key: Option<String>,
}

/// Which events an external sink keeps; an empty list keeps everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Org token of the subject `logs.<org>.<app>.<region>.<host>`.
    #[serde(default)]
    pub orgs: Vec<String>,
    /// App token of the subject.
    #[serde(default)]
    pub apps: Vec<String>,
    /// The payload's `level` (case-insensitive).
    #[serde(default)]
    pub levels: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    Basic { user: String, password: String },
    Bearer { token: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub events_per_sec: Option<u32>,
    pub bytes_per_sec: Option<u32>,
}

/// After `failures` failed sends in a row (over any number of batches) the
/// sink stops sending for `cooldown`, then tries once; each further failure
/// doubles the pause up to `max_cooldown`, and a success closes it. Pauses
/// hold the batch (nothing is dropped, attempts are not spent waiting).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// 0 turns the breaker off.
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    #[serde(default = "default_breaker_cooldown")]
    pub cooldown: String,
    #[serde(default = "default_breaker_max_cooldown")]
    pub max_cooldown: String,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: default_breaker_failures(),
            cooldown: default_breaker_cooldown(),
            max_cooldown: default_breaker_max_cooldown(),
        }
    }
}

impl BreakerConfig {
    pub fn cooldown(&self) -> Duration {
        parse_duration(&self.cooldown).unwrap_or(Duration::from_secs(5))
    }
    pub fn max_cooldown(&self) -> Duration {
        parse_duration(&self.max_cooldown).unwrap_or(Duration::from_secs(120))
    }
}

fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown() -> String {
    "5s".into()
}
fn default_breaker_max_cooldown() -> String {
    "2m".into()
}

/// Sink types that deliver outside (retry, dead-letter stream, filters).
pub const EXTERNAL_KINDS: &[&str] = &["http", "file", "stdout", "loki", "elasticsearch", "datadog_logs", "nats"];

/// External sinks sent over HTTP (headers, auth, gzip).
pub const HTTP_KINDS: &[&str] = &["http", "loki", "elasticsearch", "datadog_logs"];

fn default_timeout() -> String {
    "10s".into()
}
fn default_max_attempts() -> u32 {
    8
}
fn default_retry_initial_backoff() -> String {
    "500ms".into()
}
fn default_retry_max_backoff() -> String {
    "30s".into()
}
fn default_compression() -> String {
    "none".into()
}

fn default_http_addr() -> String {
    "127.0.0.1:9102".into()
}
fn default_streams() -> Vec<StreamConfig> {
    vec![StreamConfig {
        name: "LOGS".into(),
        subjects: vec!["logs.>".into()],
        max_age: None,
        max_bytes: None,
        duplicate_window: default_duplicate_window(),
        replicas: default_replicas(),
    }]
}
fn default_duplicate_window() -> String {
    "2m".into()
}
fn default_sink_subjects() -> Vec<String> {
    vec!["logs.>".into()]
}
fn default_batch_max_events() -> usize {
    10_000
}
fn default_batch_max_age() -> String {
    "5s".into()
}
fn default_batch_max_bytes() -> String {
    "8MiB".into()
}
fn default_roll_max_bytes() -> String {
    "128MiB".into()
}
fn default_roll_max_age() -> String {
    "5m".into()
}
fn default_max_open_objects() -> usize {
    64
}
fn default_max_unacked_events() -> usize {
    500_000
}
fn default_max_buffer_bytes() -> String {
    "256MiB".into()
}
fn default_row_group_rows() -> usize {
    128 * 1024
}
fn default_timestamp_unit() -> String {
    "us".into()
}

/// Most events one batch may hold (it is held in memory).
pub const MAX_BATCH_EVENTS: usize = 1_000_000;

impl StreamConfig {
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age.as_deref().and_then(parse_duration)
    }
    pub fn duplicate_window(&self) -> Duration {
        parse_duration(&self.duplicate_window).unwrap_or(Duration::from_secs(120))
    }
}

impl SinkConfig {
    pub fn batch_max_age(&self) -> Duration {
        parse_duration(&self.batch_max_age).unwrap_or(Duration::from_secs(5))
    }
    pub fn batch_max_bytes(&self) -> u64 {
        parse_bytes(&self.batch_max_bytes).unwrap_or(8 << 20)
    }
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
            .as_deref()
            .and_then(parse_duration)
            .unwrap_or_else(|| self.min_ack_wait() + Duration::from_secs(60))
    }
    /// Longest a message may be held unacked by design.
    fn min_ack_wait(&self) -> Duration {
        match self.kind.as_str() {
            "parquet" => self.batch_max_age() + self.roll_max_age(),
            _ => self.batch_max_age(),
        }
    }
    pub fn roll_max_bytes(&self) -> u64 {
        parse_bytes(&self.roll_max_bytes).unwrap_or(128 << 20)
    }
    pub fn roll_max_age(&self) -> Duration {
        parse_duration(&self.roll_max_age).unwrap_or(Duration::from_secs(300))
    }
    pub fn max_buffer_bytes(&self) -> u64 {
        parse_bytes(&self.max_buffer_bytes).unwrap_or(256 << 20)
    }
    /// The durable consumer this sink reads with.
    pub fn consumer_name(&self) -> String {
        format!("flotilla-{}", self.name)
    }
    /// The local directory of a `file://` URL.
    pub fn local_dir(&self) -> Result<PathBuf, String> {
        local_dir(&self.url)
    }
}

/// Options of the Parquet sinks.
impl SinkConfig {
    fn validate_parquet(&self, v: &mut Validator, at: &dyn Fn(&str) -> String) {
        let roll = v.bytes(&at("roll_max_bytes"), &self.roll_max_bytes);
        v.check(
            parse_bytes(&self.roll_max_bytes).is_none() || roll >= 1 << 20,
            at("roll_max_bytes"),
            "must be at least 1MiB",
        );
        let age = v.duration(&at("roll_max_age"), &self.roll_max_age);
        v.check(
            parse_duration(&self.roll_max_age).is_none() || !age.is_zero(),
            at("roll_max_age"),
            "must be longer than 0",
        );
        v.check(self.max_open_objects >= 1, at("max_open_objects"), "must be at least 1");
        v.check(
            self.max_unacked_events > self.batch_max_events,
            at("max_unacked_events"),
            "must be larger than batch_max_events",
        );
        let buffer = v.bytes(&at("max_buffer_bytes"), &self.max_buffer_bytes);
        v.check(
            parse_bytes(&self.max_buffer_bytes).is_none() || buffer >= 16 << 20,
            at("max_buffer_bytes"),
            "must be at least 16MiB",
        );
        v.check((1..=16 << 20).contains(&self.row_group_rows), at("row_group_rows"), "must be between 1 and 16777216");
        v.check(
            crate::sinks::parquet::schema::TsUnit::parse(&self.timestamp_unit).is_some(),
            at("timestamp_unit"),
            format!("{:?} is not a timestamp unit (us or ns)", self.timestamp_unit),
        );
    }
}

/// Options of the external sinks.
impl SinkConfig {
    pub fn is_external(&self) -> bool {
        EXTERNAL_KINDS.contains(&self.kind.as_str())
    }
    pub fn timeout(&self) -> Duration {
        parse_duration(&self.timeout).unwrap_or(Duration::from_secs(10))
    }
    pub fn retry_initial_backoff(&self) -> Duration {
        parse_duration(&self.retry_initial_backoff).unwrap_or(Duration::from_millis(500))
    }
    pub fn retry_max_backoff(&self) -> Duration {
        parse_duration(&self.retry_max_backoff).unwrap_or(Duration::from_secs(30))
    }

    fn validate_external(&self, v: &mut Validator, at: &dyn Fn(&str) -> String) {
        let over_http = HTTP_KINDS.contains(&self.kind.as_str());
        match self.kind.as_str() {
            _ if over_http => v.check(
                (self.url.starts_with("http://") || self.url.starts_with("https://")) && self.url.len() > 8,
                at("url"),
                format!("{:?} is not an http:// or https:// URL", self.url),
            ),
            "file" => {
                if local_dir(&self.url).is_err() {
                    v.problem(
                        at("url"),
                        format!("{:?} must be an absolute path like file:///var/log/flotilla/events.ndjson", self.url),
                    );
                }
            }
            "nats" => v.nats_url(&at("url"), &self.url),
            _ => v.check(self.url.is_empty(), at("url"), "stdout takes no url"),
        }
        let cb = &self.circuit_breaker;
        let cooldown = v.duration(&at("circuit_breaker.cooldown"), &cb.cooldown);
        let max = v.duration(&at("circuit_breaker.max_cooldown"), &cb.max_cooldown);
        v.check(cooldown <= max, at("circuit_breaker.max_cooldown"), "must not be shorter than cooldown");
        if !self.subject_prefix.is_empty() {
            let ok = self.kind == "nats" && flotilla_core::subject::is_valid_subject(&self.subject_prefix, false);
            v.check(ok, at("subject_prefix"), "a subject prefix (like \"archive\") on nats sinks only");
        }
        if !over_http {
            v.check(self.headers.is_empty(), at("headers"), "only http sinks send headers");
            v.check(self.auth.is_none(), at("auth"), "only http sinks authenticate");
            v.check(self.compression == "none", at("compression"), "only http sinks compress");
        }
        match &self.index {
            Some(_) if self.kind != "elasticsearch" => v.problem(at("index"), "only elasticsearch sinks take an index"),
            Some(index) => v.check(
                !index.is_empty()
                    && !index.starts_with(['-', '_', '+'])
                    && index.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)),
                at("index"),
                format!("{index:?} is not a valid index name (lowercase letters, digits, - _ .)"),
            ),
            None => {}
        }
        if self.kind == "datadog_logs" {
            let key = self.api_key.as_deref().unwrap_or_default();
            v.check(!key.is_empty(), at("api_key"), "datadog_logs needs an api_key");
            v.check(key.bytes().all(|b| b.is_ascii_graphic()), at("api_key"), "must be printable ASCII");
        } else if self.api_key.is_some() {
            v.problem(at("api_key"), "only datadog_logs sinks take an api_key");
        }
        v.check(
            matches!(self.compression.as_str(), "none" | "gzip"),
            at("compression"),
            format!("{:?} is not none or gzip", self.compression),
        );
        for (name, value) in &self.headers {
            v.check(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)),
                at(&format!("headers.{name}")),
                "not a valid header name",
            );
            v.check(
                value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
                at(&format!("headers.{name}")),
                "a header value may not hold control characters",
            );
        }
        match &self.auth {
            Some(AuthConfig::Basic { user, .. }) => v.check(!user.is_empty(), at("auth.user"), "must not be empty"),
            Some(AuthConfig::Bearer { token }) => v.check(!token.is_empty(), at("auth.token"), "must not be empty"),
            None => {}
        }
        let timeout = v.duration(&at("timeout"), &self.timeout);
        v.check(parse_duration(&self.timeout).is_none() || !timeout.is_zero(), at("timeout"), "must be longer than 0");
        v.check((1..=1000).contains(&self.max_attempts), at("max_attempts"), "must be between 1 and 1000");
        let initial = v.duration(&at("retry_initial_backoff"), &self.retry_initial_backoff);
        let max = v.duration(&at("retry_max_backoff"), &self.retry_max_backoff);
        v.check(initial <= max, at("retry_max_backoff"), "must not be shorter than retry_initial_backoff");
        for (key, rate) in
            [("events_per_sec", self.rate_limit.events_per_sec), ("bytes_per_sec", self.rate_limit.bytes_per_sec)]
        {
            v.check(rate != Some(0), at(&format!("rate_limit.{key}")), "must be at least 1");
        }
        let f = &self.filter;
        for (key, list) in [("orgs", &f.orgs), ("apps", &f.apps), ("levels", &f.levels)] {
            v.check(list.iter().all(|s| !s.is_empty()), at(&format!("filter.{key}")), "an empty name matches nothing");
        }
    }
}

/// `file:///abs/path` → `/abs/path`; other schemes are explained.
pub fn local_dir(url: &str) -> Result<PathBuf, String> {
    match archive_url(url)? {
        ArchiveUrl::Local(dir) => Ok(dir),
        ArchiveUrl::Remote(_) => Err(format!("{url:?} is not a file:// URL")),
    }
}

/// Where a Parquet sink writes: a local directory, or an object store
/// (`s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`).
#[derive(Debug, Clone, PartialEq)]
pub enum ArchiveUrl {
    Local(PathBuf),
    Remote(url::Url),
}

pub fn archive_url(url: &str) -> Result<ArchiveUrl, String> {
    let example = "like file:///var/lib/flotilla/archive or s3://bucket/prefix";
    match url.split_once("://") {
        Some(("file", path)) if path.starts_with('/') && path.len() > 1 => Ok(ArchiveUrl::Local(PathBuf::from(path))),
        Some(("file", _)) => Err(format!("{url:?} must be an absolute path like file:///var/lib/flotilla/archive")),
        Some(("s3" | "s3a" | "gs" | "az" | "abfs" | "abfss", rest)) if !rest.is_empty() && !rest.starts_with('/') => {
            url::Url::parse(url).map(ArchiveUrl::Remote).map_err(|e| format!("{url:?}: {e}"))
        }
        _ => Err(format!("{url:?} is not an archive URL {example}")),
    }
}

fn valid_name(name: &str, extra: &[char]) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(&c))
}

impl Validate for Config {
    fn validate(&self, v: &mut Validator) {
        v.socket_addr("http_addr", &self.http_addr);
        v.nats_url("nats.url", &self.nats.url);
        v.check(self.nats.password.is_none() || self.nats.user.is_some(), "nats.password", "a password needs a user");
        self.nats.tls_files().validate(v, "nats");

        v.check(!self.streams.is_empty(), "streams", "at least one stream is required");
        let mut stream_names = HashSet::new();
        for (i, s) in self.streams.iter().enumerate() {
            let at = |k: &str| format!("streams[{i}].{k}");
            v.check(valid_name(&s.name, &[]), at("name"), format!("{:?} must match [A-Za-z0-9_-]+", s.name));
            v.check(stream_names.insert(&s.name), at("name"), format!("stream {:?} is defined twice", s.name));
            subjects(v, &at("subjects"), &s.subjects);
            let max_age = s.max_age.as_deref().map(|a| v.duration(&at("max_age"), a));
            let window = v.duration(&at("duplicate_window"), &s.duplicate_window);
            if let Some(age) = max_age.filter(|a| !a.is_zero()) {
                v.check(window <= age, at("duplicate_window"), "must not be longer than max_age");
            }
            v.check((1..=5).contains(&s.replicas), at("replicas"), "must be between 1 and 5 (JetStream's limit)");
            if let Some(b) = s.max_bytes {
                v.check(b > 0 && b <= i64::MAX as u64, at("max_bytes"), "must be a positive number of bytes");
            }
        }

        v.check(!self.sinks.is_empty(), "sinks", "at least one sink is required");
        let save = v.duration("ledger.save_interval", &self.ledger.save_interval);
        v.check(
            parse_duration(&self.ledger.save_interval).is_none() || !save.is_zero(),
            "ledger.save_interval",
            "must be longer than 0",
        );
        let mut sink_names = HashSet::new();
        for (i, s) in self.sinks.iter().enumerate() {
            let at = |k: &str| format!("sinks[{i}].{k}");
            v.check(valid_name(&s.name, &[]), at("name"), format!("{:?} must match [A-Za-z0-9_-]+", s.name));
            v.check(sink_names.insert(&s.name), at("name"), format!("sink {:?} is defined twice", s.name));
            let external = EXTERNAL_KINDS.contains(&s.kind.as_str());
            v.check(
                s.kind == "parquet" || external,
                at("type"),
                format!("unknown sink type {:?} (supported: parquet, {})", s.kind, EXTERNAL_KINDS.join(", ")),
            );
            if external {
                s.validate_external(v, &at);
            } else if let Err(e) = archive_url(&s.url) {
                v.problem(at("url"), e);
            }
            if subjects(v, &at("subjects"), &s.subjects) && covering_stream(&self.streams, &s.subjects).is_none() {
                v.problem(at("subjects"), "no single stream in [[streams]] covers all of these subjects");
            }
            v.check(
                (1..=MAX_BATCH_EVENTS).contains(&s.batch_max_events),
                at("batch_max_events"),
                format!("must be between 1 and {MAX_BATCH_EVENTS}"),
            );
            v.bytes(&at("batch_max_bytes"), &s.batch_max_bytes);
            if s.kind == "parquet" {
                s.validate_parquet(v, &at);
            }
            if let Some(w) = &s.ack_wait {
                let wait = v.duration(&at("ack_wait"), w);
                v.check(
                    parse_duration(w).is_none() || wait > s.min_ack_wait(),
                    at("ack_wait"),
                    match s.kind.as_str() {
                        "parquet" => "must be longer than batch_max_age + roll_max_age",
                        _ => "must be longer than batch_max_age",
                    },
                );
            }
            let age = v.duration(&at("batch_max_age"), &s.batch_max_age);
            v.check(
                parse_duration(&s.batch_max_age).is_none() || !age.is_zero(),
                at("batch_max_age"),
                "must be longer than 0",
            );
        }
    }
}

/// Check a subject list; true when it is non-empty and every subject is valid.
fn subjects(v: &mut Validator, path: &str, list: &[String]) -> bool {
    v.check(!list.is_empty(), path, "at least one subject is required");
    let mut ok = !list.is_empty();
    for (j, s) in list.iter().enumerate() {
        if !is_valid_subject(s, true) {
            v.problem(format!("{path}[{j}]"), format!("{s:?} is not a valid subject"));
            ok = false;
        }
    }
    ok
}

/// `[ledger]`: per sink, per agent source, the events the agents reported
/// and the sink never settled (`flotilla_sink_missing_events`,
/// `flotilla-shipper audit`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// Keep the books (default true).
    #[serde(default = "default_ledger_enabled")]
    pub enabled: bool,
    /// How often changed books are stored in the `FLOTILLA_SHIPPER` bucket
    /// (and so how stale `audit` may be; a crash loses at most this much).
    #[serde(default = "default_ledger_save_interval")]
    pub save_interval: String,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig { enabled: default_ledger_enabled(), save_interval: default_ledger_save_interval() }
    }
}

impl LedgerConfig {
    pub fn save_interval(&self) -> Duration {
        parse_duration(&self.save_interval).unwrap_or(Duration::from_secs(5))
    }
}

fn default_ledger_enabled() -> bool {
    true
}

fn default_ledger_save_interval() -> String {
    "5s".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::config::parse;

    fn paths(text: &str) -> Vec<String> {
        match parse::<Config>(text, |_| None) {
            Ok(_) => vec![],
            Err(problems) => problems.into_iter().map(|p| p.path).collect(),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg: Config = parse(
            "[nats]\nurl = \"nats://127.0.0.1:4222\"\n[[sinks]]\nname = \"archive\"\ntype = \"parquet\"\nurl = \"file:///tmp/a\"\n",
            |_| None,
        )
        .unwrap();
        assert_eq!(cfg.http_addr, "127.0.0.1:9102");
        assert_eq!(cfg.streams.len(), 1);
        assert_eq!(cfg.streams[0].name, "LOGS");
        assert_eq!(cfg.streams[0].subjects, ["logs.>"]);
        assert_eq!(cfg.streams[0].duplicate_window(), Duration::from_secs(120));
        let s = &cfg.sinks[0];
        assert_eq!(s.subjects, ["logs.>"]);
        assert_eq!(s.batch_max_events, 10_000);
        assert_eq!(s.batch_max_age(), Duration::from_secs(5));
        assert_eq!(s.consumer_name(), "flotilla-archive");
        assert_eq!(s.local_dir().unwrap(), PathBuf::from("/tmp/a"));
    }

    #[test]
    fn broken_config_reports_every_problem_with_its_path() {
        let text = r#"
http_addr = "nowhere"
[nats]
url = "http://x"
password = "p"
[[streams]]
name = "LO.GS"
subjects = ["logs.>", "bad subject"]
max_age = "1m"
duplicate_window = "5m"
max_bytes = 0
[[streams]]
name = "T"
subjects = []
max_age = "forever"
[[sinks]]
name = "a b"
type = "kafka"
url = "ftp://bucket/x"
subjects = ["metrics.>"]
batch_max_events = 0
batch_max_age = "soon"
[[sinks]]
name = "a b"
type = "parquet"
url = "file://relative"
batch_max_age = "0s"
"#;
        assert_eq!(
            paths(text),
            [
                "http_addr",
                "nats.url",
                "nats.password",
                "streams[0].name",
                "streams[0].subjects[1]",
                "streams[0].duplicate_window",
                "streams[0].max_bytes",
                "streams[1].subjects",
                "streams[1].max_age",
                "sinks[0].name",
                "sinks[0].type",
                "sinks[0].url",
                "sinks[0].subjects",
                "sinks[0].batch_max_events",
                "sinks[0].batch_max_age",
                "sinks[1].name",
                "sinks[1].name",
                "sinks[1].url",
                "sinks[1].batch_max_age",
            ]
        );
    }

    #[test]
    fn messages_explain_the_problem() {
        let text = "[nats]\nurl = \"nats://x\"\n[[sinks]]\nname = \"a\"\ntype = \"parquet\"\nurl = \"ftp://b/p\"\n";
        let problems = parse::<Config>(text, |_| None).err().unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "sinks[0].url");
        assert!(problems[0].message.contains("s3://bucket/prefix"), "{}", problems[0].message);
        assert_eq!(archive_url("s3://b/p").ok(), Some(ArchiveUrl::Remote(url::Url::parse("s3://b/p").unwrap())));
        assert!(archive_url("s3:///p").is_err());
    }

    #[test]
    fn sinks_are_required_and_unknown_keys_rejected() {
        assert_eq!(paths("sinks = []\n[nats]\nurl = \"nats://x\"\n"), ["sinks"]);
        let text =
            "[nats]\nurl = \"nats://x\"\n[[sinks]]\nname = \"a\"\ntype = \"parquet\"\nurl = \"file:///a\"\nbatch = 1\n";
        let problems = parse::<Config>(text, |_| None).err().unwrap();
        assert!(problems[0].message.contains("unknown field `batch`"), "{problems:?}");
    }
}
