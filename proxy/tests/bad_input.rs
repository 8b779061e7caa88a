//! Bad input: garbage bytes, frames split into single bytes, payloads over
//! max_payload, payload lengths that lie, and 10,000 connect/close cycles.
//! The proxy answers `-ERR` where the protocol says so, closes what it must,
//! keeps serving everyone else, and leaves no connection behind.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use common::*;

/// A deterministic byte generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// An acme subscriber (raw) that must keep receiving while others misbehave.
struct Bystander {
    raw: Raw,
    n: u32,
}

impl Bystander {
    async fn new(s: &Stack, direct: &async_nats::Client) -> Bystander {
        let mut raw = s.raw_as("acme", &s.acme).await;
        raw.send("SUB logs.> 1\r\n").await;
        prime_raw(direct, "logs.acme.bystander.p.p", &mut raw, Some("1")).await;
        Bystander { raw, n: 0 }
    }

    /// Publish one message upstream; the bystander must get it.
    async fn still_served(&mut self, direct: &async_nats::Client, after: &str) {
        self.n += 1;
        let payload = format!("acme-still-{}", self.n);
        direct.publish("logs.acme.web.iad.h1", payload.clone().into()).await.unwrap();
        direct.flush().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.raw.frame_within(Duration::from_millis(200)).await {
                Some(Frame::Msg { payload: p, .. }) if p == payload => return,
                Some(Frame::Ping) => self.raw.send("PONG\r\n").await,
                Some(Frame::Eof) => panic!("the bystander was disconnected after {after}"),
                _ => {}
            }
            assert!(Instant::now() < deadline, "the bystander stopped receiving after {after}");
        }
    }
}

