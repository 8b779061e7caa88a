//! External sinks (`http`, `file`) against a real nats-server and a local
//! HTTP destination: retries that honour 429 and `Retry-After`, nothing
//! acked before it is delivered, the dead-letter stream for a destination
//! that never recovers (without slowing another sink), and filters.

use std::collections::VecDeque;
use std::io::Read as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::Utc;
use tokio::time::Instant;

use flotilla_core::event::LogEvent;
use flotilla_shipper::Config;
use flotilla_testsupport::NatsServer;

mod common;
use common::*;

async fn dlq_count(js: &jetstream::Context) -> u64 {
    match js.get_stream("FLOTILLA_DLQ").await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Publish and wait for every ack.
async fn publish_all(js: &jetstream::Context, msgs: &[(String, Vec<u8>)]) {
    let mut acks = Vec::with_capacity(msgs.len());
    for (subject, payload) in msgs {
        acks.push(js.publish(subject.clone(), payload.clone().into()).await.expect("publish"));
    }
    for ack in acks {
        ack.await.expect("publish ack");
    }
}

fn event(org: &str, app: &str, level: &str, i: u64) -> (String, Vec<u8>) {
    let ev = LogEvent {
        ts: Utc::now(),
        org: org.into(),
        app: app.into(),
        region: "iad".into(),
        host: "h1".into(),
        source: "file:/var/log/app.log".into(),
        level: level.into(),
        message: format!("event {i} from {org}/{app}"),
        fields: [("i".to_string(), serde_json::json!(i))].into_iter().collect(),
        seq: i,
    };
    (format!("logs.{org}.{app}.iad.h1"), ev.to_json())
}

fn sorted_payloads(msgs: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut v: Vec<String> = msgs.iter().map(|(_, p)| String::from_utf8(p.clone()).expect("utf8")).collect();
    v.sort();
    v
}

/// An HTTP destination on 127.0.0.1:0 answering from a script, then with
/// `fallback`; it records every request and the NDJSON lines it accepted.
#[derive(Clone)]
struct Destination {
    url: String,
    state: Arc<DestState>,
}

struct DestState {
    /// (status, Retry-After) answered first, in order.
    script: Mutex<VecDeque<(u16, Option<&'static str>)>>,
    fallback: u16,
    delay: Duration,
    requests: Mutex<Vec<(Instant, HeaderMap)>>,
    accepted: Mutex<Vec<String>>,
}

impl Destination {
    async fn start(script: &[(u16, Option<&'static str>)], fallback: u16, delay: Duration) -> Destination {
        let state = Arc::new(DestState {
            script: Mutex::new(script.iter().copied().collect()),
            fallback,
            delay,
            requests: Mutex::new(Vec::new()),
            accepted: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new().route("/ingest", axum::routing::post(receive)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Destination { url: format!("http://{addr}/ingest"), state }
    }

    fn requests(&self) -> Vec<(Instant, HeaderMap)> {
        self.state.requests.lock().expect("lock").clone()
    }

    fn accepted(&self) -> Vec<String> {
        let mut v = self.state.accepted.lock().expect("lock").clone();
        v.sort();
        v
    }
}

async fn receive(State(state): State<Arc<DestState>>, headers: HeaderMap, body: Bytes) -> Response {
    state.requests.lock().expect("lock").push((Instant::now(), headers.clone()));
    tokio::time::sleep(state.delay).await;
    let (status, retry_after) = state.script.lock().expect("lock").pop_front().unwrap_or((state.fallback, None));
    if status == 200 {
        let mut text = String::new();
        if headers.get("content-encoding").map(|v| v.as_bytes()) == Some(b"gzip") {
            flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text).expect("gzip body");
        } else {
            text = String::from_utf8(body.to_vec()).expect("utf8 body");
        }
        assert!(text.ends_with('\n'), "NDJSON ends with a newline");
        state.accepted.lock().expect("lock").extend(text.lines().map(str::to_string));
    }
    let mut resp = Response::builder().status(StatusCode::from_u16(status).expect("status"));
    if let Some(ra) = retry_after {
        resp = resp.header("retry-after", ra);
    }
    resp.body(Body::from(format!("status {status}"))).expect("response")
}

fn file_lines(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_retries_429_and_500_then_delivers_every_event_once() {
    let nats = NatsServer::start();
    let dest = Destination::start(&[(429, Some("1")), (500, None), (503, None)], 200, Duration::ZERO).await;
    let shipper = Shipper::start(config(
        &nats.url(),
        &format!(
            r#"
[[sinks]]
name = "http"
type = "http"
url = "{}"
batch_max_events = 1000
batch_max_age = "300ms"
retry_initial_backoff = "50ms"
retry_max_backoff = "200ms"
max_attempts = 10
compression = "gzip"
headers = {{ X-Team = "core" }}
auth = {{ strategy = "bearer", token = "s3cret" }}
"#,
            dest.url
        ),
    ));
    let js = jetstream(&nats.url()).await;
    let msgs: Vec<_> = (1..=300).map(|i| event("acme", "web", "info", i)).collect();
    publish_all(&js, &msgs).await;

    // The 429 asks for a second's wait: meanwhile nothing is acked.
    wait_for("the first request", Duration::from_secs(30), || async { !dest.requests().is_empty() }).await;
    let (_, ack_pending) = backlog(&js, "http").await.expect("consumer");
    assert!(ack_pending > 0, "messages were acked before the destination accepted them");
    assert!(dest.accepted().is_empty());
    assert_eq!(shipper.counter("flotilla_shipper_events_committed_total", "http"), 0);

    wait_for("every event delivered and acked", Duration::from_secs(60), || async {
        dest.accepted().len() >= 300 && backlog(&js, "http").await == Some((0, 0))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dest.accepted(), sorted_payloads(&msgs), "every event exactly once, as sent");

    let requests = dest.requests();
    assert!(
        requests[1].0 - requests[0].0 >= Duration::from_millis(950),
        "Retry-After: 1 not honoured ({:?})",
        requests[1].0 - requests[0].0
    );
    let h = &requests[0].1;
    assert_eq!(h.get("authorization").map(|v| v.as_bytes()), Some(&b"Bearer s3cret"[..]));
    assert_eq!(h.get("x-team").map(|v| v.as_bytes()), Some(&b"core"[..]));
    assert_eq!(h.get("content-type").map(|v| v.as_bytes()), Some(&b"application/x-ndjson"[..]));
    assert_eq!(shipper.counter("flotilla_shipper_retries_total", "http"), 3);
    assert_eq!(shipper.counter("flotilla_shipper_dlq_total", "http"), 0);
    assert_eq!(shipper.counter("flotilla_shipper_events_committed_total", "http"), 300);
    assert_eq!(dlq_count(&js).await, 0);
    shipper.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_destination_fills_the_dlq_while_a_file_sink_keeps_pace() {
    let nats = NatsServer::start();
    // Every answer is a 500 after 300 ms: 10 batches × 3 attempts ≥ 9 s.
    let dest = Destination::start(&[], 500, Duration::from_millis(300)).await;
    let out = tempfile::tempdir().expect("temp dir");
    let copy = out.path().join("sub/events.ndjson");
    let shipper = Shipper::start(config(
        &nats.url(),
        &format!(
            r#"
[[sinks]]
name = "dead"
type = "http"
url = "{}"
batch_max_events = 20
batch_max_age = "100ms"
max_attempts = 3
retry_initial_backoff = "10ms"
retry_max_backoff = "20ms"
circuit_breaker = {{ cooldown = "10ms", max_cooldown = "20ms" }}
[[sinks]]
name = "copy"
type = "file"
url = "file://{}"
batch_max_events = 20
batch_max_age = "100ms"
"#,
            dest.url,
            copy.display()
        ),
    ));
    let js = jetstream(&nats.url()).await;
    let mut msgs: Vec<_> = (1..=200).map(|i| event("acme", ["web", "api"][i as usize % 2], "info", i)).collect();
    // Not JSON: dead-lettered as it was published; NDJSON wraps it.
    msgs[7] = ("logs.acme.web.iad.h1".into(), b"plain text".to_vec());
    publish_all(&js, &msgs).await;

    wait_for("the file sink has every event", Duration::from_secs(30), || async {
        file_lines(&copy).len() >= 200 && backlog(&js, "copy").await == Some((0, 0))
    })
    .await;
    let dead_so_far = dlq_count(&js).await;
    assert!(dead_so_far < 200, "the file sink waited for the dead destination ({dead_so_far} dead letters already)");
    let mut want = sorted_payloads(&msgs);
    want.retain(|l| l != "plain text");
    want.push(r#"{"message":"plain text","subject":"logs.acme.web.iad.h1"}"#.into());
    want.sort();
    assert_eq!(file_lines(&copy), want);

    wait_for("every event dead-lettered", Duration::from_secs(90), || async { dlq_count(&js).await >= 200 }).await;
    wait_for("the dead sink acked everything", Duration::from_secs(30), || async {
        backlog(&js, "dead").await == Some((0, 0))
    })
    .await;
    assert_eq!(dlq_count(&js).await, 200);
    assert_eq!(dest.requests().len(), 30, "3 attempts for each of 10 batches");
    assert_eq!(shipper.counter("flotilla_shipper_dlq_total", "dead"), 200);
    assert_eq!(shipper.counter("flotilla_shipper_retries_total", "dead"), 20);
    assert_eq!(shipper.counter("flotilla_shipper_events_committed_total", "dead"), 0);
    // Pausing never dead-letters by itself: every batch still had its 3 attempts.
    assert!(shipper.counter("flotilla_shipper_circuit_opened_total", "dead") >= 1);

    let dlq = js.get_stream("FLOTILLA_DLQ").await.expect("dlq stream");
    let mut seen = Vec::new();
    for seq in 1..=200 {
        let m = dlq.get_raw_message(seq).await.expect("dead letter");
        assert_eq!(m.subject.as_str(), "flotilla.dlq.dead");
        let header = |k: &str| m.headers.get(k).map(|v| v.as_str().to_string()).unwrap_or_default();
        assert_eq!(header("Flotilla-Sink"), "dead");
        let error = header("Flotilla-Error");
        assert!(error.contains("after 3 attempt(s)") && error.contains("500"), "{error}");
        let (subject, payload) = &msgs[header("Flotilla-Stream-Seq").parse::<usize>().expect("seq") - 1];
        assert_eq!(&header("Flotilla-Subject"), subject);
        assert_eq!(&m.payload[..], &payload[..]);
        seen.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    seen.sort();
    assert_eq!(seen, sorted_payloads(&msgs));
    shipper.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_ack_what_they_leave_out() {
    let nats = NatsServer::start();
    let dest = Destination::start(&[], 200, Duration::ZERO).await;
    let out = tempfile::tempdir().expect("temp dir");
    let web = out.path().join("web.ndjson");
    let shipper = Shipper::start(config(
        &nats.url(),
        &format!(
            r#"
[[sinks]]
name = "errors"
type = "http"
url = "{}"
batch_max_age = "100ms"
filter = {{ orgs = ["acme"], levels = ["ERROR"] }}
[[sinks]]
name = "web"
type = "file"
url = "file://{}"
batch_max_age = "100ms"
filter = {{ apps = ["web"] }}
"#,
            dest.url,
            web.display()
        ),
    ));
    let js = jetstream(&nats.url()).await;
    let mut msgs = Vec::new();
    for org in ["acme", "globex"] {
        for app in ["web", "api"] {
            for level in ["info", "error"] {
                for _ in 0..5 {
                    msgs.push(event(org, app, level, msgs.len() as u64 + 1));
                }
            }
        }
    }
    publish_all(&js, &msgs).await;
    wait_for("both consumers drained", Duration::from_secs(30), || async {
        backlog(&js, "errors").await == Some((0, 0)) && backlog(&js, "web").await == Some((0, 0))
    })
    .await;
    let keep = |f: &dyn Fn(&str) -> bool| {
        let kept: Vec<_> = msgs.iter().filter(|(s, _)| f(s)).cloned().collect();
        sorted_payloads(&kept)
    };
    let acme_errors: Vec<String> =
        keep(&|s| s.starts_with("logs.acme.")).into_iter().filter(|p| p.contains(r#""level":"error""#)).collect();
    assert_eq!(acme_errors.len(), 10);
    assert_eq!(dest.accepted(), acme_errors);
    assert_eq!(file_lines(&web), keep(&|s| s.split('.').nth(2) == Some("web")));
    assert_eq!(shipper.counter("flotilla_shipper_events_filtered_total", "errors"), 30);
    assert_eq!(shipper.counter("flotilla_shipper_events_filtered_total", "web"), 20);
    assert_eq!(shipper.counter("flotilla_shipper_events_committed_total", "web"), 20);
    shipper.stop().await;
}

#[test]
fn external_sink_options_are_validated() {
    let parse = |sinks: &str| {
        let text = format!("[nats]\nurl = \"nats://127.0.0.1:4222\"\n{sinks}");
        match flotilla_core::config::parse::<Config>(&text, |_| None) {
            Ok(_) => vec![],
            Err(problems) => problems.into_iter().map(|p| p.path).collect::<Vec<_>>(),
        }
    };
    assert!(parse("[[sinks]]\nname = \"o\"\ntype = \"stdout\"\n").is_empty());
    assert!(parse(
        "[[sinks]]\nname = \"h\"\ntype = \"http\"\nurl = \"https://logs.example.com/in\"\ncompression = \"gzip\"\n\
         auth = { strategy = \"basic\", user = \"u\", password = \"p\" }\nrate_limit = { events_per_sec = 100 }\n"
    )
    .is_empty());
    assert_eq!(
        parse(
            "[[sinks]]\nname = \"h\"\ntype = \"http\"\nurl = \"ftp://x\"\ncompression = \"zip\"\ntimeout = \"0s\"\n\
             max_attempts = 0\nretry_initial_backoff = \"1m\"\nretry_max_backoff = \"1s\"\n\
             headers = { \"bad header\" = \"x\" }\nauth = { strategy = \"bearer\", token = \"\" }\n\
             rate_limit = { bytes_per_sec = 0 }\n\
             [[sinks]]\nname = \"f\"\ntype = \"file\"\nurl = \"relative.ndjson\"\ncompression = \"gzip\"\n\
             filter = { orgs = [\"\"] }\n"
        ),
        [
            "sinks[0].url",
            "sinks[0].compression",
            "sinks[0].headers.bad header",
            "sinks[0].auth.token",
            "sinks[0].timeout",
            "sinks[0].max_attempts",
            "sinks[0].retry_max_backoff",
            "sinks[0].rate_limit.bytes_per_sec",
            "sinks[1].url",
            "sinks[1].compression",
            "sinks[1].filter.orgs",
        ]
    );
    // Unknown keys in the new tables are rejected too.
    let text = "[nats]\nurl = \"nats://x\"\n[[sinks]]\nname = \"o\"\ntype = \"stdout\"\nfilter = { org = [\"a\"] }\n";
    let problems = flotilla_core::config::parse::<Config>(text, |_| None).expect_err("rejected");
    assert!(problems[0].message.contains("unknown field `org`"), "{problems:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_pauses_sends_to_a_failing_destination_then_closes() {
    let nats = NatsServer::start();
    let dest = Destination::start(&[(503, None); 5], 200, Duration::ZERO).await;
    let shipper = Shipper::start(config(
        &nats.url(),
        &format!(
            r#"
[[sinks]]
name = "http"
type = "http"
url = "{}"
batch_max_events = 1000
batch_max_age = "100ms"
retry_initial_backoff = "10ms"
retry_max_backoff = "20ms"
max_attempts = 10
circuit_breaker = {{ failures = 2, cooldown = "200ms", max_cooldown = "800ms" }}
"#,
            dest.url
        ),
    ));
    let js = jetstream(&nats.url()).await;
    let msgs: Vec<_> = (1..=100).map(|i| event("acme", "web", "info", i)).collect();
    publish_all(&js, &msgs).await;

    wait_for("the third request", Duration::from_secs(30), || async { dest.requests().len() >= 3 }).await;
    let open = shipper.registry.gauge("flotilla_shipper_circuit_open", "", &[("sink", "http")]);
    assert_eq!(open.get(), 1, "the breaker should be open after failures in a row");
    wait_for("every event delivered and acked", Duration::from_secs(30), || async {
        dest.accepted().len() >= 100 && backlog(&js, "http").await == Some((0, 0))
    })
    .await;
    assert_eq!(dest.accepted(), sorted_payloads(&msgs));
    assert_eq!(open.get(), 0, "a success closes the breaker");
    assert_eq!(shipper.counter("flotilla_shipper_circuit_opened_total", "http"), 1);
    assert_eq!(shipper.counter("flotilla_shipper_dlq_total", "http"), 0);

    // Retries alone would follow 10-20 ms apart; once the breaker is open
    // (after the 2nd failure) the pauses are its cooldowns, doubling to the cap.
    let at: Vec<Instant> = dest.requests().iter().map(|(t, _)| *t).collect();
    assert_eq!(at.len(), 6, "5 failures, then the success");
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, min_ms) in gaps[1..].iter().zip([200, 400, 800, 800]) {
        assert!(*gap >= Duration::from_millis(min_ms - 10), "gaps {gaps:?}: want at least {min_ms} ms");
    }
    shipper.stop().await;
}
