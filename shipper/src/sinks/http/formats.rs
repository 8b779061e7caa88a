//! Request bodies of the vendor sinks sent over the `http` delivery:
//! Loki's push API, Elasticsearch's bulk API and Datadog's logs intake.
//! Pure functions over (subject, payload, store time).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::encode;

/// One event to encode.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub subject: &'a str,
    pub payload: &'a [u8],
    /// When JetStream stored it: the timestamp of an event without `ts`.
    pub stored: DateTime<Utc>,
}

/// The labels of an event: its payload's fields, else the subject's
/// tokens `logs.<org>.<app>.<region>.<host>`; `level` defaults to `unknown`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Labels {
    pub org: String,
    pub app: String,
    pub region: String,
    pub host: String,
    pub level: String,
}

/// What the encoders read of an event.
struct Parsed {
    labels: Labels,
    ts: DateTime<Utc>,
    message: String,
    /// The event's JSON on one line (no newline).
    line: String,
}

fn parse(item: &Item<'_>) -> Parsed {
    let value: Option<Value> = serde_json::from_slice(item.payload).ok();
    let obj = value.as_ref().and_then(Value::as_object);
    let field = |k: &str| obj.and_then(|o| o.get(k)).and_then(Value::as_str).map(str::to_string);
    let tokens: Vec<&str> = item.subject.split('.').collect();
    let token = |i: usize| tokens.get(i).copied().unwrap_or("").to_string();
    let labels = Labels {
        org: field("org").unwrap_or_else(|| token(1)),
        app: field("app").unwrap_or_else(|| token(2)),
        region: field("region").unwrap_or_else(|| token(3)),
        host: field("host").unwrap_or_else(|| token(4)),
        level: field("level").unwrap_or_else(|| "unknown".into()),
    };
    let ts = field("ts")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(item.stored);
    let mut line = Vec::with_capacity(item.payload.len() + 1);
    encode::line(item.subject, item.payload, &mut line);
    line.pop();
    let line = String::from_utf8_lossy(&line).into_owned();
    let message = match obj {
        Some(_) => field("message").unwrap_or_else(|| line.clone()),
        None => String::from_utf8_lossy(item.payload).into_owned(),
    };
    Parsed { labels, ts, message, line }
}

/// Loki push body: one stream per label set (in order of first
/// appearance), values `[unix nanos as a string, event JSON]`.
pub fn loki(items: &[Item<'_>]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Stream {
        stream: Labels,
        values: Vec<[String; 2]>,
    }
    #[derive(Serialize)]
    struct Push {
        streams: Vec<Stream>,
    }
    let mut streams: Vec<Stream> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for item in items {
        let p = parse(item);
        let nanos = p.ts.timestamp_nanos_opt().unwrap_or_else(|| item.stored.timestamp_nanos_opt().unwrap_or(0));
        let value = [nanos.to_string(), p.line];
        match index.get(&p.labels) {
            Some(&i) => streams[i].values.push(value),
            None => {
                index.insert(p.labels.clone(), streams.len());
                streams.push(Stream { stream: p.labels, values: vec![value] });
            }
        }
    }
    serde_json::to_vec(&Push { streams }).unwrap_or_default()
}

/// Elasticsearch bulk body: `{"create":{"_index":…}}` then the event, per
/// event, each on its own line.
pub fn elasticsearch(items: &[Item<'_>], index: &str) -> Vec<u8> {
    let action = serde_json::json!({ "create": { "_index": index } }).to_string();
    let mut out = Vec::with_capacity(items.iter().map(|i| i.payload.len() + action.len() + 2).sum());
    for item in items {
        out.extend_from_slice(action.as_bytes());
        out.push(b'\n');
        encode::line(item.subject, item.payload, &mut out);
    }
    out
}

/// Whether a 2xx bulk response reports failed items (`"errors": true`).
pub fn bulk_has_errors(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("errors").and_then(Value::as_bool)).unwrap_or(false)
}

/// A short description of the first failed item of a bulk response.
pub fn bulk_first_error(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v.get("items")
        .and_then(Value::as_array)
        .and_then(|items| items.iter().filter_map(|i| i.as_object()?.values().next()?.get("error").cloned()).next())
        .map(|e| e.to_string().chars().take(200).collect())
        .unwrap_or_default()
}