/// Send `bytes` on a fresh connection (after CONNECT if `authed`): the
/// proxy must answer with one `-ERR` and close.
async fn refused(s: &Stack, authed: bool, bytes: &[u8]) -> String {
    let mut raw = if authed { s.raw_as("acme", &s.acme).await } else { Raw::connect(s.addr).await };
    raw.send_bytes(bytes).await;
    let frames = raw.drain(Duration::from_secs(6)).await;
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).to_string();
    match frames.as_slice() {
        [Frame::Err(e), Frame::Eof] => e.clone(),
        other => panic!("{shown:?} (authed: {authed}): expected one -ERR then close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_an_error_and_a_close_while_everyone_else_is_served() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut bystander = Bystander::new(&s, &direct).await;
    let before = s.metric("flotilla_proxy_protocol_errors_total").await.unwrap_or(0.0);
    let mut rng = Rng(0x5EED_F00D);
    let mut tls_hello = vec![0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03];
    tls_hello.extend(rng.bytes(160).into_iter().map(|b| if b == b'\n' { 0 } else { b }));
    tls_hello.extend_from_slice(b"\r\n");
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (b"\x00\x01\x02\xff\xfe\r\n".to_vec(), "'Unknown Protocol Operation'"),
        (tls_hello, "'Unknown Protocol Operation'"),
        (b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n".to_vec(), "'Unknown Protocol Operation'"),
        (b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(), "'Unknown Protocol Operation'"),
        (b"PUB\r\n".to_vec(), "'Unknown Protocol Operation'"),
        (b"CONNECTX {}\r\n".to_vec(), "'Unknown Protocol Operation'"),
        (vec![b'A'; 5000], "'Maximum Control Line Exceeded'"),
        (vec![0u8; 4500], "'Maximum Control Line Exceeded'"),
    ];
    for _ in 0..20 {
        let n = 1 + (rng.next() % 300) as usize;
        let mut b: Vec<u8> =
            rng.bytes(n).into_iter().map(|b| if b.is_ascii_alphabetic() { b | 0x80 } else { b }).collect();
        b.extend_from_slice(b"\r\n");
        cases.push((b, "'"));
    }
    let mut n = 0;
    for (bytes, want) in &cases {
        for authed in [false, true] {
            // As nats-server: before CONNECT, anything but a `C` is an
            // authorization violation.
            let want = if authed || bytes[0].eq_ignore_ascii_case(&b'C') { want } else { "'Authorization Violation'" };
            let err = refused(&s, authed, bytes).await;
            assert!(err.starts_with(want), "{:?}: -ERR {err}", String::from_utf8_lossy(&bytes[..bytes.len().min(40)]));
            n += 1;
        }
        bystander.still_served(&direct, "garbage").await;
    }
    let after = s.metric("flotilla_proxy_protocol_errors_total").await.unwrap_or(0.0);
    assert_eq!(after - before, n as f64, "every protocol error is counted");
    // A new client is served normally.
    let c = s.client("acme", &s.acme).await;
    c.flush().await.unwrap();
}

/// `CONNECT`, two subscriptions and a PING for the tenant; `CONNECT`, a PUB
/// and an HPUB and a PING for the agent.
fn streams(s: &Stack) -> (Vec<u8>, Vec<u8>) {
    let tenant =
        format!("{}SUB logs.> 1\r\nSUB logs.web.> q 2\r\nPING\r\n", connect_json("acme", &s.acme)).into_bytes();
    let h = "NATS/1.0\r\nX-A: b\r\n\r\n";
    let agent = format!(
        "{}PUB logs.acme.web.iad.h1 5\r\nhello\r\nHPUB logs.acme.web.iad.h1 {} {}\r\n{h}world\r\nPING\r\n",
        connect_json("acme-agent", &s.acme_agent),
        h.len(),
        h.len() + 5
    )
    .into_bytes();
    (tenant, agent)
}

/// Write `bytes` in chunks of the sizes `chunk` picks, letting each reach
/// the proxy on its own.
async fn write_split(raw: &mut Raw, bytes: &[u8], mut chunk: impl FnMut() -> usize) {
    let mut at = 0;
    while at < bytes.len() {
        let n = chunk().clamp(1, bytes.len() - at);
        raw.wr.write_all(&bytes[at..at + n]).await.unwrap();
        raw.wr.flush().await.unwrap();
        at += n;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_written_byte_by_byte_or_split_anywhere_still_work() {
    let s = stack().await;
    let direct = s.direct().await;
    let (tenant_bytes, agent_bytes) = streams(&s);
    let mut rng = Rng(42);
    for round in 0..3 {
        let chunker = |round: usize, rng: &mut Rng| if round == 0 { 1 } else { 1 + (rng.next() % 9) as usize };
        let mut tenant = Raw::connect(s.addr).await;
        let mut r1 = Rng(rng.next());
        write_split(&mut tenant, &tenant_bytes, || chunker(round, &mut r1)).await;
        assert_eq!(tenant.frame().await, Frame::Pong, "round {round}: tenant's split CONNECT/SUB/PING");
        prime_raw(&direct, "logs.acme.web.prime.p", &mut tenant, Some("1")).await;
        prime_raw(&direct, "logs.acme.web.prime.p", &mut tenant, Some("2")).await;
        let _ = tenant.drain(Duration::from_millis(200)).await;

        let mut agent = Raw::connect(s.addr).await;
        let mut r2 = Rng(rng.next());
        write_split(&mut agent, &agent_bytes, || chunker(round, &mut r2)).await;
        assert_eq!(agent.frame().await, Frame::Pong, "round {round}: agent's split CONNECT/PUB/HPUB/PING");

        let frames = tenant.drain(Duration::from_millis(500)).await;
        let msgs: Vec<(String, Option<String>, String)> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Msg { sid, headers, payload, .. } if payload != "prime" => {
                    Some((sid.clone(), headers.clone(), payload.clone()))
                }
                _ => None,
            })
            .collect();
        let on = |sid: &str| msgs.iter().filter(|m| m.0 == sid).map(|m| m.2.clone()).collect::<Vec<_>>();
        assert_eq!(on("1"), ["hello", "world"], "round {round}: {frames:?}");
        assert_eq!(on("2"), ["hello", "world"], "round {round}: {frames:?}");
        let hmsg = msgs.iter().find(|m| m.2 == "world").unwrap();
        assert!(hmsg.1.as_deref().unwrap_or("").contains("X-A: b\r\n"), "round {round}: headers kept: {hmsg:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_over_max_payload_are_refused_and_closed() {
    let s = stack_with(Extra { top: "max_payload = 1024", ..Default::default() }).await;
    let direct = s.direct().await;
    let mut spy = direct.subscribe("logs.>").await.unwrap();
    direct.flush().await.unwrap();
    let mut bystander = Bystander::new(&s, &direct).await;
    while tokio::time::timeout(Duration::from_millis(200), spy.next()).await.is_ok() {}

    let mut agent = s.raw_as("acme-agent", &s.acme_agent).await;
    let info: serde_json::Value = serde_json::from_str(agent.info.trim_start_matches("INFO ").trim()).unwrap();
    assert_eq!(info["max_payload"], 1024, "INFO announces max_payload");
    let exact = "x".repeat(1024);
    agent.send(&format!("PUB logs.acme.web.iad.h1 1024\r\n{exact}\r\n")).await;
    assert_eq!(agent.sync().await, vec![], "exactly max_payload is fine");

    let over = "x".repeat(1025);
    agent.send(&format!("PUB logs.acme.web.iad.h1 1025\r\n{over}\r\n")).await;
    assert_eq!(
        agent.drain(Duration::from_secs(2)).await,
        vec![Frame::Err("'Maximum Payload Violation'".into()), Frame::Eof]
    );
    // Refused on the size alone, before any payload byte arrives; for HPUB
    // the total counts. (Before CONNECT, a PUB is an authorization
    // violation whatever its size: see below.)
    for (who, bytes) in [
        (("acme-agent", s.acme_agent.clone()), "PUB logs.acme.web.iad.h1 5000000\r\n".to_string()),
        (("acme-agent", s.acme_agent.clone()), "HPUB logs.acme.web.iad.h1 12 1025\r\n".to_string()),
        (("acme", s.acme.clone()), "PUB logs.web.iad.h1 1025\r\n".to_string()),
    ] {
        let mut raw = s.raw_as(who.0, &who.1).await;
        raw.send(&bytes).await;
        let frames = raw.drain(Duration::from_secs(2)).await;
        assert_eq!(frames, vec![Frame::Err("'Maximum Payload Violation'".into()), Frame::Eof], "{who:?} {bytes:?}");
        bystander.still_served(&direct, &bytes).await;
    }
    // async-nats reads max_payload from INFO and refuses on its side.
    let c = s.client("acme-agent", &s.acme_agent).await;
    assert!(c.publish("logs.acme.web.iad.h1", over.clone().into()).await.is_err(), "async-nats honours max_payload");

    let mut upstream = vec![];
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), spy.next()).await {
        if !m.payload.starts_with(b"acme-still") {
            upstream.push(m.payload.len());
        }
    }
    assert_eq!(upstream, [1024], "only the message within max_payload went upstream");
}

/// An upstream that takes less than the proxy is configured for: the INFO
/// says the upstream's limit (and its version), and a PUB over it is
/// refused and closed as nats-server does. One within it that the proxy's
/// rewriting takes over (a tenant's message id gets its org) is refused,
/// not lost quietly, and the client, which kept to the limit, stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstreams_max_payload_is_the_limit() {
    let s = stack_with_server_conf("max_payload: 2048\n").await;
    let version = s.direct().await.server_info().version;

    let mut agent = s.raw_as("acme-agent", &s.acme_agent).await;
    let info: serde_json::Value = serde_json::from_str(agent.info.trim_start_matches("INFO ").trim()).unwrap();
    assert_eq!((info["max_payload"].as_u64(), info["version"].as_str()), (Some(2048), Some(version.as_str())));
    agent.send(&format!("PUB logs.acme.web.iad.h1 2049\r\n{}\r\n", "x".repeat(2049))).await;
    assert_eq!(
        agent.drain(Duration::from_secs(2)).await,
        [Frame::Err("'Maximum Payload Violation'".into()), Frame::Eof]
    );

    let mut tenant = s.raw_as("acme", &s.acme_pub).await;
    let block = "NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n";
    let payload = "y".repeat(2048 - block.len());
    tenant.send(&format!("HPUB logs.web.iad.h1 {} 2048\r\n{block}{payload}\r\n", block.len())).await;
    assert_eq!(
        errors(&tenant.sync().await),
        ["'Permissions Violation for Publish to \"logs.web.iad.h1\": over the upstream max_payload once scoped'"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_lengths_that_lie_are_protocol_errors() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut spy = direct.subscribe("logs.>").await.unwrap();
    direct.flush().await.unwrap();
    let mut bystander = Bystander::new(&s, &direct).await;
    while tokio::time::timeout(Duration::from_millis(200), spy.next()).await.is_ok() {}

    for bytes in [
        // Says 10, sends 5 then the next operation.
        "PUB logs.acme.web.iad.h1 10\r\nhello\r\nPING\r\n",
        // Says 3, sends 5.
        "PUB logs.acme.web.iad.h1 3\r\nhello\r\n",
        // Says 0, sends 2.
        "PUB logs.acme.web.iad.h1 0\r\nhi\r\n",
        // Header size beyond the total.
        "HPUB logs.acme.web.iad.h1 40 12\r\nNATS/1.0\r\n\r\nxx\r\n",
        // Total says 28, sends 19 then the next operations.
        "HPUB logs.acme.web.iad.h1 12 28\r\nNATS/1.0\r\n\r\nhello\r\nPING\r\nPING\r\nPING\r\n",
        // Not numbers.
        "PUB logs.acme.web.iad.h1 -5\r\nhello\r\n",
        "PUB logs.acme.web.iad.h1 0x5\r\nhello\r\n",
        "PUB logs.acme.web.iad.h1 +5\r\nhello\r\n",
        "PUB logs.acme.web.iad.h1 5.0\r\nhello\r\n",
        "PUB logs.acme.web.iad.h1 18446744073709551616\r\nhello\r\n",
        "HPUB logs.acme.web.iad.h1 x 5\r\nhello\r\n",
    ] {
        let mut raw = s.raw_as("acme-agent", &s.acme_agent).await;
        raw.send(bytes).await;
        let frames = raw.drain(Duration::from_secs(2)).await;
        match frames.as_slice() {
            [Frame::Err(e), Frame::Eof] => {
                assert!(e.starts_with("'Unknown Protocol Operation'"), "{bytes:?}: {e}")
            }
            other => panic!("{bytes:?}: expected -ERR and close, got {other:?}"),
        }
        bystander.still_served(&direct, bytes).await;
    }

    // A header size that cuts the header block short is consistent with the
    // total: the proxy stays in frame sync with the client.
    let mut raw = s.raw_as("acme-agent", &s.acme_agent).await;
    raw.send("HPUB logs.acme.web.iad.h1 10 22\r\nNATS/1.0\r\nX-A: b\r\n\r\nhi\r\nPUB logs.acme.web.iad.h1 2\r\nok\r\n")
        .await;
    let frames = raw.sync().await;
    assert!(!frames.contains(&Frame::Eof), "{frames:?}");

    // A client that promises 100 bytes, sends 3 and goes away.
    let mut raw = s.raw_as("acme-agent", &s.acme_agent).await;
    raw.send("PUB logs.acme.web.iad.h1 100\r\nabc").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    bystander.still_served(&direct, "a stalled payload").await;
    drop(raw);

    let mut upstream = vec![];
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), spy.next()).await {
        if !m.payload.starts_with(b"acme-still") {
            upstream.push(String::from_utf8_lossy(&m.payload).to_string());
        }
    }
    assert_eq!(upstream.last().map(String::as_str), Some("ok"), "{upstream:?}");
    assert_eq!(upstream.len(), 2, "nothing of a lying frame went upstream but the consistent HPUB: {upstream:?}");
}

