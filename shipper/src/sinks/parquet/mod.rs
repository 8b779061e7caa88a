//! The Parquet sink: messages → rows → objects per Hive partition
//! `org=<org>/app=<app>/date=YYYY-MM-DD/hour=HH/`, each named
//! `<first stream seq, 20 digits>-<16 random hex digits>.parquet`.
//!
//! The partition comes from the NATS subject (the org token is enforced by
//! the proxy, the payload is not) and each event's own `ts`. Objects stay
//! open across batches and are rolled by size and age ([`objects`]); the
//! messages in an object are acked when it is complete in storage.

pub mod objects;
pub mod schema;
pub mod writer;
pub mod written;

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::UInt64Array;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt as _};
#[allow(deprecated)] // Fine for reading one column of an object we wrote.
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::ProjectionMask;

use crate::config::{archive_url, ArchiveUrl, SinkConfig};
use schema::Row;

#[derive(Debug, thiserror::Error)]
pub enum ParquetSinkError {
    #[error("invalid sink url: {0}")]
    Url(String),
    #[error("cannot create {path}: {source}")]
    CreateDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("writing {path}: {source}")]
    Write { path: Path, source: parquet::errors::ParquetError },
    #[error("reading {path}: {source}")]
    Read { path: String, source: parquet::errors::ParquetError },
    #[error(transparent)]
    CommitLog(#[from] crate::commitlog::CommitLogError),
}

pub struct ParquetSink {
    store: Arc<dyn ObjectStore>,
    pub objects: tokio::sync::Mutex<objects::Objects>,
}

impl ParquetSink {
    /// A sink writing under `cfg.url`: a local directory (created if
    /// missing) or an object store prefix.
    pub fn new(cfg: &SinkConfig) -> Result<Self, ParquetSinkError> {
        let store = store_for(&cfg.url, &cfg.storage)?;
        let objects = objects::Objects::new(store.clone(), objects::Limits::new(cfg));
        Ok(ParquetSink { store, objects: tokio::sync::Mutex::new(objects) })
    }

    /// The stream sequences inside the objects a previous run left pending
    /// (those that exist: an object appears whole or not at all). Only the
    /// `stream_seq` column is read.
    pub async fn recover(&self, pending: &[String]) -> Result<HashSet<u64>, ParquetSinkError> {
        let mut seqs = HashSet::new();
        for name in pending {
            let path = Path::from(name.as_str());
            let meta = match self.store.head(&path).await {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let read_err = |source| ParquetSinkError::Read { path: name.clone(), source };
            #[allow(deprecated)]
            let reader = ParquetObjectReader::new(self.store.clone(), path).with_file_size(meta.size);
            let builder = ParquetRecordBatchStreamBuilder::new(reader).await.map_err(read_err)?;
            let Some(column) = builder.schema().fields().iter().position(|f| f.name() == "stream_seq") else {
                continue;
            };
            let mask = ProjectionMask::roots(builder.parquet_schema(), [column]);
            let mut batches = builder.with_projection(mask).build().map_err(read_err)?;
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(read_err)?;
                if let Some(col) = batch.column(0).as_any().downcast_ref::<UInt64Array>() {
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

/// A Hive partition of the archive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

    /// `org=<org>/app=<app>/date=<date>/hour=<hour>/<first seq>-<tag>.parquet`.
    pub fn object_path(&self, first_seq: u64, tag: u64) -> Path {
        Path::from_iter([
            format!("org={}", self.org),
            format!("app={}", self.app),
            format!("date={}", self.date),
            format!("hour={}", self.hour),
            format!("{first_seq:020}-{tag:016x}.parquet"),
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
    fn stores_for_every_scheme() {
        let opts = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let dir = tempfile::tempdir().unwrap();
        assert!(store_for(&format!("file://{}/a", dir.path().display()), &opts(&[])).is_ok());
        let s3 = [("aws_region", "us-east-1"), ("aws_access_key_id", "k"), ("aws_secret_access_key", "s")];
        assert!(store_for("s3://bucket/prefix", &opts(&s3)).is_ok());
        assert!(store_for("gs://bucket/prefix", &opts(&[("google_skip_signature", "true")])).is_ok());
        let az = [("azure_storage_account_name", "acct"), ("azure_storage_account_key", "a2V5")];
        assert!(store_for("az://container/prefix", &opts(&az)).is_ok());
        assert!(matches!(store_for("ftp://x/y", &opts(&[])), Err(ParquetSinkError::Url(_))));
    }

    #[test]
    fn hive_paths() {
        let ts = DateTime::from_timestamp(1_795_302_075, 0).unwrap_or_default(); // 2026-11-21T23:01:15Z
        let p = Partition::new("acme", "web", ts);
        assert_eq!(
            p.object_path(1, 0xbeef).as_ref(),
            "org=acme/app=web/date=2026-11-21/hour=23/00000000000000000001-000000000000beef.parquet"
        );
        let odd = Partition::new("..", "a/b=c", ts);
        assert_eq!((odd.org.as_str(), odd.app.as_str()), ("_", "a_b_c"));
        assert_eq!(path_value("héllo"), "h_llo");
    }
}
