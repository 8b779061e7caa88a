//! Reading deliveries off the upstream connection without async-nats (work
//! in progress: the frame parser and the delivery connection; the fan-out
//! does not use them yet).

pub mod conn;
pub mod frames;