async fn wait_connections(s: &Stack, want: f64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = s.metric("flotilla_proxy_connections").await;
        if now == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: flotilla_proxy_connections is {now:?}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connect_close_cycles_leave_nothing_behind() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut bystander = Bystander::new(&s, &direct).await;
    wait_connections(&s, 1.0, "with one bystander").await;
    let connect = connect_json("acme", &s.acme);
    let started = Instant::now();
    for i in 0..10_000u32 {
        match i % 10 {
            // Connect, read INFO, close.
            0..=4 => {
                let raw = Raw::connect(s.addr).await;
                drop(raw);
            }
            // Authenticate, PING/PONG, close.
            5 | 6 => {
                let mut raw = Raw::connect(s.addr).await;
                raw.send(&connect).await;
                raw.send("PING\r\n").await;
                assert_eq!(raw.line().await, "PONG\r\n", "cycle {i}");
            }
            // Authenticate and subscribe, then reset the connection.
            7 => {
                let mut raw = Raw::connect(s.addr).await;
                raw.send(&connect).await;
                raw.send("SUB logs.> 1\r\nPING\r\n").await;
                assert_eq!(raw.line().await, "PONG\r\n", "cycle {i}");
                let sock = raw.rd.into_inner().reunite(raw.wr).unwrap();
                sock.set_zero_linger().unwrap();
            }
            // Close before reading anything.
            8 => {
                let sock = TcpStream::connect(s.addr).await.unwrap();
                drop(sock);
            }
            // Leave half a frame behind.
            _ => {
                let mut raw = Raw::connect(s.addr).await;
                raw.send(&connect).await;
                raw.send("PUB logs.x 10\r\nab").await;
            }
        }
    }
    eprintln!("10,000 connect/close cycles in {:?}", started.elapsed());
    bystander.still_served(&direct, "10,000 connect/close cycles").await;
    wait_connections(&s, 1.0, "after 10,000 cycles only the bystander is left").await;
    let c = s.client("acme", &s.acme).await;
    let mut sub = c.subscribe("logs.>").await.unwrap();
    c.flush().await.unwrap();
    drop(bystander);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        direct.publish("logs.acme.web.iad.h1", "acme-normal".into()).await.unwrap();
        direct.flush().await.unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            assert_eq!(&m.payload[..], b"acme-normal");
            break;
        }
        assert!(Instant::now() < deadline, "a normal client is served after the cycles");
    }
    c.drain().await.unwrap();
    drop(c);
    wait_connections(&s, 0.0, "with every client gone").await;
}

