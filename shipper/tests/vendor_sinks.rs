//! `loki`, `elasticsearch` and `datadog_logs` sinks against a real
//! nats-server and a local HTTP destination that parses what it receives;
//! the consumer lag gauge and the commit latency summary.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::Value;

use flotilla_core::event::LogEvent;
use flotilla_shipper::Config;
use flotilla_testsupport::NatsServer;

mod common;
use common::*;

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
        ts: DateTime::from_timestamp(1_700_000_000 + i as i64, 0).expect("ts"),
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

fn events() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for (org, app, level) in [("acme", "web", "info"), ("acme", "web", "error"), ("globex", "api", "info")] {
        for _ in 0..4 {
            v.push(event(org, app, level, v.len() as u64 + 1));
        }
    }
    v
}

/// Records every request (path, headers, body); answers 200 with the
/// scripted bodies first, then `{"errors":false}`.
#[derive(Clone)]
struct Destination {
    base: String,
    state: Arc<DestState>,
}

struct DestState {
    script: Mutex<VecDeque<&'static str>>,
    requests: Mutex<Vec<(String, HeaderMap, Vec<u8>)>>,
}

impl Destination {
    async fn start(script: &[&'static str]) -> Destination {
        let state = Arc::new(DestState {
            script: Mutex::new(script.iter().copied().collect()),
            requests: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new().fallback(receive).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Destination { base: format!("http://{addr}"), state }
    }

    fn requests(&self) -> Vec<(String, HeaderMap, Vec<u8>)> {
        self.state.requests.lock().expect("lock").clone()
    }
}

async fn receive(State(state): State<Arc<DestState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    state.requests.lock().expect("lock").push((uri.path().to_string(), headers, body.to_vec()));
    let answer = state.script.lock().expect("lock").pop_front().unwrap_or(r#"{"errors":false,"items":[]}"#);
    Response::builder().status(200).body(Body::from(answer)).expect("response")
}

fn header<'a>(h: &'a HeaderMap, k: &str) -> &'a str {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Start a shipper with one sink of `kind`, publish [`events`], wait
/// until they are acked; the destination's requests.
async fn ship(kind: &str, url_path: &str, extra: &str, script: &[&'static str]) -> Vec<(String, HeaderMap, Vec<u8>)> {
    let nats = NatsServer::start();
    let dest = Destination::start(script).await;
    let shipper = Shipper::start(config(
        &nats.url(),
        &format!(
            "[[sinks]]\nname = \"out\"\ntype = \"{kind}\"\nurl = \"{}{url_path}\"\nbatch_max_events = 100\n\
             batch_max_age = \"300ms\"\nretry_initial_backoff = \"50ms\"\nretry_max_backoff = \"100ms\"\n{extra}",
            dest.base
        ),
    ));
    let js = jetstream(&nats.url()).await;
    publish_all(&js, &events()).await;
    wait_for("every event acked", Duration::from_secs(30), || async {
        shipper.counter("flotilla_shipper_events_committed_total", "out") == 12
            && backlog(&js, "out").await == Some((0, 0))
    })
    .await;
    assert_eq!(shipper.counter("flotilla_shipper_dlq_total", "out"), 0);
    shipper.stop().await;
    dest.requests()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_receives_streams_grouped_by_labels() {
    let requests = ship("loki", "/loki/api/v1/push", "", &[]).await;
    let mut got: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for (path, headers, body) in &requests {
        assert_eq!(path, "/loki/api/v1/push");
        assert_eq!(header(headers, "content-type"), "application/json");
        let push: Value = serde_json::from_slice(body).expect("push JSON");
        for s in push["streams"].as_array().expect("streams") {
            let key = s["stream"].to_string();
            for v in s["values"].as_array().expect("values") {
                let line: Value = serde_json::from_str(v[1].as_str().expect("line")).expect("line is JSON");
                got.entry(key.clone()).or_default().push((v[0].as_str().expect("ts").to_string(), line));
            }
        }
    }
    let mut want: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for (_, p) in events() {
        let ev: Value = serde_json::from_slice(&p).expect("event");
        let labels = serde_json::json!({
            "org": ev["org"], "app": ev["app"], "region": "iad", "host": "h1", "level": ev["level"],
        });
        let ts: DateTime<Utc> = ev["ts"].as_str().expect("ts").parse().expect("rfc3339");
        let nanos = ts.timestamp_nanos_opt().expect("nanos").to_string();
        want.entry(labels.to_string()).or_default().push((nanos, ev));
    }
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_bulk_retries_errors_true_then_indexes() {
    let failed = r#"{"took":1,"errors":true,"items":[{"create":{"status":429,"error":{"type":"es_rejected_execution_exception"}}}]}"#;
    let requests = ship("elasticsearch", "/", "index = \"app-logs\"\ncompression = \"gzip\"\n", &[failed]).await;
    assert!(requests.len() >= 2, "the errors:true answer was not retried");
    let mut docs = Vec::new();
    for (i, (path, headers, body)) in requests.iter().enumerate() {
        assert_eq!(path, "/_bulk");
        assert_eq!(header(headers, "content-type"), "application/x-ndjson");
        assert_eq!(header(headers, "content-encoding"), "gzip");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text).expect("gzip");
        let lines: Vec<&str> = text.lines().collect();
        assert!(text.ends_with('\n') && lines.len().is_multiple_of(2));
        for pair in lines.chunks(2) {
            let action: Value = serde_json::from_str(pair[0]).expect("action");
            assert_eq!(action, serde_json::json!({"create": {"_index": "app-logs"}}));
            if i > 0 {
                docs.push(pair[1].to_string());
            }
        }
    }
    docs.sort();
    let mut want: Vec<String> = events().into_iter().map(|(_, p)| String::from_utf8(p).expect("utf8")).collect();
    want.sort();
    assert_eq!(docs, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datadog_receives_entries_with_the_api_key() {
    let requests = ship("datadog_logs", "/api/v2/logs", "api_key = \"dd-secret\"\n", &[]).await;
    let mut got = Vec::new();
    for (path, headers, body) in &requests {
        assert_eq!(path, "/api/v2/logs");
        assert_eq!(header(headers, "dd-api-key"), "dd-secret");
        assert_eq!(header(headers, "content-type"), "application/json");
        let entries: Vec<Value> = serde_json::from_slice(body).expect("JSON array");
        got.extend(entries);
    }
    let mut want: Vec<Value> = events()
        .into_iter()
        .map(|(_, p)| {
            let ev: Value = serde_json::from_slice(&p).expect("event");
            serde_json::json!({
                "ddsource": "flotilla",
                "ddtags": format!("org:{},app:{},region:iad", ev["org"].as_str().unwrap_or(""), ev["app"].as_str().unwrap_or("")),
                "hostname": "h1",
                "service": ev["app"],
                "message": ev["message"],
                "status": ev["level"],
            })
        })
        .collect();
    let key = |v: &Value| v["message"].as_str().unwrap_or("").to_string();
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_gauge_returns_to_zero_and_commit_latency_is_counted() {
    let nats = NatsServer::start();
    let out = tempfile::tempdir().expect("temp dir");
    let shipper = Shipper::start(config(
        &nats.url(),
        &format!(
            "[[sinks]]\nname = \"copy\"\ntype = \"file\"\nurl = \"file://{}\"\nbatch_max_events = 50\n\
             batch_max_age = \"100ms\"\nrate_limit = {{ events_per_sec = 200 }}\n",
            out.path().join("events.ndjson").display()
        ),
    ));
    let js = jetstream(&nats.url()).await;
    let msgs: Vec<_> = (1..=1000).map(|i| event("acme", "web", "info", i)).collect();
    publish_all(&js, &msgs).await;
    // At 200 events/s the backlog lasts seconds: the gauge sees it.
    wait_for("a lag above zero", Duration::from_secs(10), || async {
        shipper.gauge("flotilla_shipper_consumer_pending", "copy") > 0
    })
    .await;
    wait_for("the lag back to zero", Duration::from_secs(60), || async {
        shipper.counter("flotilla_shipper_events_committed_total", "copy") == 1000
            && shipper.gauge("flotilla_shipper_consumer_pending", "copy") == 0
    })
    .await;
    let commits = shipper.registry.histogram(
        "flotilla_shipper_commit_seconds",
        "",
        &[("sink", "copy")],
        flotilla_core::metrics::LATENCY_BUCKETS,
    );
    let count = commits.count();
    assert!(count >= 20, "1000 events in batches of at most 50: {count} commits");
    assert!(commits.sum() > 0.0);
    let batches = shipper.registry.histogram(
        "flotilla_shipper_batch_events",
        "",
        &[("sink", "copy")],
        flotilla_core::metrics::SIZE_BUCKETS,
    );
    assert_eq!(batches.sum(), 1000.0, "every event in exactly one batch");
    assert!(batches.cumulative().iter().any(|(le, n)| *le == 50.0 && *n == batches.count()), "batches over 50 events");
    let text = shipper.registry.render();
    assert!(text.contains("# TYPE flotilla_shipper_consumer_pending gauge"), "{text}");
    assert!(text.contains("# TYPE flotilla_shipper_commit_seconds histogram"), "{text}");
    assert!(text.contains(&format!("flotilla_shipper_commit_seconds_count{{sink=\"copy\"}} {count}")), "{text}");
    assert!(text.contains("flotilla_shipper_commit_seconds_bucket{sink=\"copy\",le=\"+Inf\"}"), "{text}");
    shipper.stop().await;
}

#[test]
fn vendor_sink_options_are_validated() {
    let parse = |sinks: &str| {
        let text = format!("[nats]\nurl = \"nats://127.0.0.1:4222\"\n{sinks}");
        match flotilla_core::config::parse::<Config>(&text, |_| None) {
            Ok(_) => vec![],
            Err(problems) => problems.into_iter().map(|p| p.path).collect::<Vec<_>>(),
        }
    };
    assert!(parse(
        "[[sinks]]\nname = \"l\"\ntype = \"loki\"\nurl = \"http://loki:3100/loki/api/v1/push\"\ncompression = \"gzip\"\n\
         [[sinks]]\nname = \"e\"\ntype = \"elasticsearch\"\nurl = \"https://es:9200\"\nindex = \"logs-1\"\n\
         auth = { strategy = \"basic\", user = \"u\", password = \"p\" }\n\
         [[sinks]]\nname = \"d\"\ntype = \"datadog_logs\"\nurl = \"https://http-intake.logs.datadoghq.eu/api/v2/logs\"\napi_key = \"k\"\n"
    )
    .is_empty());
    assert_eq!(
        parse(
            "[[sinks]]\nname = \"l\"\ntype = \"loki\"\nurl = \"loki:3100\"\nindex = \"x\"\n\
             [[sinks]]\nname = \"e\"\ntype = \"elasticsearch\"\nurl = \"http://es:9200\"\nindex = \"Logs\"\n\
             [[sinks]]\nname = \"d\"\ntype = \"datadog_logs\"\nurl = \"https://dd\"\n\
             [[sinks]]\nname = \"h\"\ntype = \"http\"\nurl = \"https://h/x\"\napi_key = \"k\"\n"
        ),
        ["sinks[0].url", "sinks[0].index", "sinks[1].index", "sinks[2].api_key", "sinks[3].api_key"]
    );
}
