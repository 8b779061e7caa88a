//! Deliveries read off the proxy's own upstream connection, without
//! async-nats: [`frames`] parses server operations in place, [`conn`] keeps
//! the connection (subscriptions by sid, PING/PONG, reconnects), [`changes`]
//! holds the subscription changes it has yet to send, and it hands
//! each read's messages to the fan-out as slices of its buffer, over plain
//! TCP or TLS. async-nats carries publishes, requests and the proxy's
//! inboxes.

mod changes;
pub mod conn;
pub use flotilla_core::nats::frames;
