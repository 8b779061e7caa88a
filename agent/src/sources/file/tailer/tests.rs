use super::*;
use std::io::Write as _;

fn open(path: &Path, cp: Option<&FileCheckpoint>) -> Tailer {
    let key = identity(&std::fs::metadata(path).unwrap());
    Tailer::open(path, key, OrgId::new("acme").unwrap(), "web".into(), cp, false).unwrap()
}

fn texts(lines: &[Line]) -> Vec<String> {
    lines.iter().map(|l| String::from_utf8_lossy(&l.bytes).to_string()).collect()
}

#[test]
fn lines_partial_lines_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"one\r\ntwo\nthr").unwrap();
    let mut t = open(&path, None);
    let lines = t.read_lines(1024, 1 << 20).unwrap();
    assert_eq!(texts(&lines), ["one", "two"]);
    assert_eq!((lines[1].offset, lines[1].end), (5, 9));
    f.write_all(b"ee\n").unwrap();
    let lines = t.read_lines(1024, 1 << 20).unwrap();
    assert_eq!(texts(&lines), ["three"]);
    assert_eq!(lines[0].offset, 9);
}

#[test]
fn long_lines_are_split_and_flagged_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    std::fs::write(&path, format!("{}\nshort\n", "x".repeat(250))).unwrap();
    let mut t = open(&path, None);
    let lines = t.read_lines(100, 1 << 20).unwrap();
    let sizes: Vec<_> = lines.iter().map(|l| (l.bytes.len(), l.split)).collect();
    assert_eq!(sizes, [(100, true), (100, true), (50, false), (5, false)]);
}

#[test]
fn a_line_of_exactly_the_maximum_is_whole_and_one_byte_more_is_split() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    std::fs::write(&path, format!("{}\n{}\n", "x".repeat(100), "y".repeat(101))).unwrap();
    let mut t = open(&path, None);
    let lines = t.read_lines(100, 1 << 20).unwrap();
    let sizes: Vec<_> = lines.iter().map(|l| (l.bytes.len(), l.split)).collect();
    assert_eq!(sizes, [(100, false), (100, true), (1, false)]);
    assert_eq!(lines.last().map(|l| l.end), Some(203), "every byte accounted for");
}

#[test]
fn rewind_returns_to_the_acknowledged_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    std::fs::write(&path, "a\nb\nc\n").unwrap();
    let mut t = open(&path, None);
    let lines = t.read_lines(1024, 1 << 20).unwrap();
    let (nonce, s1) = (t.nonce.clone(), t.next_seq());
    t.next_seq();
    t.ack(&nonce, lines[0].end, s1);
    t.rewind();
    assert_eq!(texts(&t.read_lines(1024, 1 << 20).unwrap()), ["b", "c"]);
    assert_eq!(t.next_seq(), 2, "seq continues after the acknowledged event");
    assert_eq!(t.checkpoint().offset, 2);
}

#[test]
fn truncation_starts_a_new_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    std::fs::write(&path, "aaaa\nbbbb\n").unwrap();
    let mut t = open(&path, None);
    let lines = t.read_lines(1024, 1 << 20).unwrap();
    let nonce = t.nonce.clone();
    t.ack(&nonce, lines[1].end, 2);
    std::fs::write(&path, "c\n").unwrap();
    let lines = t.read_lines(1024, 1 << 20).unwrap();
    assert_eq!(texts(&lines), ["c"]);
    assert_ne!(t.nonce, nonce);
    assert_eq!((lines[0].offset, t.next_seq()), (0, 1));
    // A late ack from the old incarnation changes nothing.
    t.ack(&nonce, 10, 2);
    assert_eq!(t.checkpoint().offset, 0);
}

#[test]
fn a_checkpoint_resumes_only_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    std::fs::write(&path, "first line of file one\nsecond\n").unwrap();
    let mut t = open(&path, None);
    t.read_lines(1024, 1 << 20).unwrap();
    let nonce = t.nonce.clone();
    t.ack(&nonce, 23, 1);
    let cp = t.checkpoint();
    drop(t);
    let mut again = open(&path, Some(&cp));
    assert_eq!(again.nonce, nonce);
    assert_eq!(texts(&again.read_lines(1024, 1 << 20).unwrap()), ["second"]);
    // Another file with the same length at the same identity: not resumed.
    std::fs::write(&path, "FIRST LINE OF FILE TWO\nsecond\n").unwrap();
    let mut other = open(&path, Some(&cp));
    assert_ne!(other.nonce, nonce);
    assert_eq!(texts(&other.read_lines(1024, 1 << 20).unwrap()), ["FIRST LINE OF FILE TWO", "second"]);
}

#[test]
fn drops_are_announced_by_the_next_published_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    std::fs::write(&path, b"").unwrap();
    let mut t = open(&path, None);
    let nonce = t.nonce.to_string();
    let s1 = t.next_seq();
    assert_eq!(t.publishing(s1), 0);
    let (_dropped2, _dropped3) = (t.next_seq(), t.next_seq());
    let s4 = t.next_seq();
    assert_eq!(t.publishing(s4), 2, "seqs 2 and 3 went to dropped events");
    // A failed publish rewinds to the last acknowledged published event.
    t.ack(&nonce, 0, s1);
    t.ack_published(&nonce, s1);
    t.rewind();
    let _ = (t.next_seq(), t.next_seq());
    let s4 = t.next_seq();
    assert_eq!(t.publishing(s4), 2);
    assert_eq!(t.checkpoint().published_seq, Some(1));
}
