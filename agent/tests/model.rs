//! A model test of the file source against a real nats-server and the real
//! agent binary: random sequences of appends, rotations by rename,
//! copytruncate (after the agent caught up), deletions, `kill -9` of the
//! agent and restarts of nats-server. After each sequence the stream holds
//! every written line exactly once, in order within each file incarnation.
//!
//! Rotated files are named `app.log.r<k>` and stay matched by the include
//! pattern (`app.log*`): that is how a rotation while the agent is down
//! loses nothing. Copies made by copytruncate (`copy-<k>.old`) are not
//! matched, as in a real setup: their lines were delivered before.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use proptest::prelude::*;

use common::*;
use flotilla_core::event::LogEvent;
use flotilla_testsupport::NatsServer;

const BIN: &str = env!("CARGO_BIN_EXE_flotilla-agent");
const FILES: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Append { file: usize, lines: usize },
    Rotate { file: usize },
    CopyTruncate { file: usize },
    Delete { file: usize },
    KillAgent,
    RestartNats,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..FILES, 1..40usize).prop_map(|(file, lines)| Op::Append { file, lines }),
        2 => (0..FILES).prop_map(|file| Op::Rotate { file }),
        1 => (0..FILES).prop_map(|file| Op::CopyTruncate { file }),
        1 => (0..FILES).prop_map(|file| Op::Delete { file }),
        2 => Just(Op::KillAgent),
        1 => Just(Op::RestartNats),
    ]
}

struct World {
    nats: NatsServer,
    dir: PathBuf,
    agent: Option<Child>,
    /// Lines written per file, in order: `f<file>-<n>`.
    written: Vec<usize>,
    rotations: usize,
}

impl World {
    fn log(&self, file: usize) -> PathBuf {
        self.dir.join(format!("logs/acme/app{file}/app.log"))
    }

    fn start_agent(&mut self) {
        let cfg = self.dir.join("agent.toml");
        let sources = format!(
            "[[sources]]\ntype = \"file\"\ninclude = [\"{}/logs/{{org}}/{{app}}/app.log*\"]\npoll_interval = \"500ms\"\n",
            self.dir.display()
        );
        let http = format!("127.0.0.1:{}", flotilla_testsupport::free_port());
        std::fs::write(&cfg, config_text(&self.dir.join("data"), &self.nats.url(), &http, &sources)).unwrap();
        let child = Command::new(BIN).args(["run", "-c"]).arg(&cfg).env("RUST_LOG", "warn").spawn().unwrap();
        self.agent = Some(child);
    }

    fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    fn total(&self) -> u64 {
        self.written.iter().sum::<usize>() as u64
    }

    fn append(&mut self, file: usize, lines: usize) {
        let path = self.log(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let mut buf = String::new();
        for _ in 0..lines {
            buf.push_str(&format!("f{file}-{}\n", self.written[file]));
            self.written[file] += 1;
        }
        f.write_all(buf.as_bytes()).unwrap();
    }

    async fn caught_up(&self, js: &async_nats::jetstream::Context) {
        wait_for(js, self.total()).await;
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

async fn run(ops: Vec<Op>) {
    let nats = NatsServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut w = World { nats, dir: tmp.path().to_path_buf(), agent: None, written: vec![0; FILES], rotations: 0 };
    let mut js = js(&w.nats.url()).await;
    create_stream(&js).await;
    w.start_agent();
    for op in ops {
        match op {
            Op::Append { file, lines } => w.append(file, lines),
            Op::Rotate { file } => {
                let path = w.log(file);
                if path.exists() {
                    w.rotations += 1;
                    let rotated = PathBuf::from(format!("{}.r{}", path.display(), w.rotations));
                    std::fs::rename(&path, rotated).unwrap();
                }
            }
            Op::CopyTruncate { file } => {
                // Like logrotate's copytruncate, once the agent has caught up.
                if w.agent.is_none() {
                    w.start_agent();
                }
                w.caught_up(&js).await;
                let path = w.log(file);
                if path.exists() {
                    w.rotations += 1;
                    std::fs::copy(&path, w.dir.join(format!("copy-{}.old", w.rotations))).unwrap();
                    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
                }
            }
            Op::Delete { file } => {
                if w.agent.is_none() {
                    w.start_agent();
                }
                w.caught_up(&js).await;
                let _ = std::fs::remove_file(w.log(file));
            }
            Op::KillAgent => {
                w.kill_agent();
                w.start_agent();
            }
            Op::RestartNats => {
                w.nats.restart();
                js = common::js(&w.nats.url()).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    if w.agent.is_none() {
        w.start_agent();
    }
    w.caught_up(&js).await;
    // Anything extra (a duplicate) would arrive now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.kill_agent();
    check(&js, &w.written).await;
}

async fn check(js: &async_nats::jetstream::Context, written: &[usize]) {
    let stream = js.get_stream("LOGS").await.unwrap();
    let n = stream_len(js).await;
    let mut seen = BTreeSet::new();
    // Per incarnation (the nonce in the de-duplication id): the line numbers in stream order.
    let mut by_incarnation: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
    for seq in 1..=n {
        let m = stream.get_raw_message(seq).await.unwrap();
        let e = LogEvent::from_json(&m.payload).unwrap();
        assert!(seen.insert(e.message.clone()), "duplicate {:?} at stream seq {seq}", e.message);
        let id = m.headers.get("Nats-Msg-Id").map(|v| v.to_string()).unwrap_or_default();
        let nonce = id.split('/').nth(2).unwrap_or_default().to_string();
        let (file, line) = e.message.trim_start_matches('f').split_once('-').unwrap();
        by_incarnation.entry(nonce).or_default().push((file.parse().unwrap(), line.parse().unwrap()));
    }
    let want: BTreeSet<String> =
        written.iter().enumerate().flat_map(|(f, n)| (0..*n).map(move |i| format!("f{f}-{i}"))).collect();
    let missing: Vec<_> = want.difference(&seen).take(5).collect();
    assert!(missing.is_empty(), "lines missing, e.g. {missing:?}");
    assert_eq!(seen.len(), want.len());
    for (nonce, lines) in by_incarnation {
        assert!(
            lines.windows(2).all(|w| w[0].0 == w[1].0 && w[0].1 < w[1].1),
            "out of order in incarnation {nonce}: {lines:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn every_line_exactly_once_whatever_happens(ops in prop::collection::vec(op(), 4..14)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}

/// One fixed, nasty sequence that always runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_kill_and_nats_restart_in_a_row() {
    run(vec![
        Op::Append { file: 0, lines: 30 },
        Op::Rotate { file: 0 },
        Op::Append { file: 0, lines: 10 },
        Op::KillAgent,
        Op::Append { file: 1, lines: 25 },
        Op::RestartNats,
        Op::Append { file: 0, lines: 5 },
        Op::CopyTruncate { file: 0 },
        Op::Append { file: 0, lines: 7 },
        Op::Delete { file: 1 },
        Op::Append { file: 1, lines: 3 },
        Op::KillAgent,
        Op::Append { file: 1, lines: 4 },
    ])
    .await;
}
