//! Agent configuration: TOML with `${VAR}`, every problem reported with its
//! key path by `validate()`.

use std::path::PathBuf;

use serde::Deserialize;

use flotilla_core::codec::Codec;
use flotilla_core::config::{Validate, Validator};
use flotilla_core::subject::OrgId;

use crate::queue::WhenFull;
use crate::sources::file::pattern::PathPattern;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Defaults to the machine's hostname.
    pub host: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Checkpoints and spill queues live here.
    pub data_dir: PathBuf,
    #[serde(default = "default_http_addr")]
    pub http_addr: String,
    /// How often the status heartbeat is published (jittered).
    #[serde(default = "default_status_interval")]
    pub status_interval: String,
    /// Runtime threads: 1 (the default) runs everything on one thread, the
    /// cheapest per line on a host whose cores belong to its applications;
    /// 0 = one per core.
    #[serde(default = "default_worker_threads")]
    pub worker_threads: usize,
    pub nats: Nats,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nats {
    /// Usually the proxy.
    pub url: String,
    /// The agent token's name.
    pub user: Option<String>,
    /// The agent token's secret (use `${VAR}`).
    pub password: Option<String>,
    /// Publishes awaiting their JetStream ack at once, per source.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long a publish waits for its ack before it is resent.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: String,
    /// PEM CAs that sign the server's (e.g. the proxy's) TLS certificate,
    /// trusted instead of the system's roots.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The TLS handshake first, before the server's INFO (nats-server's
    /// `handshake_first`).
    #[serde(default)]
    pub tls_first: bool,
}

