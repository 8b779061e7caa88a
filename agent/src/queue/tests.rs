use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::timeout;

use super::segment::{CHUNK, HEADER_LEN};
use super::*;

const SHORT: Duration = Duration::from_millis(100);

fn config(dir: &Path, max_bytes: u64, segment_bytes: u64, when_full: WhenFull) -> QueueConfig {
    QueueConfig { dir: dir.to_path_buf(), max_bytes, segment_bytes, when_full }
}

fn open(dir: &Path) -> (DiskQueue, OpenReport) {
    DiskQueue::open(config(dir, 1 << 30, 1 << 20, WhenFull::Block)).unwrap()
}

fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut p = format!("event-{i}-").into_bytes();
    p.resize(len, b'x');
    p
}

async fn push(q: &DiskQueue, payload: &[u8]) -> u64 {
    match q.push(payload).await.unwrap() {
        Pushed::Stored(seq) => seq,
        Pushed::Dropped => panic!("dropped"),
    }
}

async fn next(q: &DiskQueue) -> Record {
    timeout(SHORT, q.next()).await.expect("no record").unwrap()
}

async fn assert_empty(q: &DiskQueue) {
    assert!(timeout(SHORT, q.next()).await.is_err(), "a record was handed out");
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn push_next_ack_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (q, report) = open(dir.path());
    assert_eq!(report, OpenReport::default());
    for i in 1..=3 {
        assert_eq!(push(&q, &payload(i, 50)).await, i);
    }
    assert_eq!(q.pending(), 3);
    assert_eq!(q.bytes(), 3 * (HEADER_LEN + 50));
    for i in 1..=3 {
        assert_eq!(next(&q).await, Record { seq: i, payload: payload(i, 50) });
    }
    assert_empty(&q).await;
    q.ack(2);
    assert_eq!((q.pending(), q.bytes()), (1, HEADER_LEN + 50));
    q.ack(3);
    assert_eq!((q.pending(), q.bytes()), (0, 0));
}

#[tokio::test]
async fn next_is_cancel_safe_and_wakes_on_push() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = open(dir.path());
    assert_empty(&q).await; // a cancelled next took nothing
    let waiter = tokio::spawn({
        let q = q.clone();
        async move { q.next().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    push(&q, b"a").await;
    let rec = timeout(SHORT, waiter).await.unwrap().unwrap();
    assert_eq!(rec, Record { seq: 1, payload: b"a".to_vec() });
}

#[tokio::test]
async fn rewind_hands_out_unacked_again_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments, so the rewind crosses segment boundaries.
    let (q, _) = DiskQueue::open(config(dir.path(), 1 << 20, 100, WhenFull::Block)).unwrap();
    for i in 1..=6 {
        push(&q, &payload(i, 40)).await;
    }
    for i in 1..=6 {
        assert_eq!(next(&q).await.seq, i);
    }
    q.ack(2);
    q.rewind();
    for i in 3..=6 {
        assert_eq!(next(&q).await, Record { seq: i, payload: payload(i, 40) });
    }
    assert_empty(&q).await;
    q.ack(4);
    q.sync().unwrap();
    q.rewind();
    assert_eq!(next(&q).await.seq, 5);
}

#[tokio::test]
async fn reopen_keeps_unacked_records_and_seqs_keep_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || config(dir.path(), 1 << 20, 200, WhenFull::Block);
    let (q, _) = DiskQueue::open(cfg()).unwrap();
    for i in 1..=10 {
        push(&q, &payload(i, 60)).await;
    }
    for _ in 1..=4 {
        next(&q).await;
    }
    q.ack(4);
    q.sync().unwrap();
    q.ack(6); // not synced: these come back after a restart
    drop(q); // no sync: like kill -9 after the last write(2)

    let (q, report) = DiskQueue::open(cfg()).unwrap();
    assert_eq!(report, OpenReport { records: 6, bytes: 6 * (HEADER_LEN + 60), ..Default::default() });
    assert_eq!(q.pending(), 6);
    for i in 5..=10 {
        assert_eq!(next(&q).await, Record { seq: i, payload: payload(i, 60) });
    }
    assert_eq!(push(&q, b"more").await, 11);
    assert_eq!(next(&q).await.seq, 11);
    q.ack(11);
    q.sync().unwrap();
    assert!(segments(dir.path()).is_empty(), "all acked: no segment left");
    drop(q);

    let (q, report) = DiskQueue::open(cfg()).unwrap();
    assert_eq!(report, OpenReport::default());
    assert_eq!(push(&q, b"after").await, 12, "a seq is never reused");
    drop(q);
    let (q, report) = DiskQueue::open(cfg()).unwrap();
    assert_eq!(report.records, 1);
    assert_eq!(next(&q).await, Record { seq: 12, payload: b"after".to_vec() });
    assert_eq!(push(&q, b"x").await, 13);
}

