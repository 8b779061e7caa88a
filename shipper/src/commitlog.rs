//! The commit record that makes the archive exactly-once for a sink read by
//! one shipper: before objects are written their names are recorded in a
//! JetStream key-value bucket; after the messages in them are acked (and the
//! acks confirmed) the names are removed. A shipper that starts and finds
//! names left behind reads the stream sequences inside those objects that do
//! exist, and acks the redelivered messages with those sequences instead of
//! writing them again.

use std::collections::BTreeSet;

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

/// The bucket holding every sink's commit record.
pub const BUCKET: &str = "FLOTILLA_SHIPPER";

#[derive(Debug, thiserror::Error)]
pub enum CommitLogError {
    #[error("commit record bucket {BUCKET}: {0}")]
    Bucket(String),
    #[error("commit record {key}: {message}")]
    Io { key: String, message: String },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// Objects being written whose messages may not all be acked yet.
    pending: BTreeSet<String>,
}

pub struct CommitLog {
    kv: kv::Store,
    key: String,
    pending: tokio::sync::Mutex<BTreeSet<String>>,
}

impl CommitLog {
    /// Open the record of `sink` (creating the bucket on first use).
    pub async fn open(js: &jetstream::Context, sink: &str) -> Result<CommitLog, CommitLogError> {
        let kv = match js.get_key_value(BUCKET).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: BUCKET.into(),
                    description: "flotilla-shipper commit records".into(),
                    history: 1,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| CommitLogError::Bucket(e.to_string()))?,
        };
        let key = format!("commits.{sink}");
        let record: Record = match kv.get(&key).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Ok(None) => Record::default(),
            Err(e) => return Err(CommitLogError::Io { key, message: e.to_string() }),
        };
        Ok(CommitLog { kv, key, pending: tokio::sync::Mutex::new(record.pending) })
    }

    /// Objects a previous run left pending.
    pub async fn pending(&self) -> Vec<String> {
        self.pending.lock().await.iter().cloned().collect()
    }

    /// About to write these objects.
    pub async fn begin(&self, objects: &[String]) -> Result<(), CommitLogError> {
        let mut pending = self.pending.lock().await;
        let before = pending.len();
        pending.extend(objects.iter().cloned());
        if pending.len() == before {
            return Ok(());
        }
        self.store(&pending).await
    }

    /// These objects are written and their messages acked.
    pub async fn end(&self, objects: &[String]) -> Result<(), CommitLogError> {
        let mut pending = self.pending.lock().await;
        let before = pending.len();
        for o in objects {
            pending.remove(o);
        }
        if pending.len() == before {
            return Ok(());
        }
        self.store(&pending).await
    }

    async fn store(&self, pending: &BTreeSet<String>) -> Result<(), CommitLogError> {
        let record = Record { pending: pending.clone() };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        self.kv
            .put(&self.key, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| CommitLogError::Io { key: self.key.clone(), message: e.to_string() })
    }
}
