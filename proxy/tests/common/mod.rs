//! Shared by the proxy's integration tests (`mod common;` in each): a real
//! nats-server with the proxy started in-process in front of it, tokens for
//! two tenant orgs and an agent, a raw-protocol client, and /metrics.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use flotilla_core::shutdown::Signals;
use flotilla_proxy::auth::Role;
use flotilla_proxy::{cli, Config};
use flotilla_testsupport::NatsServer;

/// Mint a token. The one place that calls `cli::token_new`, so a change of
/// its signature is one edit for every test.
pub fn token(tokens: &Path, role: Role, orgs: &[&str], name: Option<&str>, publish: bool) -> String {
    let orgs: Vec<String> = orgs.iter().map(|o| o.to_string()).collect();
    cli::token_new(tokens, role, &orgs, name.map(str::to_string), None, publish).expect("token new")
}

pub struct Stack {
    pub nats: NatsServer,
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub tokens: PathBuf,
    /// Tenant of `acme`, read-only.
    pub acme: String,
    /// Tenant of `acme` whose token allows publishing into acme
    /// (`token new --publish`).
    pub acme_pub: String,
    /// Tenant of `globex`, read-only.
    pub globex: String,
    /// Tenant of `globex` with publish rights.
    pub globex_pub: String,
    /// Agent `host-agent` for acme and globex.
    pub agent: String,
    /// Agent `acme-agent` for acme only.
    pub acme_agent: String,
    pub signals: Signals,
    pub done: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// Extra proxy config: top-level keys and tables appended after `[upstream]`.
#[derive(Default)]
pub struct Extra<'a> {
    pub top: &'a str,
    pub tables: &'a str,
}

pub async fn stack() -> Stack {
    stack_with(Extra::default()).await
}

pub async fn stack_with(extra: Extra<'_>) -> Stack {
    let nats = NatsServer::start();
    let url = nats.url();
    stack_over(nats, &url, extra).await
}

/// The proxy in front of a nats-server started with the config file text
/// `conf` (limits such as `max_payload: 2048`).
pub async fn stack_with_server_conf(conf: &str) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, conf).unwrap();
    let nats = NatsServer::start_with(&["-c".into(), path.display().to_string()]);
    let url = nats.url();
    stack_over(nats, &url, Extra::default()).await
}

/// The proxy in front of `nats`, reached at `url` (e.g. `tls://...`).
pub async fn stack_over(nats: NatsServer, url: &str, extra: Extra<'_>) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    let acme = token(&tokens, Role::Tenant, &["acme"], Some("acme-read"), false);
    let acme_pub = token(&tokens, Role::Tenant, &["acme"], Some("acme-pub"), true);
    let globex = token(&tokens, Role::Tenant, &["globex"], Some("globex-read"), false);
    let globex_pub = token(&tokens, Role::Tenant, &["globex"], Some("globex-pub"), true);
    let agent = token(&tokens, Role::Agent, &["acme", "globex"], Some("host-agent"), false);
    let acme_agent = token(&tokens, Role::Agent, &["acme"], Some("acme-agent"), false);
    let text = format!(
        "listen = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\ntokens = {:?}\n{}\n[upstream]\nurl = \"{}\"\n{}\n",
        tokens.display().to_string(),
        extra.top,
        url,
        extra.tables,
    );
    let config: Config = flotilla_core::config::parse(&text, |_| None).unwrap();
    let signals = Signals::default();
    let running = flotilla_proxy::start(config, signals.clone()).await.unwrap();
    let stack = Stack {
        nats,
        addr: running.addr,
        http_addr: running.http_addr,
        tokens,
        acme,
        acme_pub,
        globex,
        globex_pub,
        agent,
        acme_agent,
        signals,
        done: Some(running.done),
        _dir: dir,
    };
    // Tests start once the proxy can deliver: a first subscription would
    // otherwise also wait for the delivery connection to connect.
    if !url.starts_with("ws") {
        eventually(Duration::from_secs(10), "the delivery connection to be up", || async {
            stack.metric("flotilla_proxy_delivery_connected").await == Some(1.0)
        })
        .await;
    }
    stack
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.signals.shutdown.cancel();
    }
}

impl Stack {
    pub fn proxy_url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// An async-nats client through the proxy as `user`/`pass`.
    pub async fn client(&self, user: &str, pass: &str) -> async_nats::Client {
        async_nats::ConnectOptions::with_user_and_password(user.into(), pass.into())
            .connect(self.proxy_url())
            .await
            .unwrap_or_else(|e| panic!("async-nats as {user} through the proxy: {e}"))
    }

    /// An async-nats client straight to nats-server (the platform side).
    pub async fn direct(&self) -> async_nats::Client {
        async_nats::connect(self.nats.url()).await.unwrap()
    }

