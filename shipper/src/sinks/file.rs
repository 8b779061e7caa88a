//! The `file` sink: batches appended as NDJSON to a local file, synced to
//! disk before the batch counts as committed. A batch retried after a
//! partial write may appear twice (at-least-once).

use std::path::PathBuf;

use tokio::io::AsyncWriteExt as _;
use tokio::sync::Mutex;

use crate::config::SinkConfig;

use super::delivery::SendError;
use super::http::encode;
use super::Delivery;

#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    #[error("invalid sink url: {0}")]
    Url(String),
    #[error("cannot create {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
}

pub struct FileSink {
    path: PathBuf,
    /// Opened on first use, and again after an error.
    file: Mutex<Option<tokio::fs::File>>,
}

impl FileSink {
    pub fn new(cfg: &SinkConfig) -> Result<FileSink, FileSinkError> {
        let path = cfg.local_dir().map_err(FileSinkError::Url)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| FileSinkError::CreateDir { path: dir.to_path_buf(), source })?;
        }
        Ok(FileSink { path, file: Mutex::new(None) })
    }

    pub async fn send(&self, batch: &[&Delivery]) -> Result<(), SendError> {
        let body = encode::ndjson(batch);
        let mut guard = self.file.lock().await;
        let result = async {
            if guard.is_none() {
                let f = tokio::fs::OpenOptions::new().create(true).append(true).open(&self.path).await?;
                *guard = Some(f);
            }
            let Some(f) = guard.as_mut() else { return Ok(()) };
            f.write_all(&body).await?;
            f.flush().await?;
            f.sync_data().await
        }
        .await;
        result.map_err(|e| {
            *guard = None;
            SendError::retry(format!("{}: {e}", self.path.display()))
        })
    }
}
