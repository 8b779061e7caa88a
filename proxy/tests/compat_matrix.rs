//! Compatibility matrix: the official clients — async-nats (Rust, in this
//! process), nats.py (proxy/tests/py/compat_client.py), nats.js (the `nats`
//! npm package, proxy/tests/js/compat_client.mjs on Node) and nats.go (the
//! client the `nats` CLI is built on; Debian's 1.22.1, proxy/tests/go/compat_client.go) —
//! against a real nats-server behind the proxy: tenant credentials (user =
//! org, password = secret), wildcard and queue-group subscriptions that
//! receive only their org with rewritten subjects, request/reply inside an
//! org, an agent's JetStream publishes with acks, and what each client shows
//! for the proxy's `-ERR`s.
//!
//! The `client_err_*` tests pin down how each client treats a server `-ERR`
//! (closing or not, and what the application sees) against a tiny fake
//! server, so the proxy's choice of wording stays right when a client
//! library changes.
//!
//! Needs: nats-server, the venv Python with nats-py, Node with
//! proxy/tests/js/node_modules, and Go with Debian's nats.go package
//! (`./scripts/test` installs them all).

mod common;
#[path = "compat/probe.rs"]
mod probe;
#[path = "compat/scripts.rs"]
mod scripts;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use common::*;
use flotilla_testsupport::tls::Pki;
use probe::*;
use scripts::*;

// ---------------------------------------------------------------------------
// The fixture: two orgs' logs published straight to nats-server.

/// (upstream subject, payload). `acmex` is a different org whose name starts
/// with `acme`; telemetry is not under `logs.>`.
const FIXTURE: [(&str, &str); 10] = [
    ("logs.acme.web.iad.h1", "acme-1"),
    ("logs.globex.web.iad.h1", "globex-1"),
    ("logs.acme.api.fra.h2", "acme-2"),
    ("logs.globex.api.iad.h2", "globex-2"),
    ("logs.acme.web.fra.h3", "acme-3"),
    ("logs.acmex.web.iad.h1", "acmex-1"),
    ("logs.acme.web.iad.h1.extra", "acme-4"),
    ("telemetry.acme.iad.r1.if", "acme-telemetry"),
    ("logs.globex.web.fra.h9", "globex-3"),
    ("logs.globex.acme.iad.h1", "globex-4"),
];

async fn publish_fixture(direct: &async_nats::Client) {
    for (subject, payload) in FIXTURE {
        direct.publish(subject, payload.into()).await.unwrap();
    }
    direct.flush().await.unwrap();
}

/// (subject, payload) pairs.
type Pairs = BTreeSet<(String, String)>;

fn pairs(v: &[(&str, &str)]) -> Pairs {
    v.iter().map(|(s, p)| (s.to_string(), p.to_string())).collect()
}

/// What each org's tenant must see: (`logs.>`, `logs.web.*.*`).
fn expected(org: &str) -> (Pairs, Pairs) {
    match org {
        "acme" => (
            pairs(&[
                ("logs.web.iad.h1", "acme-1"),
                ("logs.api.fra.h2", "acme-2"),
                ("logs.web.fra.h3", "acme-3"),
                ("logs.web.iad.h1.extra", "acme-4"),
            ]),
            pairs(&[("logs.web.iad.h1", "acme-1"), ("logs.web.fra.h3", "acme-3")]),
        ),
        "globex" => (
            pairs(&[
                ("logs.web.iad.h1", "globex-1"),
                ("logs.api.iad.h2", "globex-2"),
                ("logs.web.fra.h9", "globex-3"),
                ("logs.acme.iad.h1", "globex-4"),
            ]),
            pairs(&[("logs.web.iad.h1", "globex-1"), ("logs.web.fra.h9", "globex-3")]),
        ),
        _ => unreachable!(),
    }
}

