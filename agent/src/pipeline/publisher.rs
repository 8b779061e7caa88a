//! Publish a source's queue to JetStream: a bounded window of publishes in
//! flight, acks settled oldest first, a record acknowledged in the queue only
//! after JetStream acked it. A failure rewinds the queue to the first
//! unacknowledged record; its de-duplication id makes the resend harmless.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::acks::{AckError, Acks, EventHeaders, Route, Sent, Stored};
use super::record::{with_seq, QueuedEvent};
use crate::queue::DiskQueue;
use crate::stats::SourceStats;

/// How often acknowledged records are made durable (fsync, segment cleanup).
const SYNC_EVERY: Duration = Duration::from_millis(200);

pub struct Publisher {
    pub route: Route,
    pub queue: DiskQueue,
    pub stats: Arc<SourceStats>,
    pub host: String,
    pub max_in_flight: usize,
}

impl Publisher {
    /// Run until `shutdown`; then settle what is in flight and sync.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut acks = match Acks::new(self.route.clone()).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(source = %self.stats.name, error = %e, "cannot subscribe to the ack inbox");
                return;
            }
        };
        let mut failures = 0u32;
        let mut inflight: VecDeque<(u64, Sent)> = VecDeque::new();
        let mut sync = tokio::time::interval(SYNC_EVERY);
        sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty = false;
        loop {
            let window_full = inflight.len() >= self.max_in_flight;
            let ok = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                // With nothing in flight, this keeps the connection
                // answering PINGs (and yields `None`).
                r = settle(&mut acks, &mut inflight) => {
                    dirty = true;
                    self.on_ack(r)
                }
                rec = self.queue.next(), if !window_full => match rec {
                    Ok(rec) => self.publish(&mut acks, rec.seq, &rec.payload, &mut inflight).await,
                    Err(e) => {
                        tracing::error!(source = %self.stats.name, error = %e, "queue read failed");
                        false
                    }
                },
                _ = sync.tick(), if dirty => {
                    dirty = false;
                    self.sync();
                    true
                }
            };
            self.stats.in_flight.set(inflight.len() as i64);
            if ok {
                failures = 0;
                continue;
            }
            failures += 1;
            self.stats.publish_errors.inc();
            inflight.clear();
            acks.forget();
            self.queue.rewind();
            tokio::select! {
                _ = tokio::time::sleep(crate::backoff::delay(failures)) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        // Drain: whatever is in flight gets its ack (or is resent next time).
        while !inflight.is_empty() {
            let r = settle(&mut acks, &mut inflight).await;
            if !self.on_ack(r) {
                break;
            }
        }
        self.sync();
        self.stats.in_flight.set(0);
    }

    async fn publish(&self, acks: &mut Acks, seq: u64, payload: &[u8], inflight: &mut VecDeque<(u64, Sent)>) -> bool {
        let Some(ev) = QueuedEvent::decode(payload) else {
            // The checksum passed but the record is not ours: skip it, loudly.
            tracing::error!(source = %self.stats.name, seq, "undecodable queue record skipped");
            self.queue.ack(seq);
            return true;
        };
        let msg_id = if ev.msg_id.is_empty() {
            flotilla_core::origin::queue_msg_id(&self.host, &self.stats.name, seq)
        } else {
            ev.msg_id
        };
        let headers = EventHeaders { msg_id: &msg_id, seq, dropped: 0 };
        match acks.publish(&ev.subject.into(), headers, with_seq(&ev.body, seq).into()).await {
            Ok(sent) => {
                self.stats.published.inc();
                inflight.push_back((seq, sent));
                true
            }
            Err(e) => {
                tracing::warn!(source = %self.stats.name, error = %e, "publish failed");
                false
            }
        }
    }

    fn on_ack(&self, r: Option<(u64, Result<Stored, AckError>)>) -> bool {
        match r {
            None => true,
            Some((seq, Ok(ack))) => {
                self.stats.acked.inc();
                if ack.duplicate {
                    self.stats.duplicates.inc();
                }
                self.queue.ack(seq);
                self.stats.set_high_water(seq);
                true
            }
            Some((_, Err(e))) => {
                tracing::warn!(source = %self.stats.name, error = %e, "no JetStream ack; resending from the first unacknowledged record");
                false
            }
        }
    }

    fn sync(&self) {
        if let Err(e) = self.queue.sync() {
            tracing::error!(source = %self.stats.name, error = %e, "queue sync failed");
        }
        self.stats.lag_bytes.set(self.queue.bytes() as i64);
    }
}

/// Await the oldest in-flight publish; with none, keep the connection
/// alive until it is lost.
async fn settle(acks: &mut Acks, inflight: &mut VecDeque<(u64, Sent)>) -> Option<(u64, Result<Stored, AckError>)> {
    let Some(&(seq, sent)) = inflight.front() else {
        acks.idle().await;
        return None;
    };
    let r = acks.wait(sent).await;
    inflight.pop_front();
    Some((seq, r))
}
