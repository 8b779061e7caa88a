//! The proxy in front of a real nats-server, driven by raw protocol bytes and
//! by async-nats, the official Rust client.

use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use flotilla_core::shutdown::Signals;
use flotilla_proxy::auth::Role;
use flotilla_proxy::{cli, Config};
use flotilla_testsupport::NatsServer;

struct Stack {
    nats: NatsServer,
    addr: std::net::SocketAddr,
    acme: String,
    globex: String,
    agent: String,
    signals: Signals,
    _dir: tempfile::TempDir,
}

async fn stack() -> Stack {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    let acme = cli::token_new(&tokens, Role::Tenant, &["acme".into()], None, None, false).unwrap();
    let globex = cli::token_new(&tokens, Role::Tenant, &["globex".into()], None, None, false).unwrap();
    let agent =
        cli::token_new(&tokens, Role::Agent, &["acme".into(), "globex".into()], Some("host-agent".into()), None, false)
            .unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\ntokens = {:?}\n[upstream]\nurl = \"{}\"\n",
        tokens.display().to_string(),
        nats.url()
    );
    let config: Config = flotilla_core::config::parse(&text, |_| None).unwrap();
    let signals = Signals::default();
    let running = flotilla_proxy::start(config, signals.clone()).await.unwrap();
    Stack { nats, addr: running.addr, acme, globex, agent, signals, _dir: dir }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.signals.shutdown.cancel();
    }
}

struct Raw {
    rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr) -> Raw {
        let (rd, wr) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut raw = Raw { rd: BufReader::new(rd), wr };
        assert!(raw.line().await.starts_with("INFO {"), "server speaks first");
        raw
    }
    async fn send(&mut self, s: &str) {
        self.wr.write_all(s.as_bytes()).await.unwrap();
    }
    /// The next line, or "" at EOF.
    async fn line(&mut self) -> String {
        let mut s = String::new();
        tokio::time::timeout(Duration::from_secs(5), self.rd.read_line(&mut s)).await.expect("reply in time").unwrap();
        s
    }
}

fn connect_json(user: &str, pass: &str) -> String {
    format!("CONNECT {}\r\n", serde_json::json!({"verbose": false, "user": user, "pass": pass, "headers": true}))
}

#[tokio::test]
async fn wrong_password_is_an_authorization_violation_and_closes() {
    let s = stack().await;
    let mut raw = Raw::connect(s.addr).await;
    raw.send(&connect_json("acme", "not-the-secret")).await;
    raw.send("PING\r\n").await;
    assert_eq!(raw.line().await, "-ERR 'Authorization Violation'\r\n");
    assert_eq!(raw.line().await, "", "connection closed");

    // Another org's name with acme's secret fails too.
    let mut raw = Raw::connect(s.addr).await;
    raw.send(&connect_json("globex", &s.acme)).await;
    assert_eq!(raw.line().await, "-ERR 'Authorization Violation'\r\n");

    // Anything before CONNECT is refused.
    let mut raw = Raw::connect(s.addr).await;
    raw.send("SUB logs.> 1\r\n").await;
    assert_eq!(raw.line().await, "-ERR 'Authorization Violation'\r\n");
}

#[tokio::test]
async fn malformed_lines_get_an_error_and_the_proxy_lives_on() {
    let s = stack().await;
    for garbage in ["FOO BAR\r\n", "PUB logs.x abc\r\n", "PUB logs.x 5\r\ntoo long payload\r\n", "\u{0}\u{1}\u{2}\r\n"]
    {
        let mut raw = Raw::connect(s.addr).await;
        raw.send(&connect_json("acme", &s.acme)).await;
        raw.send("PING\r\n").await;
        assert_eq!(raw.line().await, "PONG\r\n");
        raw.send(garbage).await;
        let reply = raw.line().await;
        assert_eq!(reply, "-ERR 'Unknown Protocol Operation'\r\n", "{garbage:?}");
        assert_eq!(raw.line().await, "", "closed after {garbage:?}");
    }
    let mut raw = Raw::connect(s.addr).await;
    raw.send(&connect_json("acme", &s.acme)).await;
    raw.send("PUB logs.x 99999999\r\n").await;
    assert_eq!(raw.line().await, "-ERR 'Maximum Payload Violation'\r\n");
    // Still serving.
    let mut raw = Raw::connect(s.addr).await;
    raw.send(&connect_json("acme", &s.acme)).await;
    raw.send("PING\r\n").await;
    assert_eq!(raw.line().await, "PONG\r\n");
}

