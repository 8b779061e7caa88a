//! Clients that stop reading never hold the proxy: with the `disconnect`
//! policy a slow consumer is closed, and a client that stopped reading
//! altogether (its queue full, its socket buffers full) is found stale and
//! closed, as is one that keeps writing but never reads what it is
//! answered, and one that reads nothing for the write deadline, while a fast client of the same org gets everything, against
//! a real nats-server behind the proxy.

mod common;

use std::time::Duration;

use futures::StreamExt;

use common::*;

/// An acme tenant's raw connection, subscribed to `logs.>`.
async fn subscribed(s: &Stack) -> Raw {
    let mut raw = s.raw_as("acme", &s.acme).await;
    raw.send("SUB logs.> 1\r\n").await;
    assert!(errors(&raw.sync().await).is_empty());
    raw
}

/// 4,000 messages of 4 KB (16 MB, more than a queue of 64 and the socket
/// buffers hold) at a pace `fast` keeps up with; how many `fast` got.
async fn flood(s: &Stack, fast: &async_nats::Client) -> usize {
    let mut fast_sub = fast.subscribe("logs.>").await.unwrap();
    fast.flush().await.unwrap();
    let direct = s.direct().await;
    loop {
        direct.publish("logs.acme.web.iad.h0", "prime".into()).await.unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), fast_sub.next()).await {
            break;
        }
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), fast_sub.next()).await {}
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
    let payload = bytes::Bytes::from(vec![b'x'; 4096]);
    for i in 0..4000 {
        direct.publish(format!("logs.acme.web.iad.h{}", i % 3), payload.clone()).await.unwrap();
        if i % 50 == 49 {
            direct.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    direct.flush().await.unwrap();
    reader.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_policy_a_slow_consumer_is_disconnected_while_others_keep_up() {
    let s = stack_with(Extra { top: "client_queue = 64", tables: "[limits]\nslow_consumer = \"disconnect\"" }).await;
    let mut slow = subscribed(&s).await;
    let fast = s.client("acme", &s.acme).await;
    assert_eq!(flood(&s, &fast).await, 4000, "the fast client got everything");
    assert!(s.metric("flotilla_proxy_slow_consumer_drops_total{org=\"acme\"}").await.unwrap_or(0.0) > 0.0);
    eventually(Duration::from_secs(10), "the slow consumer to be closed", || async {
        s.metric("flotilla_proxy_connections").await == Some(1.0)
    })
    .await;
    // What was already on its way is still read, then the close, with no
    // -ERR (as nats-server: clients take texts they do not know as fatal,
    // and would not reconnect).
    let frames = slow.until_closed(Duration::from_secs(10)).await;
    assert!(!frames.contains(&Frame::Err("'Slow Consumer'".into())), "{:?}", errors(&frames));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stopped_reading_is_closed_as_stale() {
    let s = stack_with(Extra { top: "client_queue = 64\nping_interval = \"300ms\"", ..Default::default() }).await;
    let mut dead = subscribed(&s).await;
    let fast = s.client("acme", &s.acme).await;
    assert_eq!(flood(&s, &fast).await, 4000, "the fast client got everything");
    // Its PINGs go unanswered.
    eventually(Duration::from_secs(10), "the dead client to be closed", || async {
        s.metric("flotilla_proxy_connections").await == Some(1.0)
    })
    .await;
    dead.until_closed(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_is_exported_and_back_to_zero_once_the_client_is_gone() {
    // The write deadline far off: the gauge is read while the client
    // still holds its full queue.
    let s = stack_with(Extra { top: "client_queue = 64\nwrite_deadline = \"5m\"", ..Default::default() }).await;
    let slow = subscribed(&s).await;
    let fast = s.client("acme", &s.acme).await;
    assert_eq!(flood(&s, &fast).await, 4000);
    drop(fast);
    let depth = || async { s.metric("flotilla_proxy_client_queue_depth{org=\"acme\"}").await.unwrap_or(-1.0) };
    eventually(Duration::from_secs(10), "the slow client's full queue in the gauge", || async { depth().await > 0.0 })
        .await;
    drop(slow);
    eventually(Duration::from_secs(10), "the gauge back to 0", || async { depth().await == 0.0 }).await;
}

/// PINGs written without ever reading the PONGs: once the PONGs fill its
/// queue and socket, the connection is closed (within the write deadline)
/// instead of waiting on it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_writes_but_never_reads_is_closed() {
    let s = stack_with(Extra { top: "client_queue = 64", ..Default::default() }).await;
    let raw = s.raw_as("acme", &s.acme).await;
    let Raw { rd, mut wr, .. } = raw;
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let pings = "PING\r\n".repeat(10_000);
        // At most 60 MB: far more PONGs than the socket buffers hold.
        for _ in 0..1000 {
            if wr.write_all(pings.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    eventually(Duration::from_secs(30), "the connection to be closed", || async {
        s.metric("flotilla_proxy_connections").await == Some(0.0)
    })
    .await;
    drop(rd);
    writer.abort();
}

/// A client that reads nothing, though it talks (a PONG now and then keeps
/// it from looking stale), is closed as a slow consumer once its socket has
/// taken nothing for the write deadline, whatever the slow-consumer policy:
/// its full queue is not held for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_closed_after_the_write_deadline_though_it_talks() {
    let s = stack_with(Extra { top: "client_queue = 64\nwrite_deadline = \"1s\"", ..Default::default() }).await;
    let raw = subscribed(&s).await;
    let Raw { rd, mut wr, .. } = raw;
    let talker = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while wr.write_all(b"PONG\r\n").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let fast = s.client("acme", &s.acme).await;
    assert_eq!(flood(&s, &fast).await, 4000, "the fast client got everything");
    eventually(Duration::from_secs(15), "the client that reads nothing to be closed", || async {
        s.metric("flotilla_proxy_connections").await == Some(1.0)
    })
    .await;
    talker.abort();
    drop(rd);
}

/// A client's queue is bounded in bytes too (`client_queue_bytes`, as
/// nats-server's `max_pending`), not only in messages: one that stops
/// reading while large messages arrive holds at most that much of the
/// proxy's memory; the rest is dropped and counted, and nothing is lost
/// unaccounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_clients_queue_is_bounded_in_bytes() {
    let top = "client_queue = 100000\nclient_queue_bytes = 1048576\nwrite_deadline = \"5m\"";
    let s = stack_with(Extra { top, ..Default::default() }).await;
    let mut raw = subscribed(&s).await;
    let direct = s.direct().await;
    prime_raw(&direct, "logs.acme.web.iad.h1", &mut raw, Some("1")).await;
    let _ = raw.drain(Duration::from_millis(200)).await;

    // 48 MiB while it reads nothing: far more than 1 MiB and the socket
    // buffers, far fewer messages than the queue's 100,000.
    let total = 3000u64;
    let body = bytes::Bytes::from(vec![b'x'; 16384]);
    for _ in 0..total {
        direct.publish("logs.acme.web.iad.h1", body.clone()).await.unwrap();
    }
    direct.flush().await.unwrap();
    let drops = "flotilla_proxy_slow_consumer_drops_total{org=\"acme\"}";
    eventually(Duration::from_secs(10), "drops counted", || async { s.metric(drops).await.unwrap_or(0.0) > 0.0 }).await;
    // The gauge is refreshed every 2 s: read it once it has been.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let depth = s.metric("flotilla_proxy_client_queue_depth{org=\"acme\"}").await.unwrap_or(-1.0);
    // (A message the socket took part of counts whole here, only its rest
    // against the bound.)
    assert!((1.0..=70.0).contains(&depth), "about 1 MiB of 16 KiB messages queued: {depth}");
    let frames = raw.drain(Duration::from_secs(2)).await;
    assert!(!frames.contains(&Frame::Eof), "with slow_consumer = drop the client stays connected");
    let delivered = payloads(&frames).iter().filter(|p| p.len() == body.len()).count() as u64;
    let dropped = s.metric(drops).await.unwrap_or(0.0) as u64;
    assert_eq!(delivered + dropped, total, "each message delivered or counted dropped ({delivered} + {dropped})");
}
