//! `slow-subscriber` and `noisy-tenant`: flotilla-proxy in the stack, the
//! load's files spread over three orgs, and one live tail per org through
//! the proxy (as that org's tenant). The load's first part is the
//! reference ([`switch_at`]); after it:
//!
//! - `slow-subscriber`: one more client of [`SPECIAL`] connects with a
//!   4 KiB receive buffer, sends `CONNECT` and `SUB logs.> 1`, and never
//!   reads its socket again. The proxy must isolate it (bounded queue,
//!   counted drops); the other tails and the archive keep their pace.
//!   [`SPECIAL`] writes two thirds of the lines here, so that the stalled
//!   client's buffers (the proxy's socket buffer, ~4 MiB, and its
//!   8,192-message client queue: ~30,000 lines) overflow even in `--quick`.
//! - `noisy-tenant`: [`SPECIAL`] publishes through the proxy (a tenant
//!   token with `--publish`) many times the rate of every file together; the
//!   other orgs' tails keep their latency. Its messages go into the stream
//!   and the archive too (rows without a load id, not counted as the load).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::ConnectOptions;
use tokio::io::AsyncWriteExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::http;
use super::phases::Phase;
use super::progress::Progress;
use super::scenarios::{Fault, Load};
use super::stack::{Daemon, Dirs, Stack};
use super::tail::{self, Tail};
use crate::bench::{free_port, BenchError};
use crate::procs::{output, sibling_binary};

pub const ORGS: [&str; 3] = ["acme", "globex", "initech"];
/// The org of the stalled client, or the one that floods.
pub const SPECIAL: &str = "acme";
/// The flood's rate, as a multiple of the load's rate (all files together,
/// so 15 times each other org's). The full run's 25,000 messages/s is about
/// what the whole pipeline archives on 2 cores (`steady`'s capacity).
const FLOOD_FACTOR: u64 = 5;
const DROPS: &str = "flotilla_proxy_slow_consumer_drops_total";
const DELIVERED: &str = "flotilla_proxy_messages_out_total";
/// async-nats drops (client side) when a subscription's channel is full.
const SUB_CAPACITY: usize = 1 << 20;

pub struct Tenants {
    fault: Fault,
    flood_rate: u64,
    switch_at: Duration,
    proxy_port: u16,
    http_port: u16,
    secrets: BTreeMap<String, String>,
    stop: CancellationToken,
    tails: Vec<(String, JoinHandle<Tail>)>,
    started: bool,
    stalled: Option<tokio::net::TcpStream>,
    flood: Option<(CancellationToken, JoinHandle<Result<u64, String>>)>,
    extra: BTreeMap<String, serde_json::Value>,
}

/// The tail of `org` through the proxy.
pub fn tail_name(org: &str) -> String {
    format!("{org} via proxy")
}

impl Tenants {
    /// Tokens, the proxy (added to `st` and started) and the tails.
    pub async fn start(
        fault: Fault,
        dirs: &Dirs,
        nats_url: &str,
        st: &mut Stack,
        load: Load,
        stop: CancellationToken,
    ) -> Result<Tenants, BenchError> {
        let bin = sibling_binary("flotilla-proxy")?;
        let tokens = dirs.var.join("tokens.toml");
        std::fs::write(&tokens, "").map_err(|e| BenchError::io(&tokens, e))?;
        let tokens_s = tokens.to_string_lossy().to_string();
        let mut secrets = BTreeMap::new();
        for org in ORGS {
            let mut args = vec!["token", "new", "--tokens", &tokens_s, "--role", "tenant", "--org", org];
            if fault == Fault::NoisyTenant && org == SPECIAL {
                args.push("--publish");
            }
            secrets.insert(org.to_string(), output(&bin, &args)?);
        }
        let (proxy_port, http_port) = (free_port()?, free_port()?);
        let text = format!(
            "listen = \"127.0.0.1:{proxy_port}\"\nhttp_addr = \"127.0.0.1:{http_port}\"\ntokens = {}\n\n[upstream]\nurl = {}\n",
            serde_json::to_string(&tokens_s).unwrap_or_default(),
            serde_json::to_string(nats_url).unwrap_or_default(),
        );
        let config = dirs.var.join("proxy.toml");
        std::fs::write(&config, text).map_err(|e| BenchError::io(&config, e))?;
        st.daemons.push(Daemon::new("proxy", bin, &config, http_port, dirs));
        st.start("proxy")?;
        let stop = stop.child_token();
        let mut t = Tenants {
            fault,
            flood_rate: load.rate * FLOOD_FACTOR,
            switch_at: switch_at(fault, load.duration),
            proxy_port,
            http_port,
            secrets,
            stop,
            tails: Vec::new(),
            started: false,
            stalled: None,
            flood: None,
            extra: BTreeMap::new(),
        };
        for org in ORGS {
            let client = t.connect(org).await?;
            t.tails.push((tail_name(org), tail::start_client(client, t.stop.clone()).await?));
        }
        // The proxy's upstream subscriptions in place before the first line.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(t)
    }

