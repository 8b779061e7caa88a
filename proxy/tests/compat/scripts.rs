//! Driving the official clients' scripts: nats.py (`py/compat_client.py`),
//! nats.js (`js/compat_client.mjs` on Node) and nats.go
//! (`go/compat_client.go`, built here once per test binary). Each takes the
//! same sub-commands and prints progress lines, then one JSON line.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use flotilla_testsupport::{python, repo_root};

#[derive(Clone, Copy, Debug)]
pub enum Lang {
    Py,
    Js,
    Go,
}

pub struct Script {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
    pub what: String,
}

/// The Go toolchain: `FLOTILLA_GO`, else `go` on PATH.
fn go() -> PathBuf {
    std::env::var_os("FLOTILLA_GO").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("go"))
}

/// nats.go's client, built once: GOPATH mode against Debian's
/// golang-github-nats-io-go-nats-dev (`./scripts/test` installs it), as no
/// Go module proxy is reached here. `FLOTILLA_GOPATH` points elsewhere.
fn go_client() -> &'static PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let out = dir.join("nats-go-compat-client");
        // Built under a name of this process's, then renamed: another test
        // process may be running the one in place.
        let fresh = dir.join(format!("nats-go-compat-client.{}", std::process::id()));
        let gopath = std::env::var("FLOTILLA_GOPATH").unwrap_or_else(|_| "/usr/share/gocode".into());
        let result = Command::new(go())
            .args(["build", "-o"])
            .arg(&fresh)
            .arg(".")
            .current_dir(repo_root().join("proxy/tests/go"))
            .env("GO111MODULE", "off")
            .env("GOPATH", gopath)
            .env("GOFLAGS", "")
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-build-cache"))
            .output();
        match result {
            Ok(o) if o.status.success() => std::fs::rename(&fresh, &out).map(|()| out).map_err(|e| e.to_string()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    });
    built.as_ref().unwrap_or_else(|e| {
        panic!("cannot build proxy/tests/go/compat_client.go (run ./scripts/test, or set FLOTILLA_GO): {e}")
    })
}

pub fn node() -> PathBuf {
    std::env::var_os("FLOTILLA_NODE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("node"))
}

impl Script {
    pub fn spawn(lang: Lang, args: &[&str]) -> Script {
        let mut cmd = match lang {
            Lang::Py => {
                let mut c = Command::new(python());
                c.arg(repo_root().join("proxy/tests/py/compat_client.py"));
                c
            }
            Lang::Js => {
                let dir = repo_root().join("proxy/tests/js");
                assert!(
                    dir.join("node_modules/nats/package.json").is_file(),
                    "proxy/tests/js/node_modules is missing: run ./scripts/test (it runs `npm ci` there)"
                );
                let mut c = Command::new(node());
                c.arg(dir.join("compat_client.mjs")).current_dir(&dir);
                c
            }
            Lang::Go => Command::new(go_client()),
        };
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let what = format!("{lang:?} {}", args.first().copied().unwrap_or(""));
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {what}: {e} (run ./scripts/test, or set FLOTILLA_PYTHON / FLOTILLA_NODE / FLOTILLA_GO)"
            )
        });
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err_pipe, err_buf) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            use std::io::Read;
            let mut s = String::new();
            let mut r = std::io::BufReader::new(err_pipe);
            let _ = r.read_to_string(&mut s);
            err_buf.lock().unwrap().push_str(&s);
        });
        Script { child, lines, stderr, what }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next stdout line within `d`; None on time-out; panics at EOF.
    pub async fn line_within(&mut self, d: Duration) -> Option<String> {
        match tokio::time::timeout(d, self.lines.recv()).await {
            Err(_) => None,
            Ok(Some(l)) => Some(l),
            Ok(None) => {
                // Let the stderr reader finish.
                let _ = self.child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!("{} ended early; stderr:\n{}", self.what, self.stderr());
            }
        }
    }

    pub async fn line(&mut self) -> String {
        match self.line_within(Duration::from_secs(30)).await {
            Some(l) => l,
            None => panic!("{}: no output in 30 s; stderr so far:\n{}", self.what, self.stderr()),
        }
    }

    pub async fn expect_line(&mut self, want: &str) {
        let got = self.line().await;
        assert_eq!(got, want, "{}: stderr:\n{}", self.what, self.stderr());
    }

    /// The next JSON line (progress lines before it are skipped).
    pub async fn json(&mut self) -> Value {
        loop {
            let l = self.line().await;
            if l.starts_with('{') {
                return serde_json::from_str(&l).unwrap_or_else(|e| panic!("{}: {e}: {l}", self.what));
            }
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publish `subject` upstream until the script says `primed`.
pub async fn prime_script(direct: &async_nats::Client, subject: &str, script: &mut Script) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        direct.publish(subject.to_string(), "prime".into()).await.unwrap();
        direct.flush().await.unwrap();
        if let Some(l) = script.line_within(Duration::from_millis(150)).await {
            assert_eq!(l, "primed", "{}", script.what);
            return;
        }
        assert!(Instant::now() < deadline, "{}: subscriptions never became live", script.what);
    }
}