    /// A raw client through the proxy that has CONNECTed as `user`/`pass`
    /// and seen its PONG.
    pub async fn raw_as(&self, user: &str, pass: &str) -> Raw {
        let mut raw = Raw::connect(self.addr).await;
        raw.send(&connect_json(user, pass)).await;
        raw.send("PING\r\n").await;
        assert_eq!(raw.line().await, "PONG\r\n", "CONNECT as {user} accepted");
        raw
    }

    /// The proxy's /metrics text.
    pub async fn metrics(&self) -> String {
        http_get(self.http_addr, "/metrics").await
    }

    /// The value of one sample (`name` or `name{labels}` exactly as rendered).
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        metric_value(&self.metrics().await, sample)
    }
}

pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')).map(str::trim))
        .and_then(|v| v.parse().ok())
}

pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.expect("HTTP answer in time").unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    // Undo chunked transfer encoding, if used.
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut rest = body;
        let mut plain = String::new();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            plain.push_str(&after[..n.min(after.len())]);
            rest = after.get(n + 2..).unwrap_or("");
        }
        return plain;
    }
    body.to_string()
}

pub fn connect_json(user: &str, pass: &str) -> String {
    format!("CONNECT {}\r\n", serde_json::json!({"verbose": false, "user": user, "pass": pass, "headers": true}))
}

/// One server→client frame as a raw client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Msg {
        subject: String,
        sid: String,
        reply: Option<String>,
        headers: Option<String>,
        payload: String,
    },
    Err(String),
    Ok,
    Ping,
    Pong,
    Info(String),
    Other(String),
    /// The proxy closed the connection.
    Eof,
}

/// A raw NATS protocol client.
pub struct Raw {
    pub rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    pub wr: tokio::net::tcp::OwnedWriteHalf,
    pub info: String,
}

impl Raw {
    /// Connect and read the INFO the server sends first.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let (rd, wr) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut raw = Raw { rd: BufReader::new(rd), wr, info: String::new() };
        let info = raw.line().await;
        assert!(info.starts_with("INFO {"), "server speaks first: {info:?}");
        raw.info = info;
        raw
    }

    pub async fn send(&mut self, s: &str) {
        self.send_bytes(s.as_bytes()).await;
    }

    /// Write bytes; a write error (peer closed) is ignored: the reads that
    /// follow show what happened.
    pub async fn send_bytes(&mut self, b: &[u8]) {
        let _ = self.wr.write_all(b).await;
    }

    /// The next line, or "" at EOF (or on a reset).
    pub async fn line(&mut self) -> String {
        self.line_within(Duration::from_secs(5)).await.expect("a line from the proxy in time")
    }

    /// The next line within `d`: None on time-out, "" at EOF.
    pub async fn line_within(&mut self, d: Duration) -> Option<String> {
        let mut buf = Vec::new();
        match tokio::time::timeout(d, self.rd.read_until(b'\n', &mut buf)).await {
            Err(_) => None,
            Ok(Err(_)) => Some(String::new()),
            Ok(Ok(_)) => Some(String::from_utf8_lossy(&buf).to_string()),
        }
    }

    /// The next frame within `d` (None on time-out).
    pub async fn frame_within(&mut self, d: Duration) -> Option<Frame> {
        let line = self.line_within(d).await?;
        if line.is_empty() {
            return Some(Frame::Eof);
        }
        let l = line.trim_end_matches(['\r', '\n']);
        let mut parts = l.split(' ');
        let verb = parts.next().unwrap_or("");
        let args: Vec<&str> = parts.filter(|p| !p.is_empty()).collect();
        let frame = match verb {
            "MSG" => {
                let (subject, sid, reply, size) = match args.as_slice() {
                    [s, i, n] => (s, i, None, n),
                    [s, i, r, n] => (s, i, Some(r.to_string()), n),
                    _ => return Some(Frame::Other(line)),
                };
                let size: usize = size.parse().unwrap();
                let body = self.exact(size + 2, d).await?;
                let payload = String::from_utf8_lossy(&body[..size]).to_string();
                Frame::Msg { subject: subject.to_string(), sid: sid.to_string(), reply, headers: None, payload }
            }
            "HMSG" => {
                let (subject, sid, reply, hsize, size) = match args.as_slice() {
                    [s, i, h, n] => (s, i, None, h, n),
                    [s, i, r, h, n] => (s, i, Some(r.to_string()), h, n),
                    _ => return Some(Frame::Other(line)),
                };
                let (hsize, size): (usize, usize) = (hsize.parse().unwrap(), size.parse().unwrap());
                let body = self.exact(size + 2, d).await?;
                let headers = String::from_utf8_lossy(&body[..hsize]).to_string();
                let payload = String::from_utf8_lossy(&body[hsize..size]).to_string();
                Frame::Msg {
                    subject: subject.to_string(),
                    sid: sid.to_string(),
                    reply,
                    headers: Some(headers),
                    payload,
                }
            }
            "-ERR" => Frame::Err(l.trim_start_matches("-ERR").trim().to_string()),
            "+OK" => Frame::Ok,
            "PING" => Frame::Ping,
            "PONG" => Frame::Pong,
            "INFO" => Frame::Info(l.to_string()),
            _ => Frame::Other(line),
        };
        Some(frame)
    }

    pub async fn frame(&mut self) -> Frame {
        self.frame_within(Duration::from_secs(5)).await.expect("a frame from the proxy in time")
    }

    async fn exact(&mut self, n: usize, d: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; n];
        match tokio::time::timeout(d, self.rd.read_exact(&mut buf)).await {
            Err(_) => None,
            Ok(Err(_)) => Some(Vec::new()),
            Ok(Ok(_)) => Some(buf),
        }
    }

    /// Every frame up to the PONG answering a PING sent now (the PONG is not
    /// included). Stops early at EOF (then the last frame is `Eof`).
    pub async fn sync(&mut self) -> Vec<Frame> {
        self.send("PING\r\n").await;
        let mut got = vec![];
        loop {
            match self.frame().await {
                Frame::Pong => return got,
                Frame::Eof => {
                    got.push(Frame::Eof);
                    return got;
                }
                f => got.push(f),
            }
        }
    }

    /// Every frame until the proxy closes the connection (answering its
    /// PINGs, which are left out); panics if it is still open after `within`.
    pub async fn until_closed(&mut self, within: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            match self.frame_within(deadline.saturating_duration_since(Instant::now())).await {
                Some(Frame::Ping) => self.send("PONG\r\n").await,
                Some(Frame::Eof) => return frames,
                Some(f) => frames.push(f),
                None => panic!("still open after {within:?}: {:?}", errors(&frames)),
            }
        }
    }

    /// Every frame that arrives within `quiet` of the one before (answers
    /// PINGs from the proxy), up to EOF.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Frame> {
        let mut got = vec![];
        while let Some(f) = self.frame_within(quiet).await {
            match f {
                Frame::Ping => self.send("PONG\r\n").await,
                Frame::Eof => {
                    got.push(Frame::Eof);
                    break;
                }
                f => got.push(f),
            }
        }
        got
    }
}

