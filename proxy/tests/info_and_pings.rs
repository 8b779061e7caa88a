//! What a client learns first and how a silent one is found out: the INFO
//! every client gets (nats-server's fields, its own id and address), and
//! PINGs from the proxy, two unanswered of which close a connection with
//! `-ERR 'Stale Connection'` while one that answers stays, against a real
//! nats-server behind the proxy.

mod common;

use std::time::Duration;

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
    assert!(pings >= 3, "{pings} PINGs");
    assert!(alive.sync().await.iter().all(|f| f == &Frame::Ping));
}
