//! Proxy configuration.

use std::path::PathBuf;

use serde::Deserialize;

use flotilla_core::config::{Validate, Validator};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where NATS clients connect.
    pub listen: String,
    /// `/metrics`, `/healthz` (and the Live Logs page).
    #[serde(default = "default_http_addr")]
    pub http_addr: String,
    /// The tokens file (`flotilla-proxy token new` writes it).
    pub tokens: PathBuf,
    pub upstream: Upstream,
    /// Largest payload a client may publish.
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
    /// Messages buffered per client before deliveries are dropped.
    #[serde(default = "default_client_queue")]
    pub client_queue: usize,
    /// Bytes of messages buffered per client before deliveries are dropped
    /// (nats-server's `max_pending`); one larger message still goes alone.
    #[serde(default = "default_client_queue_bytes")]
    pub client_queue_bytes: usize,
    /// How often the proxy pings an idle client.
    #[serde(default = "default_ping_interval")]
    pub ping_interval: String,
    /// How long a client's socket may take to take one batch of writes (at
    /// most 256 KiB) before the client is closed as a slow consumer
    /// (nats-server's `write_deadline`), whatever `limits.slow_consumer`
    /// says: that is for clients that read, if slowly.
    #[serde(default = "default_write_deadline")]
    pub write_deadline: String,
    #[serde(default)]
    pub limits: Limits,
    /// TLS for clients (rustls). With it, every client must use TLS.
    pub tls: Option<Tls>,
    /// Runtime threads: 0 (the default) = one per core; 1 = everything on
    /// one thread.
    #[serde(default)]
    pub worker_threads: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Caps and rates; 0 turns a rate limit off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Sockets in all (those in a TLS handshake too).
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_connections_per_org: usize,
    /// Per connection.
    pub max_subscriptions: usize,
    /// Per org, over all its tenants' connections.
    pub max_subscriptions_per_org: usize,
    /// Failed CONNECTs allowed per source address per minute; beyond that its
    /// attempts are refused without checking them.
    pub auth_failures_per_minute: u32,
    /// Per connection; publishers over it are slowed (their socket is not read).
    pub publish_msgs_per_sec: u32,
    pub publish_bytes_per_sec: u32,
    /// Per org, over all its connections.
    pub org_publish_msgs_per_sec: u32,
    pub org_publish_bytes_per_sec: u32,
    /// SUBs and UNSUBs per connection per second (a burst of
    /// `max_subscriptions` is allowed); over it, the socket is not read.
    /// 0 = off.
    pub subscription_changes_per_sec: u32,
    /// What happens to a client whose queue is full: `drop` (counted, and the
    /// client is told) or `disconnect`.
    pub slow_consumer: SlowConsumer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumer {
    Drop,
    Disconnect,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 65536,
            max_connections_per_ip: 1000,
            max_connections_per_org: 1000,
            max_subscriptions: 1000,
            max_subscriptions_per_org: 100_000,
            auth_failures_per_minute: 10,
            publish_msgs_per_sec: 0,
            publish_bytes_per_sec: 0,
            org_publish_msgs_per_sec: 0,
            org_publish_bytes_per_sec: 0,
            subscription_changes_per_sec: 1000,
            slow_consumer: SlowConsumer::Drop,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// PEM CA certificates that sign the servers' TLS certificates, trusted
    /// instead of the system's roots.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate chain and key, for servers that verify
    /// clients (`verify: true` in nats-server's `tls` block).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The TLS handshake first, before the server's INFO (nats-server's
    /// `handshake_first`).
    #[serde(default)]
    pub tls_first: bool,
}

impl Upstream {
    pub fn tls_files(&self) -> flotilla_core::nats::TlsFiles<'_> {
        flotilla_core::nats::TlsFiles {
            ca: self.tls_ca.as_deref(),
            cert: self.tls_cert.as_deref(),
            key: self.tls_key.as_deref(),
            first: self.tls_first,
        }
    }
}