/// An HPUB whose header value holds a bare CR or LF must neither kill the
/// connection's task nor leave the connection counted (and, with it, the
/// per-org and per-address connection caps) after the client is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_cr_in_a_header_value_leaves_no_connection_behind() {
    let s = stack().await;
    for block in ["NATS/1.0\r\nX-A: a\rb\r\n\r\n", "NATS/1.0\r\nX-A: a\nb\r\n\r\n"] {
        let mut raw = s.raw_as("acme-agent", &s.acme_agent).await;
        raw.send(&format!("HPUB logs.acme.web.iad.h1 {} {}\r\n{block}hi\r\nPING\r\n", block.len(), block.len() + 2))
            .await;
        let answer = raw.frame_within(Duration::from_secs(3)).await;
        drop(raw);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut open = s.metric("flotilla_proxy_connections").await;
        while open != Some(0.0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            open = s.metric("flotilla_proxy_connections").await;
        }
        let answered = matches!(answer, Some(Frame::Pong) | Some(Frame::Err(_)));
        assert!(
            answered && open == Some(0.0),
            "{block:?}: want PONG or -ERR, got {answer:?}; after the client closed, \
             flotilla_proxy_connections = {open:?} (want 0)"
        );
    }
}

/// Headers the proxy cannot pass on (not UTF-8, a name with a space) are
/// refused in the one wording every stock client reports without closing;
/// nothing is published and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_do_not_parse_are_refused_and_the_connection_stays() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut spy = direct.subscribe("logs.>").await.unwrap();
    direct.flush().await.unwrap();
    let mut raw = s.raw_as("acme-agent", &s.acme_agent).await;
    for block in [&b"NATS/1.0\r\nX-A: \xff\xfe\r\n\r\n"[..], b"NATS/1.0\r\nX A: b\r\n\r\n"] {
        let mut op = format!("HPUB logs.acme.web.iad.h1 {} {}\r\n", block.len(), block.len() + 2).into_bytes();
        op.extend_from_slice(block);
        op.extend_from_slice(b"hi\r\n");
        raw.send_bytes(&op).await;
        assert_eq!(
            errors(&raw.sync().await),
            ["'Permissions Violation for Publish to \"logs.acme.web.iad.h1\" with headers that do not parse'"],
            "{}",
            String::from_utf8_lossy(block)
        );
    }
    raw.send("PUB logs.acme.web.iad.h1 2\r\nok\r\n").await;
    let m = tokio::time::timeout(Duration::from_secs(5), spy.next()).await.expect("the next publish").unwrap();
    assert_eq!(&m.payload[..], b"ok", "nothing of the refused ones was published");
}