#[tokio::test]
async fn block_waits_until_an_ack_frees_room() {
    let dir = tempfile::tempdir().unwrap();
    let rec = HEADER_LEN + 80;
    let (q, _) = DiskQueue::open(config(dir.path(), 3 * rec, 1 << 20, WhenFull::Block)).unwrap();
    for i in 1..=3 {
        push(&q, &payload(i, 80)).await;
    }
    assert!(timeout(SHORT, q.push(b"late")).await.is_err(), "push must wait while full");
    assert_eq!(q.pending(), 3, "a cancelled push stored nothing");
    let pusher = tokio::spawn({
        let q = q.clone();
        async move { q.push(b"late").await.unwrap() }
    });
    tokio::time::sleep(SHORT).await;
    assert!(!pusher.is_finished());
    q.ack(1);
    let pushed = timeout(SHORT, pusher).await.expect("push still blocked").unwrap();
    assert_eq!(pushed, Pushed::Stored(4));
    assert_eq!(q.dropped(), 0);
}

#[tokio::test]
async fn drop_newest_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let rec = HEADER_LEN + 80;
    let (q, _) = DiskQueue::open(config(dir.path(), 2 * rec, 1 << 20, WhenFull::DropNewest)).unwrap();
    push(&q, &payload(1, 80)).await;
    push(&q, &payload(2, 80)).await;
    for _ in 0..3 {
        assert_eq!(q.push(b"lost").await.unwrap(), Pushed::Dropped);
    }
    assert_eq!(q.dropped(), 3);
    assert_eq!(q.pending(), 2);
    q.ack(1);
    assert_eq!(q.push(b"kept").await.unwrap(), Pushed::Stored(3), "drops use no seq");
    let seqs = [next(&q).await.seq, next(&q).await.seq];
    assert_eq!(seqs, [2, 3]);
}

/// Ten records of `HEADER_LEN + 100` bytes in one segment, queue closed.
async fn ten_records(dir: &Path) -> PathBuf {
    let (q, _) = open(dir);
    for i in 1..=10 {
        push(&q, &payload(i, 100)).await;
    }
    drop(q);
    segments(dir).remove(0)
}

fn patch(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

async fn drain(q: &DiskQueue) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Ok(rec) = timeout(SHORT, q.next()).await {
        let rec = rec.unwrap();
        assert_eq!(rec.payload, payload(rec.seq, 100), "payload of {}", rec.seq);
        seqs.push(rec.seq);
    }
    seqs
}

#[tokio::test]
async fn a_damaged_record_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let seg = ten_records(dir.path()).await;
    let rec = (HEADER_LEN + 100) as usize;
    patch(&seg, |b| b[4 * rec + HEADER_LEN as usize + 10] ^= 0x40); // payload of seq 5
    let (q, report) = open(dir.path());
    assert_eq!(report.corrupted_records, 1);
    assert_eq!(report.corrupted_bytes, rec as u64);
    assert_eq!(report.records, 9);
    assert_eq!(drain(&q).await, [1, 2, 3, 4, 6, 7, 8, 9, 10]);
    assert_eq!(push(&q, &payload(11, 100)).await, 11);
}

