//! The `http` sink: each batch is one POST of NDJSON (the events' JSON
//! payloads, one per line), optionally gzipped, with the configured headers
//! and basic or bearer authentication. 2xx commits the batch; 408, 429 and
//! 5xx are retried (429 and 503 after `Retry-After` seconds when given);
//! any other status sends the batch to the dead-letter stream at once.

pub mod encode;
pub mod formats;

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
    format: Format,
}

/// What a batch is sent as; all go through the same delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// `http`: NDJSON POSTed to `url`.
    Ndjson,
    /// `loki`: push API JSON POSTed to `url` (`…/loki/api/v1/push`).
    Loki,
    /// `elasticsearch`: bulk NDJSON POSTed to `url/_bulk`.
    Elasticsearch { index: String },
    /// `datadog_logs`: a JSON array POSTed to `url` with `DD-API-KEY`.
    Datadog,
}

/// The index of an `elasticsearch` sink without `index`.
pub const DEFAULT_ES_INDEX: &str = "flotilla-logs";

impl HttpSink {
    pub fn new(cfg: &SinkConfig) -> Result<HttpSink, HttpSinkError> {
        // reqwest is built without a default crypto provider: the workspace
        // uses ring. Another provider installed first is kept.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let mut headers = HeaderMap::new();
        let format = match cfg.kind.as_str() {
            "loki" => Format::Loki,
            "elasticsearch" => {
                Format::Elasticsearch { index: cfg.index.clone().unwrap_or_else(|| DEFAULT_ES_INDEX.into()) }
            }
            "datadog_logs" => {
                let mut key = HeaderValue::from_str(cfg.api_key.as_deref().unwrap_or_default())
                    .map_err(|_| HttpSinkError::Header("DD-API-KEY".into()))?;
                key.set_sensitive(true);
                headers.insert(HeaderName::from_static("dd-api-key"), key);
                Format::Datadog
            }
            _ => Format::Ndjson,
        };
        let url = match &format {
            Format::Elasticsearch { .. } => format!("{}/_bulk", cfg.url.trim_end_matches('/')),
            _ => cfg.url.clone(),
        };
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
        Ok(HttpSink { client, url, auth: cfg.auth.clone(), gzip: cfg.compression == "gzip", format })
    }

    /// The request body and its content type.
    fn body(&self, batch: &[&Delivery]) -> (Vec<u8>, &'static str) {
        let items = || -> Vec<formats::Item<'_>> {
            batch.iter().map(|d| formats::Item { subject: &d.subject, payload: &d.payload, stored: d.stored }).collect()
        };
        match &self.format {
            Format::Ndjson => (encode::ndjson(batch), "application/x-ndjson"),
            Format::Loki => (formats::loki(&items()), "application/json"),
            Format::Elasticsearch { index } => (formats::elasticsearch(&items(), index), "application/x-ndjson"),
            Format::Datadog => (formats::datadog(&items()), "application/json"),
        }
    }

    pub async fn send(&self, batch: &[&Delivery]) -> Result<(), SendError> {
        let (body, content_type) = self.body(batch);
        let mut req = self.client.post(&self.url).header(CONTENT_TYPE, content_type);
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
            if !matches!(self.format, Format::Elasticsearch { .. }) {
                return Ok(());
            }
            // A bulk request succeeds as a whole even when items failed.
            let text = resp.bytes().await.map_err(|e| SendError::retry(error_chain(&e)))?;
            if formats::bulk_has_errors(&text) {
                return Err(SendError::retry(format!(
                    "HTTP {status} from {} with \"errors\":true: {}",
                    self.url,
                    formats::bulk_first_error(&text)
                )));
            }
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
