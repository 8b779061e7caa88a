//! The Parquet sink: a batch of messages → rows → one object per Hive
//! partition `org=<org>/app=<app>/date=YYYY-MM-DD/hour=HH/`, named
//! `<first stream seq>-<last stream seq>.parquet` (20 digits each).
//!
//! The partition comes from the NATS subject (the org token is enforced by
//! the proxy, the payload is not) and each event's own `ts`. A batch is
//! committed when every one of its objects is written; rewriting the same
//! batch after a failure writes the same names again.

pub mod schema;
pub mod writer;

use std::collections::{BTreeMap, HashSet};

use arrow::array::UInt64Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt as _};

use flotilla_core::metrics::Counter;

use crate::commitlog::CommitLog;
use crate::config::{archive_url, ArchiveUrl, SinkConfig};
use crate::sinks::Delivery;
use schema::Row;

#[derive(Debug, thiserror::Error)]
pub enum ParquetSinkError {
    #[error("invalid sink url: {0}")]
    Url(String),
    #[error("cannot create {path}: {source}")]
    CreateDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("encoding rows: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("writing {path}: {source}")]
    Write { path: Path, source: parquet::errors::ParquetError },
    #[error("reading {path}: {source}")]
    Read { path: String, source: parquet::errors::ParquetError },
    #[error(transparent)]
    CommitLog(#[from] crate::commitlog::CommitLogError),
}

pub struct ParquetSink {
    store: Arc<dyn ObjectStore>,
    objects_written: Counter,
}

impl ParquetSink {
    /// A sink writing under `cfg.url`: a local directory (created if
    /// missing) or an object store prefix.
    pub fn new(cfg: &SinkConfig, objects_written: Counter) -> Result<Self, ParquetSinkError> {
        let store = store_for(&cfg.url, &cfg.storage)?;
        Ok(ParquetSink { store, objects_written })
    }

    /// Write every message of `batch`; Ok (with the objects' names) only
    /// when all objects are written. Their names are in the commit record
    /// before the first byte is written.
    pub async fn commit(&self, batch: &[Delivery], log: &CommitLog) -> Result<Vec<String>, ParquetSinkError> {
        let parts = partitioned(batch);
        let mut objects = Vec::with_capacity(parts.len());
        for (partition, rows) in &parts {
            if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
                objects.push(partition.object_path(first.stream_seq, last.stream_seq));
            }
        }
        let names: Vec<String> = objects.iter().map(|p| p.to_string()).collect();
        log.begin(&names).await?;
        for ((_, rows), path) in parts.iter().zip(objects) {
            let records = schema::record_batch(rows)?;
            let bytes = writer::write_object(self.store.clone(), path.clone(), &records)
                .await
                .map_err(|source| ParquetSinkError::Write { path: path.clone(), source })?;
            self.objects_written.inc();
            tracing::debug!(%path, rows = rows.len(), bytes, "object written");
        }
        Ok(names)
    }

    /// The stream sequences inside the objects a previous run left pending
    /// (those that exist: an object appears whole or not at all).
    pub async fn recover(&self, pending: &[String]) -> Result<HashSet<u64>, ParquetSinkError> {
        let mut seqs = HashSet::new();
        for name in pending {
            let path = Path::from(name.as_str());
            let bytes = match self.store.get(&path).await {
                Ok(r) => r.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let read_err = |source| ParquetSinkError::Read { path: name.clone(), source };
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(read_err)?.build().map_err(read_err)?;
            for batch in reader {
                let batch = batch?;
                if let Some(col) =
                    batch.column_by_name("stream_seq").and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
                {
                    seqs.extend(col.values().iter().copied());
                }
            }
        }
        Ok(seqs)
    }
}

/// The object store behind an archive URL, rooted at its path.
pub fn store_for(
    url: &str,
    storage: &std::collections::BTreeMap<String, String>,
) -> Result<Arc<dyn ObjectStore>, ParquetSinkError> {
    Ok(match archive_url(url).map_err(ParquetSinkError::Url)? {
        ArchiveUrl::Local(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|source| ParquetSinkError::CreateDir { path: dir.clone(), source })?;
            Arc::new(LocalFileSystem::new_with_prefix(&dir)?)
        }
        ArchiveUrl::Remote(url) => {
            let (store, prefix) = object_store::parse_url_opts(&url, storage.iter())?;
            let store: Arc<dyn ObjectStore> = Arc::from(store);
            if prefix.as_ref().is_empty() {
                store
            } else {
                Arc::new(PrefixStore::new(store, prefix))
            }
        }
    })
}

/// Decode `batch` and group its rows by partition, each sorted by stream
/// sequence with redelivered duplicates removed.
pub fn partitioned(batch: &[Delivery]) -> BTreeMap<Partition, Vec<Row>> {
    let mut by_seq: BTreeMap<u64, &Delivery> = BTreeMap::new();
    for d in batch {
        by_seq.insert(d.stream_seq, d);
    }
    let mut parts: BTreeMap<Partition, Vec<Row>> = BTreeMap::new();
    for d in by_seq.into_values() {
        let row = Row::decode(&d.subject, &d.payload, d.stream_seq, d.stored);
        parts.entry(Partition::of(&row)).or_default().push(row);
    }
    parts
}

/// A Hive partition of the archive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Partition {
    pub org: String,
    pub app: String,
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    /// `HH`, UTC.
    pub hour: String,
}

impl Partition {
    pub fn of(row: &Row) -> Partition {
        Partition::new(&row.org, &row.app, row.ts)
    }

    pub fn new(org: &str, app: &str, ts: DateTime<Utc>) -> Partition {
        Partition {
            org: path_value(org),
            app: path_value(app),
            date: ts.format("%Y-%m-%d").to_string(),
            hour: ts.format("%H").to_string(),
        }
    }

    /// `org=<org>/app=<app>/date=<date>/hour=<hour>/<first>-<last>.parquet`.
    pub fn object_path(&self, first_seq: u64, last_seq: u64) -> Path {
        Path::from_iter([
            format!("org={}", self.org),
            format!("app={}", self.app),
            format!("date={}", self.date),
            format!("hour={}", self.hour),
            format!("{first_seq:020}-{last_seq:020}.parquet"),
        ])
    }
}

/// A subject token made safe as a path segment and a Hive value: anything
/// but `[A-Za-z0-9_.-]` becomes `_`, and so do `.` and `..`.
fn path_value(token: &str) -> String {
    let v: String = token
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' })
        .collect();
    if v.is_empty() || v.chars().all(|c| c == '.') {
        "_".to_string()
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_paths() {
        let ts = DateTime::from_timestamp(1_795_302_075, 0).unwrap_or_default(); // 2026-11-21T23:01:15Z
        let p = Partition::new("acme", "web", ts);
        assert_eq!(
            p.object_path(1, 42).as_ref(),
            "org=acme/app=web/date=2026-11-21/hour=23/00000000000000000001-00000000000000000042.parquet"
        );
        let odd = Partition::new("..", "a/b=c", ts);
        assert_eq!((odd.org.as_str(), odd.app.as_str()), ("_", "a_b_c"));
        assert_eq!(path_value("héllo"), "h_llo");
    }
}
