//! Every source type into a real JetStream: syslog (UDP and TCP, RFC 3164
//! and 5424, newline and octet-counting framing), journald from recorded
//! `journalctl -o json` output, Docker json-file logs, multi-line joining,
//! over-long lines and invalid UTF-8.

mod common;

use std::io::Write as _;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use common::*;
use flotilla_testsupport::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_udp_and_tcp_in_both_formats() {
    let (nats, js) = nats_with_stream().await;
    let dir = tempfile::tempdir().unwrap();
    let (udp, tcp) = (free_port(), free_port());
    let cfg = config(
        dir.path(),
        &nats.url(),
        &format!(
            "[[sources]]\ntype = \"syslog\"\nudp = \"127.0.0.1:{udp}\"\ntcp = \"127.0.0.1:{tcp}\"\norg = \"acme\"\n"
        ),
    );
    let agent = Agent::start(cfg);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(
        b"<165>1 2026-11-22T10:00:00.000Z web01 nginx 123 ID47 [ex@32473 a=\"1\"] hello 5424 over udp",
        ("127.0.0.1", udp),
    )
    .await
    .unwrap();
    sock.send_to(b"<34>Nov 22 10:00:00 web01 sshd[99]: hello 3164 over udp", ("127.0.0.1", udp)).await.unwrap();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", tcp)).await.unwrap();
    conn.write_all(b"<13>Nov 22 10:00:01 web02 cron[7]: hello 3164 over tcp\n").await.unwrap();
    let octet = "<11>1 2026-11-22T10:00:02Z web02 billing - - - hello 5424 over tcp\nwith a newline inside";
    conn.write_all(format!("{} {octet}", octet.len()).as_bytes()).await.unwrap();
    conn.flush().await.unwrap();

    wait_for(&js, 4).await;
    agent.stop().await;
    let mut got: Vec<(String, String, String)> =
        events(&js).await.into_iter().map(|(s, e)| (s, e.level, e.message)).collect();
    got.sort();
    let want = [
        ("logs.acme.billing.iad.h1", "error", "hello 5424 over tcp\nwith a newline inside"),
        ("logs.acme.cron.iad.h1", "info", "hello 3164 over tcp"),
        ("logs.acme.nginx.iad.h1", "info", "hello 5424 over udp"),
        ("logs.acme.sshd.iad.h1", "fatal", "hello 3164 over udp"),
    ];
    assert_eq!(got, want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())));
    drop(nats);
}

