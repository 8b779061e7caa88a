//! The `stdout` sink: batches written to standard output as NDJSON.

use tokio::io::AsyncWriteExt as _;
use tokio::sync::Mutex;

use super::delivery::SendError;
use super::http::encode;
use super::Delivery;

pub struct StdoutSink {
    out: Mutex<tokio::io::Stdout>,
}

impl Default for StdoutSink {
    fn default() -> Self {
        StdoutSink::new()
    }
}

impl StdoutSink {
    pub fn new() -> StdoutSink {
        StdoutSink { out: Mutex::new(tokio::io::stdout()) }
    }

    pub async fn send(&self, batch: &[&Delivery]) -> Result<(), SendError> {
        let body = encode::ndjson(batch);
        let mut out = self.out.lock().await;
        out.write_all(&body).await.map_err(|e| SendError::retry(format!("stdout: {e}")))?;
        out.flush().await.map_err(|e| SendError::retry(format!("stdout: {e}")))
    }
}