    async fn connect(&self, org: &str) -> Result<async_nats::Client, BenchError> {
        let secret = self.secrets.get(org).cloned().unwrap_or_default();
        ConnectOptions::with_user_and_password(org.into(), secret)
            .subscription_capacity(SUB_CAPACITY)
            .connect(format!("nats://127.0.0.1:{}", self.proxy_port))
            .await
            .map_err(|e| BenchError::nats(&format!("connect to the proxy as {org}"), e))
    }

    /// After the reference part of the load: stall a client, or start the flood.
    pub async fn tick(&mut self, elapsed: Duration, progress: &Progress) -> Result<(), BenchError> {
        if self.started || elapsed < self.switch_at {
            return Ok(());
        }
        self.started = true;
        let t = elapsed.as_secs_f64();
        self.extra.insert("proxy_drops_by_org_before".into(), self.metric(DROPS).await);
        if self.fault == Fault::SlowSubscriber {
            self.stalled = Some(self.stall().await?);
            progress.note(&format!(
                "{t:.1} s: a client of {SPECIAL} subscribed to logs.> through the proxy and stopped reading"
            ));
        } else {
            let client = self.connect(SPECIAL).await?;
            let stop = CancellationToken::new();
            let task = tokio::spawn(flood(client, self.flood_rate, stop.clone()));
            self.flood = Some((stop, task));
            progress.note(&format!("{t:.1} s: {SPECIAL} floods through the proxy at {} messages/s", self.flood_rate));
        }
        Ok(())
    }

    /// A raw client that sends CONNECT and SUB, then never reads.
    async fn stall(&self) -> Result<tokio::net::TcpStream, BenchError> {
        let err = |e: std::io::Error| BenchError::Failed(format!("stalled client: {e}"));
        let sock = tokio::net::TcpSocket::new_v4().map_err(err)?;
        sock.set_recv_buffer_size(4096).map_err(err)?;
        let mut s = sock.connect(([127, 0, 0, 1], self.proxy_port).into()).await.map_err(err)?;
        // `headers: true`: the agent's events carry headers, and the proxy
        // delivers nothing with headers to a client without them.
        let connect = serde_json::json!({"user": SPECIAL, "pass": self.secrets.get(SPECIAL), "verbose": false,
            "pedantic": false, "headers": true, "name": "stalled tenant", "lang": "raw", "version": "0", "protocol": 1});
        s.write_all(format!("CONNECT {connect}\r\nSUB logs.> 1\r\nPING\r\n").as_bytes()).await.map_err(err)?;
        Ok(s)
    }

    /// The load is over: stop the flood, let the stalled client go.
    pub async fn end_load(&mut self) {
        self.extra.insert("proxy_drops_by_org_at_the_end_of_the_load".into(), self.metric(DROPS).await);
        if let Some((stop, task)) = self.flood.take() {
            stop.cancel();
            let v = match task.await {
                Ok(Ok(n)) => n.into(),
                Ok(Err(e)) => format!("error: {e}").into(),
                Err(e) => format!("error: {e}").into(),
            };
            self.extra.insert("flood_messages_published".into(), v);
            self.extra.insert("flood_rate_per_s".into(), self.flood_rate.into());
        }
        if let Some(s) = self.stalled.take() {
            let _ = s.set_zero_linger();
        }
    }

