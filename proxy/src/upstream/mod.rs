//! Reading deliveries off the upstream connection without async-nats (work
//! in progress: the frame parser first).

pub mod frames;
