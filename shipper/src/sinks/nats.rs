//! The `nats` sink: forward events to another NATS cluster with JetStream
//! publishes, a batch counting as committed when every publish is acked
//! there. Each message carries `Nats-Msg-Id = flotilla/<sink>/<stream seq>`,
//! so a batch sent again after a failure is de-duplicated by the remote
//! stream instead of stored twice.

use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::Mutex;

use crate::config::SinkConfig;

use super::delivery::SendError;
use super::Delivery;

pub struct NatsSink {
    name: String,
    url: String,
    prefix: String,
    timeout: Duration,
    /// Connected on first use.
    js: Mutex<Option<jetstream::Context>>,
}

impl NatsSink {
    pub fn new(cfg: &SinkConfig) -> NatsSink {
        NatsSink {
            name: cfg.name.clone(),
            url: cfg.url.clone(),
            prefix: cfg.subject_prefix.clone(),
            timeout: cfg.timeout(),
            js: Mutex::new(None),
        }
    }

    async fn context(&self) -> Result<jetstream::Context, SendError> {
        let mut guard = self.js.lock().await;
        if let Some(js) = guard.as_ref() {
            return Ok(js.clone());
        }
        let opts = async_nats::ConnectOptions::new()
            .name(format!("flotilla-shipper sink {}", self.name))
            .connection_timeout(self.timeout);
        let client = flotilla_core::nats::connect(opts, &self.url)
            .await
            .map_err(|e| SendError::retry(format!("{}: {e}", self.url)))?;
        let mut js = jetstream::new(client);
        js.set_timeout(self.timeout);
        *guard = Some(js.clone());
        Ok(js)
    }

    pub async fn send(&self, batch: &[&Delivery]) -> Result<(), SendError> {
        let js = self.context().await?;
        let mut acks = Vec::with_capacity(batch.len());
        for d in batch {
            let subject =
                if self.prefix.is_empty() { d.subject.clone() } else { format!("{}.{}", self.prefix, d.subject) };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(flotilla_core::HDR_MSG_ID, format!("flotilla/{}/{}", self.name, d.stream_seq).as_str());
            let ack = js
                .publish_with_headers(subject, headers, d.payload.clone())
                .await
                .map_err(|e| SendError::retry(format!("{}: {e}", self.url)))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| SendError::retry(format!("{}: no ack: {e}", self.url)))?;
        }
        Ok(())
    }
}