impl Nats {
    pub fn tls_files(&self) -> flotilla_core::nats::TlsFiles<'_> {
        flotilla_core::nats::TlsFiles {
            ca: self.tls_ca.as_deref(),
            cert: self.tls_cert.as_deref(),
            key: self.tls_key.as_deref(),
            first: self.tls_first,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceConfig {
    File(FileSourceConfig),
    /// Docker's json-file logs: a file source whose lines are Docker records.
    Docker(FileSourceConfig),
    Stdin(StdinSourceConfig),
    Syslog(SyslogSourceConfig),
    Journald(JournaldSourceConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    pub name: Option<String>,
    /// Globs; `{org}` and `{app}` match one path component (or part of one)
    /// and name the event's org and app.
    #[serde(default)]
    pub include: Vec<String>,
    /// Fixed org when the paths do not name it.
    pub org: Option<String>,
    /// Fixed app when the paths do not name it.
    pub app: Option<String>,
    #[serde(default)]
    pub codec: Codec,
    /// Where to start in files that exist when the agent first runs.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Longer lines are split into pieces of this size, each flagged.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Safety-net rescan interval; inotify wakes the source in between.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: String,
    pub multiline: Option<MultilineConfig>,
    pub rate_limit: Option<RateLimitConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinSourceConfig {
    pub name: Option<String>,
    pub org: String,
    pub app: String,
    #[serde(default)]
    pub codec: Codec,
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    pub multiline: Option<MultilineConfig>,
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    pub queue: QueueSettings,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSourceConfig {
    pub name: Option<String>,
    /// UDP address to listen on, e.g. "0.0.0.0:5514".
    pub udp: Option<String>,
    /// TCP address (RFC 6587: newline or octet-counting framing).
    pub tcp: Option<String>,
    pub org: String,
    /// App for messages without an APP-NAME (otherwise the APP-NAME is the app).
    #[serde(default = "default_syslog_app")]
    pub app: String,
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    pub queue: QueueSettings,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournaldSourceConfig {
    pub name: Option<String>,
    pub org: String,
    /// App for entries without a SYSLOG_IDENTIFIER or unit.
    #[serde(default = "default_journald_app")]
    pub app: String,
    /// The reader; `--after-cursor=<cursor>` is appended when resuming.
    #[serde(default = "default_journalctl")]
    pub command: Vec<String>,
    /// On the very first run: the whole journal, or only new entries.
    #[serde(default = "default_read_from_end")]
    pub read_from: ReadFrom,
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    pub queue: QueueSettings,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// A line matching this starts a new event; others continue it.
    pub start_pattern: Option<String>,
    /// Or: lines starting with whitespace continue the previous one.
    #[serde(default)]
    pub indented: bool,
    /// A pending event is sent after this long without a continuation.
    #[serde(default = "default_multiline_timeout")]
    pub timeout: String,
    #[serde(default = "default_multiline_max_bytes")]
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub events_per_sec: u32,
    /// Events allowed at once above the rate; defaults to one second's worth.
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    #[serde(default = "default_queue_max_bytes")]
    pub max_bytes: u64,
    #[serde(default)]
    pub when_full: WhenFull,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings { max_bytes: default_queue_max_bytes(), when_full: WhenFull::default() }
    }
}

fn default_region() -> String {
    "local".into()
}
fn default_http_addr() -> String {
    "127.0.0.1:9101".into()
}
fn default_status_interval() -> String {
    "30s".into()
}
fn default_worker_threads() -> usize {
    1
}

fn default_max_in_flight() -> usize {
    512
}
fn default_ack_timeout() -> String {
    "5s".into()
}
fn default_max_line_bytes() -> usize {
    256 * 1024
}
fn default_poll_interval() -> String {
    "30s".into()
}
fn default_syslog_app() -> String {
    "syslog".into()
}
fn default_journald_app() -> String {
    "journald".into()
}
fn default_journalctl() -> Vec<String> {
    ["journalctl", "-o", "json", "--follow"].map(String::from).to_vec()
}
fn default_read_from_end() -> ReadFrom {
    ReadFrom::End
}
fn default_max_message_bytes() -> usize {
    64 * 1024
}
fn default_multiline_timeout() -> String {
    "1s".into()
}
fn default_multiline_max_bytes() -> usize {
    1024 * 1024
}
fn default_queue_max_bytes() -> u64 {
    256 * 1024 * 1024
}

impl Config {
    pub fn host(&self) -> String {
        self.host.clone().unwrap_or_else(hostname)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl SourceConfig {
    /// The source's name: its `name`, or `<type>-<index>`. Names key the
    /// source's persisted state (queue, cursor) and its metrics.
    pub fn name(&self, index: usize) -> String {
        let (given, kind) = match self {
            SourceConfig::File(c) => (&c.name, "file"),
            SourceConfig::Docker(c) => (&c.name, "docker"),
            SourceConfig::Stdin(c) => (&c.name, "stdin"),
            SourceConfig::Syslog(c) => (&c.name, "syslog"),
            SourceConfig::Journald(c) => (&c.name, "journald"),
        };
        given.clone().unwrap_or_else(|| format!("{kind}-{index}"))
    }

    pub fn rate_limit(&self) -> Option<RateLimitConfig> {
        match self {
            SourceConfig::File(c) | SourceConfig::Docker(c) => c.rate_limit,
            SourceConfig::Stdin(c) => c.rate_limit,
            SourceConfig::Syslog(c) => c.rate_limit,
            SourceConfig::Journald(c) => c.rate_limit,
        }
    }
}

impl Validate for Config {
    fn worker_threads(&self) -> usize {
        self.worker_threads
    }

    fn validate(&self, v: &mut Validator) {
        v.socket_addr("http_addr", &self.http_addr);
        v.check(self.worker_threads <= 1024, "worker_threads", "must be between 0 (one per core) and 1024");
        v.duration("status_interval", &self.status_interval);
        v.nats_url("nats.url", &self.nats.url);
        v.check(
            self.nats.user.is_some() == self.nats.password.is_some(),
            "nats",
            "give both user and password, or neither",
        );
        self.nats.tls_files().validate(v, "nats");
        v.check((1..=65536).contains(&self.nats.max_in_flight), "nats.max_in_flight", "must be between 1 and 65536");
        v.duration("nats.ack_timeout", &self.nats.ack_timeout);
        v.check(!self.region.is_empty(), "region", "must not be empty");
        v.check(self.host.as_deref() != Some(""), "host", "must not be empty");
        v.check(!self.sources.is_empty(), "sources", "at least one [[sources]] is needed");
        let mut names = std::collections::HashSet::new();
        let mut stdin = 0;
        for (i, s) in self.sources.iter().enumerate() {
            let at = format!("sources[{i}]");
            let name = s.name(i);
            let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            v.check(name_ok, format!("{at}.name"), "use letters, digits, '-' and '_'");
            v.check(names.insert(name.clone()), format!("{at}.name"), format!("{name:?} is used by another source"));
            if let Some(r) = s.rate_limit() {
                v.check(r.events_per_sec > 0, format!("{at}.rate_limit.events_per_sec"), "must be at least 1");
                v.check(r.burst != Some(0), format!("{at}.rate_limit.burst"), "must be at least 1");
            }
            match s {
                SourceConfig::File(f) => f.validate(&at, v, false),
                SourceConfig::Docker(f) => f.validate(&at, v, true),
                SourceConfig::Stdin(c) => {
                    stdin += 1;
                    org(v, &at, &c.org);
                    v.check(!c.app.is_empty(), format!("{at}.app"), "must not be empty");
                    line_limit(v, &at, c.max_line_bytes);
                    if let Some(m) = &c.multiline {
                        m.validate(&format!("{at}.multiline"), v);
                    }
                    c.queue.validate(&at, v);
                }
                SourceConfig::Syslog(c) => {
                    org(v, &at, &c.org);
                    v.check(
                        c.udp.is_some() || c.tcp.is_some(),
                        &at,
                        "give udp = \"addr:port\", tcp = \"addr:port\" or both",
                    );
                    if let Some(a) = &c.udp {
                        v.socket_addr(&format!("{at}.udp"), a);
                    }
                    if let Some(a) = &c.tcp {
                        v.socket_addr(&format!("{at}.tcp"), a);
                    }
                    v.check(
                        (480..=16 * 1024 * 1024).contains(&c.max_message_bytes),
                        format!("{at}.max_message_bytes"),
                        "must be between 480 and 16777216",
                    );
                    c.queue.validate(&at, v);
                }
                SourceConfig::Journald(c) => {
                    org(v, &at, &c.org);
                    v.check(!c.command.is_empty(), format!("{at}.command"), "must name the program to run");
                    c.queue.validate(&at, v);
                }
            }
        }
        v.check(stdin <= 1, "sources", "only one stdin source can exist");
    }
}

fn org(v: &mut Validator, at: &str, org: &str) {
    if let Err(e) = OrgId::new(org) {
        v.problem(format!("{at}.org"), e.to_string());
    }
}

fn line_limit(v: &mut Validator, at: &str, n: usize) {
    v.check((64..=16 * 1024 * 1024).contains(&n), format!("{at}.max_line_bytes"), "must be between 64 and 16777216");
}

impl FileSourceConfig {
    /// The include patterns: for Docker, the default container log location.
    pub fn includes(&self, docker: bool) -> Vec<String> {
        if self.include.is_empty() && docker {
            vec!["/var/lib/docker/containers/*/*-json.log".into()]
        } else {
            self.include.clone()
        }
    }

    fn validate(&self, at: &str, v: &mut Validator, docker: bool) {
        let includes = self.includes(docker);
        v.check(!includes.is_empty(), format!("{at}.include"), "at least one glob is needed");
        for (j, inc) in includes.iter().enumerate() {
            match PathPattern::new(inc) {
                Ok(p) => {
                    v.check(
                        self.org.is_some() || p.has_org(),
                        format!("{at}.include[{j}]"),
                        "has no {org}: set org = \"...\" on the source",
                    );
                    v.check(
                        self.app.is_some() || p.has_app(),
                        format!("{at}.include[{j}]"),
                        "has no {app}: set app = \"...\" on the source",
                    );
                }
                Err(e) => v.problem(format!("{at}.include[{j}]"), e),
            }
        }
        if let Some(o) = &self.org {
            org(v, at, o);
        }
        v.check(self.app.as_deref() != Some(""), format!("{at}.app"), "must not be empty");
        line_limit(v, at, self.max_line_bytes);
        v.duration(&format!("{at}.poll_interval"), &self.poll_interval);
        if let Some(m) = &self.multiline {
            m.validate(&format!("{at}.multiline"), v);
        }
    }
}

impl MultilineConfig {
    fn validate(&self, at: &str, v: &mut Validator) {
        match (&self.start_pattern, self.indented) {
            (Some(p), false) => {
                if let Err(e) = regex::Regex::new(p) {
                    v.problem(format!("{at}.start_pattern"), e.to_string());
                }
            }
            (None, true) => {}
            _ => v.problem(at, "give either start_pattern = \"regex\" or indented = true"),
        }
        v.duration(&format!("{at}.timeout"), &self.timeout);
        v.check(self.max_bytes >= 64, format!("{at}.max_bytes"), "must be at least 64");
    }
}

impl QueueSettings {
    fn validate(&self, at: &str, v: &mut Validator) {
        v.check(self.max_bytes >= 1024 * 1024, format!("{at}.queue.max_bytes"), "must be at least 1048576 (1 MiB)");
    }
}

#[cfg(test)]
mod tests;
