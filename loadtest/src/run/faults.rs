//! Fault injection: when faults happen during the load, and what each does.

use std::time::{Duration, Instant};

use super::cluster;
use super::load::Writers;
use super::scenarios::{Fault, Load};
use super::stack::Stack;
use crate::bench::BenchError;

/// How long a killed daemon stays down (the load keeps being written).
pub const DOWN_FOR: Duration = Duration::from_secs(1);

/// `faults` instants spread evenly over the load, none at its very edges.
pub struct Schedule {
    at: Vec<Duration>,
    next: usize,
}

impl Schedule {
    pub fn new(load: &Load) -> Schedule {
        let n = load.faults;
        let at = (0..n).map(|k| load.duration.mul_f64((k as f64 + 0.5) / n as f64)).collect();
        Schedule { at, next: 0 }
    }

    /// The index of the fault due at `elapsed`, once.
    pub fn due(&mut self, elapsed: Duration) -> Option<usize> {
        let k = self.next;
        if self.at.get(k).is_some_and(|t| elapsed >= *t) {
            self.next += 1;
            Some(k)
        } else {
            None
        }
    }
}

/// What undoes a fault, and when.
pub struct Restart {
    pub at: Instant,
    pub undo: Undo,
}

pub enum Undo {
    /// Start the daemon with this role again.
    Start(&'static str),
    /// Let the shipper reach the object store again.
    OpenStore,
}

/// Inject fault number `k`; returns what was done and what undoes it.
pub async fn inject(
    fault: Fault,
    k: usize,
    elapsed: Duration,
    writers: &mut Writers,
    st: &mut Stack,
) -> Result<Option<(String, Restart)>, BenchError> {
    let t = elapsed.as_secs_f64();
    let restart = |role| Restart { at: Instant::now() + DOWN_FOR, undo: Undo::Start(role) };
    match fault {
        Fault::None | Fault::Idle | Fault::Burst | Fault::SlowSubscriber | Fault::NoisyTenant => Ok(None),
        Fault::AgentCrashDuringRotation => {
            let rotated = writers.rotate(k).map_err(|e| BenchError::Failed(format!("rotate: {e}")))?;
            let pid = st.kill9("agent")?;
            let name = rotated.strip_prefix(rotated.ancestors().nth(3).unwrap_or(&rotated)).unwrap_or(&rotated);
            Ok(Some((
                format!(
                    "{t:.1} s: renamed {} (a new app.log is created) and kill -9 the agent (pid {pid}) at once; restarted {} s later",
                    name.display(),
                    DOWN_FOR.as_secs_f64()
                ),
                restart("agent"),
            )))
        }
        Fault::ShipperCrash => {
            let pid = st.kill9("shipper")?;
            Ok(Some((
                format!("{t:.1} s: kill -9 the shipper (pid {pid}); restarted {} s later", DOWN_FOR.as_secs_f64()),
                restart("shipper"),
            )))
        }
        Fault::NatsRestart => {
            let pid = st.kill9("nats-server")?;
            Ok(Some((
                format!(
                    "{t:.1} s: kill -9 nats-server (pid {pid}); restarted {} s later on the same port and store",
                    DOWN_FOR.as_secs_f64()
                ),
                restart("nats-server"),
            )))
        }
        Fault::ClusterNodeLoss { down_s } => {
            let (role, why) = cluster::agent_node(st).await;
            let pid = st.kill9(role)?;
            Ok(Some((
                format!(
                    "{t:.1} s: kill -9 {role} (pid {pid}; {why}); restarted {down_s} s later (same ports, same store)"
                ),
                Restart { at: Instant::now() + Duration::from_secs(down_s), undo: Undo::Start(role) },
            )))
        }
        Fault::ObjectStoreOutage { down_s } => {
            let gate = st.gate.as_ref().ok_or_else(|| BenchError::Failed("no object-store forwarder".into()))?;
            gate.close();
            Ok(Some((
                format!(
                    "{t:.1} s: the object store refuses connections (reset at once, open ones reset too) for {down_s} s"
                ),
                Restart { at: Instant::now() + Duration::from_secs(down_s), undo: Undo::OpenStore },
            )))
        }
    }
}

/// Undo a fault: start the daemon again, or open the object store.
pub fn undo(r: &Restart, st: &mut Stack) -> Result<(), BenchError> {
    match r.undo {
        Undo::Start(role) => st.start(role),
        Undo::OpenStore => {
            if let Some(g) = &st.gate {
                g.open();
            }
            Ok(())
        }
    }
}
