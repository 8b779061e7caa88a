//! The archive's rows: how a JetStream message becomes one, and their Arrow
//! schema.
//!
//! | column | type | from |
//! |---|---|---|
//! | `ts` | timestamp µs (or ns, by option), UTC | the event's `ts` (the store time for undecodable messages) |
//! | `org`, `app`, `region`, `host` | dictionary | the NATS subject `logs.<org>.<app>.<region>.<host>` |
//! | `level` | dictionary | the event (`unknown` for undecodable messages) |
//! | `source`, `message` | utf8 | the event (the lossy payload as `message` for undecodable ones) |
//! | `fields` | utf8, nullable | the event's fields as JSON text, null when empty |
//! | `seq` | uint64 | the agent's per-source sequence |
//! | `stream_seq` | uint64 | the JetStream stream sequence |

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, RecordBatch, StringArray, StringDictionaryBuilder, TimestampMicrosecondArray, TimestampNanosecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};

use flotilla_core::event::LogEvent;
use flotilla_core::subject::parse_log_subject;

/// Level of rows made from messages that are not log events.
pub const UNKNOWN_LEVEL: &str = "unknown";

/// The unit of the `ts` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TsUnit {
    /// Microseconds: what most query engines treat as their native timestamp.
    #[default]
    Micros,
    /// Nanoseconds: the event model's full precision (years 1677-2262).
    Nanos,
}

impl TsUnit {
    /// `us` or `ns` (the config's `timestamp_unit`).
    pub fn parse(s: &str) -> Option<TsUnit> {
        match s {
            "us" => Some(TsUnit::Micros),
            "ns" => Some(TsUnit::Nanos),
            _ => None,
        }
    }

    fn arrow(self) -> TimeUnit {
        match self {
            TsUnit::Micros => TimeUnit::Microsecond,
            TsUnit::Nanos => TimeUnit::Nanosecond,
        }
    }
}

fn build_schema(unit: TsUnit) -> SchemaRef {
    let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(unit.arrow(), Some("UTC".into())), false),
        Field::new("org", dict(), false),
        Field::new("app", dict(), false),
        Field::new("region", dict(), false),
        Field::new("host", dict(), false),
        Field::new("level", dict(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, false),
        Field::new("fields", DataType::Utf8, true),
        Field::new("seq", DataType::UInt64, false),
        Field::new("stream_seq", DataType::UInt64, false),
    ]))
}

static MICROS: LazyLock<SchemaRef> = LazyLock::new(|| build_schema(TsUnit::Micros));
static NANOS: LazyLock<SchemaRef> = LazyLock::new(|| build_schema(TsUnit::Nanos));

/// The Arrow schema of every archive object with `ts` in `unit`.
pub fn schema(unit: TsUnit) -> SchemaRef {
    match unit {
        TsUnit::Micros => MICROS.clone(),
        TsUnit::Nanos => NANOS.clone(),
    }
}

/// One archived event.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub ts: DateTime<Utc>,
    pub org: String,
    pub app: String,
    pub region: String,
    pub host: String,
    pub level: String,
    pub source: String,
    pub message: String,
    pub fields: Option<String>,
    pub seq: u64,
    pub stream_seq: u64,
}

impl Row {
    /// The row for one message. Never fails: a message that is not a log
    /// event on a log subject is kept with its payload as the message,
    /// level `unknown`, the store time as `ts`, and its subject and the
    /// reason in `fields`.
    pub fn decode(subject: &str, payload: &[u8], stream_seq: u64, stored: DateTime<Utc>) -> Row {
        let event = LogEvent::from_json(payload);
        match (parse_log_subject(subject), event) {
            (Some(s), Ok(ev)) => Row {
                ts: ev.ts,
                org: s.org.to_string(),
                app: s.app.to_string(),
                region: s.region.to_string(),
                host: s.host.to_string(),
                level: ev.level,
                source: ev.source,
                message: ev.message,
                fields: (!ev.fields.is_empty()).then(|| serde_json::Value::Object(ev.fields).to_string()),
                seq: ev.seq,
                stream_seq,
            },
            (parsed, event) => {
                let error = match (parsed, event) {
                    (_, Err(e)) => format!("not a log event: {e}"),
                    _ => "not a logs.<org>.<app>.<region>.<host> subject".to_string(),
                };
                let mut tokens = subject.split('.').skip(1).map(str::to_string);
                let mut token = || tokens.next().filter(|t| !t.is_empty()).unwrap_or_else(|| "_".to_string());
                let (org, app, region, host) = (token(), token(), token(), token());
                Row {
                    ts: stored,
                    org,
                    app,
                    region,
                    host,
                    level: UNKNOWN_LEVEL.to_string(),
                    source: String::new(),
                    message: String::from_utf8_lossy(payload).into_owned(),
                    fields: Some(serde_json::json!({ "subject": subject, "error": error }).to_string()),
                    seq: 0,
                    stream_seq,
                }
            }
        }
    }
}

