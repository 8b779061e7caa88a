//! What each client does with a server `-ERR`, against a fake server that
//! sends one after the client subscribed.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::scripts::{Lang, Script};

/// One connection of a fake nats-server: INFO, PONG to every PING, and once
/// the client subscribed (and flushed), `-ERR '<text>'` followed by one
/// message `after` on that subscription.
pub async fn fake_server(text: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((sock, _)) = listener.accept().await else { return };
        let (rd, mut wr) = sock.into_split();
        let mut rd = BufReader::new(rd);
        let info = json!({
            "server_id": "FAKE", "server_name": "fake", "version": "2.10.0", "proto": 1, "go": "go1.22",
            "host": "127.0.0.1", "port": addr.port(), "headers": true, "max_payload": 1048576,
        });
        let _ = wr.write_all(format!("INFO {info}\r\n").as_bytes()).await;
        let (mut sid, mut sent) = (None::<String>, false);
        let mut line = String::new();
        loop {
            line.clear();
            match rd.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end();
            if l.starts_with("SUB ") {
                sid = l.split(' ').next_back().map(str::to_string);
            } else if l == "PING" {
                let mut out = b"PONG\r\n".to_vec();
                if let (Some(sid), false) = (&sid, sent) {
                    out.extend_from_slice(format!("-ERR '{text}'\r\nMSG probe {sid} 5\r\nafter\r\n").as_bytes());
                    sent = true;
                }
                if wr.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
    });
    addr
}

#[derive(Debug)]
pub struct Surfaced {
    /// The client kept the connection (and still answers a flush).
    pub connected: bool,
    /// The message sent right after the `-ERR` reached the application.
    pub got_after: bool,
    /// What the application was shown (error callback, status, event).
    pub shown: Vec<String>,
    /// nats.js and nats.go: the subscription was closed by the client.
    pub sub_closed: bool,
}

pub async fn probe_script(lang: Lang, text: &str) -> Surfaced {
    let addr = fake_server(text.to_string()).await;
    let mut p = Script::spawn(lang, &["errprobe", "--url", &format!("nats://{addr}")]);
    let got = p.json().await;
    let shown = match lang {
        Lang::Py | Lang::Go => {
            got["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect()
        }
        Lang::Js => got["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["type"] == "error")
            .map(|s| {
                format!(
                    "{} {} {}",
                    s["type"].as_str().unwrap_or(""),
                    s["data"].as_str().unwrap_or(""),
                    s["permissionContext"]
                )
            })
            .collect(),
    };
    Surfaced {
        connected: got["connected"] == true,
        got_after: got["msgs"].as_array().unwrap().iter().any(|m| m == "after"),
        shown,
        sub_closed: got["subClosed"] == true,
    }
}

pub async fn probe_async_nats(text: &str) -> Surfaced {
    // On a loaded machine a probe can come back empty-handed (nothing
    // surfaced at all); try again before judging the client.
    let mut last = probe_async_nats_once(text).await;
    for _ in 0..2 {
        if last.got_after || !last.shown.is_empty() || !last.connected {
            break;
        }
        last = probe_async_nats_once(text).await;
    }
    last
}

pub async fn probe_async_nats_once(text: &str) -> Surfaced {
    let addr = fake_server(text.to_string()).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let c = async_nats::ConnectOptions::new()
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e);
            }
        })
        .max_reconnects(1)
        // async-nats's flush sends no PING: its own PINGs, often, are what
        // the fake server answers after the SUB.
        .ping_interval(Duration::from_millis(100))
        .connect(format!("nats://{addr}"))
        .await
        .unwrap();
    let mut sub = c.subscribe("probe").await.unwrap();
    // The fake server answers the first PING after the SUB; on a loaded
    // machine give it some seconds.
    let mut got_after = false;
    for _ in 0..3 {
        let _ = tokio::time::timeout(Duration::from_secs(5), c.flush()).await;
        if matches!(tokio::time::timeout(Duration::from_secs(5), sub.next()).await, Ok(Some(m)) if &m.payload[..] == b"after")
        {
            got_after = true;
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let flushed = tokio::time::timeout(Duration::from_secs(5), c.flush()).await.map(|r| r.is_ok()).unwrap_or(false);
    let mut shown = vec![];
    let mut connected = flushed && c.connection_state() == async_nats::connection::State::Connected;
    while let Ok(e) = events.try_recv() {
        match e {
            async_nats::Event::ServerError(err) => shown.push(format!("ServerError({err:?})")),
            async_nats::Event::Disconnected | async_nats::Event::Closed => connected = false,
            _ => {}
        }
    }
    Surfaced { connected, got_after, shown, sub_closed: false }
}