/// As nats-server: before CONNECT, nothing but CONNECT is read. A PUB's
/// payload is neither waited for nor held for a client not yet known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_connect_a_publish_is_refused_without_waiting_for_its_payload() {
    let s = stack().await;
    for first in ["PUB logs.acme.web.iad.h1 1000000\r\nabc", "PING\r\n", "SUB logs.> 1\r\n", "\r\n"] {
        let mut raw = Raw::connect(s.addr).await;
        raw.send(first).await;
        let frames = raw.until_closed(Duration::from_secs(2)).await;
        assert_eq!(frames, vec![Frame::Err("'Authorization Violation'".into())], "{first:?}");
    }
}

/// A subject within a client's 4096-byte line can be over nats-server's
/// once scoped (a tenant's `logs.` becomes `logs.globex.`, a reply gets the
/// connection's prefix), which would end a connection every client shares.
/// Such lines are refused as nats-server refuses a long line, and everyone
/// else is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_too_long_once_scoped_are_refused_and_everyone_else_is_served() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut bystander = Bystander::new(&s, &direct).await;
    let a = |n: usize| "a".repeat(n);
    // Each line is at most 4096 bytes before its CRLF.
    let cases = [
        ("globex", &s.globex, format!("SUB logs.{} 1\r\n", a(4085))),
        ("globex", &s.globex, format!("SUB logs.{} q 1\r\n", a(4060))),
        ("globex", &s.globex_pub, format!("PUB logs.{} 2\r\nhi\r\n", a(4085))),
        ("globex", &s.globex_pub, format!("PUB logs.x _INBOX.{} 2\r\nhi\r\n", a(4070))),
        // Not rewritten, but past the room an HPUB line's sizes need.
        ("acme-agent", &s.acme_agent, format!("PUB logs.acme.{} 2\r\nhi\r\n", a(4070))),
    ];
    for (user, pass, line) in &cases {
        let control = line.find("\r\n").unwrap_or(line.len());
        assert!(control <= 4096, "a control line of {control} bytes");
        let mut raw = s.raw_as(user, pass).await;
        raw.send(line).await;
        let shown = &line[..30];
        let frames = raw.until_closed(Duration::from_secs(3)).await;
        assert_eq!(frames, vec![Frame::Err("'Maximum Control Line Exceeded'".into())], "{user}: {shown}");
        bystander.still_served(&direct, shown).await;
    }
    // A long subject that fits is delivered, rewritten.
    let mut agent = s.raw_as("acme-agent", &s.acme_agent).await;
    let subject = format!("web.iad.{}", a(3000));
    agent.send(&format!("PUB logs.acme.{subject} 4\r\nlong\r\nPING\r\n")).await;
    assert_eq!(agent.frame().await, Frame::Pong);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match bystander.raw.frame_within(Duration::from_millis(200)).await {
            Some(Frame::Msg { subject: got, payload, .. }) if payload == "long" => {
                assert_eq!(got, format!("logs.{subject}"));
                break;
            }
            Some(Frame::Ping) => bystander.raw.send("PONG\r\n").await,
            _ => assert!(Instant::now() < deadline, "the long subject was not delivered"),
        }
    }
}

