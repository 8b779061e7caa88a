//! Agent-wide metrics; per-source ones live in [`crate::stats`].

use flotilla_core::metrics::{Counter, Registry};

#[derive(Clone)]
pub struct AgentMetrics {
    pub registry: Registry,
    pub reconnects: Counter,
    pub disconnects: Counter,
    pub reloads: Counter,
    pub reload_failures: Counter,
}

impl AgentMetrics {
    pub fn new(r: Registry) -> Self {
        AgentMetrics {
            reconnects: r.counter(
                "flotilla_agent_nats_connects_total",
                "Connections (and reconnections) to NATS: the agent's client and each source's publish connection.",
                &[],
            ),
            disconnects: r.counter(
                "flotilla_agent_nats_disconnects_total",
                "Connections to NATS lost, or that could not be made.",
                &[],
            ),
            reloads: r.counter("flotilla_agent_config_reloads_total", "Configs reloaded on SIGHUP.", &[]),
            reload_failures: r.counter(
                "flotilla_agent_config_reload_failures_total",
                "SIGHUP reloads refused (the running config was kept).",
                &[],
            ),
            registry: r,
        }
    }

    pub fn queue_corrupted(&self, source: &str) -> Counter {
        self.registry.counter(
            "flotilla_agent_queue_corrupted_records_total",
            "Spill-queue records skipped at start-up because their checksum failed.",
            &[("source", source)],
        )
    }
}
