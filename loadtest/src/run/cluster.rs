//! `cluster-node-loss`: three nats-server nodes on loopback forming one
//! JetStream cluster (each with its own config file, store, client, route
//! and monitoring ports), and which node the agent is connected to.

use std::path::Path;
use std::time::{Duration, Instant};

use super::http;
use super::stack::{Daemon, Dirs, Stack};
use crate::bench::{free_port, BenchError};

pub const NODES: [&str; 3] = ["nats-server-0", "nats-server-1", "nats-server-2"];
const CLUSTER: &str = "flotilla-loadtest";

/// The three nodes (not started) and their client URLs.
pub fn nodes(bin: &Path, dirs: &Dirs) -> Result<(Vec<Daemon>, Vec<String>), BenchError> {
    let ports: Vec<(u16, u16, u16)> =
        (0..NODES.len()).map(|_| Ok((free_port()?, free_port()?, free_port()?))).collect::<Result<_, BenchError>>()?;
    let mut daemons = Vec::new();
    for (i, role) in NODES.iter().enumerate() {
        let (client, route, monitor) = ports[i];
        let store = dirs.var.join(format!("nats-{i}"));
        std::fs::create_dir_all(&store).map_err(|e| BenchError::io(&store, e))?;
        let routes: Vec<String> = ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("\"nats-route://127.0.0.1:{}\"", p.1))
            .collect();
        let conf = config(i, client, route, monitor, &store, &routes);
        let path = dirs.var.join(format!("nats-{i}.conf"));
        std::fs::write(&path, conf).map_err(|e| BenchError::io(&path, e))?;
        let args = vec!["-c".to_string(), path.to_string_lossy().to_string()];
        let mut d = Daemon::command(role, bin.to_path_buf(), args, client, dirs);
        d.http = Some(monitor);
        daemons.push(d);
    }
    Ok((daemons, ports.iter().map(|p| format!("nats://127.0.0.1:{}", p.0)).collect()))
}

fn config(i: usize, client: u16, route: u16, monitor: u16, store: &Path, routes: &[String]) -> String {
    format!(
        "server_name: \"n{i}\"\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
         jetstream {{\n  store_dir: {}\n}}\ncluster {{\n  name: \"{CLUSTER}\"\n  listen: \"127.0.0.1:{route}\"\n  \
         routes: [{}]\n}}\n",
        serde_json::to_string(&store.to_string_lossy()).unwrap_or_default(),
        routes.join(", ")
    )
}

/// Wait until the cluster has a JetStream meta leader and both other nodes
/// are current peers (an R3 stream can be placed), asking each node's `/jsz`.
pub async fn wait_ready(st: &Stack, within: Duration) -> Result<String, BenchError> {
    let deadline = Instant::now() + within;
    loop {
        for d in st.daemons.iter().filter(|d| NODES.contains(&d.role)) {
            let Some(port) = d.http else { continue };
            if let Ok(r) = http::get(port, "/jsz").await {
                if let Some(leader) = ready(&r.body) {
                    return Ok(leader);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::Failed(format!(
                "the cluster elected no JetStream leader in {} s",
                within.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The meta leader of a `/jsz` answer, if every other node is a current peer.
fn ready(jsz: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(jsz).ok()?;
    let meta = &v["meta_cluster"];
    let leader = meta["leader"].as_str().filter(|l| !l.is_empty())?;
    let peers = meta["replicas"].as_array()?;
    let current = peers.iter().filter(|p| p["current"].as_bool() == Some(true) && p["offline"].as_bool() != Some(true));
    (current.count() >= NODES.len() - 1).then(|| leader.to_string())
}

/// The node the agent is connected to (from each node's `/connz`), or node
/// 0 if none says; and how it was chosen.
pub async fn agent_node(st: &Stack) -> (&'static str, String) {
    for d in st.daemons.iter().filter(|d| NODES.contains(&d.role) && d.proc.is_some()) {
        let Some(port) = d.http else { continue };
        let Ok(r) = http::get(port, "/connz?limit=4096").await else { continue };
        if agent_connected(&r.body) {
            return (d.role, "the agent's node, from /connz".into());
        }
    }
    (NODES[0], "no node listed the agent in /connz".into())
}

/// Whether a `/connz` answer lists the agent's connection.
fn agent_connected(connz: &[u8]) -> bool {
    let v: serde_json::Value = serde_json::from_slice(connz).unwrap_or_default();
    v["connections"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["name"].as_str().is_some_and(|n| n.starts_with("flotilla-agent"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_route_to_the_other_nodes_only() {
        let routes = vec!["\"nats-route://127.0.0.1:2\"".to_string(), "\"nats-route://127.0.0.1:3\"".to_string()];
        let c = config(0, 4222, 1, 8222, Path::new("/tmp/s \"x\""), &routes);
        assert!(c.contains("server_name: \"n0\""), "{c}");
        assert!(c.contains("store_dir: \"/tmp/s \\\"x\\\"\""), "{c}");
        assert!(c.contains("routes: [\"nats-route://127.0.0.1:2\", \"nats-route://127.0.0.1:3\"]"), "{c}");
        assert!(c.contains("listen: \"127.0.0.1:1\""), "{c}");
    }

    #[test]
    fn ready_once_both_peers_are_current() {
        let j = |peers: &str| format!(r#"{{"meta_cluster":{{"leader":"n0","replicas":[{peers}]}}}}"#);
        let cur = r#"{"name":"n1","current":true}"#;
        let behind = r#"{"name":"n2","current":false}"#;
        assert_eq!(ready(j(&format!("{cur},{cur}")).as_bytes()), Some("n0".into()));
        assert_eq!(ready(j(&format!("{cur},{behind}")).as_bytes()), None);
        assert_eq!(ready(br#"{"meta_cluster":{"leader":""}}"#), None);
        assert_eq!(ready(b"{}"), None);
    }

    #[test]
    fn finds_the_agent_in_connz() {
        let yes = br#"{"connections":[{"cid":1,"name":"flotilla-shipper"},{"cid":2,"name":"flotilla-agent lt-host"}]}"#;
        assert!(agent_connected(yes));
        assert!(!agent_connected(br#"{"connections":[{"cid":1}]}"#));
        assert!(!agent_connected(b"not json"));
    }
}