/// A SUB under a sid already in use is ignored, the first subscription
/// stands (as nats-server does); a sid spent by its UNSUB limit is free
/// again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_under_a_sid_in_use_is_ignored() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut raw = s.raw_as("acme", &s.acme).await;
    raw.send("SUB logs.web.> 1\r\nSUB logs.api.> 1\r\n").await;
    assert_eq!(errors(&raw.sync().await), Vec::<String>::new());
    for (subject, body) in [("logs.acme.api.iad.h1", "api"), ("logs.acme.web.iad.h1", "web")] {
        direct.publish(subject, body.into()).await.unwrap();
    }
    direct.flush().await.unwrap();
    // (api was published first: had the second SUB stood, it would come first.)
    let first = raw.frame_within(Duration::from_secs(5)).await;
    assert!(
        matches!(&first, Some(Frame::Msg { payload, .. }) if payload == "web"),
        "the first SUB of sid 1 stands: {first:?}"
    );
    assert_eq!(payloads(&raw.drain(Duration::from_millis(300)).await), Vec::<String>::new());

    raw.send("SUB logs.db.> 5\r\nUNSUB 5 1\r\n").await;
    assert_eq!(errors(&raw.sync().await), Vec::<String>::new());
    direct.publish("logs.acme.db.iad.h1", "d1".into()).await.unwrap();
    direct.flush().await.unwrap();
    assert!(
        matches!(raw.frame_within(Duration::from_secs(5)).await, Some(Frame::Msg { payload, .. }) if payload == "d1")
    );
    raw.send("SUB logs.db.> 5\r\n").await;
    assert_eq!(errors(&raw.sync().await), Vec::<String>::new());
    direct.publish("logs.acme.db.iad.h1", "d2".into()).await.unwrap();
    direct.flush().await.unwrap();
    let next = raw.frame_within(Duration::from_secs(5)).await;
    assert!(
        matches!(&next, Some(Frame::Msg { payload, .. }) if payload == "d2"),
        "sid 5, spent, was free again: {next:?}"
    );
}
