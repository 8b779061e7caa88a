//! The path of events from sources that cannot be re-read (syslog, stdin,
//! journald): [`emit::Emitter`] rate-limits and appends each event to the
//! source's on-disk queue; [`publisher`] publishes from the queue to
//! JetStream and removes a record only after its ack. [`acks`] is how both
//! this and the file source publish and await JetStream acks.

pub mod acks;
pub mod emit;
pub mod link;
pub mod publisher;
pub mod record;
pub mod wire;
