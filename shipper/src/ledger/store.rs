//! The ledger's books in the `FLOTILLA_SHIPPER` key-value bucket: one key
//! per sink and host, `ledger.<sink>.<host>`, holding JSON ranges (an
//! in-order stream is one pair of numbers however long it runs).

use std::collections::BTreeMap;

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::book::HostBook;
use crate::commitlog::BUCKET;

const PREFIX: &str = "ledger.";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bucket {BUCKET}: {0}")]
    Bucket(String),
    #[error("ledger record {key}: {message}")]
    Io { key: String, message: String },
}

/// One sink's books for one host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub sink: String,
    pub host: String,
    pub saved: DateTime<Utc>,
    #[serde(default)]
    pub streams: HostBook,
}

/// `ledger.<sink>.<host>`, with every byte a key may not hold (and `=`)
/// written as `=XX`.
pub fn key(sink: &str, host: &str) -> String {
    format!("{PREFIX}{}.{}", escape(sink), escape(host))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// The bucket (created on first use, as the commit record does).
pub async fn open(js: &jetstream::Context, create: bool) -> Result<kv::Store, StoreError> {
    match js.get_key_value(BUCKET).await {
        Ok(kv) => Ok(kv),
        Err(e) if !create => Err(StoreError::Bucket(e.to_string())),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: BUCKET.into(),
                description: "flotilla-shipper commit records".into(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| StoreError::Bucket(e.to_string())),
    }
}

pub async fn save(kv: &kv::Store, record: &Record) -> Result<(), StoreError> {
    let key = key(&record.sink, &record.host);
    let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Io { key: key.clone(), message: e.to_string() })?;
    kv.put(&key, bytes.into()).await.map(|_| ()).map_err(|e| StoreError::Io { key, message: e.to_string() })
}

/// Every record, or those of one sink; by (sink, host).
pub async fn load(kv: &kv::Store, sink: Option<&str>) -> Result<BTreeMap<(String, String), Record>, StoreError> {
    let prefix = match sink {
        Some(s) => format!("{PREFIX}{}.", escape(s)),
        None => PREFIX.to_string(),
    };
    let io = |key: &str, e: &dyn std::fmt::Display| StoreError::Io { key: key.to_string(), message: e.to_string() };
    let mut keys = kv.keys().await.map_err(|e| io(&prefix, &e))?;
    let mut out = BTreeMap::new();
    while let Some(k) = keys.next().await {
        let k = k.map_err(|e| io(&prefix, &e))?;
        if !k.starts_with(&prefix) {
            continue;
        }
        let Some(bytes) = kv.get(&k).await.map_err(|e| io(&k, &e))? else {
            continue;
        };
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(r) if sink.is_none_or(|s| s == r.sink) => {
                out.insert((r.sink.clone(), r.host.clone()), r);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(key = k, error = %e, "unreadable ledger record skipped"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_hold_only_key_bytes() {
        assert_eq!(super::key("archive", "web-1"), "ledger.archive.web-1");
        assert_eq!(super::key("a", "h.example.com"), "ledger.a.h=2Eexample=2Ecom");
        assert_eq!(super::key("a", "x=y z"), "ledger.a.x=3Dy=20z");
    }
}
