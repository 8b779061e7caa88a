//! CONNECT options beyond authentication: `echo: false` (a client does not
//! receive its own publishes, though everyone else's identical messages
//! still arrive), `pedantic` (nats-server's wording for an invalid publish
//! subject), `verbose` (one `+OK` per operation), `no_responders` (a 503
//! status for a request nobody serves, only to clients that ask), and
//! clients that do not declare `headers` (they get header messages as plain
//! MSG and may not send HPUB, as with nats-server), against a real
//! nats-server behind the proxy.

mod common;

use std::time::Duration;

use futures::StreamExt;

use common::*;

async fn raw_with(s: &Stack, user: &str, pass: &str, options: serde_json::Value) -> Raw {
    let mut raw = Raw::connect(s.addr).await;
    let mut connect = serde_json::json!({"verbose": false, "user": user, "pass": pass, "headers": true});
    if let (Some(c), Some(o)) = (connect.as_object_mut(), options.as_object()) {
        c.extend(o.clone());
    }
    raw.send(&format!("CONNECT {connect}\r\nPING\r\n")).await;
    assert_eq!(raw.line().await, "PONG\r\n");
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_echo_a_client_misses_only_its_own_publishes() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut quiet = raw_with(&s, "acme", &s.acme_pub, serde_json::json!({"echo": false})).await;
    let mut loud = raw_with(&s, "acme", &s.acme_pub, serde_json::json!({})).await;
    for raw in [&mut quiet, &mut loud] {
        raw.send("SUB logs.> 1\r\n").await;
        prime_raw(&direct, "logs.acme.web.iad.h1", raw, Some("1")).await;
    }

    // The quiet client publishes "hello"; the loud one publishes "world" and
    // an identical "hello"; then the quiet one sends a header message.
    quiet.send("PUB logs.web.iad.h1 5\r\nhello\r\n").await;
    let mut frames_quiet = quiet.sync().await;
    loud.send("PUB logs.web.iad.h1 5\r\nworld\r\nPUB logs.web.iad.h1 5\r\nhello\r\n").await;
    let mut frames_loud = loud.sync().await;
    quiet.send("HPUB logs.web.iad.h1 23 30\r\nNATS/1.0\r\nX-Flag: 1\r\n\r\nflagged\r\n").await;
    direct.publish("logs.acme.web.iad.h1", "from the platform".into()).await.unwrap();
    direct.flush().await.unwrap();

    frames_quiet.extend(quiet.drain(Duration::from_millis(800)).await);
    frames_loud.extend(loud.drain(Duration::from_millis(800)).await);
    let mut got_quiet = payloads(&frames_quiet);
    let mut got_loud = payloads(&frames_loud);
    got_quiet.sort();
    got_loud.sort();
    assert_eq!(got_quiet, ["from the platform", "hello", "world"], "one hello is the loud client's");
    assert_eq!(got_loud, ["flagged", "from the platform", "hello", "hello", "world"]);
}

/// Without echo, a client's own message comes back on none of its
/// subscriptions, however many match (nats-server skips it on each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_echo_overlapping_subscriptions_bring_back_nothing_of_its_own() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut quiet = raw_with(&s, "acme", &s.acme_pub, serde_json::json!({"echo": false})).await;
    quiet.send("SUB logs.> 1\r\nSUB logs.web.> 2\r\nSUB logs.*.iad.h1 3\r\n").await;
    prime_raw(&direct, "logs.acme.web.iad.h1", &mut quiet, Some("3")).await;
    quiet.drain(Duration::from_millis(300)).await;
    quiet.send("PUB logs.web.iad.h1 4\r\nmine\r\n").await;
    direct.publish("logs.acme.web.iad.h1", "theirs".into()).await.unwrap();
    direct.flush().await.unwrap();
    let frames = quiet.drain(Duration::from_millis(800)).await;
    let mut got = payloads(&frames);
    got.sort();
    assert_eq!(got, ["theirs", "theirs", "theirs"], "{frames:?}");
}

