//! `flotilla-shipper replay`: read archived events of one org in a time range
//! back from the Parquet archive and publish them onto NATS again, for
//! rehydration and "time machine" debugging. Events go to
//! `<prefix>logs.<org>.<app>.<region>.<host>` (prefix `replay.` by default,
//! so the archive does not take them in a second time), oldest hour first.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType, UInt64Type};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use flotilla_core::event::LogEvent;

use crate::sinks::parquet::{store_for, ParquetSinkError};

pub struct ReplayOptions {
    pub from: String,
    pub storage: BTreeMap<String, String>,
    pub org: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub to: String,
    pub subject_prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Archive(#[from] ParquetSinkError),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("NATS {url}: {message}")]
    Nats { url: String, message: String },
}

/// Publish the matching events; returns how many.
pub async fn replay(opts: &ReplayOptions) -> Result<u64, ReplayError> {
    let store = store_for(&opts.from, &opts.storage)?;
    let client = async_nats::connect(opts.to.as_str())
        .await
        .map_err(|e| ReplayError::Nats { url: opts.to.clone(), message: e.to_string() })?;
    let prefix = Path::from(format!("org={}", opts.org));
    let mut objects: Vec<(DateTime<Utc>, Path)> = store
        .list(Some(&prefix))
        .try_filter_map(|meta| async move { Ok(hour_of(&meta.location).map(|h| (h, meta.location))) })
        .try_collect()
        .await?;
    objects.retain(|(hour, _)| *hour < opts.until && *hour + Duration::hours(1) > opts.since);
    objects.sort();
    let mut published = 0;
    for (_, path) in objects {
        for event in read(&*store, &path).await? {
            if event.ts < opts.since || event.ts >= opts.until {
                continue;
            }
            let subject =
                format!("{}logs.{}.{}.{}.{}", opts.subject_prefix, event.org, event.app, event.region, event.host);
            client
                .publish(subject, event.to_json().into())
                .await
                .map_err(|e| ReplayError::Nats { url: opts.to.clone(), message: e.to_string() })?;
            published += 1;
        }
    }
    client.flush().await.map_err(|e| ReplayError::Nats { url: opts.to.clone(), message: e.to_string() })?;
    Ok(published)
}

/// The hour an object's Hive path names (`.../date=YYYY-MM-DD/hour=HH/...`).
fn hour_of(path: &Path) -> Option<DateTime<Utc>> {
    let (mut date, mut hour) = (None, None);
    for part in path.parts() {
        let part = part.as_ref();
        if let Some(d) = part.strip_prefix("date=") {
            date = NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
        } else if let Some(h) = part.strip_prefix("hour=") {
            hour = h.parse::<u32>().ok();
        }
    }
    Some(date?.and_hms_opt(hour?, 0, 0)?.and_utc())
}

async fn read(store: &dyn ObjectStore, path: &Path) -> Result<Vec<LogEvent>, ReplayError> {
    let err = |message: String| ReplayError::Read { path: path.to_string(), message };
    let bytes = store.get(path).await?.bytes().await?;
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(bytes).and_then(|b| b.build()).map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        events(&batch, &mut out).map_err(err)?;
    }
    Ok(out)
}

fn events(batch: &RecordBatch, out: &mut Vec<LogEvent>) -> Result<(), String> {
    let text = |name: &str| -> Result<arrow::array::ArrayRef, String> {
        let col = batch.column_by_name(name).ok_or_else(|| format!("no column {name}"))?;
        cast(col, &DataType::Utf8).map_err(|e| e.to_string())
    };
    let ts_col = batch.column_by_name("ts").ok_or("no column ts")?;
    // Objects hold µs or ns (`timestamp_unit`); ns keeps both exact.
    let ts = cast(ts_col, &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))).map_err(|e| e.to_string())?;
    let ts = ts.as_primitive::<TimestampNanosecondType>();
    let (org, app, region, host) = (text("org")?, text("app")?, text("region")?, text("host")?);
    let (level, source, message, fields) = (text("level")?, text("source")?, text("message")?, text("fields")?);
    let seq_col = batch.column_by_name("seq").ok_or("no column seq")?;
    let seq = seq_col.as_primitive::<UInt64Type>();
    let s = |a: &arrow::array::ArrayRef, i: usize| a.as_string::<i32>().value(i).to_string();
    for i in 0..batch.num_rows() {
        let fields = match fields.is_null(i) {
            true => Default::default(),
            false => serde_json::from_str(fields.as_string::<i32>().value(i)).unwrap_or_default(),
        };
        out.push(LogEvent {
            ts: DateTime::from_timestamp_nanos(ts.value(i)),
            org: s(&org, i),
            app: s(&app, i),
            region: s(&region, i),
            host: s(&host, i),
            source: s(&source, i),
            level: s(&level, i),
            message: s(&message, i),
            fields,
            seq: seq.value(i),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_come_from_hive_paths() {
        let p = Path::from("org=acme/app=web/date=2026-11-21/hour=23/00000000000000000001.parquet");
        assert_eq!(hour_of(&p).unwrap().to_rfc3339(), "2026-11-21T23:00:00+00:00");
        assert!(hour_of(&Path::from("org=acme/x.parquet")).is_none());
    }
}
