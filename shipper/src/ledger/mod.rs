//! The completeness ledger: what each sink committed, per event origin,
//! compared with the agents' status heartbeats.
//!
//! (Interface first; the bookkeeping is being filled in.)

use async_nats::HeaderMap;

/// Where an event came from: the agent host, the origin stream within it
/// (a source, or one incarnation of a tailed file) and the event's
/// sequence in that stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub host: String,
    pub stream: String,
    pub seq: u64,
}

impl Origin {
    /// The origin of a message, from its subject and headers; `None` for
    /// messages that did not come from an agent.
    pub fn from_message(_subject: &str, _headers: Option<&HeaderMap>) -> Option<Origin> {
        None
    }
}

/// The ledger shared by every sink of a shipper. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Ledger {}

impl Ledger {
    /// `sink` committed (and acked) events of these origins.
    pub fn committed<'a>(&self, _sink: &str, _origins: impl IntoIterator<Item = &'a Origin>) {}
}
