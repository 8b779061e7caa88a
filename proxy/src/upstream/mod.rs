//! Deliveries read off the proxy's own upstream connection, without
//! async-nats: [`frames`] parses server operations in place, [`conn`] keeps
//! the connection (subscriptions by sid, PING/PONG, reconnects) and hands
//! each read's messages to the fan-out as slices of its buffer. Used when
//! every upstream server is plain `nats://`; async-nats still carries
//! publishes, requests and the proxy's inboxes, and `tls://` deliveries.

pub mod conn;
pub use flotilla_core::nats::frames;