#[tokio::test]
async fn denied_operations_say_why_and_keep_the_connection() {
    let s = stack().await;
    let mut raw = Raw::connect(s.addr).await;
    raw.send(&connect_json("acme", &s.acme)).await;
    for subject in [">", "$SYS.>", "$JS.API.>", "*.>", "_FLOTILLA.>"] {
        raw.send(&format!("SUB {subject} 1\r\n")).await;
        assert_eq!(raw.line().await, format!("-ERR 'Permissions Violation for Subscription to \"{subject}\"'\r\n"));
    }
    raw.send("PUB logs.globex.web.iad.h1 2\r\nhi\r\n").await;
    assert_eq!(raw.line().await, "-ERR 'Permissions Violation for Publish to \"logs.globex.web.iad.h1\"'\r\n");
    raw.send("PING\r\n").await;
    assert_eq!(raw.line().await, "PONG\r\n");
}

#[tokio::test]
async fn tenants_see_only_their_org_with_rewritten_subjects() {
    let s = stack().await;
    let addr = format!("nats://{}", s.addr);
    let acme =
        async_nats::ConnectOptions::with_user_and_password("acme".into(), s.acme.clone()).connect(&addr).await.unwrap();
    let globex = async_nats::ConnectOptions::with_user_and_password("globex".into(), s.globex.clone())
        .connect(&addr)
        .await
        .unwrap();
    let mut acme_sub = acme.subscribe("logs.>").await.unwrap();
    let mut globex_sub = globex.subscribe("logs.web.>").await.unwrap();
    acme.flush().await.unwrap();
    globex.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let direct = async_nats::connect(s.nats.url()).await.unwrap();
    for (subject, body) in [
        ("logs.acme.web.iad.h1", "a1"),
        ("logs.globex.web.iad.h1", "g1"),
        ("logs.acme.api.iad.h2", "a2"),
        ("logs.globex.api.iad.h2", "g2"),
        ("logs.globex.web.iad.h3", "g3"),
    ] {
        direct.publish(subject, body.into()).await.unwrap();
    }
    direct.flush().await.unwrap();

    let mut got = vec![];
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(5), acme_sub.next()).await.unwrap().unwrap();
        got.push((m.subject.to_string(), String::from_utf8_lossy(&m.payload).to_string()));
    }
    assert_eq!(got, [("logs.web.iad.h1".to_string(), "a1".to_string()), ("logs.api.iad.h2".into(), "a2".into())]);
    let mut got = vec![];
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(5), globex_sub.next()).await.unwrap().unwrap();
        got.push(String::from_utf8_lossy(&m.payload).to_string());
    }
    assert_eq!(got, ["g1", "g3"]);
    // Nothing else arrives.
    assert!(tokio::time::timeout(Duration::from_millis(300), acme_sub.next()).await.is_err());
    assert!(tokio::time::timeout(Duration::from_millis(300), globex_sub.next()).await.is_err());
}

#[tokio::test]
async fn agents_publish_to_jetstream_with_acks_through_the_proxy() {
    let s = stack().await;
    let direct = async_nats::connect(s.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(direct);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "LOGS".into(),
        subjects: vec!["logs.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();

    let addr = format!("nats://{}", s.addr);
    let agent = async_nats::ConnectOptions::with_user_and_password("host-agent".into(), s.agent.clone())
        .connect(&addr)
        .await
        .unwrap();
    let ajs = async_nats::jetstream::new(agent);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "h1/file/1/0");
    let ack =
        ajs.publish_with_headers("logs.acme.web.iad.h1", headers.clone(), "one".into()).await.unwrap().await.unwrap();
    assert_eq!(ack.sequence, 1);
    let dup = ajs.publish_with_headers("logs.acme.web.iad.h1", headers, "one".into()).await.unwrap().await.unwrap();
    assert!(dup.duplicate, "same Nats-Msg-Id is de-duplicated through the proxy");
    let ack = ajs.publish("logs.globex.api.fra.h1", "two".into()).await.unwrap().await.unwrap();
    assert_eq!(ack.sequence, 2);
    // Not its org: refused, so no ack ever comes.
    let denied = ajs.publish("logs.initech.web.iad.h1", "three".into()).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(3), denied).await.map(|r| r.is_err()).unwrap_or(true));
    let info = js.get_stream("LOGS").await.unwrap().info().await.unwrap().state.messages;
    assert_eq!(info, 2);
}