/// `rows` as one Arrow record batch in [`schema`]`(unit)`.
pub fn record_batch(rows: &[&Row], unit: TsUnit) -> Result<RecordBatch, ArrowError> {
    let dict = |f: fn(&Row) -> &str| -> ArrayRef {
        let mut b = StringDictionaryBuilder::<Int32Type>::new();
        for r in rows {
            b.append_value(f(r));
        }
        Arc::new(b.finish())
    };
    let ts: ArrayRef =
        match unit {
            TsUnit::Micros => Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.ts.timestamp_micros()))
                    .with_timezone("UTC"),
            ),
            // Outside 1677-2262 nanoseconds overflow i64: such a ts saturates.
            TsUnit::Nanos => Arc::new(
                TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| {
                    r.ts.timestamp_nanos_opt().unwrap_or(if r.ts.timestamp() < 0 { i64::MIN } else { i64::MAX })
                }))
                .with_timezone("UTC"),
            ),
        };
    let columns: Vec<ArrayRef> = vec![
        ts,
        dict(|r| &r.org),
        dict(|r| &r.app),
        dict(|r| &r.region),
        dict(|r| &r.host),
        dict(|r| &r.level),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.source))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.message))),
        Arc::new(rows.iter().map(|r| r.fields.as_deref()).collect::<StringArray>()),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.seq))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.stream_seq))),
    ];
    RecordBatch::try_new(schema(unit), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn events_take_org_and_app_from_the_subject() {
        let json = br#"{"ts":"2026-11-21T23:01:15.123456789Z","org":"evil","app":"web","region":"iad","host":"h1","source":"file:/a.log","level":"info","message":"hi","fields":{"status":200},"seq":42}"#;
        let r = Row::decode("logs.acme.web.iad.h1", json, 7, stored());
        assert_eq!((r.org.as_str(), r.app.as_str(), r.region.as_str(), r.host.as_str()), ("acme", "web", "iad", "h1"));
        assert_eq!(r.ts.timestamp_micros(), 1_795_302_075_123_456);
        assert_eq!((r.level.as_str(), r.message.as_str(), r.seq, r.stream_seq), ("info", "hi", 42, 7));
        assert_eq!(r.fields.as_deref(), Some(r#"{"status":200}"#));
        let bare = br#"{"ts":"2026-11-21T23:01:15Z","org":"a","app":"b","region":"c","host":"d","source":"s","level":"warn","message":"m"}"#;
        assert_eq!(Row::decode("logs.a.b.c.d", bare, 8, stored()).fields, None);
    }

    #[test]
    fn garbage_is_kept() {
        let r = Row::decode("logs.acme.web", b"\xffnot json", 9, stored());
        assert_eq!((r.org.as_str(), r.app.as_str(), r.region.as_str(), r.host.as_str()), ("acme", "web", "_", "_"));
        assert_eq!((r.level.as_str(), r.ts, r.stream_seq), (UNKNOWN_LEVEL, stored(), 9));
        assert_eq!(r.message, "\u{fffd}not json");
        assert!(r.fields.as_deref().unwrap_or_default().contains("not a log event"), "{:?}", r.fields);

        let json = br#"{"ts":"2026-11-21T23:01:15Z","org":"a","app":"b","region":"c","host":"d","source":"s","level":"warn","message":"m"}"#;
        let r = Row::decode("logs.a.b.c.d.e", json, 10, stored());
        assert_eq!((r.level.as_str(), r.host.as_str()), (UNKNOWN_LEVEL, "d"));
        assert!(r.fields.as_deref().unwrap_or_default().contains("logs.a.b.c.d.e"));
    }

    #[test]
    fn batch_matches_schema() {
        let rows = [Row::decode("logs.a.b.c.d", b"x", 1, stored()), Row::decode("logs.a.b.c.d", b"y", 2, stored())];
        let rows: Vec<&Row> = rows.iter().collect();
        for unit in [TsUnit::Micros, TsUnit::Nanos] {
            let batch = record_batch(&rows, unit).unwrap();
            assert_eq!(batch.num_rows(), 2);
            assert_eq!(batch.schema(), schema(unit));
        }
        let ns = record_batch(&rows, TsUnit::Nanos).unwrap();
        let ts = ns.column(0).as_any().downcast_ref::<TimestampNanosecondArray>().unwrap();
        assert_eq!(ts.value(0), 1_700_000_000_000_000_000);
    }
}
