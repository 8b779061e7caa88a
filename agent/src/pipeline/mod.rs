//! The path of events from sources that cannot be re-read (syslog, stdin,
//! journald): [`emit::Emitter`] rate-limits and appends each event to the
//! source's on-disk queue; [`publisher`] publishes from the queue to
//! JetStream and removes a record only after its ack.

pub mod emit;
pub mod publisher;
pub mod record;