/// Check one tenant's `{all, web, q1, q2}` lists of `[subject, payload]`.
fn check_tail(client: &str, org: &str, got: &Value) {
    let list = |k: &str| -> Vec<(String, String)> {
        got[k]
            .as_array()
            .unwrap_or_else(|| panic!("{client} {org}: no {k:?} in {got}"))
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string()))
            .collect()
    };
    let (all, web) = expected(org);
    let (got_all, got_web) = (list("all"), list("web"));
    assert_eq!(got_all.len(), all.len(), "{client} {org} logs.> got each message once: {got_all:?}");
    assert_eq!(got_all.iter().cloned().collect::<BTreeSet<_>>(), all, "{client} {org}: logs.>");
    assert_eq!(got_web.len(), web.len(), "{client} {org}: logs.web.*.* got each once: {got_web:?}");
    assert_eq!(got_web.iter().cloned().collect::<BTreeSet<_>>(), web, "{client} {org}: logs.web.*.*");
    let mut queue = list("q1");
    queue.extend(list("q2"));
    assert_eq!(
        queue.len(),
        all.len(),
        "{client} {org}: queue group `workers` got each message exactly once: {queue:?}"
    );
    assert_eq!(queue.into_iter().collect::<BTreeSet<_>>(), all, "{client} {org}: queue group");
    let other = if org == "acme" { "globex" } else { "acme" };
    for (_, payload) in got_all.iter().chain(&got_web) {
        assert!(!payload.starts_with(&format!("{other}-")), "{client} {org} received {other}'s {payload}");
    }
}

// ---------------------------------------------------------------------------
// Tenants: wildcards, queue groups, only their org, rewritten subjects.

