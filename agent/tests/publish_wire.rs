//! A source's own publish connection ([`flotilla_agent::pipeline::wire`])
//! through [`Acks`]: against a real nats-server (acks, duplicates, no
//! responders, an oversized message, a server restart), and against a
//! scripted server for what a real one does too rarely to wait for (PINGs
//! while idle, a refused CONNECT, a server that asks for TLS).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use common::*;
use flotilla_agent::pipeline::acks::{AckError, Acks, EventHeaders, Route};
use flotilla_agent::pipeline::wire::Options;
use flotilla_core::metrics::{Counter, Registry};

fn options(server: String) -> (Arc<Options>, Counter, Counter) {
    let r = Registry::default();
    let (connects, disconnects) = (r.counter("c", "c", &[]), r.counter("d", "d", &[]));
    let opts = Options {
        servers: vec![server],
        user: None,
        password: None,
        token: None,
        name: "test".into(),
        connect_timeout: Duration::from_secs(2),
        connects: connects.clone(),
        disconnects: disconnects.clone(),
        tls: None,
    };
    (Arc::new(opts), connects, disconnects)
}

fn headers(msg_id: &str, seq: u64) -> EventHeaders<'_> {
    EventHeaders { msg_id, seq, dropped: 0 }
}

#[tokio::test]
async fn acks_duplicates_no_responders_and_a_restart() {
    let (mut nats, js) = nats_with_stream().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let (opts, connects, disconnects) = options(format!("127.0.0.1:{}", nats.port()));
    let mut acks = Acks::new(Route { client, direct: Some(opts), ack_timeout: Duration::from_secs(5) }).await.unwrap();
    let subject: async_nats::Subject = "logs.acme.web.iad.h1".into();

    // A window of publishes, then their acks in order.
    let mut sent = vec![];
    for i in 0..300u64 {
        let id = format!("h1/f/n/{i}");
        sent.push(acks.publish(&subject, headers(&id, i + 1), Bytes::from(format!("{{\"n\":{i}}}"))).await.unwrap());
    }
    for s in sent {
        assert_eq!(acks.wait(s).await, Ok(flotilla_agent::pipeline::acks::Stored { duplicate: false }));
    }
    assert_eq!(stream_len(&js).await, 300);
    let stream = js.get_stream("LOGS").await.unwrap();
    let first = stream.get_raw_message(1).await.unwrap();
    assert_eq!(first.headers.get("Nats-Msg-Id").map(|v| v.as_str()), Some("h1/f/n/0"));
    assert_eq!(first.headers.get("Flotilla-Seq").map(|v| v.as_str()), Some("1"));
    assert_eq!(&first.payload[..], b"{\"n\":0}");

    // The same id again is a duplicate; a subject no stream takes has no
    // responders; neither breaks the connection.
    let s = acks.publish(&subject, headers("h1/f/n/0", 1), Bytes::from_static(b"{}")).await.unwrap();
    let dup = acks.wait(s).await;
    assert_eq!(dup, Ok(flotilla_agent::pipeline::acks::Stored { duplicate: true }), "{}", stream_len(&js).await);
    let s = acks.publish(&"nowhere.x".into(), headers("x", 1), Bytes::from_static(b"{}")).await.unwrap();
    assert_eq!(acks.wait(s).await, Err(AckError::NoResponders));

    // Over max_payload: refused here, not by the server closing on us.
    let big = Bytes::from(vec![b'x'; 2 << 20]);
    assert!(matches!(acks.publish(&subject, headers("big", 1), big).await, Err(AckError::Publish(_))));
    let s = acks.publish(&subject, headers("h1/f/n/300", 301), Bytes::from_static(b"{}")).await.unwrap();
    assert!(acks.wait(s).await.is_ok());
    assert_eq!((connects.get(), disconnects.get()), (1, 0), "one connection all along");

    // The server restarts: the wait in progress fails, the next publish
    // connects again.
    let s = acks.publish(&subject, headers("h1/f/n/301", 302), Bytes::from_static(b"{}")).await.unwrap();
    let _ = acks.wait(s).await;
    nats.restart();
    let s = acks.publish(&subject, headers("h1/f/n/302", 303), Bytes::from_static(b"{}")).await;
    let failed = match s {
        Err(_) => true,
        Ok(s) => acks.wait(s).await.is_err(),
    };
    assert!(failed, "the connection to the old server is gone");
    acks.forget();
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(s) = acks.publish(&subject, headers("h1/f/n/302", 303), Bytes::from_static(b"{}")).await {
            if acks.wait(s).await.is_ok() {
                ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "publishing again after the restart");
    assert!(connects.get() >= 2 && disconnects.get() >= 1, "{} {}", connects.get(), disconnects.get());
}

/// A scripted server: INFO, then the client's CONNECT, SUB and PING (the
/// lines are returned), then `after_ping` is sent.
async fn script(
    listener: &TcpListener,
    info: &str,
    after_ping: &str,
) -> (BufReader<tokio::net::TcpStream>, Vec<String>) {
    let (sock, _) = listener.accept().await.unwrap();
    let mut sock = BufReader::new(sock);
    sock.get_mut().write_all(format!("INFO {info}\r\n").as_bytes()).await.unwrap();
    let mut lines = vec![];
    loop {
        let mut line = String::new();
        if sock.read_line(&mut line).await.unwrap() == 0 {
            break;
        }
        lines.push(line.trim_end().to_string());
        if line.starts_with("PING") {
            break;
        }
    }
    sock.get_mut().write_all(after_ping.as_bytes()).await.unwrap();
    (sock, lines)
}

#[tokio::test]
async fn an_idle_connection_answers_pings_and_credentials_are_sent() {
    let nats = flotilla_testsupport::NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (opts, ..) = options(listener.local_addr().unwrap().to_string());
    let mut opts = Arc::try_unwrap(opts).ok().unwrap();
    opts.user = Some("agent-1".into());
    opts.password = Some("s3cret".into());
    let mut acks =
        Acks::new(Route { client, direct: Some(Arc::new(opts)), ack_timeout: Duration::from_secs(5) }).await.unwrap();

    let server = tokio::spawn(async move {
        let (mut sock, lines) = script(&listener, r#"{"max_payload":1048576}"#, "PONG\r\n").await;
        // The publish comes; the ack for it goes back; then a PING.
        let mut hpub = String::new();
        sock.read_line(&mut hpub).await.unwrap();
        let reply = hpub.split_whitespace().nth(2).unwrap().to_string();
        let total: usize = hpub.split_whitespace().last().unwrap().parse().unwrap();
        let mut body = vec![0; total + 2];
        tokio::io::AsyncReadExt::read_exact(&mut sock, &mut body).await.unwrap();
        let ack = r#"{"stream":"LOGS","seq":1}"#;
        sock.get_mut().write_all(format!("MSG {reply} 1 {}\r\n{ack}\r\n", ack.len()).as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        sock.get_mut().write_all(b"PING\r\n").await.unwrap();
        let mut pong = String::new();
        tokio::time::timeout(Duration::from_secs(3), sock.read_line(&mut pong)).await.ok();
        // Kept open: the client must not see the connection end.
        (lines, hpub, String::from_utf8_lossy(&body).into_owned(), pong, sock)
    });

    let s = acks.publish(&"logs.acme.a.r.h".into(), headers("h/f/n/0", 1), Bytes::from_static(b"{}")).await.unwrap();
    assert!(acks.wait(s).await.is_ok());
    // Nothing in flight: idle keeps the connection answering.
    let idle = tokio::time::timeout(Duration::from_secs(2), acks.idle()).await;
    assert!(idle.is_err(), "idle returns only when the connection is lost");

    let (lines, hpub, body, pong, _sock) = server.await.unwrap();
    assert!(lines[0].starts_with("CONNECT "), "{lines:?}");
    let connect: serde_json::Value = serde_json::from_str(&lines[0]["CONNECT ".len()..]).unwrap();
    assert_eq!((connect["user"].as_str(), connect["pass"].as_str()), (Some("agent-1"), Some("s3cret")));
    assert_eq!((connect["headers"].as_bool(), connect["no_responders"].as_bool()), (Some(true), Some(true)));
    assert!(lines[1].starts_with("SUB _INBOX.") && lines[1].ends_with(".* 1"), "{lines:?}");
    assert!(hpub.starts_with("HPUB logs.acme.a.r.h _INBOX."), "{hpub}");
    assert_eq!(body, "NATS/1.0\r\nNats-Msg-Id: h/f/n/0\r\nFlotilla-Seq: 1\r\n\r\n{}\r\n");
    assert_eq!(pong.trim_end(), "PONG", "the server's PING was answered while idle");
}

#[tokio::test]
async fn a_refused_connect_is_an_error_and_a_tls_server_moves_publishes_to_the_tls_client() {
    let nats = flotilla_testsupport::NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    create_stream(&js).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let subject: async_nats::Subject = "logs.acme.a.r.h".into();

    // Authorization refused: the publish fails with the server's words.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (opts, connects, disconnects) = options(listener.local_addr().unwrap().to_string());
    let mut acks = Acks::new(Route { client: client.clone(), direct: Some(opts), ack_timeout: Duration::from_secs(5) })
        .await
        .unwrap();
    let server = tokio::spawn(async move {
        script(&listener, "{}", "-ERR 'Authorization Violation'\r\n").await;
    });
    match acks.publish(&subject, headers("a", 1), Bytes::from_static(b"{}")).await {
        Err(AckError::Connection(text)) => assert!(text.contains("Authorization Violation"), "{text}"),
        other => panic!("expected a refused connection, got {other:?}"),
    }
    server.await.unwrap();
    assert_eq!((connects.get(), disconnects.get()), (0, 1));

    // A nats:// server that asks for TLS: the first publish says so, then
    // publishes go through the agent's client (here, the real server).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (opts, ..) = options(listener.local_addr().unwrap().to_string());
    let mut acks = Acks::new(Route { client, direct: Some(opts), ack_timeout: Duration::from_secs(5) }).await.unwrap();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut sock = sock;
        sock.write_all(b"INFO {\"tls_required\":true}\r\n").await.unwrap();
        sock
    });
    assert!(matches!(
        acks.publish(&subject, headers("a", 1), Bytes::from_static(b"{}")).await,
        Err(AckError::Connection(_))
    ));
    drop(server.await.unwrap());
    let s = acks.publish(&subject, headers("a", 1), Bytes::from_static(b"{}")).await.unwrap();
    assert!(acks.wait(s).await.is_ok());
    assert_eq!(stream_len(&js).await, 1);
}

#[tokio::test]
async fn given_one_seed_a_source_reconnects_to_a_cluster_member_info_named() {
    let (ca, cb) = (flotilla_testsupport::free_port(), flotilla_testsupport::free_port());
    let mut a = flotilla_testsupport::NatsServer::start_clustered(ca, &[cb]);
    let b = flotilla_testsupport::NatsServer::start_clustered(cb, &[ca]);
    let client = async_nats::connect(b.url()).await.unwrap();
    // Only `a` is configured. No stream takes the subject: every publish
    // is answered "no responders" by whichever server the source is on.
    let (opts, connects, _) = options(format!("127.0.0.1:{}", a.port()));
    let mut acks = Acks::new(Route { client, direct: Some(opts), ack_timeout: Duration::from_secs(2) }).await.unwrap();
    let subject: async_nats::Subject = "nothing.stores.this".into();
    // Once the cluster has formed, a's INFO names b.
    let mut answered = false;
    for i in 0..100 {
        if let Ok(s) = acks.publish(&subject, headers(&format!("a{i}"), i + 1), Bytes::from_static(b"{}")).await {
            answered = acks.wait(s).await == Err(AckError::NoResponders);
        }
        if answered && b_is_known(&a).await {
            break;
        }
        acks.forget();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "no answer through the seed");
    a.stop();
    // b was never configured: the source gets there through what a said.
    let mut through_b = false;
    for i in 0..100 {
        if let Ok(s) = acks.publish(&subject, headers(&format!("b{i}"), i + 1), Bytes::from_static(b"{}")).await {
            if acks.wait(s).await == Err(AckError::NoResponders) {
                through_b = true;
                break;
            }
        }
        acks.forget();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(through_b, "no answer after the seed went away");
    assert!(connects.get() >= 2, "connected again, elsewhere");
}

/// Whether a's INFO names another server yet (the cluster has formed).
async fn b_is_known(a: &flotilla_testsupport::NatsServer) -> bool {
    use tokio::io::AsyncBufReadExt;
    let Ok(sock) = tokio::net::TcpStream::connect(("127.0.0.1", a.port())).await else { return false };
    let mut info = String::new();
    let _ = tokio::io::BufReader::new(sock).read_line(&mut info).await;
    info.contains("connect_urls")
}

/// Over TLS to a server of a private CA that verifies client certificates:
/// a full window of large publishes (more than rustls buffers at once)
/// and their acks, on the source's own connection.
#[tokio::test]
async fn acks_over_tls_on_its_own_connection() {
    acks_over_tls(false).await;
}

/// The same to a server with `handshake_first` (`nats.tls_first`).
#[tokio::test]
async fn acks_over_tls_first_on_its_own_connection() {
    acks_over_tls(true).await;
}

async fn acks_over_tls(first: bool) {
    flotilla_core::daemon::install_crypto_provider();
    let pki = flotilla_testsupport::tls::Pki::new("flotilla test CA");
    let nats = match first {
        true => flotilla_testsupport::NatsServer::start_tls_first(&pki, &[]),
        false => flotilla_testsupport::NatsServer::start_tls(&pki, &[]),
    };
    let (ca, cert, key) = (Some(pki.ca.as_path()), Some(pki.client.0.as_path()), Some(pki.client.1.as_path()));
    let files = flotilla_core::nats::TlsFiles { ca, cert, key, first };
    let client = files.apply(async_nats::ConnectOptions::new()).connect(nats.tls_url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    create_stream(&js).await;
    let r = Registry::default();
    let (connects, disconnects) = (r.counter("c", "c", &[]), r.counter("d", "d", &[]));
    let tls = flotilla_core::nats::tls::connector(files, "nats").unwrap();
    let opts =
        Options::for_url(&nats.tls_url(), None, None, "test".into(), connects.clone(), disconnects.clone(), Some(tls))
            .unwrap()
            .tls_first(first);
    let route = Route { client, direct: Some(Arc::new(opts)), ack_timeout: Duration::from_secs(10) };
    let mut acks = Acks::new(route).await.unwrap();
    let subject: async_nats::Subject = "logs.acme.web.iad.h1".into();
    let body = Bytes::from(vec![b'x'; 4000]);
    for round in 0..4u64 {
        let mut sent = vec![];
        for i in 0..200u64 {
            let n = round * 200 + i;
            let id = format!("h1/f/n/{n}");
            sent.push(acks.publish(&subject, headers(&id, n + 1), body.clone()).await.unwrap());
        }
        for s in sent {
            assert_eq!(acks.wait(s).await, Ok(flotilla_agent::pipeline::acks::Stored { duplicate: false }));
        }
    }
    assert_eq!(stream_len(&js).await, 800);
    assert_eq!((connects.get(), disconnects.get()), (1, 0), "one TLS connection of its own all along");
}
