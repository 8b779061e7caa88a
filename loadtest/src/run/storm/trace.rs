//! What nats-server received from the agents and sent them, counted from
//! its own trace log (`-DV`): every protocol operation a client sends is a
//! `<<- [OP ...]` line, every one the server sends back a `->> [OP ...]`
//! line, each with its connection id (`cid:N`) and a microsecond
//! timestamp. The `name` in a connection's `CONNECT` tells an agent
//! (`flotilla-agent <host>`) from the scenario's own watcher.
//!
//! ```text
//! [19691] 2026/11/22 07:06:11.051334 [INF] Server is ready
//! [19691] 2026/11/22 07:06:11.877871 [TRC] 127.0.0.1:41364 - cid:5 - <<- [CONNECT {"name":"flotilla-agent h1",...}]
//! [19691] 2026/11/22 07:06:11.878169 [TRC] 127.0.0.1:41364 - cid:5 - "flotilla-agent h1" - <<- [PING]
//! [19691] 2026/11/22 07:06:11.878175 [TRC] 127.0.0.1:41364 - cid:5 - "flotilla-agent h1" - ->> [PONG]
//! ```

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDateTime;

/// The operations of one server incarnation, from "Server is ready" to
/// `window_ms` after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Whether the log had its "Server is ready" line (times are relative
    /// to it; without it nothing is counted).
    pub ready: bool,
    /// Operations agents sent the server, by verb (`CONNECT`, `PING`,
    /// `PONG`, `SUB`, `UNSUB`, `PUB`, `HPUB`).
    pub received: BTreeMap<String, u64>,
    /// Operations the server sent agents, by verb (`PONG`, `PING`, `MSG`,
    /// `+OK`, `-ERR`; the `INFO` of each new connection is not traced).
    pub sent: BTreeMap<String, u64>,
    /// `PUB`s on `flotilla.agent.*.status`.
    pub heartbeats: u64,
    /// Every connection the server accepted (agents, the watcher, probes).
    pub connections: u64,
    /// Agent name → ms after "ready" of its first `CONNECT`.
    pub first_connect_ms: BTreeMap<String, f64>,
    /// Lines that looked like trace lines but could not be read.
    pub unreadable: u64,
}

impl Tally {
    pub fn received_total(&self) -> u64 {
        self.received.values().sum()
    }

    pub fn sent_total(&self) -> u64 {
        self.sent.values().sum()
    }

    /// The reconnect handshake: everything but publishes.
    pub fn handshake(&self) -> u64 {
        self.received.iter().filter(|(verb, _)| !matches!(verb.as_str(), "PUB" | "HPUB")).map(|(_, n)| n).sum()
    }
}

/// One line of the log, split.
struct Line<'a> {
    at: NaiveDateTime,
    level: &'a str,
    msg: &'a str,
}

fn split(line: &str) -> Option<Line<'_>> {
    // "[pid] YYYY/MM/DD HH:MM:SS.ffffff [LVL] message"
    let (_, rest) = line.strip_prefix('[')?.split_once("] ")?;
    let mut parts = rest.splitn(3, ' ');
    let (date, time, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let at = NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y/%m/%d %H:%M:%S%.f").ok()?;
    let (level, msg) = rest.strip_prefix('[')?.split_once("] ")?;
    Some(Line { at, level, msg })
}

/// `cid:N` of a client line.
fn cid(msg: &str) -> Option<u64> {
    let rest = &msg[msg.find(" - cid:")? + 7..];
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())].parse().ok()
}

/// The direction and text of a traced operation: `<<- [PING]` → (true, "PING").
fn operation(msg: &str) -> Option<(bool, &str)> {
    let (incoming, start) = match (msg.find("<<- ["), msg.find("->> [")) {
        (Some(i), _) => (true, i),
        (None, Some(i)) => (false, i),
        (None, None) => return None,
    };
    let body = &msg[start + 5..];
    Some((incoming, &body[..body.rfind(']')?]))
}

/// The `name` of a `CONNECT {json}`. Not parsed as JSON: the trace
/// replaces credentials with a bare `[REDACTED]`.
fn connect_name(op: &str) -> Option<String> {
    let rest = op.strip_prefix("CONNECT ")?;
    let start = rest.find("\"name\":\"")? + 8;
    let mut name = String::new();
    let mut chars = rest[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(name),
            '\\' => name.push(chars.next()?),
            c => name.push(c),
        }
    }
}