fn default_http_addr() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_payload() -> usize {
    1024 * 1024
}
fn default_client_queue() -> usize {
    8192
}
fn default_client_queue_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_ping_interval() -> String {
    "2m".into()
}
fn default_write_deadline() -> String {
    "10s".into()
}

impl Validate for Config {
    fn worker_threads(&self) -> usize {
        self.worker_threads
    }

    fn validate(&self, v: &mut Validator) {
        v.check(self.worker_threads <= 1024, "worker_threads", "must be between 0 (one per core) and 1024");
        v.socket_addr("listen", &self.listen);
        v.socket_addr("http_addr", &self.http_addr);
        v.nats_url("upstream.url", &self.upstream.url);
        v.check(
            self.upstream.user.is_some() == self.upstream.password.is_some(),
            "upstream",
            "give both user and password, or neither",
        );
        self.upstream.tls_files().validate(v, "upstream");
        v.check(!self.tokens.as_os_str().is_empty(), "tokens", "path to the tokens file is empty");
        v.check((1..=64 * 1024 * 1024).contains(&self.max_payload), "max_payload", "must be between 1 and 67108864");
        v.check(self.client_queue > 0, "client_queue", "must be at least 1");
        v.check(self.client_queue_bytes > 0, "client_queue_bytes", "must be at least 1");
        for (key, value) in [("ping_interval", &self.ping_interval), ("write_deadline", &self.write_deadline)] {
            v.duration(key, value);
            let zero = flotilla_core::config::parse_duration(value).is_some_and(|d| d.is_zero());
            v.check(!zero, key, "must be more than 0s");
        }
        let l = &self.limits;
        v.check(l.max_connections > 0, "limits.max_connections", "must be at least 1");
        v.check(l.max_connections_per_ip > 0, "limits.max_connections_per_ip", "must be at least 1");
        v.check(l.max_connections_per_org > 0, "limits.max_connections_per_org", "must be at least 1");
        v.check(l.max_subscriptions > 0, "limits.max_subscriptions", "must be at least 1");
        v.check(l.max_subscriptions_per_org > 0, "limits.max_subscriptions_per_org", "must be at least 1");
        v.check(l.auth_failures_per_minute > 0, "limits.auth_failures_per_minute", "must be at least 1");
        if let Some(tls) = &self.tls {
            v.check(tls.cert.is_file(), "tls.cert", format!("{} is not a readable file", tls.cert.display()));
            v.check(tls.key.is_file(), "tls.key", format!("{} is not a readable file", tls.key.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_problem() {
        let text = "listen = \"x\"\nhttp_addr = \"y\"\ntokens = \"\"\nping_interval = \"soon\"\n[upstream]\nurl = \"http://n\"\nuser = \"u\"\ntls_ca = \"/nonexistent/ca.pem\"\ntls_cert = \"/nonexistent/c.pem\"\n";
        let err = flotilla_core::config::parse::<Config>(text, |_| None).err().unwrap();
        let paths: Vec<_> = err.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "listen",
                "http_addr",
                "upstream.url",
                "upstream",
                "upstream",
                "upstream.tls_ca",
                "upstream.tls_cert",
                "tokens",
                "ping_interval"
            ]
        );
    }

    #[test]
    fn a_zero_ping_interval_or_write_deadline_is_refused() {
        let text = "listen = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\ntokens = \"t.toml\"\nping_interval = \"0s\"\nwrite_deadline = \"0s\"\n[upstream]\nurl = \"nats://127.0.0.1:4222\"\n";
        let err = flotilla_core::config::parse::<Config>(text, |_| None).err().unwrap();
        let problems: Vec<_> = err.iter().map(|p| (p.path.as_str(), p.message.as_str())).collect();
        assert_eq!(problems, [("ping_interval", "must be more than 0s"), ("write_deadline", "must be more than 0s")]);
    }
}
