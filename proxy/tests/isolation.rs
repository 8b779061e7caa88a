//! The isolation battery: a tenant of `acme` tries every way out it can
//! think of — wildcards above its org, other orgs' subjects, system and
//! JetStream API subjects, other connections' inboxes and sids, identity
//! switches, CRLF and control bytes inside subjects, subjects smuggled in
//! headers and payloads, reply subjects aimed at other orgs or at the
//! JetStream API — over raw protocol and async-nats. In every case a known
//! globex message is published upstream and nothing of globex may reach the
//! acme connection; denials are `-ERR 'Permissions Violation ...'` (and
//! counted) where nats-server would send one.

mod common;

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use common::*;

/// Globex's secrets, published straight to nats-server, on every subject
/// family an escape could reach.
const GLOBEX: [(&str, &str); 8] = [
    ("logs.globex.web.iad.h1", "globex-log"),
    ("telemetry.globex.iad.r1.if", "globex-telemetry"),
    ("flotilla.agent.globex-host.status", "globex-status"),
    ("_INBOX.globex.1", "globex-inbox"),
    ("$KV.creds.globex", "globex-kv"),
    ("globex.private", "globex-private"),
    ("logs.globex", "globex-short"),
    ("_FLOTILLA.reply.1x0._INBOX.globex", "globex-proxy-internal"),
];

async fn publish_globex(direct: &async_nats::Client) {
    for (subject, payload) in GLOBEX {
        direct.publish(subject, payload.into()).await.unwrap();
    }
    direct.flush().await.unwrap();
}

fn assert_no_globex(frames: &[Frame], case: &str) {
    for f in frames {
        if let Frame::Msg { subject, payload, headers, .. } = f {
            assert!(
                !payload.contains("globex") || payload.starts_with("acme-"),
                "{case}: acme received globex data: {f:?}"
            );
            assert!(!headers.as_deref().unwrap_or("").contains("globex-"), "{case}: globex data in headers: {f:?}");
            let _ = subject;
        }
    }
}

fn denied_sub(subject: &str) -> String {
    format!("'Permissions Violation for Subscription to \"{subject}\"'")
}

fn denied_pub(subject: &str) -> String {
    format!("'Permissions Violation for Publish to \"{subject}\"'")
}

