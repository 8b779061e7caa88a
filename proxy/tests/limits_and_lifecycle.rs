//! Token revocation, failed-auth throttling, connection caps, shared upstream
//! subscriptions, queue groups, slow consumers, publish rate limits and TLS,
//! against a real nats-server.

use std::time::{Duration, Instant};

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
    http: std::net::SocketAddr,
    tokens: std::path::PathBuf,
    signals: Signals,
    dir: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.signals.shutdown.cancel();
    }
}

async fn stack(extra: &str) -> Stack {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, "").unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\ntokens = \"{}\"\n{extra}\n[upstream]\nurl = \"{}\"\n",
        tokens.display(),
        nats.url()
    );
    let config: Config = match flotilla_core::config::parse(&text, |_| None) {
        Ok(c) => c,
        Err(p) => panic!("{p:?}"),
    };
    let signals = Signals::default();
    let running = flotilla_proxy::start(config, signals.clone()).await.unwrap();
    let stack = Stack { nats, addr: running.addr, http: running.http_addr, tokens, signals, dir };
    // Tests start once the proxy can deliver (a first subscription would
    // otherwise also wait for the delivery connection to connect).
    for _ in 0..100 {
        if metric(&stack.metrics().await, "flotilla_proxy_delivery_connected") == 1 {
            return stack;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the delivery connection never came up");
}

impl Stack {
    fn tenant(&self, org: &str) -> String {
        cli::token_new(&self.tokens, Role::Tenant, &[org.into()], None, None, false).unwrap()
    }
    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }
    async fn tenant_client(&self, org: &str, secret: &str) -> async_nats::Client {
        async_nats::ConnectOptions::with_user_and_password(org.into(), secret.into()).connect(self.url()).await.unwrap()
    }
    async fn metrics(&self) -> String {
        use tokio::io::AsyncReadExt;
        let mut s = TcpStream::connect(self.http).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}

fn metric(text: &str, series: &str) -> i64 {
    text.lines().find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap_or(-1))).unwrap_or(0)
}

