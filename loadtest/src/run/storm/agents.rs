//! Simulated agents: one async-nats client each, in this process, built
//! from the agent's own parts so they behave as a fleet of real ones would:
//!
//! - connected with `flotilla-agent`'s connect options: its name, retry on
//!   the initial connect, and its reconnect delay
//!   ([`flotilla_agent::backoff::delay`], exponential with full jitter);
//! - the agent's heartbeat task itself ([`flotilla_agent::status::run`],
//!   at most one per interval, jittered) on `flotilla.agent.<host>.status`;
//! - one JetStream publish window ([`flotilla_agent::pipeline::acks::Acks`],
//!   one inbox subscription), used once at the start and after the storm,
//!   idle in between.
//!
//! Each agent counts its connection attempts (every call of the reconnect
//! delay is followed by one) and its connects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_agent::pipeline::acks::{Acks, EventHeaders, Route};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bench::BenchError;

pub const NAME_PREFIX: &str = "flotilla-agent ";
pub const REGION: &str = "local";
/// Subjects of the agents' JetStream publishes (stream `STORM`).
pub const LOG_SUBJECTS: &str = "logs.storm.>";
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters one agent's client callbacks update.
#[derive(Default)]
pub struct Counters {
    /// Connection attempts: calls of the reconnect delay.
    pub attempts: AtomicU64,
    /// Successful connects (`Event::Connected`).
    pub connects: AtomicU64,
    /// µs after the fleet's start of the last connect.
    pub last_connect_us: AtomicU64,
}

pub struct Agent {
    pub host: String,
    pub client: async_nats::Client,
    pub counters: Arc<Counters>,
    acks: Acks,
    published: u64,
}

impl Agent {
    /// One JetStream publish through the agent's window, and its ack.
    pub async fn publish_and_ack(&mut self) -> Result<(), String> {
        let subject = format!("logs.storm.sim.{REGION}.{}", self.host).into();
        let msg_id = format!("{}:{}", self.host, self.published);
        self.published += 1;
        let headers = EventHeaders { msg_id: &msg_id, seq: self.published, dropped: 0 };
        let sent =
            self.acks.publish(&subject, headers, "{\"message\":\"storm\"}".into()).await.map_err(|e| e.to_string())?;
        self.acks.wait(sent).await.map(drop).map_err(|e| e.to_string())
    }
}

/// The simulated fleet and its heartbeat tasks.
pub struct Fleet {
    pub agents: Vec<Agent>,
    pub start: Instant,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

async fn start_one(url: String, host: String, start: Instant) -> Result<Agent, BenchError> {
    let counters = Arc::new(Counters::default());
    let (on_delay, on_event) = (counters.clone(), counters.clone());
    // As flotilla-agent's `connect` (agent/src/lib.rs), with counters.
    let client = async_nats::ConnectOptions::new()
        .name(format!("{NAME_PREFIX}{host}"))
        .retry_on_initial_connect()
        .reconnect_delay_callback(move |attempt| {
            on_delay.attempts.fetch_add(1, Ordering::Relaxed);
            flotilla_agent::backoff::delay(attempt as u32)
        })
        .event_callback(move |event| {
            let c = on_event.clone();
            async move {
                if matches!(event, async_nats::Event::Connected) {
                    c.last_connect_us.store(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                    c.connects.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .connect(url.as_str())
        .await
        .map_err(|e| BenchError::nats(&format!("connect agent {host}"), e))?;
    // On the agent's client (the storm is about its reconnects; a source's
    // own connection reconnects only at its next publish, after its
    // jittered backoff).
    let acks = Acks::new(Route { client: client.clone(), direct: None, ack_timeout: ACK_TIMEOUT })
        .await
        .map_err(|e| BenchError::nats("ack inbox", e))?;
    let mut agent = Agent { host, client, counters, acks, published: 0 };
    agent.publish_and_ack().await.map_err(|e| BenchError::nats(&format!("first publish of {}", agent.host), e))?;
    Ok(agent)
}

impl Fleet {
    /// Start `n` agents against `url` (all at once, as a fleet after a
    /// deploy would), each with its first publish acknowledged, and their
    /// heartbeats every `heartbeat`.
    pub async fn start(url: &str, n: usize, heartbeat: Duration) -> Result<Fleet, BenchError> {
        let start = Instant::now();
        let mut set = JoinSet::new();
        for i in 0..n {
            set.spawn(start_one(url.to_string(), format!("storm-{i:05}"), start));
        }
        let mut agents = Vec::with_capacity(n);
        let mut first_error = None;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(a)) => agents.push(a),
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(e) => first_error = first_error.or(Some(BenchError::Failed(format!("agent task: {e}")))),
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        agents.sort_by(|a, b| a.host.cmp(&b.host));
        let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
        for a in &agents {
            tasks.spawn(flotilla_agent::status::run(
                a.client.clone(),
                a.host.clone(),
                REGION.into(),
                Vec::new(),
                heartbeat,
                shutdown.clone(),
            ));
        }
        tasks.close();
        Ok(Fleet { agents, start, shutdown, tasks })
    }

    /// Sum of every agent's connection attempts so far.
    pub fn attempts(&self) -> u64 {
        self.agents.iter().map(|a| a.counters.attempts.load(Ordering::Relaxed)).sum()
    }

    /// Every agent's connect count now.
    pub fn connects(&self) -> Vec<u64> {
        self.agents.iter().map(|a| a.counters.connects.load(Ordering::Relaxed)).collect()
    }

    /// How many agents connected again since `before` (from [`Fleet::connects`]).
    pub fn reconnected(&self, before: &[u64]) -> usize {
        self.connects().iter().zip(before).filter(|(now, then)| now > then).count()
    }

    /// One more publish through every agent's window; how many were acked.
    pub async fn publish_all(&mut self) -> usize {
        let results = futures::future::join_all(self.agents.iter_mut().map(|a| a.publish_and_ack())).await;
        results.iter().filter(|r| r.is_ok()).count()
    }

    /// Stop the heartbeats and close every client.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.wait().await;
        drop(self.agents);
    }
}