const JOURNAL: &str = r#"{"__CURSOR":"s=6c1;i=1a;b=9f;m=11;t=5f;x=aa","__REALTIME_TIMESTAMP":"1763805600000000","PRIORITY":"6","SYSLOG_IDENTIFIER":"nginx","_SYSTEMD_UNIT":"nginx.service","_PID":"812","MESSAGE":"started worker process 812"}
{"__CURSOR":"s=6c1;i=1b;b=9f;m=12;t=5f;x=ab","__REALTIME_TIMESTAMP":"1763805601000000","PRIORITY":"3","_SYSTEMD_UNIT":"billing.service","MESSAGE":"payment gateway unreachable"}
{"__CURSOR":"s=6c1;i=1c;b=9f;m=13;t=5f;x=ac","__REALTIME_TIMESTAMP":"1763805602000000","PRIORITY":"4","SYSLOG_IDENTIFIER":"kernel","MESSAGE":[104,105,255,33]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journald_entries_from_recorded_output_with_their_cursor() {
    let (nats, js) = nats_with_stream().await;
    let dir = tempfile::tempdir().unwrap();
    let recorded = dir.path().join("journal.json");
    std::fs::write(&recorded, JOURNAL).unwrap();
    // The reader ignores journalctl's arguments (sh -c gets them as $0...).
    let cmd = format!("[\"sh\", \"-c\", \"cat {}; sleep 60\"]", recorded.display());
    let data = dir.path().join("data");
    let cfg =
        config(&data, &nats.url(), &format!("[[sources]]\ntype = \"journald\"\norg = \"acme\"\ncommand = {cmd}\n"));
    let agent = Agent::start(cfg);
    wait_for(&js, 3).await;
    agent.stop().await;
    let got = events(&js).await;
    let summary: Vec<(String, String, String)> =
        got.iter().map(|(s, e)| (s.clone(), e.level.clone(), e.message.clone())).collect();
    assert_eq!(summary[0], ("logs.acme.nginx.iad.h1".into(), "info".into(), "started worker process 812".into()));
    assert_eq!(summary[1], ("logs.acme.billing.iad.h1".into(), "error".into(), "payment gateway unreachable".into()));
    assert_eq!(summary[2].0, "logs.acme.kernel.iad.h1");
    assert_eq!(summary[2].1, "warn");
    assert_eq!(got[2].1.fields["invalid_utf8"], true);
    assert_eq!(got[0].1.ts.timestamp(), 1763805600);
    let cursor = std::fs::read_to_string(data.join("journald/journald-0.cursor")).unwrap();
    assert_eq!(cursor.trim(), "s=6c1;i=1c;b=9f;m=13;t=5f;x=ac");
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_multiline_long_lines_and_invalid_utf8() {
    let (nats, js) = nats_with_stream().await;
    let dir = tempfile::tempdir().unwrap();
    let containers = dir.path().join("containers/abc123");
    std::fs::create_dir_all(&containers).unwrap();
    let mut d = std::fs::File::create(containers.join("abc123-json.log")).unwrap();
    writeln!(d, r#"{{"log":"GET / 200\n","stream":"stdout","time":"2026-11-22T10:00:00.000000001Z"}}"#).unwrap();
    writeln!(d, r#"{{"log":"a very long line, part one; ","stream":"stderr","time":"2026-11-22T10:00:01Z"}}"#).unwrap();
    writeln!(d, r#"{{"log":"part two\n","stream":"stderr","time":"2026-11-22T10:00:01Z"}}"#).unwrap();
    drop(d);
    let apps = dir.path().join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    let mut f = std::fs::File::create(apps.join("app.log")).unwrap();
    f.write_all(b"2026-11-22 10:00:00 ERROR boom\njava.lang.IllegalStateException: bad\n\tat A.b(A.java:1)\n\tat C.d(C.java:2)\n").unwrap();
    f.write_all(format!("2026-11-22 10:00:01 INFO {}\n", "x".repeat(200)).as_bytes()).unwrap();
    f.write_all(b"2026-11-22 10:00:02 INFO caf\xe9 latin-1\n").unwrap();
    f.write_all(b"2026-11-22 10:00:03 INFO last, flushed by the timeout\n").unwrap();
    drop(f);
    let sources = format!(
        "[[sources]]\ntype = \"docker\"\ninclude = [\"{}/containers/*/*-json.log\"]\norg = \"acme\"\napp = \"containers\"\n\
         [[sources]]\ntype = \"file\"\ninclude = [\"{}/apps/app.log\"]\norg = \"globex\"\napp = \"billing\"\nmax_line_bytes = 100\n\
         multiline = {{ start_pattern = '^\\d{{4}}-', timeout = \"300ms\" }}\n",
        dir.path().display(),
        dir.path().display()
    );
    let cfg = config(&dir.path().join("data"), &nats.url(), &sources);
    let agent = Agent::start(cfg);
    // docker: 2 events; file: trace, 2 pieces + 1 remainder of the long line, latin-1, last.
    wait_for(&js, 8).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.stop().await;
    let got = events(&js).await;
    assert_eq!(got.len(), 8, "{got:#?}");
    let docker: Vec<_> = got.iter().filter(|(s, _)| s.starts_with("logs.acme.containers.")).map(|(_, e)| e).collect();
    assert_eq!(docker.len(), 2);
    assert_eq!(docker[0].message, "GET / 200");
    assert_eq!(docker[0].fields["stream"], "stdout");
    assert_eq!(docker[1].message, "a very long line, part one; part two", "Docker's split record is rejoined");
    let file: Vec<_> = got.iter().filter(|(s, _)| s.starts_with("logs.globex.billing.")).map(|(_, e)| e).collect();
    assert_eq!(
        file[0].message,
        "2026-11-22 10:00:00 ERROR boom\njava.lang.IllegalStateException: bad\n\tat A.b(A.java:1)\n\tat C.d(C.java:2)"
    );
    assert_eq!(file[0].level, "error");
    let pieces: Vec<_> = file[1..4].iter().map(|e| (e.message.len(), e.fields.get("split").is_some())).collect();
    assert_eq!(pieces, [(100, true), (100, true), (25, false)], "the long line in flagged pieces, nothing lost");
    assert_eq!(file[4].message, "2026-11-22 10:00:02 INFO caf\u{fffd} latin-1");
    assert_eq!(file[4].fields["invalid_utf8"], true);
    assert_eq!(file[5].message, "2026-11-22 10:00:03 INFO last, flushed by the timeout");
    let seqs: Vec<u64> = file.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    drop(nats);
}
