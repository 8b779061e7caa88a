//! Fault injection: when faults happen during the load, and what each does.

use std::time::{Duration, Instant};

use super::load::Writers;
use super::orchestrate::Stack;
use super::scenarios::{Fault, Load};
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

/// A killed daemon waiting to be started again.
pub struct Restart {
    pub at: Instant,
    pub role: &'static str,
}

/// Inject fault number `k`; returns what was done and what to restart.
pub fn inject(
    fault: Fault,
    k: usize,
    elapsed: Duration,
    writers: &mut Writers,
    st: &mut Stack,
) -> Result<Option<(String, Restart)>, BenchError> {
    let t = elapsed.as_secs_f64();
    let restart = |role| Restart { at: Instant::now() + DOWN_FOR, role };
    match fault {
        Fault::None | Fault::Idle => Ok(None),
        Fault::AgentCrashDuringRotation => {
            let rotated = writers.rotate(k).map_err(|e| BenchError::Failed(format!("rotate: {e}")))?;
            let pid = st.agent.proc.as_ref().map(|p| p.id()).unwrap_or_default();
            st.agent.kill9(&mut st.meter);
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
            let pid = st.shipper.proc.as_ref().map(|p| p.id()).unwrap_or_default();
            st.shipper.kill9(&mut st.meter);
            Ok(Some((
                format!("{t:.1} s: kill -9 the shipper (pid {pid}); restarted {} s later", DOWN_FOR.as_secs_f64()),
                restart("shipper"),
            )))
        }
        Fault::NatsRestart => {
            let pid = st.nats.proc.as_ref().map(|p| p.id()).unwrap_or_default();
            st.nats.kill9(&mut st.meter);
            Ok(Some((
                format!(
                    "{t:.1} s: kill -9 nats-server (pid {pid}); restarted {} s later on the same port and store",
                    DOWN_FOR.as_secs_f64()
                ),
                restart("nats-server"),
            )))
        }
    }
}