/// Without echo, a client in a queue group is passed over for its own
/// messages (the group's other members get them, as nats-server passes
/// over the publisher), and still takes its turn with everyone else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_echo_a_queue_member_is_passed_over_for_its_own_messages() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut quiet = raw_with(&s, "acme", &s.acme_pub, serde_json::json!({"echo": false})).await;
    let mut other = raw_with(&s, "acme", &s.acme, serde_json::json!({})).await;
    quiet.send("SUB logs.> 1\r\nSUB logs.web.> g 2\r\n").await;
    other.send("SUB logs.web.> g 9\r\n").await;
    assert_eq!(quiet.sync().await, vec![]);
    assert_eq!(other.sync().await, vec![]);
    let own: String = (0..10).map(|i| format!("PUB logs.web.iad.h1 5\r\nown-{i}\r\n")).collect();
    quiet.send(&own).await;
    // All ten go to the other member; only then everyone else's, so that
    // the turns of the two do not interleave.
    let mut o = Vec::new();
    while o.len() < 10 {
        match other.frame_within(Duration::from_secs(5)).await {
            Some(f @ Frame::Msg { .. }) => o.push(f),
            f => panic!("after {} of its own: {f:?}", o.len()),
        }
    }
    for i in 0..10 {
        direct.publish("logs.acme.web.iad.h1", format!("ext-{i}").into()).await.unwrap();
    }
    direct.flush().await.unwrap();
    let on = |frames: &[Frame], want: &str| -> Vec<String> {
        let mut got: Vec<String> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Msg { sid, payload, .. } if sid == want => Some(payload.clone()),
                _ => None,
            })
            .collect();
        got.sort();
        got
    };
    let q = quiet.drain(Duration::from_millis(800)).await;
    o.extend(other.drain(Duration::from_millis(800)).await);
    let ext: Vec<String> = (0..10).map(|i| format!("ext-{i}")).collect();
    assert_eq!(on(&q, "1"), ext, "its plain subscription: everyone else's, none of its own");
    let (q_group, o_group) = (on(&q, "2"), on(&o, "9"));
    assert!(q_group.iter().all(|p| p.starts_with("ext-")), "none of its own in the group: {q_group:?}");
    assert!(!q_group.is_empty(), "it still takes its turn: {o_group:?}");
    let mut group: Vec<String> = q_group.into_iter().chain(o_group).collect();
    group.sort();
    let mut all: Vec<String> = ext.into_iter().chain((0..10).map(|i| format!("own-{i}"))).collect();
    all.sort();
    assert_eq!(group, all, "each message to one member");
}