struct Raw {
    rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr) -> Raw {
        let (rd, wr) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut raw = Raw { rd: BufReader::new(rd), wr };
        assert!(raw.line().await.starts_with("INFO "));
        raw
    }
    async fn send(&mut self, s: &str) {
        let _ = self.wr.write_all(s.as_bytes()).await;
    }
    async fn line(&mut self) -> String {
        let mut s = String::new();
        match tokio::time::timeout(Duration::from_secs(10), self.rd.read_line(&mut s)).await {
            Ok(_) => s,
            Err(_) => "(timeout)".into(),
        }
    }
    async fn login(&mut self, user: &str, pass: &str) {
        self.send(&format!("CONNECT {}\r\nPING\r\n", serde_json::json!({"user": user, "pass": pass}))).await;
        assert_eq!(self.line().await, "PONG\r\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_loses_its_connections_and_others_stay() {
    let s = stack("").await;
    let acme = s.tenant("acme");
    let globex = s.tenant("globex");
    let mut a = Raw::connect(s.addr).await;
    a.login("acme", &acme).await;
    let mut g = Raw::connect(s.addr).await;
    g.login("globex", &globex).await;
    let name = std::fs::read_to_string(&s.tokens)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("name = \"").map(|n| n.trim_end_matches('"').to_string()))
        .unwrap();
    assert!(name.contains("acme"), "{name}");
    let bin = env!("CARGO_BIN_EXE_flotilla-proxy");
    let out = std::process::Command::new(bin)
        .args(["token", "revoke", "--tokens"])
        .arg(&s.tokens)
        .args(["--name", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(a.line().await, "-ERR 'User Authentication Revoked'\r\n");
    assert_eq!(a.line().await, "", "closed");
    g.send("PING\r\n").await;
    assert_eq!(g.line().await, "PONG\r\n", "the other org's connection is untouched");
    let mut again = Raw::connect(s.addr).await;
    again.send(&format!("CONNECT {}\r\n", serde_json::json!({"user": "acme", "pass": acme}))).await;
    assert_eq!(again.line().await, "-ERR 'Authorization Violation'\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_throttled_per_address() {
    let s = stack("[limits]\nauth_failures_per_minute = 3\n").await;
    let acme = s.tenant("acme");
    for _ in 0..3 {
        let mut r = Raw::connect(s.addr).await;
        r.send(&format!("CONNECT {}\r\n", serde_json::json!({"user": "acme", "pass": "guess"}))).await;
        assert_eq!(r.line().await, "-ERR 'Authorization Violation'\r\n");
    }
    // Even the right secret is refused now: the address is throttled.
    let mut r = Raw::connect(s.addr).await;
    r.send(&format!("CONNECT {}\r\n", serde_json::json!({"user": "acme", "pass": acme}))).await;
    assert_eq!(r.line().await, "-ERR 'Authorization Violation'\r\n");
    assert_eq!(metric(&s.metrics().await, "flotilla_proxy_auth_failures_total"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_address_and_per_org() {
    let s = stack("[limits]\nmax_connections_per_ip = 3\nmax_connections_per_org = 2\n").await;
    let acme = s.tenant("acme");
    let mut a1 = Raw::connect(s.addr).await;
    a1.login("acme", &acme).await;
    let mut a2 = Raw::connect(s.addr).await;
    a2.login("acme", &acme).await;
    let mut a3 = Raw::connect(s.addr).await;
    a3.send(&format!("CONNECT {}\r\n", serde_json::json!({"user": "acme", "pass": acme}))).await;
    assert_eq!(a3.line().await, "-ERR 'maximum connections exceeded'\r\n", "per org");
    drop(a3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _b = Raw::connect(s.addr).await;
    let mut over = Raw::connect(s.addr).await;
    assert_eq!(over.line().await, "-ERR 'maximum connections exceeded'\r\n", "per address");
    a1.send("PING\r\n").await;
    assert_eq!(a1.line().await, "PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upstream_subscription_serves_many_clients_and_queue_groups_share_work() {
    let s = stack("").await;
    let acme = s.tenant("acme");
    let mut clients = vec![];
    let mut subs = vec![];
    for _ in 0..3 {
        let c = s.tenant_client("acme", &acme).await;
        subs.push(c.subscribe("logs.>").await.unwrap());
        clients.push(c);
    }
    let mut workers = vec![];
    for c in &clients {
        workers.push(c.queue_subscribe("logs.jobs.>", "workers".into()).await.unwrap());
    }
    for c in &clients {
        c.flush().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = s.metrics().await;
    assert_eq!(metric(&m, "flotilla_proxy_upstream_subscriptions"), 2, "logs.acme.> and the queue group, shared\n{m}");

    let direct = async_nats::connect(s.nats.url()).await.unwrap();
    for i in 0..30 {
        direct.publish(format!("logs.acme.jobs.iad.h{i}"), "job".into()).await.unwrap();
    }
    direct.flush().await.unwrap();
    for sub in &mut subs {
        for _ in 0..30 {
            tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
        }
    }
    let mut per_worker = vec![];
    for w in &mut workers {
        let mut n = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), w.next()).await {
            n += 1;
        }
        per_worker.push(n);
    }
    assert_eq!(per_worker.iter().sum::<i32>(), 30, "each job to exactly one worker: {per_worker:?}");
    assert!(per_worker.iter().all(|n| *n > 0), "round robin: {per_worker:?}");
    drop(subs);
    drop(workers);
    drop(clients);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metric(&s.metrics().await, "flotilla_proxy_upstream_subscriptions"), 0, "the last one out unsubscribes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_drops_counted_and_told_while_others_keep_up() {
    // It reads nothing for a while: not long enough to be closed.
    let s = stack("client_queue = 256\nwrite_deadline = \"5m\"\n").await;
    let acme = s.tenant("acme");
    let mut slow = Raw::connect(s.addr).await;
    slow.login("acme", &acme).await;
    slow.send("SUB logs.> 1\r\nPING\r\n").await;
    assert_eq!(slow.line().await, "PONG\r\n");
    let fast = s.tenant_client("acme", &acme).await;
    let mut fast_sub = fast.subscribe("logs.>").await.unwrap();
    fast.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The slow client does not read while 4,000 messages (16 MB) go by, more
    // than its queue and the socket buffers hold.
    let direct = async_nats::connect(s.nats.url()).await.unwrap();
    let payload = bytes::Bytes::from(vec![b'x'; 4096]);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 4000 {
            match tokio::time::timeout(Duration::from_secs(10), fast_sub.next()).await {
                Ok(Some(_)) => n += 1,
                _ => break,
            }
        }
        n
    });
    for i in 0..4000 {
        direct.publish(format!("logs.acme.web.iad.h{}", i % 3), payload.clone()).await.unwrap();
        if i % 50 == 49 {
            // A steady pace the fast client keeps up with.
            direct.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    direct.flush().await.unwrap();
    assert_eq!(reader.await.unwrap(), 4000, "the fast client got everything");
    let drops = metric(&s.metrics().await, "flotilla_proxy_slow_consumer_drops_total{org=\"acme\"}");
    assert!(drops > 0, "drops counted");
    // The slow client is told, and its connection is still usable.
    let mut told = false;
    for _ in 0..20_000 {
        let l = slow.line().await;
        if l.starts_with("-ERR 'Permissions Violation for Subscription to \"_FLOTILLA.slow_consumer\"") {
            told = true;
            break;
        }
        if l.is_empty() || l == "(timeout)" {
            break;
        }
    }
    assert!(told, "the slow client was told about the drops");
    slow.send("PING\r\n").await;
    let mut pong = false;
    for _ in 0..5000 {
        let l = slow.line().await;
        if l == "PONG\r\n" {
            pong = true;
            break;
        }
        if l.is_empty() || l == "(timeout)" {
            break;
        }
    }
    assert!(pong, "still connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_over_their_rate_are_slowed_not_dropped() {
    let s = stack("[limits]\npublish_msgs_per_sec = 50\n").await;
    let publisher = cli::token_new(&s.tokens, Role::Tenant, &["acme".into()], Some("pub".into()), None, true).unwrap();
    let reader = s.tenant("acme");
    let direct = async_nats::connect(s.nats.url()).await.unwrap();
    let mut upstream = direct.subscribe("logs.acme.>").await.unwrap();
    direct.flush().await.unwrap();
    let _ = reader;
    let c = s.tenant_client("acme", &publisher).await;
    let start = Instant::now();
    for i in 0..100 {
        c.publish(format!("logs.app.iad.h{i}"), "m".into()).await.unwrap();
    }
    c.flush().await.unwrap();
    let mut got = 0;
    while got < 100 {
        tokio::time::timeout(Duration::from_secs(10), upstream.next()).await.expect("all arrive").unwrap();
        got += 1;
    }
    // 50 at once (the burst), then 50 more at 50/s: at least about a second.
    assert!(start.elapsed() >= Duration::from_millis(900), "slowed: {:?}", start.elapsed());
}

/// Publish `payload` on acme's `logs.acme.web.iad.h1` until `sub` gets it:
/// async-nats's `flush` says its SUB was written, not that the proxy has
/// read it (a message published at once may come before the SUB).
async fn publish_until_received(
    direct: &async_nats::Client,
    payload: &'static str,
    sub: &mut async_nats::Subscriber,
) -> async_nats::Message {
    for _ in 0..50 {
        direct.publish("logs.acme.web.iad.h1", payload.into()).await.unwrap();
        direct.flush().await.unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            return m;
        }
    }
    panic!("{payload:?} never arrived");
}

/// A self-signed certificate for localhost in `dir`: its path, and the
/// proxy's `[tls]` table using it.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    flotilla_core::daemon::install_crypto_provider();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let table = format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert_path.display(), key_path.display());
    (cert_path, table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_connect_and_receive() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, tls) = self_signed(dir.path());
    let s = stack(&tls).await;
    let acme = s.tenant("acme");
    let client = async_nats::ConnectOptions::with_user_and_password("acme".into(), acme.clone())
        .require_tls(true)
        .add_root_certificates(cert_path.clone())
        .connect(format!("tls://localhost:{}", s.addr.port()))
        .await
        .unwrap();
    let mut sub = client.subscribe("logs.>").await.unwrap();
    let direct = async_nats::connect(s.nats.url()).await.unwrap();
    let m = publish_until_received(&direct, "over tls", &mut sub).await;
    assert_eq!((m.subject.as_str(), &m.payload[..]), ("logs.web.iad.h1", &b"over tls"[..]));
    // A client that starts with the handshake ("handshake first") gets its
    // INFO inside TLS.
    let first = async_nats::ConnectOptions::with_user_and_password("acme".into(), acme.clone())
        .tls_first()
        .add_root_certificates(cert_path.clone())
        .connect(format!("tls://localhost:{}", s.addr.port()))
        .await
        .expect("a handshake-first client connects");
    let mut sub = first.subscribe("logs.>").await.unwrap();
    let m = publish_until_received(&direct, "tls first", &mut sub).await;
    assert_eq!((m.subject.as_str(), &m.payload[..]), ("logs.web.iad.h1", &b"tls first"[..]));
    // Plaintext is refused: the handshake never completes.
    let mut raw = Raw::connect(s.addr).await;
    raw.send(&format!("CONNECT {}\r\nPING\r\n", serde_json::json!({"user": "acme", "pass": acme}))).await;
    assert_ne!(raw.line().await, "PONG\r\n");
    let _ = &s.dir;
}

/// On one thread: the refusal is written by the accept loop itself, with
/// no task spawned, while the socket is brand new.
#[tokio::test(flavor = "current_thread")]
async fn the_cap_on_all_connections_holds_and_gives_places_back() {
    let s = stack("[limits]\nmax_connections = 2\n").await;
    let acme = s.tenant("acme");
    let mut a1 = Raw::connect(s.addr).await;
    a1.login("acme", &acme).await;
    let a2 = Raw::connect(s.addr).await;
    let mut over = Raw::connect(s.addr).await;
    assert_eq!(over.line().await, "-ERR 'maximum connections exceeded'\r\n");
    drop((a2, over));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = Raw::connect(s.addr).await;
    again.login("acme", &acme).await;
}

/// A socket in its TLS handshake holds a place under the caps too: a peer
/// that opens connections and never finishes a handshake cannot hold more
/// than its address's share (each for up to the 5 s handshake timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_in_a_tls_handshake_count_against_the_caps() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, tls) = self_signed(dir.path());
    let s = stack(&format!("[limits]\nmax_connections_per_ip = 2\n{tls}")).await;
    let acme = s.tenant("acme");
    let tls_client = || {
        async_nats::ConnectOptions::with_user_and_password("acme".into(), acme.clone())
            .require_tls(true)
            .add_root_certificates(cert_path.clone())
            .connection_timeout(Duration::from_secs(2))
            .connect(format!("tls://localhost:{}", s.addr.port()))
    };
    // Two sockets that get their INFO and never start TLS.
    let (stuck1, stuck2) = (Raw::connect(s.addr).await, Raw::connect(s.addr).await);
    let through = match tokio::time::timeout(Duration::from_secs(4), tls_client()).await {
        Ok(Ok(c)) => tokio::time::timeout(Duration::from_secs(2), c.flush()).await.is_ok_and(|r| r.is_ok()),
        _ => false,
    };
    assert!(!through, "a third socket from the address got through");
    drop((stuck1, stuck2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ok = tls_client().await.expect("with the stuck sockets gone, a TLS client connects");
    ok.flush().await.expect("and is served");
    let _ = &s.dir;
}