/// Datadog logs intake body: a JSON array of log entries.
pub fn datadog(items: &[Item<'_>]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Entry {
        ddsource: &'static str,
        ddtags: String,
        hostname: String,
        service: String,
        message: String,
        status: String,
    }
    let entries: Vec<Entry> = items
        .iter()
        .map(|item| {
            let p = parse(item);
            let l = p.labels;
            Entry {
                ddsource: "flotilla",
                ddtags: format!("org:{},app:{},region:{}", l.org, l.app, l.region),
                hostname: l.host,
                service: l.app,
                message: p.message,
                status: l.level,
            }
        })
        .collect();
    serde_json::to_vec(&entries).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(1_700_000_000_000_000_007)
    }

    fn item<'a>(subject: &'a str, payload: &'a str) -> Item<'a> {
        Item { subject, payload: payload.as_bytes(), stored: stored() }
    }

    const A1: &str = r#"{"ts":"2024-01-02T03:04:05.123456789Z","org":"acme","app":"web","region":"iad","host":"h1","source":"f","level":"info","message":"one"}"#;
    const A2: &str = r#"{"ts":"2024-01-02T03:04:06Z","org":"acme","app":"web","region":"iad","host":"h1","source":"f","level":"info","message":"two"}"#;
    const B1: &str = r#"{"ts":"2024-01-02T03:04:07Z","org":"acme","app":"web","region":"iad","host":"h1","source":"f","level":"error","message":"three"}"#;

    #[test]
    fn loki_groups_by_label_set() {
        let items = [
            item("logs.acme.web.iad.h1", A1),
            item("logs.acme.web.iad.h1", B1),
            item("logs.acme.web.iad.h1", A2),
            item("logs.globex.api.fra.h9", "plain text"),
        ];
        let body = String::from_utf8(loki(&items)).unwrap();
        let a = r#"{"org":"acme","app":"web","region":"iad","host":"h1","level":"info"}"#;
        let b = r#"{"org":"acme","app":"web","region":"iad","host":"h1","level":"error"}"#;
        let c = r#"{"org":"globex","app":"api","region":"fra","host":"h9","level":"unknown"}"#;
        let q = |s: &str| serde_json::to_string(s).unwrap();
        let want = format!(
            r#"{{"streams":[{{"stream":{a},"values":[["1704164645123456789",{}],["1704164646000000000",{}]]}},{{"stream":{b},"values":[["1704164647000000000",{}]]}},{{"stream":{c},"values":[["1700000000000000007",{}]]}}]}}"#,
            q(A1),
            q(A2),
            q(B1),
            q(r#"{"message":"plain text","subject":"logs.globex.api.fra.h9"}"#),
        );
        assert_eq!(body, want);
    }

    #[test]
    fn elasticsearch_bulk_is_action_then_event() {
        let items = [item("logs.acme.web.iad.h1", A1), item("logs.acme.web.iad.h1", "{\n\"a\": 1\n}")];
        let body = String::from_utf8(elasticsearch(&items, "flotilla-logs")).unwrap();
        let action = r#"{"create":{"_index":"flotilla-logs"}}"#;
        assert_eq!(body, format!("{action}\n{A1}\n{action}\n{{\"a\":1}}\n"));
        assert!(bulk_has_errors(
            br#"{"took":1,"errors":true,"items":[{"create":{"status":400,"error":{"type":"x"}}}]}"#
        ));
        assert_eq!(
            bulk_first_error(
                br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"error":{"type":"x"}}}]}"#
            ),
            r#"{"type":"x"}"#
        );
        assert!(!bulk_has_errors(br#"{"took":1,"errors":false,"items":[]}"#));
        assert!(!bulk_has_errors(b"not json"));
    }

    #[test]
    fn datadog_entries() {
        let items = [item("logs.acme.web.iad.h1", B1), item("logs.globex.api.fra.h9", "plain text")];
        let body = String::from_utf8(datadog(&items)).unwrap();
        assert_eq!(
            body,
            concat!(
                r#"[{"ddsource":"flotilla","ddtags":"org:acme,app:web,region:iad","hostname":"h1","service":"web","message":"three","status":"error"},"#,
                r#"{"ddsource":"flotilla","ddtags":"org:globex,app:api,region:fra","hostname":"h9","service":"api","message":"plain text","status":"unknown"}]"#
            )
        );
    }
}