async fn tail_with_script(lang: Lang, pki: Option<&Pki>) {
    let tables = pki.map_or(String::new(), |p| {
        format!("[tls]\ncert = {:?}\nkey = {:?}\n", p.server.0.display().to_string(), p.server.1.display().to_string())
    });
    let s = stack_with(Extra { top: "", tables: &tables }).await;
    let url = match pki {
        Some(_) => format!("tls://localhost:{}", s.addr.port()),
        None => s.proxy_url(),
    };
    let args = |org: &'static str, secret: &str| -> Vec<String> {
        let mut v: Vec<String> =
            ["tail", "--url", &url, "--user", org, "--password", secret, "--expect", "4", "--idle", "1"]
                .iter()
                .map(|a| a.to_string())
                .collect();
        if let Some(p) = pki {
            v.extend(["--ca".to_string(), p.ca.display().to_string()]);
        }
        v
    };
    let (a_args, g_args) = (args("acme", &s.acme), args("globex", &s.globex));
    let mut acme = Script::spawn(lang, &a_args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut globex = Script::spawn(lang, &g_args.iter().map(String::as_str).collect::<Vec<_>>());
    acme.expect_line("ready").await;
    globex.expect_line("ready").await;
    let direct = s.direct().await;
    prime_script(&direct, "logs.acme.web.prime.p", &mut acme).await;
    prime_script(&direct, "logs.globex.web.prime.p", &mut globex).await;
    publish_fixture(&direct).await;
    let client = format!("{lang:?}");
    check_tail(&client, "acme", &acme.json().await);
    check_tail(&client, "globex", &globex.json().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_tenants_get_their_org_with_wildcards_and_queue_groups() {
    tail_with_script(Lang::Py, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_js_tenants_get_their_org_with_wildcards_and_queue_groups() {
    tail_with_script(Lang::Js, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_go_tenants_get_their_org_with_wildcards_and_queue_groups() {
    tail_with_script(Lang::Go, None).await;
}

/// The same through the proxy's `[tls]`, the clients trusting its CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_tenants_over_tls() {
    tail_with_script(Lang::Py, Some(&Pki::new("flotilla test CA"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_js_tenants_over_tls() {
    tail_with_script(Lang::Js, Some(&Pki::new("flotilla test CA"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_go_tenants_over_tls() {
    tail_with_script(Lang::Go, Some(&Pki::new("flotilla test CA"))).await;
}

/// Collect (subject, payload) from `sub` until `quiet` passes without one;
/// `prime` payloads are skipped.
async fn collect(sub: &mut async_nats::Subscriber, quiet: Duration) -> Vec<(String, String)> {
    let mut got = vec![];
    while let Ok(Some(m)) = tokio::time::timeout(quiet, sub.next()).await {
        let payload = String::from_utf8_lossy(&m.payload).to_string();
        if payload != "prime" {
            got.push((m.subject.to_string(), payload));
        }
    }
    got
}

/// Wait until `sub` sees a `prime` message (published meanwhile).
async fn prime_subs(direct: &async_nats::Client, subject: &str, subs: &mut [&mut async_nats::Subscriber]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = vec![false; subs.len()];
    while seen.iter().any(|s| !s) {
        assert!(Instant::now() < deadline, "async-nats subscriptions never became live");
        direct.publish(subject.to_string(), "prime".into()).await.unwrap();
        direct.flush().await.unwrap();
        for (i, sub) in subs.iter_mut().enumerate() {
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await {
                if &m.payload[..] == b"prime" {
                    seen[i] = true;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_nats_tenants_get_their_org_with_wildcards_and_queue_groups() {
    let s = stack().await;
    let direct = s.direct().await;
    for (org, secret) in [("acme", s.acme.clone()), ("globex", s.globex.clone())] {
        let c = s.client(org, &secret).await;
        let mut all = c.subscribe("logs.>").await.unwrap();
        let mut web = c.subscribe("logs.web.*.*").await.unwrap();
        let mut q1 = c.queue_subscribe("logs.>", "workers".into()).await.unwrap();
        let mut q2 = c.queue_subscribe("logs.>", "workers".into()).await.unwrap();
        c.flush().await.unwrap();
        prime_subs(&direct, &format!("logs.{org}.web.prime.p"), &mut [&mut all, &mut web]).await;
        // Either member of the queue group may take the primes.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            direct.publish(format!("logs.{org}.web.prime.p"), "prime".into()).await.unwrap();
            direct.flush().await.unwrap();
            let a = tokio::time::timeout(Duration::from_millis(100), q1.next()).await.is_ok();
            let b = tokio::time::timeout(Duration::from_millis(100), q2.next()).await.is_ok();
            if a || b {
                break;
            }
            assert!(Instant::now() < deadline, "queue subscriptions never became live");
        }
        collect(&mut all, Duration::from_millis(200)).await;
        collect(&mut web, Duration::from_millis(50)).await;
        collect(&mut q1, Duration::from_millis(50)).await;
        collect(&mut q2, Duration::from_millis(50)).await;

        publish_fixture(&direct).await;
        let quiet = Duration::from_millis(700);
        let to_json = |v: Vec<(String, String)>| json!(v.into_iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>());
        let got = json!({
            "all": to_json(collect(&mut all, quiet).await),
            "web": to_json(collect(&mut web, quiet).await),
            "q1": to_json(collect(&mut q1, quiet).await),
            "q2": to_json(collect(&mut q2, quiet).await),
        });
        check_tail("async-nats", org, &got);
    }
}

// ---------------------------------------------------------------------------
// Agents: JetStream publishes with acks through the proxy.

/// A platform JetStream context with the stream `LOGS`.
async fn with_logs_stream(s: &Stack) -> async_nats::jetstream::Context {
    let js = async_nats::jetstream::new(s.direct().await);
    logs_stream(&js).await;
    js
}

async fn check_stream(js: &async_nats::jetstream::Context, prefix: &str, n: u64) {
    let mut stream = js.get_stream("LOGS").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!(state.messages, n, "exactly the acked messages are stored (the duplicate is not)");
    for seq in 1..=n {
        let m = stream.get_raw_message(seq).await.unwrap();
        assert_eq!(m.subject.as_str(), "logs.acme.web.iad.h1");
        assert_eq!(String::from_utf8_lossy(&m.payload), format!("{prefix}-{}", seq - 1));
        let id = m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string());
        assert_eq!(id.as_deref(), Some(format!("{prefix}-{}", seq - 1).as_str()), "Nats-Msg-Id kept");
    }
}

fn check_acks(client: &str, got: &Value, n: u64) {
    let acks = got["acks"].as_array().unwrap_or_else(|| panic!("{client}: {got}"));
    assert_eq!(acks.len() as u64, n + 1, "{client}: {got}");
    for (i, ack) in acks.iter().take(n as usize).enumerate() {
        assert_eq!(ack["stream"], "LOGS", "{client}: {ack}");
        assert_eq!(ack["seq"], i as u64 + 1, "{client}: {ack}");
        assert_eq!(ack["duplicate"], false, "{client}: {ack}");
    }
    let dup = &acks[n as usize];
    assert_eq!((dup["seq"].as_u64(), dup["duplicate"].as_bool()), (Some(1), Some(true)), "{client}: re-sent id: {dup}");
}

async fn jetstream_with_script(lang: Lang, prefix: &str) {
    let s = stack().await;
    let js = with_logs_stream(&s).await;
    let url = s.proxy_url();
    let mut agent = Script::spawn(
        lang,
        &[
            "jspub",
            "--url",
            &url,
            "--user",
            "host-agent",
            "--password",
            &s.agent,
            "--subject",
            "logs.acme.web.iad.h1",
            "--count",
            "3",
        ],
    );
    let got = agent.json().await;
    check_acks(&format!("{lang:?}"), &got, 3);
    check_stream(&js, prefix, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_agent_publishes_to_jetstream_with_acks() {
    jetstream_with_script(Lang::Py, "py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_js_agent_publishes_to_jetstream_with_acks() {
    jetstream_with_script(Lang::Js, "js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_go_agent_publishes_to_jetstream_with_acks() {
    jetstream_with_script(Lang::Go, "go").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_nats_agent_publishes_to_jetstream_with_acks() {
    let s = stack().await;
    let js = with_logs_stream(&s).await;
    let agent = async_nats::jetstream::new(s.client("host-agent", &s.agent).await);
    let mut acks = vec![];
    for i in 0..3 {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("rs-{i}").as_str());
        let ack = agent
            .publish_with_headers("logs.acme.web.iad.h1", h, format!("rs-{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
        acks.push(json!({"stream": ack.stream, "seq": ack.sequence, "duplicate": ack.duplicate}));
    }
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", "rs-0");
    let ack = agent.publish_with_headers("logs.acme.web.iad.h1", h, "rs-0".into()).await.unwrap().await.unwrap();
    acks.push(json!({"stream": ack.stream, "seq": ack.sequence, "duplicate": ack.duplicate}));
    check_acks("async-nats", &json!({ "acks": acks }), 3);
    check_stream(&js, "rs", 3).await;
}

// ---------------------------------------------------------------------------
// A tenant without publish rights: the client surfaces the denial and stays
// connected; nothing reaches NATS.

/// A subscriber straight on nats-server to everything (with its client).
async fn upstream_spy(s: &Stack) -> (async_nats::Client, async_nats::Subscriber) {
    let direct = s.direct().await;
    let sub = direct.subscribe(">").await.unwrap();
    direct.flush().await.unwrap();
    (direct, sub)
}

/// Every message the spy saw within `quiet`, as (subject, payload), minus
/// JetStream/system chatter and the proxy's own marks (its PONGs wait for them).
async fn spied(spy: &mut async_nats::Subscriber, quiet: Duration) -> Vec<(String, String)> {
    let mut got = vec![];
    while let Ok(Some(m)) = tokio::time::timeout(quiet, spy.next()).await {
        if !m.subject.starts_with("$") && !m.subject.starts_with(flotilla_proxy::barrier::SUBJECT_PREFIX) {
            got.push((m.subject.to_string(), String::from_utf8_lossy(&m.payload).to_string()));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_surfaces_a_denied_publish_and_stays_connected() {
    let s = stack().await;
    let (_spy_client, mut spy) = upstream_spy(&s).await;
    let url = s.proxy_url();
    let want = "Permissions Violation for Publish to \"logs.rpc.x\"";

    let mut py = Script::spawn(
        Lang::Py,
        &["denied", "--url", &url, "--user", "acme", "--password", &s.acme, "--subject", "logs.rpc.x"],
    );
    let got = py.json().await;
    assert_eq!(got["connected"], true, "nats.py stays connected: {got}");
    let errors: Vec<&str> = got["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert_eq!(errors, [format!("nats: {}", want.to_lowercase())], "nats.py error callback");

    let mut js = Script::spawn(
        Lang::Js,
        &["denied", "--url", &url, "--user", "acme", "--password", &s.acme, "--subject", "logs.rpc.x"],
    );
    let got = js.json().await;
    assert_eq!(got["connected"], true, "nats.js stays connected: {got}");
    let statuses = got["statuses"].as_array().unwrap();
    assert!(
        statuses.iter().any(|st| st["type"] == "error"
            && st["data"] == "PERMISSIONS_VIOLATION"
            && st["permissionContext"] == json!({"operation": "publish", "subject": "logs.rpc.x"})),
        "nats.js status: {got}"
    );

    let mut go = Script::spawn(
        Lang::Go,
        &["denied", "--url", &url, "--user", "acme", "--password", &s.acme, "--subject", "logs.rpc.x"],
    );
    let got = go.json().await;
    assert_eq!(got["connected"], true, "nats.go stays connected: {got}");
    assert_eq!(got["errors"], json!([format!("nats: {want}")]), "nats.go error handler: {got}");

    let (tx, mut events) = mpsc::unbounded_channel();
    let c = async_nats::ConnectOptions::with_user_and_password("acme".into(), s.acme.clone())
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e.to_string());
            }
        })
        .connect(&url)
        .await
        .unwrap();
    c.publish("logs.rpc.x", "nope".into()).await.unwrap();
    c.flush().await.unwrap();
    let mut seen = vec![];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen.iter().any(|e: &String| e.contains("Permissions Violation")) && Instant::now() < deadline {
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), events.recv()).await {
            seen.push(e);
        }
    }
    assert!(seen.contains(&format!("server error: nats: {want}")), "async-nats Event::ServerError: {seen:?}");
    c.flush().await.expect("async-nats still connected");
    assert_eq!(c.connection_state(), async_nats::connection::State::Connected);

    let leaked = spied(&mut spy, Duration::from_millis(300)).await;
    assert!(leaked.is_empty(), "nothing of a denied publish reaches NATS: {leaked:?}");
}

// ---------------------------------------------------------------------------
// Request/reply inside an org: tenant tokens with `publish = true`
// (`token new --publish`) publish into their org (`logs.rpc.x` from acme
// goes upstream as `logs.acme.rpc.x`); a responder of the same org sees the
// reply subject as a per-connection alias that the proxy maps back.

struct RpcCheck {
    _spy_client: async_nats::Client,
    spy: async_nats::Subscriber,
    globex: async_nats::Subscriber,
    _globex_client: async_nats::Client,
}

async fn rpc_setup(s: &Stack) -> RpcCheck {
    let (_spy_client, spy) = upstream_spy(s).await;
    // A globex service on the same subject must never see acme's requests.
    let gc = s.client("globex", &s.globex_pub).await;
    let globex = gc.subscribe("logs.rpc.>").await.unwrap();
    gc.flush().await.unwrap();
    RpcCheck { _spy_client, spy, globex, _globex_client: gc }
}

async fn rpc_check(mut c: RpcCheck, data: &str) {
    let upstream = spied(&mut c.spy, Duration::from_millis(300)).await;
    assert!(
        upstream.iter().any(|(s, p)| s == "logs.acme.rpc.x" && p == data),
        "the request went upstream as logs.acme.rpc.x: {upstream:?}"
    );
    for (subject, _) in &upstream {
        assert!(!subject.starts_with("logs.rpc."), "an unscoped subject reached NATS: {upstream:?}");
        assert!(!subject.contains("globex"), "acme's traffic touched globex: {upstream:?}");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), c.globex.next()).await.is_err(),
        "globex's service saw acme's request"
    );
}

async fn request_reply_with_scripts(lang: Lang) {
    let s = stack().await;
    let check = rpc_setup(&s).await;
    let url = s.proxy_url();
    let mut responder = Script::spawn(
        lang,
        &[
            "respond",
            "--url",
            &url,
            "--user",
            "acme",
            "--password",
            &s.acme_pub,
            "--subject",
            "logs.rpc.>",
            "--count",
            "1",
            "--idle",
            "30",
        ],
    );
    responder.expect_line("ready").await;
    let data = format!("ping-{lang:?}");
    let mut requester = Script::spawn(
        lang,
        &[
            "request",
            "--url",
            &url,
            "--user",
            "acme",
            "--password",
            &s.acme_pub,
            "--subject",
            "logs.rpc.x",
            "--data",
            &data,
        ],
    );
    let got = requester.json().await;
    assert_eq!(got["ok"], true, "{lang:?} requester got an answer: {got}; stderr: {}", requester.stderr());
    assert_eq!(got["data"], format!("pong:{data}"), "{got}");
    let req = responder.json().await;
    assert_eq!(req["subject"], "logs.rpc.x", "the responder sees the org-less subject: {req}");
    assert_eq!(req["data"], data.as_str());
    let reply = req["reply"].as_str().unwrap_or_default();
    assert!(!reply.is_empty(), "a request carries a reply subject: {req}");
    assert!(
        !reply.starts_with("_INBOX.") && !reply.contains("_FLOTILLA"),
        "the responder sees a per-connection alias, neither the requester's inbox nor the proxy's upstream subject: {req}"
    );
    rpc_check(check, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_request_reply_within_an_org() {
    request_reply_with_scripts(Lang::Py).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_js_request_reply_within_an_org() {
    request_reply_with_scripts(Lang::Js).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_go_request_reply_within_an_org() {
    request_reply_with_scripts(Lang::Go).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_nats_request_reply_within_an_org() {
    let s = stack().await;
    let check = rpc_setup(&s).await;
    let responder = s.client("acme", &s.acme_pub).await;
    let mut service = responder.subscribe("logs.rpc.>").await.unwrap();
    responder.flush().await.unwrap();
    let seen = Arc::new(Mutex::new(vec![]));
    let (r, log) = (responder.clone(), seen.clone());
    tokio::spawn(async move {
        while let Some(m) = service.next().await {
            log.lock().unwrap().push((m.subject.to_string(), m.reply.as_ref().map(|r| r.to_string())));
            if let Some(reply) = m.reply {
                let mut body = b"pong:".to_vec();
                body.extend_from_slice(&m.payload);
                r.publish(reply, body.into()).await.unwrap();
                r.flush().await.unwrap();
            }
        }
    });
    let requester = async_nats::ConnectOptions::with_user_and_password("acme".into(), s.acme_pub.clone())
        .custom_inbox_prefix("_INBOX.acmereq")
        .connect(s.proxy_url())
        .await
        .unwrap();
    let mut answer = None;
    for _ in 0..40 {
        match tokio::time::timeout(Duration::from_millis(500), requester.request("logs.rpc.x", "ping-rs".into())).await
        {
            Ok(Ok(m)) => {
                answer = Some(m);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let answer = answer.expect("async-nats request through the proxy answered");
    assert_eq!(&answer.payload[..], b"pong:ping-rs");
    let seen = seen.lock().unwrap().clone();
    let (subject, reply) = seen.first().cloned().expect("the responder saw the request");
    assert_eq!(subject, "logs.rpc.x");
    let reply = reply.expect("with a reply subject");
    assert!(
        !reply.contains("acmereq") && !reply.contains("_FLOTILLA"),
        "the responder sees a per-connection alias, not the requester's inbox nor the upstream subject: {reply}"
    );
    rpc_check(check, "ping-rs").await;
}

// ---------------------------------------------------------------------------
// What each client does with a server `-ERR` (against a fake server), and
// whether a slow tenant consumer is told in a way every client shows.

/// The wording recommended for telling a slow tenant consumer that messages
/// were dropped: every client shows it and none closes.
const DROP_NOTICE: &str = "Permissions Violation: Slow Consumer, 42 messages dropped on \"probe\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_err_permissions_violation_without_a_subject_is_shown_and_kept_by_all() {
    let py = probe_script(Lang::Py, DROP_NOTICE).await;
    assert!(py.connected && py.got_after, "nats.py: {py:?}");
    assert_eq!(py.shown, [format!("nats: {}", DROP_NOTICE.to_lowercase())], "nats.py error_cb (lower-cased)");

    let js = probe_script(Lang::Js, DROP_NOTICE).await;
    assert!(js.connected && js.got_after && !js.sub_closed, "nats.js: {js:?}");
    assert_eq!(js.shown, ["error PERMISSIONS_VIOLATION null"], "nats.js status(): the code, no context");

    let go = probe_script(Lang::Go, DROP_NOTICE).await;
    assert!(go.connected && go.got_after && !go.sub_closed, "nats.go: {go:?}");
    assert_eq!(go.shown, [format!("nats: {DROP_NOTICE}")], "nats.go error handler");

    let rs = probe_async_nats(DROP_NOTICE).await;
    assert!(rs.connected && rs.got_after, "async-nats: {rs:?}");
    assert_eq!(rs.shown, [format!("ServerError(Other({DROP_NOTICE:?}))")], "async-nats Event::ServerError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_err_other_texts_close_nats_py_and_nats_go() {
    let text = "Slow Consumer: 42 messages dropped";
    let py = probe_script(Lang::Py, text).await;
    assert!(!py.connected, "nats.py closes the connection on any -ERR but permissions violations: {py:?}");
    let go = probe_script(Lang::Go, text).await;
    assert!(!go.connected && !go.got_after, "so does nats.go (the `nats` CLI's client): {go:?}");

    let js = probe_script(Lang::Js, text).await;
    assert!(js.connected && js.got_after, "nats.js keeps the connection: {js:?}");
    assert_eq!(js.shown, ["error NATS_PROTOCOL_ERR null"], "nats.js shows only the code");

    let rs = probe_async_nats(text).await;
    assert!(rs.connected && rs.got_after, "async-nats keeps the connection: {rs:?}");
    assert_eq!(rs.shown, [format!("ServerError(Other({text:?}))")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_err_subscription_violation_naming_a_live_subscription_closes_it_in_nats_js() {
    let text = "Permissions Violation for Subscription to \"probe\"";
    let js = probe_script(Lang::Js, text).await;
    assert!(js.connected, "nats.js keeps the connection: {js:?}");
    assert!(js.sub_closed && !js.got_after, "…but closes the subscription the text names: {js:?}");
    assert_eq!(js.shown, [r#"error PERMISSIONS_VIOLATION {"operation":"subscription","subject":"probe"}"#]);

    let py = probe_script(Lang::Py, text).await;
    assert!(py.connected && py.got_after, "nats.py: {py:?}");
    let go = probe_script(Lang::Go, text).await;
    assert!(go.connected && go.got_after && !go.sub_closed, "nats.go: {go:?}");
    let rs = probe_async_nats(text).await;
    assert!(rs.connected && rs.got_after, "async-nats: {rs:?}");
}

/// A slow tenant consumer's drops are counted, it stays connected, and it is
/// told with an `-ERR` (mentioning "slow") that nats.py, nats.js, nats.go
/// and async-nats all show without closing the connection or the
/// subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_tenant_consumer_is_told_in_a_way_every_client_shows_without_closing() {
    // It reads nothing for a while: not long enough to be closed.
    let s = stack_with(Extra { top: "client_queue = 16\nwrite_deadline = \"5m\"", ..Default::default() }).await;
    let direct = s.direct().await;
    let mut raw = s.raw_as("acme", &s.acme).await;
    raw.send("SUB logs.> 1\r\n").await;
    prime_raw(&direct, "logs.acme.web.iad.h1", &mut raw, Some("1")).await;
    let _ = raw.drain(Duration::from_millis(200)).await;

    // Stop reading while 24 MiB arrive for this client.
    let total = 3000u64;
    let body = bytes::Bytes::from(vec![b'x'; 8192]);
    for _ in 0..total {
        direct.publish("logs.acme.web.iad.h1", body.clone()).await.unwrap();
    }
    direct.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let frames = raw.drain(Duration::from_secs(2)).await;
    assert!(!frames.contains(&Frame::Eof), "with slow_consumer = drop the client stays connected");
    let delivered = frames.iter().filter(|f| matches!(f, Frame::Msg { .. })).count() as u64;
    let drops = s.metric("flotilla_proxy_slow_consumer_drops_total{org=\"acme\"}").await.unwrap_or(0.0) as u64;
    assert!(drops > 0 && delivered < total, "the client's queue overflowed: {delivered} delivered, {drops} dropped");
    assert_eq!(delivered + drops, total, "every message is either delivered or counted as dropped");
    assert_eq!(raw.sync().await, vec![], "still answers PING");

    let notices = errors(&frames);
    let notice = notices
        .iter()
        .find(|e| e.to_lowercase().contains("slow"))
        .unwrap_or_else(|| panic!("the slow client was told about the drops: -ERRs {notices:?}"));
    let text = notice.trim_matches('\'').to_string();
    let py = probe_script(Lang::Py, &text).await;
    assert!(py.connected && !py.shown.is_empty(), "nats.py shows {text:?} and stays connected: {py:?}");
    let js = probe_script(Lang::Js, &text).await;
    assert!(
        js.connected && !js.sub_closed && js.got_after && !js.shown.is_empty(),
        "nats.js shows {text:?} and keeps connection and subscription: {js:?}"
    );
    let go = probe_script(Lang::Go, &text).await;
    assert!(
        go.connected && !go.sub_closed && go.got_after && !go.shown.is_empty(),
        "nats.go shows {text:?} and keeps connection and subscription: {go:?}"
    );
    let rs = probe_async_nats(&text).await;
    assert!(rs.connected && !rs.shown.is_empty(), "async-nats shows {text:?} and stays connected: {rs:?}");
}