/// Count the operations of `log` (one incarnation's output) within
/// `window_ms` of its "Server is ready"; clients whose name starts with
/// `agent_prefix` are the agents.
pub fn tally(log: &str, agent_prefix: &str, window_ms: f64) -> Tally {
    let mut t = Tally::default();
    let Some(zero) =
        log.lines().filter_map(split).find(|l| l.level == "INF" && l.msg.starts_with("Server is ready")).map(|l| l.at)
    else {
        return t;
    };
    t.ready = true;
    // cid → the agent's name (`None`: another client).
    let mut clients: HashMap<u64, Option<String>> = HashMap::new();
    for raw in log.lines() {
        let Some(line) = split(raw) else { continue };
        // A client may get in a few µs before "ready" is logged: time 0.
        let ms = ((line.at - zero).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0).max(0.0);
        if ms > window_ms {
            break;
        }
        match line.level {
            "DBG" if line.msg.contains("Client connection created") => t.connections += 1,
            "TRC" => {
                let (Some(id), Some((incoming, op))) = (cid(line.msg), operation(line.msg)) else {
                    if line.msg.contains(" - cid:") && !line.msg.contains("MSG_PAYLOAD") {
                        t.unreadable += 1;
                    }
                    continue;
                };
                let verb = op.split(' ').next().unwrap_or_default();
                if incoming && verb == "CONNECT" {
                    let name = connect_name(op);
                    let agent = name.filter(|n| n.starts_with(agent_prefix));
                    if let Some(n) = &agent {
                        t.first_connect_ms.entry(n.clone()).or_insert(ms);
                    }
                    clients.insert(id, agent);
                }
                let Some(Some(_)) = clients.get(&id) else { continue };
                if incoming {
                    *t.received.entry(verb.to_string()).or_default() += 1;
                    let subject = op.split(' ').nth(1).unwrap_or_default();
                    if verb == "PUB" && subject.starts_with("flotilla.agent.") && subject.ends_with(".status") {
                        t.heartbeats += 1;
                    }
                } else {
                    *t.sent.entry(verb.to_string()).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"[1] 2026/11/22 07:06:11.050380 [INF] Starting nats-server
[1] 2026/11/22 07:06:11.051334 [INF] Server is ready
[1] 2026/11/22 07:06:11.100000 [DBG] 127.0.0.1:41364 - cid:5 - Client connection created
[1] 2026/11/22 07:06:11.151334 [TRC] 127.0.0.1:41364 - cid:5 - <<- [CONNECT {"verbose":false,"nkey":[REDACTED],"name":"flotilla-agent h1","pass":[REDACTED]}]
[1] 2026/11/22 07:06:11.151400 [TRC] 127.0.0.1:41364 - cid:5 - "flotilla-agent h1" - <<- [PING]
[1] 2026/11/22 07:06:11.151410 [TRC] 127.0.0.1:41364 - cid:5 - "flotilla-agent h1" - ->> [PONG]
[1] 2026/11/22 07:06:11.151420 [TRC] 127.0.0.1:41364 - cid:5 - "flotilla-agent h1" - <<- [SUB _INBOX.abc.* 1]
[1] 2026/11/22 07:06:11.200000 [DBG] 127.0.0.1:41370 - cid:6 - Client connection created
[1] 2026/11/22 07:06:11.200100 [TRC] 127.0.0.1:41370 - cid:6 - <<- [CONNECT {"name":"storm-watch"}]
[1] 2026/11/22 07:06:11.200200 [TRC] 127.0.0.1:41370 - cid:6 - "storm-watch" - <<- [SUB flotilla.agent.*.status 1]
[1] 2026/11/22 07:06:11.300000 [TRC] 127.0.0.1:41364 - cid:5 - "flotilla-agent h1" - <<- [PUB flotilla.agent.h1.status 12]
[1] 2026/11/22 07:06:11.300001 [TRC] 127.0.0.1:41364 - cid:5 - "flotilla-agent h1" - <<- MSG_PAYLOAD: ["{\"host\":\"h1\"}"]
[1] 2026/11/22 07:06:11.300100 [TRC] 127.0.0.1:41370 - cid:6 - "storm-watch" - ->> [MSG flotilla.agent.h1.status 1 12]
[1] 2026/11/22 07:06:12.300000 [TRC] 127.0.0.1:41364 - cid:5 - "flotilla-agent h1" - <<- [PING]
[1] 2026/11/22 07:06:22.300000 [TRC] 127.0.0.1:41364 - cid:5 - "flotilla-agent h1" - <<- [PUB flotilla.agent.h1.status 12]
"#;

    #[test]
    fn counts_what_agents_sent_within_the_window() {
        let t = tally(LOG, "flotilla-agent ", 5_000.0);
        assert!(t.ready);
        let received: Vec<(&str, u64)> = t.received.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(received, vec![("CONNECT", 1), ("PING", 2), ("PUB", 1), ("SUB", 1)]);
        assert_eq!((t.handshake(), t.received_total(), t.heartbeats), (4, 5, 1));
        // The watcher's MSG is not the agents'.
        assert_eq!(t.sent.get("PONG"), Some(&1));
        assert_eq!(t.sent_total(), 1);
        assert_eq!(t.connections, 2);
        assert_eq!(t.first_connect_ms.len(), 1);
        assert!((t.first_connect_ms["flotilla-agent h1"] - 100.0).abs() < 1e-6);
        assert_eq!(t.unreadable, 0);
    }

    #[test]
    fn nothing_without_ready_and_garbage_is_skipped() {
        let t = tally("garbage\n[x] not a date [TRC] cid:5\n", "flotilla-agent ", 1e9);
        assert_eq!(t, Tally::default());
        let no_ready: String = LOG.lines().filter(|l| !l.contains("ready")).map(|l| format!("{l}\n")).collect();
        assert_eq!(tally(&no_ready, "flotilla-agent ", 1e9).received_total(), 0);
    }
}
