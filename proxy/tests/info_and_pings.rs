//! What a client learns first and how a silent one is found out: the INFO
//! every client gets (nats-server's fields, its own id and address), and
//! PINGs from the proxy, two unanswered of which close a connection with
//! `-ERR 'Stale Connection'` while one that answers stays, against a real
//! nats-server behind the proxy.

mod common;

use std::time::Duration;

use futures::StreamExt;

use common::*;

fn info_json(raw: &Raw) -> serde_json::Value {
    let json = raw.info.trim_end().strip_prefix("INFO ").expect("INFO line");
    serde_json::from_str(json).expect("INFO is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_carries_nats_servers_fields_and_the_clients_own_id_and_address() {
    let s = stack_with(Extra { top: "max_payload = 65536", ..Default::default() }).await;
    let (a, b) = (Raw::connect(s.addr).await, Raw::connect(s.addr).await);
    let (ia, ib) = (info_json(&a), info_json(&b));
    for (key, want) in [
        ("auth_required", serde_json::json!(true)),
        ("headers", serde_json::json!(true)),
        ("proto", serde_json::json!(1)),
        ("max_payload", serde_json::json!(65536)),
        ("tls_required", serde_json::json!(false)),
        ("client_ip", serde_json::json!("127.0.0.1")),
    ] {
        assert_eq!(ia[key], want, "{key} in {ia}");
    }
    for key in ["server_id", "version"] {
        assert!(ia[key].is_string(), "{key} in {ia}");
    }
    let (ida, idb) = (ia["client_id"].as_u64(), ib["client_id"].as_u64());
    assert!(ida.is_some() && idb.is_some() && ida != idb, "each connection its own client_id: {ida:?} {idb:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_pings_is_closed_as_stale_and_one_that_answers_stays() {
    let s = stack_with(Extra { top: "ping_interval = \"200ms\"", ..Default::default() }).await;
    let mut mute = s.raw_as("acme", &s.acme).await;
    let mut alive = s.raw_as("acme", &s.acme).await;
    let silent = async {
        let mut frames = Vec::new();
        while let Some(f) = mute.frame_within(Duration::from_secs(3)).await {
            let end = f == Frame::Eof;
            frames.push(f);
            if end {
                break;
            }
        }
        frames
    };
    // Meanwhile the other answers every PING, well past two intervals.
    let answering = async {
        let until = std::time::Instant::now() + Duration::from_millis(1500);
        let mut pings = 0;
        while let Some(f) = alive.frame_within(until.saturating_duration_since(std::time::Instant::now())).await {
            assert_eq!(f, Frame::Ping);
            pings += 1;
            alive.send("PONG\r\n").await;
        }
        pings
    };
    let (frames, pings) = tokio::join!(silent, answering);
    assert_eq!(frames, [Frame::Ping, Frame::Ping, Frame::Err("'Stale Connection'".into()), Frame::Eof]);
    // A PONG counts as hearing from it: the PING after it is skipped.
    assert!(pings >= 2, "{pings} PINGs");
    assert!(alive.sync().await.iter().all(|f| f == &Frame::Ping));
}

/// A publisher held back by its rate: its socket is not read, so its PONG
/// sits behind the PUBs still to be taken. Every PUB taken shows it alive
/// (as nats-server counts any input), so it is never closed as stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_held_back_by_its_rate_is_not_stale() {
    let s =
        stack_with(Extra { top: "ping_interval = \"100ms\"", tables: "[limits]\npublish_msgs_per_sec = 5000" }).await;
    let direct = s.direct().await;
    let mut spy = direct.subscribe("logs.acme.>").await.unwrap();
    direct.flush().await.unwrap();
    let raw = s.raw_as("acme", &s.acme_pub).await;
    let Raw { rd, mut wr, .. } = raw;
    // 20,000 PUBs at once (620 KB, many reads' worth): four seconds at 5,000/s.
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        wr.write_all("PUB logs.web.iad.h1 5\r\nhello\r\n".repeat(20000).as_bytes()).await.unwrap();
        wr
    });
    let mut got = 0;
    while got < 20000 {
        tokio::time::timeout(Duration::from_secs(10), spy.next()).await.expect("every PUB arrives").unwrap();
        got += 1;
    }
    let wr = writer.await.unwrap();
    let mut raw = Raw { rd, wr, info: String::new() };
    let frames = raw.sync().await;
    assert!(errors(&frames).is_empty() && !frames.contains(&Frame::Eof), "{frames:?}");
}