/// ... but when no one else here could take it (the group's other members
/// may be elsewhere), a message is not lost: its own member gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_echo_the_only_member_here_still_gets_the_groups_copy() {
    let s = stack().await;
    let mut quiet = raw_with(&s, "acme", &s.acme_pub, serde_json::json!({"echo": false})).await;
    quiet.send("SUB logs.web.> solo 3\r\n").await;
    assert_eq!(quiet.sync().await, vec![]);
    quiet.send("PUB logs.web.iad.h1 5\r\nalone\r\n").await;
    let frames = quiet.drain(Duration::from_millis(800)).await;
    assert_eq!(payloads(&frames), ["alone"], "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_nats_with_no_echo() {
    let s = stack().await;
    let quiet = async_nats::ConnectOptions::with_user_and_password("acme".into(), s.acme_pub.clone())
        .no_echo()
        .connect(s.proxy_url())
        .await
        .expect("connect without echo");
    let mut sub = quiet.subscribe("logs.web.>").await.unwrap();
    quiet.flush().await.unwrap();
    let direct = s.direct().await;
    // Wait until the upstream subscription is live.
    loop {
        direct.publish("logs.acme.web.iad.h1", "prime".into()).await.unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            assert_eq!(&m.payload[..], b"prime");
            break;
        }
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {}
    quiet.publish("logs.web.iad.h1", "mine".into()).await.unwrap();
    quiet.flush().await.unwrap();
    direct.publish("logs.acme.web.iad.h1", "theirs".into()).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.expect("a message").expect("open");
    assert_eq!(&m.payload[..], b"theirs", "its own publish came back");
    assert_eq!(m.subject.as_str(), "logs.web.iad.h1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pedantic_clients_hear_invalid_publish_subject() {
    let s = stack().await;
    let mut strict = raw_with(&s, "acme", &s.acme_pub, serde_json::json!({"pedantic": true})).await;
    strict.send("PUB logs.*.iad 2\r\nhi\r\nPUB logs..x 2\r\nhi\r\n").await;
    let frames = strict.sync().await;
    assert_eq!(errors(&frames), ["'Invalid Publish Subject'", "'Invalid Publish Subject'"]);
    // Not pedantic: the same is a permissions violation. Either way the
    // connection stays open (the PING above was answered).
    let mut lax = raw_with(&s, "acme", &s.acme_pub, serde_json::json!({})).await;
    lax.send("PUB logs.*.iad 2\r\nhi\r\n").await;
    assert_eq!(errors(&lax.sync().await), ["'Permissions Violation for Publish to \"logs.*.iad\"'"]);
    // A valid subject the token may not publish to is a permissions violation for both.
    strict.send("PUB $SYS.x 2\r\nhi\r\n").await;
    let e = errors(&strict.sync().await);
    assert!(e.len() == 1 && e[0].starts_with("'Permissions Violation for Publish"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_headers_gets_header_messages_as_plain_msg() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut old = raw_with(&s, "acme", &s.acme_pub, serde_json::json!({"headers": false})).await;
    old.send("SUB logs.> 1\r\n").await;
    prime_raw(&direct, "logs.acme.web.iad.h1", &mut old, Some("1")).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "h1:abc:0");
    direct.publish_with_headers("logs.acme.web.iad.h1", headers, "an agent's event".into()).await.unwrap();
    direct.publish("logs.acme.web.iad.h1", "plain".into()).await.unwrap();
    direct.flush().await.unwrap();
    let frames = old.drain(Duration::from_millis(800)).await;
    let msgs: Vec<(&str, Option<&str>, &str)> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Msg { subject, headers, payload, .. } if payload != "prime" => {
                Some((subject.as_str(), headers.as_deref(), payload.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(msgs, [("logs.web.iad.h1", None, "an agent's event"), ("logs.web.iad.h1", None, "plain")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_headers_may_not_send_them() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut spy = direct.subscribe("logs.acme.>").await.unwrap();
    direct.flush().await.unwrap();
    let mut old = raw_with(&s, "acme", &s.acme_pub, serde_json::json!({"headers": false})).await;
    old.send("HPUB logs.web.iad.h1 23 30\r\nNATS/1.0\r\nX-Flag: 1\r\n\r\nflagged\r\n").await;
    // Closed, as nats-server closes it (which says nothing; the proxy says why).
    assert_eq!(
        old.drain(Duration::from_secs(2)).await,
        [Frame::Err("'Unknown Protocol Operation'".into()), Frame::Eof]
    );
    assert!(tokio::time::timeout(Duration::from_millis(300), spy.next()).await.is_err(), "nothing was published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_responders_only_for_clients_that_ask() {
    let s = stack().await;
    let request = "SUB _INBOX.q 1\r\nPUB logs.rpc.nobody _INBOX.q 2\r\nhi\r\n";
    let mut asks = raw_with(&s, "acme", &s.acme_pub, serde_json::json!({"no_responders": true})).await;
    asks.send(request).await;
    match asks.frame().await {
        Frame::Msg { subject, sid, headers: Some(h), payload, .. } => {
            assert_eq!((subject.as_str(), sid.as_str(), payload.as_str()), ("_INBOX.q", "1", ""));
            assert!(h.starts_with("NATS/1.0 503"), "{h:?}");
        }
        other => panic!("a 503 status message, got {other:?}"),
    }
    let mut silent = raw_with(&s, "acme", &s.acme_pub, serde_json::json!({})).await;
    silent.send(request).await;
    let mut frames = silent.sync().await;
    frames.extend(silent.drain(Duration::from_millis(500)).await);
    assert_eq!(frames, [], "no 503 for a client that did not ask");
    // async-nats asks, and fails the request at once.
    let client = s.client("acme", &s.acme_pub).await;
    let started = std::time::Instant::now();
    let err = client.request("logs.rpc.nobody", "hi".into()).await.expect_err("nobody answers");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "not a time-out: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_clients_get_one_ok_per_operation_and_none_for_a_denial() {
    let s = stack().await;
    let mut raw = Raw::connect(s.addr).await;
    let connect = serde_json::json!({"verbose": true, "user": "acme", "pass": s.acme_pub});
    raw.send(&format!("CONNECT {connect}\r\n")).await;
    raw.send("SUB logs.> 1\r\nUNSUB 1\r\nPUB logs.web.iad.h1 2\r\nhi\r\nSUB $SYS.> 2\r\nPUB $JS.API.INFO 0\r\n\r\n")
        .await;
    assert_eq!(
        raw.sync().await,
        [
            Frame::Ok,
            Frame::Ok,
            Frame::Ok,
            Frame::Ok,
            Frame::Err("'Permissions Violation for Subscription to \"$SYS.>\"'".into()),
            Frame::Err("'Permissions Violation for Publish to \"$JS.API.INFO\"'".into()),
        ]
    );
}