/// The payloads of the MSG/HMSG frames.
pub fn payloads(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Msg { payload, .. } if payload != "prime" => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

pub fn errors(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Err(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Publish `subject` straight to nats-server until `raw` receives it (on
/// `sid`, if given), so the test messages that follow are not lost to an
/// upstream SUB still in flight. Primes carry the payload `prime`;
/// [`payloads`] leaves them out.
pub async fn prime_raw(direct: &async_nats::Client, subject: &str, raw: &mut Raw, sid: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        direct.publish(subject.to_string(), "prime".into()).await.unwrap();
        direct.flush().await.unwrap();
        while let Some(f) = raw.frame_within(Duration::from_millis(100)).await {
            match f {
                Frame::Msg { payload, sid: got, .. } if payload == "prime" && sid.is_none_or(|s| s == got) => return,
                Frame::Ping => raw.send("PONG\r\n").await,
                Frame::Eof => panic!("proxy closed the connection while priming {subject}"),
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "subscription on {subject} never became live");
    }
}

/// A service on `client` answering every request on `subject` with
/// `answer` (with the request's own payload when `None`). Its SUB is
/// written, not known to be live: a request from `client` itself proves it.
pub async fn serve(client: &async_nats::Client, subject: &str, answer: Option<&'static str>) {
    let mut svc = client.subscribe(subject.to_string()).await.unwrap();
    client.flush().await.unwrap();
    let client = client.clone();
    tokio::spawn(async move {
        while let Some(m) = futures::StreamExt::next(&mut svc).await {
            if let Some(r) = m.reply {
                let body = answer.map_or(m.payload, |a| bytes::Bytes::from_static(a.as_bytes()));
                client.publish(r, body).await.unwrap();
            }
        }
    });
}

/// The stream `LOGS` on `logs.>`, as the shipper makes it (JetStream's
/// default two minutes of de-duplication).
pub async fn logs_stream(js: &async_nats::jetstream::Context) -> async_nats::jetstream::stream::Stream {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "LOGS".into(),
        subjects: vec!["logs.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream LOGS")
}

/// Wait until `cond` holds, polling; panics with `what` after `d`.
pub async fn eventually<F, Fut>(d: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + d;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
