//! The status heartbeat on `flotilla.agent.<host>.status`: per-source
//! counters and acknowledged high-water sequences, for the shipper's
//! completeness ledger. At most one per interval, each delayed by a random
//! part of the interval, so a fleet restarting together does not beat in step.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use flotilla_core::subject::agent_status_subject;

use crate::stats::{SourceReport, SourceStats};

#[derive(Serialize)]
pub struct Status {
    pub host: String,
    pub region: String,
    pub ts: chrono::DateTime<Utc>,
    pub version: &'static str,
    pub sources: Vec<SourceReport>,
}

pub fn snapshot(host: &str, region: &str, sources: &[Arc<SourceStats>]) -> Status {
    Status {
        host: host.into(),
        region: region.into(),
        ts: Utc::now(),
        version: env!("CARGO_PKG_VERSION"),
        sources: sources.iter().map(|s| s.report()).collect(),
    }
}

pub async fn run(
    client: async_nats::Client,
    host: String,
    region: String,
    sources: Vec<Arc<SourceStats>>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let subject = agent_status_subject(&host);
    let every = every.max(Duration::from_millis(100));
    // The first beat lands anywhere in the first interval.
    let mut wait = every.mul_f64(rand::random::<f64>());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        let body = serde_json::to_vec(&snapshot(&host, &region, &sources)).unwrap_or_default();
        if let Err(e) = client.publish(subject.clone(), body.into()).await {
            tracing::debug!(error = %e, "status heartbeat not sent");
        }
        // Next beat: one interval plus up to a quarter more (jitter), never sooner.
        wait = every.mul_f64(1.0 + rand::random::<f64>() * 0.25);
    }
}
