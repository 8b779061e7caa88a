//! Child processes: find the Flotilla binaries and nats-server, start them
//! with their output in a log file, stop them with SIGTERM.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("{name} not found ({hint})")]
    Missing { name: String, hint: String },
    #[error("cannot start {name}: {source}")]
    Spawn { name: String, source: std::io::Error },
    #[error("{name} exited early ({status}); its log: {log}")]
    Exited { name: String, status: String, log: PathBuf },
    #[error("{name} did not open {addr} within {secs}s; its log: {log}")]
    NotReady { name: String, addr: String, secs: u64, log: PathBuf },
    #[error("port {0} is in use: is another stack running? Choose other ports with the command's port options")]
    PortInUse(u16),
}

/// A Flotilla binary next to this one (cargo puts them in one directory).
pub fn sibling_binary(name: &str) -> Result<PathBuf, ProcError> {
    let dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ProcError::Missing {
            name: name.into(),
            hint: format!("looked in {}; build with `cargo build --release --workspace`", dir.display()),
        })
    }
}

/// `nats-server` from PATH, or the repository's `.venv` (where
/// `scripts/demo` installs it).
pub fn nats_server_binary() -> Result<PathBuf, ProcError> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("nats-server");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let venv = PathBuf::from(".venv/bin/nats-server");
    if venv.is_file() {
        return Ok(venv);
    }
    Err(ProcError::Missing {
        name: "nats-server".into(),
        hint: "run ./scripts/demo, which installs it, or see https://docs.nats.io/running-a-nats-service/introduction/installation".into(),
    })
}

/// `moto_server` (an S3-compatible server, from `moto[server]`): next to
/// `$FLOTILLA_PYTHON`, in the repository's `.venv`, or on PATH.
pub fn moto_server_binary() -> Result<PathBuf, ProcError> {
    let mut candidates = Vec::new();
    if let Some(py) = std::env::var_os("FLOTILLA_PYTHON") {
        candidates.extend(Path::new(&py).parent().map(|d| d.join("moto_server")));
    }
    candidates.push(PathBuf::from(".venv/bin/moto_server"));
    if let Some(paths) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&paths).map(|d| d.join("moto_server")));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| ProcError::Missing {
        name: "moto_server".into(),
        hint: "run ./scripts/test, which installs moto[server] in .venv, or pip install 'moto[server]'".into(),
    })
}

pub fn ensure_free(port: u16) -> Result<(), ProcError> {
    std::net::TcpListener::bind(("127.0.0.1", port)).map(drop).map_err(|_| ProcError::PortInUse(port))
}

pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> Result<Proc, ProcError> {
        let log = log_dir.join(format!("{name}.log"));
        let spawn_err = |source| ProcError::Spawn { name: name.into(), source };
        let out = File::create(&log).map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        let mut cmd = Command::new(program);
        // Own process group: a terminal's Ctrl-C reaches only us, and we stop
        // the children in order (agent first, nats-server last).
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(spawn_err)?;
        Ok(Proc { name: name.into(), log, child })
    }

    /// Wait until `port` accepts connections, or fail with the log's path.
    pub fn wait_port(&mut self, port: u16, within: Duration) -> Result<(), ProcError> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            self.check_alive()?;
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ProcError::NotReady {
            name: self.name.clone(),
            addr: format!("127.0.0.1:{port}"),
            secs: within.as_secs(),
            log: self.log.clone(),
        })
    }

    /// The child's process id (for reading its CPU time and memory).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn check_alive(&mut self) -> Result<(), ProcError> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                Err(ProcError::Exited { name: self.name.clone(), status: status.to_string(), log: self.log.clone() })
            }
            _ => Ok(()),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// Run a binary to completion and return its stdout (trimmed).
pub fn output(program: &Path, args: &[&str]) -> Result<String, ProcError> {
    let name = program.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let out =
        Command::new(program).args(args).output().map_err(|source| ProcError::Spawn { name: name.clone(), source })?;
    if !out.status.success() {
        return Err(ProcError::Spawn {
            name,
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
