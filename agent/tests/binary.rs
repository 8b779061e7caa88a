//! The agent binary: stdin piped in, SIGTERM drains and exits 0, SIGHUP
//! reloads the config (an invalid one is refused and the running one kept).

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use flotilla_testsupport::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_flotilla-agent");

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    for _ in 0..200 {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("agent did not exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_lines_arrive_and_sigterm_exits_0() {
    let (nats, js) = nats_with_stream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    let sources = "[[sources]]\ntype = \"stdin\"\norg = \"acme\"\napp = \"batch\"\ncodec = \"logfmt\"\n";
    std::fs::write(
        &path,
        config_text(&dir.path().join("data"), &nats.url(), &format!("127.0.0.1:{}", free_port()), sources),
    )
    .unwrap();
    let mut child = Command::new(BIN).args(["run", "-c"]).arg(&path).stdin(Stdio::piped()).spawn().unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..50 {
            writeln!(stdin, "level=warn msg=\"job {i}\" duration=12ms").unwrap();
        }
    }
    wait_for(&js, 50).await;
    signal(&child, libc::SIGTERM);
    assert!(wait_exit(&mut child).success());
    let got = events(&js).await;
    assert_eq!(got.len(), 50);
    assert_eq!(got[7].0, "logs.acme.batch.iad.h1");
    assert_eq!((got[7].1.level.as_str(), got[7].1.message.as_str()), ("warn", "job 7"));
    assert_eq!(got[7].1.fields["duration"], "12ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_valid_config_and_keeps_the_running_one_otherwise() {
    let (nats, js) = nats_with_stream().await;
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    std::fs::write(one.join("a.log"), "from one\n").unwrap();
    std::fs::write(two.join("b.log"), "from two\n").unwrap();
    let source = |d: &std::path::Path, app: &str| {
        format!("[[sources]]\ntype = \"file\"\nname = \"{app}\"\ninclude = [\"{}/*.log\"]\norg = \"acme\"\napp = \"{app}\"\n", d.display())
    };
    let http = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("data");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config_text(&data, &nats.url(), &http, &source(&one, "one"))).unwrap();
    let mut child = Command::new(BIN).args(["run", "-c"]).arg(&path).spawn().unwrap();
    wait_for(&js, 1).await;

    // A broken config: refused, the agent keeps running the old one.
    std::fs::write(&path, "this is = not [valid").unwrap();
    signal(&child, libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut a = std::fs::OpenOptions::new().append(true).open(one.join("a.log")).unwrap();
    a.write_all(b"still one\n").unwrap();
    wait_for(&js, 2).await;
    assert!(child.try_wait().unwrap().is_none(), "still running");

    // A valid new config: both sources.
    let both = format!("{}{}", source(&one, "one"), source(&two, "two"));
    std::fs::write(&path, config_text(&data, &nats.url(), &http, &both)).unwrap();
    signal(&child, libc::SIGHUP);
    wait_for(&js, 3).await;
    signal(&child, libc::SIGTERM);
    assert!(wait_exit(&mut child).success());
    let got: Vec<(String, String)> = events(&js).await.into_iter().map(|(s, e)| (s, e.message)).collect();
    assert_eq!(
        got,
        [
            ("logs.acme.one.iad.h1".to_string(), "from one".to_string()),
            ("logs.acme.one.iad.h1".into(), "still one".into()),
            ("logs.acme.two.iad.h1".into(), "from two".into()),
        ]
    );
}
