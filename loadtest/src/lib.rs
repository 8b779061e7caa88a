//! `flotilla-loadtest`: starts whole Flotilla stacks as child processes.
//!
//! Today it runs the local demo stack ([`demo`]): a nats-server with
//! JetStream, the proxy, the shipper writing Parquet to a local directory,
//! an agent, and a generator of realistic logs for two orgs and three apps
//! ([`generator`]); and benchmarks ([`bench`]), such as the agent's
//! throughput and CPU against a minimal JetStream publisher. Load scenarios
//! and fault injection build on the same process handling ([`procs`]).

pub mod bench;
pub mod demo;
pub mod generator;
pub mod procs;
pub mod run;