    /// Stop the tails and the proxy; the tails and the report's figures.
    pub async fn finish(
        mut self,
        st: &mut Stack,
    ) -> Result<(BTreeMap<String, Tail>, BTreeMap<String, serde_json::Value>), BenchError> {
        self.extra.insert("proxy_messages_delivered_by_org".into(), self.metric(DELIVERED).await);
        self.stop.cancel();
        let mut tails = BTreeMap::new();
        let mut received = serde_json::Map::new();
        for (name, h) in self.tails.drain(..) {
            let t = h.await.map_err(|e| BenchError::Failed(format!("tail: {e}")))?;
            received.insert(name.clone(), serde_json::json!({"load_lines": t.arrivals.len(), "other": t.foreign}));
            tails.insert(name, t);
        }
        self.extra.insert("tails_received".into(), received.into());
        st.stop("proxy", Duration::from_secs(10));
        Ok((tails, self.extra))
    }

    /// A metric of the proxy by org, as JSON (`null` if unreadable).
    async fn metric(&self, name: &str) -> serde_json::Value {
        match http::get(self.http_port, "/metrics").await {
            Ok(r) => serde_json::to_value(by_org(&r.text(), name)).unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }
}

/// When the reference part of the load ends: after a third for
/// `slow-subscriber` (the stalled client's buffers take a while to fill),
/// halfway for `noisy-tenant`.
pub fn switch_at(fault: Fault, duration: Duration) -> Duration {
    if fault == Fault::SlowSubscriber {
        duration / 3
    } else {
        duration / 2
    }
}

/// The org of each file, in turn.
pub fn file_orgs(fault: Fault) -> Vec<&'static str> {
    let [special, b, c] = ORGS;
    if fault == Fault::SlowSubscriber {
        vec![special, b, special, special, c, special]
    } else {
        ORGS.to_vec()
    }
}

/// The reference part of the load and the rest.
pub fn phases(fault: Fault, duration: Duration) -> Vec<Phase> {
    let (end, half) = (duration.as_secs_f64(), switch_at(fault, duration).as_secs_f64());
    let second = if fault == Fault::SlowSubscriber {
        format!("a client of {SPECIAL} stalled")
    } else {
        format!("{SPECIAL} floods")
    };
    vec![Phase::new("reference", vec![(0.0, half)]), Phase::new(&second, vec![(half, end)])]
}

/// Publish `rate` messages/s as the tenant `client` is, until `stop`.
async fn flood(client: async_nats::Client, rate: u64, stop: CancellationToken) -> Result<u64, String> {
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.is_cancelled() {
        let due = (rate as f64 * start.elapsed().as_secs_f64()) as u64;
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        while sent < due {
            let body = format!(r#"{{"ts":"{ts}","level":"info","msg":"flood {sent} from {SPECIAL}"}}"#);
            client.publish("logs.flood.local.flooder", body.into()).await.map_err(|e| e.to_string())?;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.flush().await.map_err(|e| e.to_string())?;
    Ok(sent)
}

/// `name{...org="x"...} value` lines of a Prometheus text → org → value.
fn by_org(text: &str, name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else { continue };
        let Some((labels, value)) = rest.rsplit_once('}') else { continue };
        let org = labels.split(',').find_map(|kv| kv.trim().strip_prefix("org=\"")?.strip_suffix('"'));
        if let (Some(org), Ok(v)) = (org, value.trim().parse::<f64>()) {
            *out.entry(org.to_string()).or_default() += v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_by_org() {
        let text = "# HELP x\nflotilla_proxy_slow_consumer_drops_total{org=\"acme\"} 12\n\
                    flotilla_proxy_slow_consumer_drops_total{org=\"globex\"} 0\n\
                    flotilla_proxy_slow_consumer_drops_total_other{org=\"acme\"} 5\n\
                    flotilla_proxy_messages_out_total{org=\"acme\"} 3\n";
        let m = by_org(text, DROPS);
        assert_eq!(m.len(), 2);
        assert_eq!((m["acme"], m["globex"]), (12.0, 0.0));
    }

    #[test]
    fn phases_and_orgs() {
        let p = phases(Fault::SlowSubscriber, Duration::from_secs(60));
        assert_eq!(p[0].windows, vec![(0.0, 20.0)]);
        assert_eq!(p[1].windows, vec![(20.0, 60.0)]);
        assert!(p[1].name.contains("stalled"));
        let p = phases(Fault::NoisyTenant, Duration::from_secs(40));
        assert_eq!(p[1].windows, vec![(20.0, 40.0)]);
        let orgs = file_orgs(Fault::SlowSubscriber);
        assert_eq!(orgs.iter().filter(|o| **o == SPECIAL).count() * 3, orgs.len() * 2);
    }
}
