//! The scenario table: every scenario of the load-test plan, whether it is
//! implemented, and the load each runs (full and `--quick`).

use std::time::Duration;

/// What a scenario does to the stack while the load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: constant load, then a capacity phase.
    None,
    /// `kill -9` the agent right after a log file was rotated (renamed, new
    /// file created), restart it.
    AgentCrashDuringRotation,
    /// `kill -9` the shipper under load, restart it.
    ShipperCrash,
    /// `kill -9` nats-server under load, restart it on the same port and
    /// store.
    NatsRestart,
    /// No load: a few lines, then every daemon's CPU and memory at rest.
    Idle,
    /// The base rate with bursts far above it (see [`super::burst`]).
    Burst,
    /// The shipper's object store (S3 on moto, behind a forwarder) resets
    /// every connection for `down_s` seconds.
    ObjectStoreOutage { down_s: u64 },
    /// A 3-node cluster, `LOGS` with 3 replicas: `kill -9` the node the
    /// agent is connected to, restart it `down_s` seconds later.
    ClusterNodeLoss { down_s: u64 },
    /// Tenants tail through flotilla-proxy; halfway, one more stops
    /// reading its socket (see [`super::tenants`]).
    SlowSubscriber,
    /// Tenants tail through flotilla-proxy; halfway, one org starts
    /// publishing far more than the others through the proxy.
    NoisyTenant,
}

#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    /// `None`: listed in the plan, not implemented yet.
    pub fault: Option<Fault>,
}

/// The load of one run, chosen from the scenario and `--quick`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Load {
    /// Log files written (one app each).
    pub files: usize,
    /// Lines per second over all files while the load runs.
    pub rate: u64,
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// Lines written at once after the constant load (0: no capacity phase).
    pub capacity_lines: u64,
    /// Lines published by the bare JetStream publisher (the baseline).
    pub baseline_lines: u64,
    /// Faults injected, evenly spread over the load.
    pub faults: u32,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "steady",
        what: "constant rate of lines to several files, then a backlog written at once (capacity)",
        fault: Some(Fault::None),
    },
    Scenario {
        name: "burst",
        what: "bursts of 10x the base rate for 2 s every 10 s, on top of it",
        fault: Some(Fault::Burst),
    },
    Scenario {
        name: "slow-subscriber",
        what: "one tenant's live tail (through the proxy) stalls; the others and the archive keep their pace",
        fault: Some(Fault::SlowSubscriber),
    },
    Scenario {
        name: "agent-crash",
        what: "kill -9 the agent right after a file rotation (rename + new file), restart it",
        fault: Some(Fault::AgentCrashDuringRotation),
    },
    Scenario {
        name: "nats-restart",
        what: "kill -9 nats-server under load, restart it (same port, same store)",
        fault: Some(Fault::NatsRestart),
    },
    Scenario {
        name: "shipper-crash",
        what: "kill -9 the shipper under load, restart it",
        fault: Some(Fault::ShipperCrash),
    },
    Scenario {
        name: "object-store-outage",
        what: "the archive's object store (S3 on moto) resets every connection for 15 s, then comes back",
        fault: Some(Fault::ObjectStoreOutage { down_s: 15 }),
    },
    Scenario {
        name: "cluster-node-loss",
        what: "3-node cluster, R3 streams, kill -9 the agent's node, restart it 5 s later",
        fault: Some(Fault::ClusterNodeLoss { down_s: 5 }),
    },
    Scenario {
        name: "reconnect-storm",
        what: "1,000 simulated agents reconnect after a server restart; control messages grow linearly",
        fault: Some(Fault::None),
    },
    Scenario {
        name: "idle",
        what: "CPU and RSS of every daemon over 60 s with no traffic (after 100 lines)",
        fault: Some(Fault::Idle),
    },
    Scenario {
        name: "noisy-tenant",
        what: "one org floods through the proxy; the others keep their live-tail latency",
        fault: Some(Fault::NoisyTenant),
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

pub fn implemented() -> impl Iterator<Item = &'static Scenario> {
    SCENARIOS.iter().filter(|s| s.fault.is_some())
}

impl Scenario {
    /// The load for this scenario; `duration` overrides the default length.
    pub fn load(&self, quick: bool, duration: Option<Duration>) -> Load {
        let fault = self.fault.unwrap_or(Fault::None);
        let secs = Duration::from_secs;
        let faulty_quick =
            Load { files: 4, rate: 1_000, duration: secs(20), capacity_lines: 0, baseline_lines: 20_000, faults: 3 };
        let faulty_full =
            Load { files: 8, rate: 5_000, duration: secs(60), capacity_lines: 0, baseline_lines: 300_000, faults: 6 };
        // Quick runs use debug binaries in CI on 2 shared cores: modest rates.
        let mut load = match (fault, quick) {
            (Fault::Idle, _) => Load {
                files: 4,
                rate: 0,
                duration: Duration::from_secs(if quick { 10 } else { 60 }),
                capacity_lines: 0,
                baseline_lines: 20_000,
                faults: 0,
            },
            (Fault::None, true) => Load {
                files: 4,
                rate: 1_000,
                duration: Duration::from_secs(15),
                capacity_lines: 20_000,
                baseline_lines: 20_000,
                faults: 0,
            },
            (Fault::None, false) => Load {
                files: 8,
                rate: 5_000,
                duration: Duration::from_secs(60),
                capacity_lines: 300_000,
                baseline_lines: 300_000,
                faults: 0,
            },
            (Fault::Burst, true) => Load { rate: 500, duration: secs(30), faults: 0, ..faulty_quick },
            (Fault::Burst, false) => Load { faults: 0, ..faulty_full },
            (Fault::ObjectStoreOutage { .. }, true) => Load { duration: secs(40), faults: 1, ..faulty_quick },
            (Fault::ObjectStoreOutage { .. }, false) => Load { duration: secs(90), faults: 2, ..faulty_full },
            (Fault::ClusterNodeLoss { .. }, true) => Load { duration: secs(40), faults: 2, ..faulty_quick },
            (Fault::ClusterNodeLoss { .. }, false) => Load { duration: secs(90), faults: 4, ..faulty_full },
            // Three orgs; the fault is a phase, not an event (see `tenants`).
            (Fault::SlowSubscriber, true) => {
                Load { files: 6, rate: 2_000, duration: secs(60), faults: 0, ..faulty_quick }
            }
            (Fault::NoisyTenant, true) => Load { files: 6, duration: secs(40), faults: 0, ..faulty_quick },
            (Fault::SlowSubscriber | Fault::NoisyTenant, false) => {
                Load { files: 6, duration: secs(90), faults: 0, ..faulty_full }
            }
            (_, true) => faulty_quick,
            (_, false) => faulty_full,
        };
        if let Some(d) = duration {
            load.duration = d;
        }
        load
    }
}

/// The scenario table as Markdown (for `--help`-like listings and the docs).
pub fn table() -> String {
    let mut s = String::from("| scenario | what | status |\n|---|---|---|\n");
    for sc in SCENARIOS {
        let status = if sc.fault.is_some() { "implemented" } else { "not yet implemented" };
        s += &format!("| `{}` | {} | {} |\n", sc.name, sc.what, status);
    }
    s
}