#[tokio::test]
async fn a_damaged_range_counts_the_records_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let seg = ten_records(dir.path()).await;
    let rec = (HEADER_LEN + 100) as usize;
    // Zero seq 3 from its length on, all of 4, and the header of 5.
    patch(&seg, |b| b[2 * rec + 5..4 * rec + 8].fill(0));
    let (q, report) = open(dir.path());
    assert_eq!(report.corrupted_records, 3);
    assert_eq!(report.corrupted_bytes, 3 * rec as u64);
    assert_eq!(drain(&q).await, [1, 2, 6, 7, 8, 9, 10]);
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let seg = ten_records(dir.path()).await;
    let rec = HEADER_LEN + 100;
    patch(&seg, |b| b.truncate(b.len() - 7));
    let (q, report) = open(dir.path());
    assert_eq!(report, OpenReport { records: 9, bytes: 9 * rec, corrupted_records: 1, corrupted_bytes: rec - 7 });
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 9 * rec, "torn tail truncated");
    assert_eq!(drain(&q).await, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    q.ack(9);
    q.sync().unwrap();
    assert!(segments(dir.path()).is_empty());
    drop(q);
    // Seq 10 may have been handed out before the damage: never reuse it,
    // even with every segment gone.
    let (q, _) = open(dir.path());
    assert_eq!(push(&q, &payload(11, 100)).await, 11);
    drop(q);
    let (q, report) = open(dir.path());
    assert_eq!((report.records, report.corrupted_records), (1, 0));
    assert_eq!(drain(&q).await, [11]);
}

#[tokio::test]
async fn garbage_and_a_damaged_ack_file_do_not_stop_open() {
    let dir = tempfile::tempdir().unwrap();
    let seg = ten_records(dir.path()).await;
    std::fs::write(dir.path().join("acked"), b"\0garbage").unwrap();
    // A segment that is all garbage, and a record out of order.
    std::fs::write(dir.path().join(format!("{:020}.seg", 0)), vec![0x46; 5000]).unwrap();
    let first = std::fs::read(&seg).unwrap()[..(HEADER_LEN + 100) as usize].to_vec();
    std::fs::write(dir.path().join(format!("{:020}.seg", 50)), first).unwrap();
    let (q, report) = open(dir.path());
    assert_eq!(report.records, 10);
    assert_eq!(report.corrupted_records, 2);
    assert_eq!(drain(&q).await, (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn segments_are_deleted_after_ack_and_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = DiskQueue::open(config(dir.path(), 1 << 20, 1000, WhenFull::Block)).unwrap();
    for i in 1..=50 {
        push(&q, &payload(i, 100)).await; // 9 records a segment
    }
    assert_eq!(segments(dir.path()).len(), 6);
    for _ in 1..=50 {
        next(&q).await;
    }
    q.ack(30);
    assert_eq!(segments(dir.path()).len(), 6, "ack alone deletes nothing");
    assert_eq!(q.pending(), 20);
    q.sync().unwrap();
    let left = segments(dir.path());
    assert_eq!(left.len(), 3, "{left:?}");
    assert_eq!(left[0].file_name().unwrap(), format!("{:020}.seg", 28).as_str());
    assert_eq!(q.pending(), 20);
    assert_eq!(q.bytes(), 20 * (HEADER_LEN + 100));
    q.rewind();
    assert_eq!(next(&q).await.seq, 31);
    q.ack(50);
    q.sync().unwrap();
    assert!(segments(dir.path()).is_empty());
    assert_eq!((q.pending(), q.bytes()), (0, 0));
    assert_eq!(q.inner.state.lock().unwrap().segment_count(), 0);
    assert_eq!(push(&q, b"z").await, 51);
    assert_eq!(next(&q).await.seq, 51);
}

#[tokio::test]
async fn a_large_queue_is_read_through_a_small_buffer() {
    const N: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let cfg = || config(dir.path(), 1 << 30, 4 << 20, WhenFull::Block);
    let (q, _) = DiskQueue::open(cfg()).unwrap();
    for i in 1..=N {
        push(&q, &payload(i, 200)).await;
    }
    assert_eq!(q.bytes(), N * (HEADER_LEN + 200));
    drop(q);
    let (q, report) = DiskQueue::open(cfg()).unwrap();
    assert_eq!(report.records, N);
    for i in 1..=N {
        let rec = q.next().await.unwrap();
        assert_eq!(rec.seq, i);
        if i % 1000 == 0 {
            assert_eq!(rec.payload, payload(i, 200));
            assert!(q.state().buffered() <= 2 * CHUNK, "read-ahead grew to {}", q.state().buffered());
            q.ack(i);
        }
    }
    q.sync().unwrap();
    assert!(segments(dir.path()).is_empty());
}
