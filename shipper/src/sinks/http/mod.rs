//! The `http` sink: each batch is one POST of NDJSON (the events' JSON
//! payloads, one per line), optionally gzipped, with the configured headers
//! and basic or bearer authentication. 2xx commits the batch; 408, 429 and
//! 5xx are retried (429 and 503 after `Retry-After` seconds when given);
//! any other status sends the batch to the dead-letter stream at once.

pub mod encode;

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};

use crate::config::{AuthConfig, SinkConfig};

use super::delivery::SendError;
use super::Delivery;

#[derive(Debug, thiserror::Error)]
pub enum HttpSinkError {
    #[error("header {0:?} is not valid")]
    Header(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

pub struct HttpSink {
    client: reqwest::Client,
    url: String,
    auth: Option<AuthConfig>,
    gzip: bool,
}

impl HttpSink {
    pub fn new(cfg: &SinkConfig) -> Result<HttpSink, HttpSinkError> {
        // reqwest is built without a default crypto provider: the workspace
        // uses ring. Another provider installed first is kept.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let bad = || HttpSinkError::Header(name.clone());
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let mut value = HeaderValue::from_str(value).map_err(|_| bad())?;
            if name.as_str().contains("auth") || name.as_str().contains("key") || name.as_str().contains("token") {
                value.set_sensitive(true);
            }
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.timeout())
            .connect_timeout(cfg.timeout())
            .user_agent(concat!("flotilla-shipper/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpSink { client, url: cfg.url.clone(), auth: cfg.auth.clone(), gzip: cfg.compression == "gzip" })
    }

    pub async fn send(&self, batch: &[&Delivery]) -> Result<(), SendError> {
        let body = encode::ndjson(batch);
        let mut req = self.client.post(&self.url).header(CONTENT_TYPE, "application/x-ndjson");
        let body = if self.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
            encode::gzip(&body).map_err(|e| SendError::retry(format!("gzip: {e}")))?
        } else {
            body
        };
        req = match &self.auth {
            Some(AuthConfig::Basic { user, password }) => req.basic_auth(user, Some(password)),
            Some(AuthConfig::Bearer { token }) => req.bearer_auth(token),
            None => req,
        };
        let resp = req.body(body).send().await.map_err(|e| SendError::retry(error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // A little of the body helps whoever reads the DLQ headers.
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        let message = format!("HTTP {status} from {}: {}", self.url, text.trim());
        let retryable = status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error();
        Err(if retryable {
            SendError { message, retry_after, permanent: false }
        } else {
            SendError { message, retry_after: None, permanent: true }
        })
    }
}

/// reqwest's errors keep the useful part (refused, timed out) in sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
