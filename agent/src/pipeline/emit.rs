//! Emitting events of queue-backed sources: rate limit, notice, enqueue.

use chrono::Utc;

use flotilla_core::codec::Decoded;
use flotilla_core::event::LogEvent;
use flotilla_core::subject::{log_subject, OrgId};

use super::record::QueuedEvent;
use crate::queue::{DiskQueue, Pushed, QueueError};
use crate::ratelimit::{Admit, RateGate};
use crate::stats::SourceStats;
use std::sync::Arc;

/// Where an event comes from and goes to.
pub struct Origin<'a> {
    pub org: &'a OrgId,
    pub app: &'a str,
    /// e.g. `syslog:udp:10.0.0.5:514`, `stdin`, `journald:nginx.service`.
    pub source: &'a str,
}

pub struct Emitter {
    pub queue: DiskQueue,
    pub gate: Option<RateGate>,
    pub stats: Arc<SourceStats>,
    pub host: String,
    pub region: String,
}

impl Emitter {
    /// Enqueue one event (after the rate limit). `msg_id` is the event's
    /// de-duplication id when the source has a natural one (a journald
    /// cursor); otherwise the queue sequence provides it.
    pub async fn emit(
        &mut self,
        origin: &Origin<'_>,
        decoded: Decoded,
        msg_id: Option<String>,
    ) -> Result<(), QueueError> {
        self.stats.read.inc();
        if let Some(gate) = &mut self.gate {
            match gate.admit() {
                Admit::Pass { dropped_before: 0 } => {}
                Admit::Pass { dropped_before } => {
                    let notice = crate::ratelimit::notice(dropped_before, &self.stats.name);
                    self.push(origin, notice, msg_id.as_deref().map(flotilla_core::origin::notice_msg_id)).await?;
                }
                Admit::Drop => {
                    self.stats.dropped_rate_limit.inc();
                    return Ok(());
                }
            }
        }
        self.push(origin, decoded, msg_id).await
    }

    async fn push(&mut self, origin: &Origin<'_>, decoded: Decoded, msg_id: Option<String>) -> Result<(), QueueError> {
        let now = Utc::now();
        let event = LogEvent {
            ts: decoded.ts.unwrap_or(now),
            org: origin.org.to_string(),
            app: origin.app.to_string(),
            region: self.region.clone(),
            host: self.host.clone(),
            source: origin.source.to_string(),
            level: decoded.level,
            message: decoded.message,
            fields: decoded.fields,
            seq: 0, // the queue sequence, filled in when published
        };
        let record = QueuedEvent {
            msg_id: msg_id.unwrap_or_default(),
            subject: log_subject(origin.org, origin.app, &self.region, &self.host),
            body: event.to_json(),
        };
        match self.queue.push(&record.encode()).await? {
            Pushed::Stored(_) => self.stats.note_subject(&record.subject),
            Pushed::Dropped => self.stats.dropped_queue_full.inc(),
        }
        Ok(())
    }
}
