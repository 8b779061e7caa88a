//! The baseline: the smallest correct JetStream publisher. It reads the
//! benchmark's log file line by line and publishes each line with at most
//! `in_flight` publishes awaiting their ack, the oldest ack awaited first:
//! what the agent does, minus everything that makes it an agent.
//!
//! [`Shape::Lines`] is the baseline proper: each line unchanged, no headers.
//! The other shapes are diagnostics (`--variants`) that add, one at a time,
//! what the agent's messages carry, to tell the cost of the message format
//! (in this process and in nats-server) from the cost of the agent's code.

use std::collections::VecDeque;
use std::io::BufRead as _;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use chrono::Utc;

use flotilla_core::codec::{self, Codec};
use flotilla_core::event::LogEvent;
use flotilla_core::{HDR_MSG_ID, HDR_SEQ};

use super::BenchError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The line as it is, no headers: the baseline.
    Lines,
    /// The line as it is, with a `Nats-Msg-Id` like the agent's
    /// (`<host>/f/<nonce>/<offset>`): JetStream de-duplication on.
    LinesWithMsgId,
    /// The agent's message: the line decoded by the json codec into a
    /// `LogEvent` (org, app, region, host, source, seq added), its three
    /// headers (msg id, seq, read time).
    AgentFormat,
}

impl Shape {
    pub fn label(self) -> &'static str {
        match self {
            Shape::Lines => "lines, no headers (baseline)",
            Shape::LinesWithMsgId => "lines + Nats-Msg-Id",
            Shape::AgentFormat => "agent's message format (LogEvent JSON + 2 headers)",
        }
    }
}

/// Where the published lines claim to come from (for [`Shape::AgentFormat`]).
pub struct Origin<'a> {
    pub org: &'a str,
    pub app: &'a str,
    pub region: &'a str,
    pub host: &'a str,
}

pub struct Published {
    pub lines: u64,
    pub wall: Duration,
}

/// Publish every line of `file` to `subject` and wait for the last ack.
pub async fn publish_file(
    url: &str,
    ca: Option<&Path>,
    file: &Path,
    subject: &str,
    in_flight: usize,
    shape: Shape,
    origin: &Origin<'_>,
) -> Result<Published, BenchError> {
    let client = super::connect(url, ca).await.map_err(|e| BenchError::nats("baseline: connect", e))?;
    let js = jetstream::new(client.clone());
    let reader = std::fs::File::open(file).map_err(|e| BenchError::io(file, e))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, reader);
    let nonce = format!("{:016x}", rand::random::<u64>());
    let source = format!("file:{}", file.display());
    let mut window = VecDeque::with_capacity(in_flight);
    let mut line = Vec::with_capacity(512);
    let (mut lines, mut offset) = (0u64, 0u64);
    let started = Instant::now();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(|e| BenchError::io(file, e))?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        lines += 1;
        let msg_id = || format!("{}/f/{nonce}/{offset}", origin.host);
        let publish = match shape {
            Shape::Lines => js.publish(subject.to_string(), Bytes::copy_from_slice(&line)).await,
            Shape::LinesWithMsgId => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(HDR_MSG_ID, msg_id().as_str());
                js.publish_with_headers(subject.to_string(), headers, Bytes::copy_from_slice(&line)).await
            }
            Shape::AgentFormat => {
                let d = codec::decode(Codec::Json, &String::from_utf8_lossy(&line));
                let event = LogEvent {
                    ts: d.ts.unwrap_or_else(Utc::now),
                    org: origin.org.to_string(),
                    app: origin.app.to_string(),
                    region: origin.region.to_string(),
                    host: origin.host.to_string(),
                    source: source.clone(),
                    level: d.level,
                    message: d.message,
                    fields: d.fields,
                    seq: lines,
                };
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(HDR_MSG_ID, msg_id().as_str());
                headers.insert(HDR_SEQ, lines.to_string().as_str());
                js.publish_with_headers(subject.to_string(), headers, event.to_json().into()).await
            }
        };
        offset += n as u64;
        window.push_back(publish.map_err(|e| BenchError::nats("baseline: publish", e))?);
        while window.len() >= in_flight {
            if let Some(oldest) = window.pop_front() {
                oldest.await.map_err(|e| BenchError::nats("baseline: ack", e))?;
            }
        }
    }
    while let Some(oldest) = window.pop_front() {
        oldest.await.map_err(|e| BenchError::nats("baseline: ack", e))?;
    }
    let wall = started.elapsed();
    client.flush().await.map_err(|e| BenchError::nats("baseline: flush", e))?;
    Ok(Published { lines, wall })
}