async fn denials(s: &Stack, org: &str) -> f64 {
    s.metric(&format!("flotilla_proxy_permission_denials_total{{org=\"{org}\"}}")).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_that_would_leave_the_org_are_denied_and_leak_nothing() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut raw = s.raw_as("acme", &s.acme).await;
    let before = denials(&s, "acme").await;
    let escapes = [
        ">",
        "*.>",
        "*",
        "*.*.>",
        "*.globex.>",
        "$JS.API.>",
        "$JS.>",
        "$JS.API.STREAM.LIST",
        "$SYS.>",
        "$SYS.REQ.SERVER.PING",
        "$KV.>",
        "$KV.creds.>",
        "$O.>",
        "_FLOTILLA.>",
        "_FLOTILLA.reply.>",
        "flotilla.>",
        "flotilla.agent.*.status",
        "globex.>",
        "LOGS.>",
        "Logs.>",
        "logs",
        "telemetry",
        "logs.",
        "logs..>",
        ".logs.>",
        "logs.>.x",
        "_INBOX",
        "_INBOX.",
    ];
    for (i, subject) in escapes.iter().enumerate() {
        raw.send(&format!("SUB {subject} {}\r\n", 100 + i)).await;
        let frames = raw.sync().await;
        assert_eq!(errors(&frames), [denied_sub(subject)], "SUB {subject}");
    }
    // A queue group cannot carry a subject either.
    raw.send("SUB logs.> globex.> 200\r\n").await;
    assert_eq!(
        errors(&raw.sync().await),
        ["'Permissions Violation for Subscription to \"logs.>\" using queue \"globex.>\"'"]
    );
    assert_eq!(denials(&s, "acme").await - before, escapes.len() as f64 + 1.0, "every denial is counted");

    // Subjects that name other orgs stay inside acme's prefix.
    raw.send("SUB logs.globex.> 50\r\nSUB telemetry.globex.> 51\r\nSUB logs.*.> 52\r\nSUB logs.> 53\r\n").await;
    assert_eq!(errors(&raw.sync().await), Vec::<String>::new());
    prime_raw(&direct, "logs.acme.globex.prime.p", &mut raw, Some("50")).await;
    prime_raw(&direct, "telemetry.acme.globex.prime.p", &mut raw, Some("51")).await;
    publish_globex(&direct).await;
    direct.publish("logs.acme.globex.web.h1", "acme-nested".into()).await.unwrap();
    direct.flush().await.unwrap();
    let frames = raw.drain(Duration::from_millis(500)).await;
    assert_no_globex(&frames, "org-naming subscriptions");
    let mut got: Vec<(String, String)> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Msg { subject, sid, payload, .. } if payload != "prime" => Some((sid.clone(), subject.clone())),
            _ => None,
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("50".to_string(), "logs.globex.web.h1".to_string()),
            ("52".into(), "logs.globex.web.h1".into()),
            ("53".into(), "logs.globex.web.h1".into()),
        ],
        "only acme's own logs.acme.globex.web.h1, under every matching sid"
    );
    assert!(!frames.contains(&Frame::Eof), "denials keep the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_nats_escape_attempts_see_nothing_of_globex() {
    let s = stack().await;
    let direct = s.direct().await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let acme = async_nats::ConnectOptions::with_user_and_password("acme".into(), s.acme.clone())
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e.to_string());
            }
        })
        .connect(s.proxy_url())
        .await
        .unwrap();
    let denied = [">", "*.>", "$JS.API.>", "$SYS.>", "$KV.>", "_FLOTILLA.>", "flotilla.>", "globex.>"];
    let allowed = ["logs.globex.>", "telemetry.globex.>", "_INBOX.>", "logs.>"];
    let mut subs = vec![];
    for subject in denied.iter().chain(&allowed) {
        subs.push((subject.to_string(), acme.subscribe(subject.to_string()).await.unwrap()));
    }
    acme.flush().await.unwrap();
    // `logs.>` is live once it sees a prime; the others were sent before it.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    'primed: loop {
        direct.publish("logs.acme.prime.p.p", "prime".into()).await.unwrap();
        direct.flush().await.unwrap();
        let logs = &mut subs.last_mut().unwrap().1;
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), logs.next()).await {
            if &m.payload[..] == b"prime" {
                break 'primed;
            }
        }
        assert!(std::time::Instant::now() < deadline, "logs.> never became live");
    }
    publish_globex(&direct).await;
    direct.publish("logs.acme.globex.web.h1", "acme-nested".into()).await.unwrap();
    direct.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (subject, sub) in &mut subs {
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await {
            let payload = String::from_utf8_lossy(&m.payload).to_string();
            assert!(payload == "prime" || payload == "acme-nested", "{subject} received {payload} on {}", m.subject);
            if payload == "acme-nested" {
                assert_eq!(m.subject.as_str(), "logs.globex.web.h1", "{subject}");
                assert!(*subject == "logs.globex.>" || *subject == "logs.>", "{subject} got acme-nested");
            }
        }
    }
    let mut seen = vec![];
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    for subject in denied {
        let want = format!("server error: nats: Permissions Violation for Subscription to \"{subject}\"");
        assert!(seen.contains(&want), "async-nats was told about {subject}: {seen:?}");
    }
    assert_eq!(acme.connection_state(), async_nats::connection::State::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_outside_the_org_are_denied() {
    let s = stack().await;
    let spy_client = s.direct().await;
    let mut spy = spy_client.subscribe(">").await.unwrap();
    spy_client.flush().await.unwrap();
    // Read-only tenant: no publish at all.
    let mut ro = s.raw_as("acme", &s.acme).await;
    for subject in ["logs.web.iad.h1", "logs.acme.web.iad.h1", "logs.globex.web.iad.h1"] {
        ro.send(&format!("PUB {subject} 2\r\nhi\r\n")).await;
        assert_eq!(errors(&ro.sync().await), [denied_pub(subject)], "read-only PUB {subject}");
    }
    // Publishing tenant: only into acme (other orgs' names stay under acme).
    let mut rw = s.raw_as("acme", &s.acme_pub).await;
    for subject in [
        "$JS.API.STREAM.LIST",
        "$JS.API.STREAM.DELETE.LOGS",
        "$SYS.REQ.SERVER.PING",
        "$KV.creds.x",
        "_FLOTILLA.reply.1x0._INBOX.x",
        "flotilla.agent.h1.status",
        "globex.x",
        "logs.>",
        "logs.*.x",
        "logs",
        "_R.1",
        "_R.999999",
    ] {
        rw.send(&format!("PUB {subject} 8\r\nacme-pub\r\n")).await;
        assert_eq!(errors(&rw.sync().await), [denied_pub(subject)], "PUB {subject}");
    }
    rw.send("PUB logs.globex.web.iad.h1 8\r\nacme-pub\r\n").await;
    assert_eq!(errors(&rw.sync().await), Vec::<String>::new());
    // An agent of acme only cannot write into globex.
    let mut agent = s.raw_as("acme-agent", &s.acme_agent).await;
    for subject in ["logs.globex.web.iad.h1", "telemetry.globex.iad.r1.if", "logs.*.web.iad.h1", "logs.>", "_INBOX.x"] {
        agent.send(&format!("PUB {subject} 8\r\nacme-pub\r\n")).await;
        assert_eq!(errors(&agent.sync().await), [denied_pub(subject)], "agent PUB {subject}");
    }
    let mut upstream = vec![];
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), spy.next()).await {
        // (The proxy's own marks, which its PONGs wait for, are not a client's.)
        if !m.subject.starts_with(flotilla_proxy::barrier::SUBJECT_PREFIX) {
            upstream.push(m.subject.to_string());
        }
    }
    assert_eq!(upstream, ["logs.acme.globex.web.iad.h1"], "the one allowed publish, inside acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_subscriptions_are_local_and_never_see_other_connections_replies() {
    let s = stack().await;
    let direct = s.direct().await;
    let js = async_nats::jetstream::new(direct.clone());
    logs_stream(&js).await;
    // A direct globex service and its direct requester (plain _INBOX replies).
    serve(&direct, "svc.globex.echo", Some("globex-reply")).await;
    // A globex service and requester through the proxy.
    let gsvc_client = s.client("globex", &s.globex_pub).await;
    // (telemetry: the LOGS stream would answer requests on logs.> first)
    serve(&gsvc_client, "telemetry.rpc.>", Some("globex-proxied-reply")).await;

    // acme listens on every inbox it can name.
    let mut acme = s.raw_as("acme", &s.acme).await;
    acme.send("SUB _INBOX.> 1\r\nSUB _INBOX.*.* 2\r\nSUB _INBOX.globex.* 3\r\n").await;
    assert_eq!(errors(&acme.sync().await), Vec::<String>::new(), "inbox subscriptions are allowed (locally)");
    let acme_async = s.client("acme", &s.acme).await;
    let mut acme_inbox = acme_async.subscribe("_INBOX.>").await.unwrap();
    acme_async.flush().await.unwrap();
    // acme's own agent: its inbox gets exactly its own acks.
    let mut own = s.raw_as("acme-agent", &s.acme_agent).await;
    own.send("SUB _INBOX.> 9\r\n").await;
    assert_eq!(errors(&own.sync().await), Vec::<String>::new());

    let requester = direct.clone();
    for i in 0..10 {
        let r = requester.request("svc.globex.echo", format!("q{i}").into()).await.unwrap();
        assert_eq!(&r.payload[..], b"globex-reply");
    }
    let greq = s.client("globex", &s.globex_pub).await;
    let mut answered = 0;
    for _ in 0..40 {
        if let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_millis(500), greq.request("telemetry.rpc.x", "q".into())).await
        {
            assert_eq!(&r.payload[..], b"globex-proxied-reply");
            answered += 1;
            if answered == 5 {
                break;
            }
        }
    }
    assert_eq!(answered, 5, "globex's requests through the proxy were answered");
    let gagent = async_nats::jetstream::new(s.client("host-agent", &s.agent).await);
    for i in 0..10 {
        let ack = gagent.publish("logs.globex.web.iad.h1", format!("globex-{i}").into()).await.unwrap().await.unwrap();
        assert_eq!(ack.stream, "LOGS");
    }
    direct.publish("_INBOX.globex.1", "globex-inbox".into()).await.unwrap();
    direct.flush().await.unwrap();
    // acme's agent publishes with acks to its own inbox.
    own.send("PUB logs.acme.web.iad.h1 _INBOX.mine.1 6\r\nacme-1\r\n").await;

    let frames = acme.drain(Duration::from_millis(700)).await;
    assert_eq!(frames, vec![], "acme's inbox subscriptions saw nothing at all");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), acme_inbox.next()).await.is_err(),
        "acme's async-nats inbox saw nothing"
    );
    let frames = own.drain(Duration::from_millis(700)).await;
    let acks: Vec<&Frame> = frames.iter().filter(|f| matches!(f, Frame::Msg { .. })).collect();
    assert_eq!(acks.len(), 1, "acme's agent got exactly its own ack: {frames:?}");
    let Frame::Msg { subject, sid, payload, .. } = acks[0] else { unreachable!() };
    assert_eq!((subject.as_str(), sid.as_str()), ("_INBOX.mine.1", "9"));
    assert!(payload.contains("\"stream\":\"LOGS\""), "a JetStream ack: {payload}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_as_another_org_with_ones_own_token_is_an_authorization_violation() {
    let s = stack().await;
    let before = s.metric("flotilla_proxy_auth_failures_total").await.unwrap_or(0.0);
    let cases = [
        serde_json::json!({"user": "globex", "pass": s.acme}),
        serde_json::json!({"user": "host-agent", "pass": s.acme}),
        serde_json::json!({"user": "globex", "auth_token": s.acme}),
        serde_json::json!({"user": "acme", "pass": s.globex}),
    ];
    for c in &cases {
        let mut raw = Raw::connect(s.addr).await;
        raw.send(&format!("CONNECT {c}\r\nSUB logs.> 1\r\nPING\r\n")).await;
        let frames = raw.drain(Duration::from_secs(2)).await;
        assert_eq!(frames, vec![Frame::Err("'Authorization Violation'".into()), Frame::Eof], "CONNECT {c}");
    }
    let after = s.metric("flotilla_proxy_auth_failures_total").await.unwrap_or(0.0);
    assert_eq!(after - before, cases.len() as f64, "each failure is counted");
    // async-nats refuses to connect too.
    let refused = async_nats::ConnectOptions::with_user_and_password("globex".into(), s.acme.clone())
        .connect(s.proxy_url())
        .await;
    let Err(err) = refused else { panic!("globex with acme's secret is refused") };
    assert!(err.to_string().to_lowercase().contains("authorization"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connect_cannot_switch_identity() {
    let s = stack().await;
    let direct = s.direct().await;
    for second in [
        serde_json::json!({"user": "globex", "pass": s.globex, "headers": true}),
        serde_json::json!({"auth_token": s.globex, "headers": true}),
        serde_json::json!({"user": "host-agent", "pass": s.agent, "headers": true}),
    ] {
        let mut raw = s.raw_as("acme", &s.acme).await;
        raw.send("SUB logs.> 1\r\n").await;
        prime_raw(&direct, "logs.acme.prime.p.p", &mut raw, Some("1")).await;
        raw.send(&format!("CONNECT {second}\r\n")).await;
        raw.send("SUB logs.> 2\r\nSUB telemetry.> 3\r\nPING\r\n").await;
        let mut frames = raw.drain(Duration::from_millis(500)).await;
        assert_eq!(
            errors(&frames).first().map(String::as_str),
            Some("'Authorization Violation'"),
            "second CONNECT {second}: {frames:?}"
        );
        publish_globex(&direct).await;
        frames.extend(raw.drain(Duration::from_millis(500)).await);
        assert_no_globex(&frames, &format!("after a second CONNECT {second}"));
    }
    // The same identity again is harmless.
    let mut raw = s.raw_as("acme", &s.acme).await;
    raw.send(&connect_json("acme", &s.acme)).await;
    raw.send("SUB logs.> 1\r\n").await;
    assert_eq!(raw.sync().await, vec![]);
    prime_raw(&direct, "logs.acme.prime.p.p", &mut raw, Some("1")).await;
    publish_globex(&direct).await;
    let frames = raw.drain(Duration::from_millis(500)).await;
    assert_no_globex(&frames, "repeated CONNECT");
}

/// Each case is sent on a fresh acme connection; then (if it is still open)
/// a legitimate `SUB logs.> 5` is primed, globex publishes, and no globex
/// data and no MSG for a smuggled sid may arrive.
async fn smuggle(
    s: &Stack,
    direct: &async_nats::Client,
    user: &str,
    secret: &str,
    bytes: &[u8],
    smuggled: &[&str],
) -> Vec<Frame> {
    let mut raw = s.raw_as(user, secret).await;
    raw.send_bytes(bytes).await;
    let mut frames = raw.drain(Duration::from_millis(300)).await;
    let open = !frames.contains(&Frame::Eof);
    if open {
        raw.send("SUB logs.> 5\r\n").await;
        prime_raw(direct, "logs.acme.prime.p.p", &mut raw, Some("5")).await;
    }
    publish_globex(direct).await;
    direct.publish("logs.acme.web.iad.h1", "acme-after".into()).await.unwrap();
    direct.flush().await.unwrap();
    if open {
        frames.extend(raw.drain(Duration::from_millis(500)).await);
        assert!(payloads(&frames).contains(&"acme-after".to_string()), "{bytes:?}: the connection still works");
    }
    let case = String::from_utf8_lossy(bytes).to_string();
    assert_no_globex(&frames, &case);
    for f in &frames {
        if let Frame::Msg { sid, .. } = f {
            assert!(!smuggled.contains(&sid.as_str()), "{case:?}: a smuggled SUB (sid {sid}) is live: {f:?}");
        }
        assert_ne!(f, &Frame::Ok, "{case:?}: nothing here is acknowledged");
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_and_control_bytes_in_subjects_cannot_smuggle_operations() {
    let s = stack().await;
    let direct = s.direct().await;
    let (a, acme) = ("acme", s.acme.clone());
    // Each line must be refused outright: a broken SUB is a protocol error.
    for bytes in [
        &b"SUB logs.a\r\nSUB > 2\r\n"[..],
        b"SUB logs.a\r> 2\r\n",
        b"SUB logs.a\n> 2\r\n",
        b"SUB logs.a\x00> 2\r\n",
        b"SUB logs.>\x0b 2\r\n",
        b"SUB logs.>\x1b[0m 2\r\n",
        b"SUB logs.\xff> 2\r\n",
        b"SUB logs.a\x7f 2\r\n",
    ] {
        let frames = smuggle(&s, &direct, a, &acme, bytes, &["2"]).await;
        let errs = errors(&frames);
        assert!(
            errs.len() == 1
                && (errs[0] == "'Unknown Protocol Operation'" || errs[0].starts_with("'Permissions Violation")),
            "{bytes:?}: one -ERR: {frames:?}"
        );
    }
    // A well-formed line before the smuggled one: the second is judged on its own.
    let frames = smuggle(&s, &direct, a, &acme, b"SUB logs.a 1\r\nSUB > 2\r\n", &["2"]).await;
    assert_eq!(errors(&frames), [denied_sub(">")]);
    let frames = smuggle(&s, &direct, a, &acme, b"SUB logs.a 1\nSUB $SYS.> 2\n", &["2"]).await;
    assert_eq!(errors(&frames), [denied_sub("$SYS.>")]);
    // Unicode line and paragraph separators are not line ends.
    let frames = smuggle(&s, &direct, a, &acme, "SUB logs.a\u{2028}> 2\r\n".as_bytes(), &[]).await;
    assert!(!frames.contains(&Frame::Eof));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_and_headers_cannot_smuggle_operations() {
    let s = stack().await;
    let direct = s.direct().await;
    // A payload that looks like protocol, from a tenant that may not publish
    // (the PUB is refused but its payload must still be skipped as data) and
    // from one that may.
    let payload = "\r\nSUB logs.> 77\r\nSUB > 78\r\nUNSUB 5\r\n";
    let pub_op = format!("PUB logs.x {}\r\n{payload}\r\n", payload.len());
    for secret in [s.acme.clone(), s.acme_pub.clone()] {
        let frames = smuggle(&s, &direct, "acme", &secret, pub_op.as_bytes(), &["77", "78"]).await;
        let errs = errors(&frames);
        assert!(errs.is_empty() || errs == [denied_pub("logs.x")], "{errs:?}");
    }
    // The same inside an HPUB header block.
    let headers = "NATS/1.0\r\nX-A: 1\r\nSUB logs.> 79\r\nPUB logs.globex.web.iad.h1 2\r\n\r\n";
    let hpub = format!("HPUB logs.x {} {}\r\n{headers}hi\r\n", headers.len(), headers.len() + 2);
    for secret in [s.acme.clone(), s.acme_pub.clone()] {
        smuggle(&s, &direct, "acme", &secret, hpub.as_bytes(), &["79"]).await;
    }

    // Header values that try to start a new protocol line upstream: what
    // NATS receives is one message on acme's subject, nothing on globex's.
    let mut spy = direct.subscribe("logs.>").await.unwrap();
    let mut tenant = s.raw_as("acme", &s.acme).await;
    tenant.send("SUB logs.> 1\r\n").await;
    direct.flush().await.unwrap();
    prime_raw(&direct, "logs.acme.prime.p.p", &mut tenant, Some("1")).await;
    while tokio::time::timeout(Duration::from_millis(200), spy.next()).await.is_ok() {}
    // Cases 2 and 3 put a bare CR / LF inside a header value: the proxy may
    // refuse that HPUB (an -ERR) or forward it, but it must answer, and only
    // ever on acme's subject.
    let blocks = [
        "NATS/1.0\r\nX-Note: a\r\nPUB logs.globex.web.iad.h1 11\r\nglobex-fake\r\n\r\n",
        "NATS/1.0\r\nX-Note: a\rPUB logs.globex.web.iad.h1 11\rglobex-fake\r\n\r\n",
        "NATS/1.0\r\nX-Note: a\nPUB logs.globex.web.iad.h1 11\nglobex-fake\r\n\r\n",
        "NATS/1.0\r\nX-Note: a\r\n\r\nPUB logs.globex.web.iad.h1 11\r\nglobex-fake\r\n",
    ];
    let mut refused = 0;
    for (who, secret, subject) in
        [("acme-agent", &s.acme_agent, "logs.acme.web.iad.h1"), ("acme", &s.acme_pub, "logs.web.iad.h1")]
    {
        for block in blocks {
            let mut c = s.raw_as(who, secret).await;
            let body = "acme-h";
            c.send(&format!(
                "HPUB {subject} {} {}\r\n{block}{body}\r\nPING\r\n",
                block.len(),
                block.len() + body.len()
            ))
            .await;
            match c.frame_within(Duration::from_secs(3)).await {
                Some(Frame::Pong) => {}
                Some(Frame::Err(e)) => {
                    assert!(block.contains("a\r") || block.contains("a\n"), "{who} {block:?} refused: {e}");
                    refused += 1;
                }
                other => panic!(
                    "{who}: HPUB with header block {block:?} got {other:?} instead of PONG or -ERR \
                     (did the connection task die? a CR or LF in a header value must not panic the proxy)"
                ),
            }
        }
    }
    let mut upstream = vec![];
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), spy.next()).await {
        upstream.push((m.subject.to_string(), String::from_utf8_lossy(&m.payload).to_string()));
    }
    assert_eq!(upstream.len(), 8 - refused, "one message per accepted HPUB: {upstream:?}");
    for (subject, payload) in &upstream {
        assert_eq!(subject, "logs.acme.web.iad.h1", "{upstream:?}");
        assert!(payload.ends_with("acme-h"), "{upstream:?}");
    }
    // The tenant's stream stays in frame sync through all of it.
    let frames = tenant.drain(Duration::from_millis(300)).await;
    assert_eq!(payloads(&frames).len(), 8 - refused, "{frames:?}");
    assert!(errors(&tenant.sync().await).is_empty());
    // And the upstream connection survived: deliveries still flow.
    direct.publish("logs.acme.web.iad.h1", "acme-final".into()).await.unwrap();
    direct.flush().await.unwrap();
    assert_eq!(payloads(&tenant.drain(Duration::from_millis(500)).await), ["acme-final"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sids_are_per_connection() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut a = s.raw_as("acme", &s.acme).await;
    let mut b = s.raw_as("acme", &s.acme).await;
    let mut g = s.raw_as("globex", &s.globex).await;
    let mut stranger = s.raw_as("acme", &s.acme).await;
    a.send("SUB logs.> 1\r\nSUB logs.web.> q 2\r\n").await;
    b.send("SUB logs.> 1\r\nSUB logs.web.> q 2\r\n").await;
    g.send("SUB logs.> 1\r\n").await;
    prime_raw(&direct, "logs.acme.prime.p.p", &mut a, Some("1")).await;
    prime_raw(&direct, "logs.acme.prime.p.p", &mut b, Some("1")).await;
    prime_raw(&direct, "logs.globex.prime.p.p", &mut g, Some("1")).await;
    // Everyone else unsubscribes "their" sid 1 and 2.
    for c in [&mut b, &mut g, &mut stranger] {
        c.send("UNSUB 1\r\nUNSUB 2\r\nUNSUB 1 0\r\n").await;
        assert_eq!(errors(&c.sync().await), Vec::<String>::new());
    }
    direct.publish("logs.acme.api.iad.h1", "acme-1".into()).await.unwrap();
    direct.flush().await.unwrap();
    let got_a = a.drain(Duration::from_millis(500)).await;
    assert_eq!(payloads(&got_a), ["acme-1"], "A's sid 1 survived the others' UNSUB 1");
    for (name, c) in [("B", &mut b), ("G", &mut g), ("stranger", &mut stranger)] {
        assert_eq!(payloads(&c.drain(Duration::from_millis(200)).await), Vec::<String>::new(), "{name} unsubscribed");
    }
    // A's queue subscription (shared group `q` with B's, now gone) still
    // gets every web message.
    for i in 0..10 {
        direct.publish(format!("logs.acme.web.iad.h{i}"), format!("acme-web-{i}").into()).await.unwrap();
    }
    direct.flush().await.unwrap();
    let got = a.drain(Duration::from_millis(500)).await;
    let on_sid = |sid: &str| {
        got.iter().filter(|f| matches!(f, Frame::Msg { sid: s, payload, .. } if s == sid && payload != "prime")).count()
    };
    assert_eq!((on_sid("1"), on_sid("2")), (10, 10), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_subjects_cannot_aim_at_other_orgs_or_the_jetstream_api() {
    let s = stack().await;
    let direct = s.direct().await;
    let js = async_nats::jetstream::new(direct.clone());
    logs_stream(&js).await;
    for i in 0..3 {
        js.publish("logs.globex.web.iad.h1", format!("globex-{i}").into()).await.unwrap().await.unwrap();
    }
    let mut globex_spy = direct.subscribe("logs.globex.>").await.unwrap();
    let mut js_api_spy = direct.subscribe("$JS.API.>").await.unwrap();
    direct.flush().await.unwrap();

    // An acme service answering whatever reply subject it is given.
    serve(&direct, "logs.acme.rpc.>", Some("{\"stream\":\"LOGS\"}")).await;

    let targets = [
        "logs.globex.web.iad.h1",
        "$JS.API.STREAM.PURGE.LOGS",
        "$JS.API.STREAM.DELETE.LOGS",
        "$JS.API.STREAM.MSG.DELETE.LOGS",
        "telemetry.globex.iad.r1.if",
        "_INBOX.globex.1",
    ];
    let mut agent = s.raw_as("acme-agent", &s.acme_agent).await;
    let mut tenant = s.raw_as("acme", &s.acme_pub).await;
    for reply in targets {
        // Stored by JetStream, whose ack goes to the reply subject.
        agent.send(&format!("PUB logs.acme.web.iad.h1 {reply} 6\r\nacme-1\r\n")).await;
        tenant.send(&format!("PUB logs.web.iad.h1 {reply} 6\r\nacme-2\r\n")).await;
        // Answered by a service.
        agent.send(&format!("PUB logs.acme.rpc.x {reply} 6\r\nacme-3\r\n")).await;
        tenant.send(&format!("PUB logs.rpc.x {reply} 6\r\nacme-4\r\n")).await;
    }
    assert_eq!(errors(&agent.sync().await), Vec::<String>::new());
    assert_eq!(errors(&tenant.sync().await), Vec::<String>::new());
    // Wildcard replies are refused.
    agent.send("PUB logs.acme.rpc.x _INBOX.> 2\r\nhi\r\n").await;
    assert_eq!(errors(&agent.sync().await), ["'Permissions Violation for Publish with Reply of \"_INBOX.>\"'"]);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), globex_spy.next()).await.is_err(),
        "nothing was written into globex's subjects"
    );
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), js_api_spy.next()).await {
        panic!("a reply reached the JetStream API: {} {:?}", m.subject, m.payload);
    }
    let mut stream = js.get_stream("LOGS").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    // 3 of globex's, and all 4 acme publishes per target (logs.> captures
    // the rpc subjects too).
    assert_eq!(state.messages, 3 + 4 * targets.len() as u64, "nothing purged or deleted, every acme message stored");
    assert_eq!(state.first_sequence, 1);
    // The replies came back to their own publishers (as the inbox they
    // named, which they did not subscribe: nothing is delivered).
    let frames = agent.drain(Duration::from_millis(300)).await;
    assert_no_globex(&frames, "agent replies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_aliases_are_per_connection_and_not_forgeable() {
    let s = stack().await;
    let direct = s.direct().await;
    // acme's service sees the request with an alias; acme's requester asks.
    let mut svc = s.raw_as("acme", &s.acme_pub).await;
    svc.send("SUB logs.rpc.> 1\r\n").await;
    prime_raw(&direct, "logs.acme.rpc.prime", &mut svc, Some("1")).await;
    let mut req = s.raw_as("acme", &s.acme_pub).await;
    req.send("SUB _INBOX.req.* 1\r\nPUB logs.rpc.x _INBOX.req.1 4\r\nping\r\n").await;
    let request = loop {
        match svc.frame().await {
            Frame::Msg { payload, reply, .. } if payload == "ping" => {
                break reply.expect("a request has a reply subject")
            }
            Frame::Ping => svc.send("PONG\r\n").await,
            _ => {}
        }
    };
    assert!(!request.contains("_INBOX.req") && !request.contains("_FLOTILLA"), "an opaque alias: {request}");
    // Another acme connection (even with publish rights) and a globex one
    // cannot use that alias.
    let mut other = s.raw_as("acme", &s.acme_pub).await;
    other.send(&format!("PUB {request} 6\r\nforged\r\n")).await;
    assert_eq!(errors(&other.sync().await), [denied_pub(&request)]);
    let mut g = s.raw_as("globex", &s.globex_pub).await;
    g.send(&format!("PUB {request} 6\r\nforged\r\n")).await;
    assert_eq!(errors(&g.sync().await), [denied_pub(&request)]);
    // The service's answer arrives; the forgeries never do.
    svc.send(&format!("PUB {request} 4\r\npong\r\n")).await;
    let frames = req.drain(Duration::from_millis(500)).await;
    assert_eq!(payloads(&frames), ["pong"], "{frames:?}");
    let Frame::Msg { subject, sid, .. } = frames.iter().find(|f| matches!(f, Frame::Msg { .. })).unwrap() else {
        unreachable!()
    };
    assert_eq!((subject.as_str(), sid.as_str()), ("_INBOX.req.1", "1"), "the requester sees its own inbox");
}

/// The reply subject of the next message with `payload` that `raw` gets.
async fn reply_of(raw: &mut Raw, payload: &str) -> Option<String> {
    loop {
        match raw.frame().await {
            Frame::Msg { payload: p, reply, .. } if p == payload => return reply,
            Frame::Ping => raw.send("PONG\r\n").await,
            Frame::Eof => panic!("closed while waiting for {payload:?}"),
            _ => {}
        }
    }
}

/// A tenant is shown the requests of its own org's clients only. The ack
/// inbox of an agent's JetStream publish, or a platform service's inbox,
/// never reaches it: a tenant with publish rights could otherwise forge
/// acks to an agent that serves other orgs too. And a read-only tenant
/// sees its org's requests but may not answer them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_answers_only_its_own_orgs_requests_and_only_with_publish_rights() {
    let s = stack().await;
    let direct = s.direct().await;
    let mut reader = s.raw_as("acme", &s.acme).await;
    let mut writer = s.raw_as("acme", &s.acme_pub).await;
    for r in [&mut reader, &mut writer] {
        r.send("SUB logs.> 1\r\n").await;
        prime_raw(&direct, "logs.acme.prime.p.p", r, Some("1")).await;
    }
    let mut agent = s.raw_as("host-agent", &s.agent).await;
    agent.send("SUB _INBOX.acks.* 1\r\nPUB logs.acme.web.iad.h1 _INBOX.acks.1 6\r\nacme-1\r\n").await;
    direct.publish_with_reply("logs.acme.web.iad.h1", "_INBOX.platform.1", "platform".into()).await.unwrap();
    direct.flush().await.unwrap();
    for (who, r) in [("read-only", &mut reader), ("publisher", &mut writer)] {
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match r.frame().await {
                Frame::Msg { payload, reply, .. } if payload != "prime" => seen.push((payload, reply)),
                Frame::Ping => r.send("PONG\r\n").await,
                _ => {}
            }
        }
        seen.sort();
        let want = [("acme-1".to_string(), None), ("platform".to_string(), None)];
        assert_eq!(seen, want, "{who}: no reply subject of an agent's or a platform inbox is shown");
    }
    let mut requester = s.raw_as("acme", &s.acme_pub).await;
    requester.send("SUB _INBOX.req.* 1\r\nPUB logs.rpc.x _INBOX.req.1 4\r\nping\r\n").await;
    let reply = reply_of(&mut reader, "ping").await.expect("a tenant's request has a reply subject");
    reader.send(&format!("PUB {reply} 6\r\nforged\r\n")).await;
    let frames = reader.sync().await;
    assert_eq!(errors(&frames), [denied_pub(&reply)], "a read-only token may not publish, not even a reply");
    let answer = reply_of(&mut writer, "ping").await.expect("the publisher sees it too");
    writer.send(&format!("PUB {answer} 4\r\npong\r\n")).await;
    let got = requester.drain(Duration::from_millis(500)).await;
    assert_eq!(payloads(&got), ["pong"], "{got:?}");
    assert!(payloads(&agent.drain(Duration::from_millis(200)).await).is_empty(), "nothing reached the agent's inbox");
}

/// An admin's `_INBOX.` subscriptions are the server's too (JetStream push
/// consumers deliver to inbox subjects directly, not as replies), while a
/// tenant's stay local: the same direct delivery reaches the admin only,
/// and the admin's own request is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_inbox_gets_direct_deliveries_a_tenants_never() {
    let s = stack().await;
    let admin = token(&s.tokens, flotilla_proxy::auth::Role::Admin, &[], Some("ops"), false);
    let direct = s.direct().await;
    serve(&direct, "svc.echo", Some("answer")).await;
    direct.request("svc.echo", "ready".into()).await.unwrap();
    let mut ops = s.raw_as("ops", &admin).await;
    let mut tenant = s.raw_as("acme", &s.acme).await;
    tenant.send("SUB _INBOX.> 1\r\n").await;
    assert_eq!(tenant.sync().await, vec![]);
    ops.send("SUB _INBOX.watch.> 1\r\n").await;
    assert_eq!(ops.sync().await, vec![], "live upstream by the PONG");
    direct.publish("_INBOX.watch.k1", "pushed".into()).await.unwrap();
    direct.flush().await.unwrap();
    let got = ops.frame().await;
    let Frame::Msg { subject, sid, payload, .. } = &got else { panic!("{got:?}") };
    assert_eq!((subject.as_str(), sid.as_str(), payload.as_str()), ("_INBOX.watch.k1", "1", "pushed"));

    ops.send("PUB svc.echo _INBOX.watch.r1 2\r\nhi\r\n").await;
    let frames = ops.drain(Duration::from_millis(800)).await;
    assert_eq!(payloads(&frames), ["answer"], "one answer, not one per path: {frames:?}");
    assert_eq!(tenant.drain(Duration::from_millis(300)).await, vec![], "the tenant's inbox is its own");
}
