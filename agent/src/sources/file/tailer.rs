//! One tailed file: positional reads from where the last line ended, split
//! into lines, with the acknowledged offset kept apart from the read offset so
//! a failed publish rewinds to the last line known to be in the stream.

use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use flotilla_core::subject::OrgId;

use super::checkpoint::FileCheckpoint;

/// A file's identity: device and inode.
pub fn identity(meta: &std::fs::Metadata) -> String {
    format!("{}:{}", meta.dev(), meta.ino())
}

/// One line (or one piece of an over-long line) read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Byte offset of the line's first byte: with the file identity and
    /// generation, the event's de-duplication id.
    pub offset: u64,
    /// Offset just past the line (and its newline, if any).
    pub end: u64,
    pub seq: u64,
    pub bytes: Vec<u8>,
    /// A piece of a line longer than the limit.
    pub split: bool,
}

pub struct Tailer {
    pub key: String,
    pub path: PathBuf,
    file: File,
    pub org: OrgId,
    pub app: String,
    pub generation: u64,
    /// Bytes read from the file so far.
    file_pos: u64,
    /// Offset where `pending` (an unfinished line) begins.
    line_start: u64,
    /// Seq of the last line handed out.
    seq: u64,
    acked_offset: u64,
    acked_seq: u64,
    pending: Vec<u8>,
    /// Matched by the include patterns in the latest discovery.
    pub seen: bool,
}

impl Tailer {
    pub fn open(path: &Path, key: String, org: OrgId, app: String, cp: Option<&FileCheckpoint>, start_at_end: bool) -> std::io::Result<Tailer> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let (mut offset, mut seq, mut generation) = match cp {
            Some(cp) => (cp.offset, cp.seq, cp.generation),
            None if start_at_end => (len, 0, 0),
            None => (0, 0, 0),
        };
        if offset > len {
            // Truncated while we were away.
            (offset, seq, generation) = (0, 0, generation + 1);
        }
        Ok(Tailer {
            key,
            path: path.to_path_buf(),
            file,
            org,
            app,
            generation,
            file_pos: offset,
            line_start: offset,
            seq,
            acked_offset: offset,
            acked_seq: seq,
            pending: Vec::new(),
            seen: true,
        })
    }

    /// Read up to about `budget` new bytes and return the complete lines.
    pub fn read_lines(&mut self, max_line: usize, budget: usize) -> std::io::Result<Vec<Line>> {
        let len = self.file.metadata()?.len();
        if len < self.file_pos {
            tracing::info!(path = %self.path.display(), "file truncated: reading it again from the start");
            self.generation += 1;
            (self.file_pos, self.line_start, self.seq, self.acked_offset, self.acked_seq) = (0, 0, 0, 0, 0);
            self.pending.clear();
        }
        let mut chunk = vec![0u8; 64 * 1024];
        let mut read = 0;
        while read < budget {
            let n = self.file.read_at(&mut chunk, self.file_pos)?;
            if n == 0 {
                break;
            }
            self.pending.extend_from_slice(&chunk[..n]);
            self.file_pos += n as u64;
            read += n;
        }
        Ok(self.split_lines(max_line))
    }

    fn split_lines(&mut self, max_line: usize) -> Vec<Line> {
        let mut lines = Vec::new();
        let mut at = 0;
        loop {
            let rest = &self.pending[at..];
            let newline = rest.iter().position(|b| *b == b'\n');
            let (take, consumed, split) = match newline {
                Some(i) if i <= max_line => (i, i + 1, false),
                Some(_) => (piece_len(rest, max_line), piece_len(rest, max_line), true),
                None if rest.len() > max_line => (piece_len(rest, max_line), piece_len(rest, max_line), true),
                None => break,
            };
            let mut bytes = rest[..take].to_vec();
            if bytes.last() == Some(&b'\r') && !split {
                bytes.pop();
            }
            self.seq += 1;
            lines.push(Line { offset: self.line_start, end: self.line_start + consumed as u64, seq: self.seq, bytes, split });
            self.line_start += consumed as u64;
            at += consumed;
        }
        self.pending.drain(..at);
        lines
    }

    /// A publish failed: go back to the last acknowledged line.
    pub fn rewind(&mut self) {
        (self.file_pos, self.line_start, self.seq) = (self.acked_offset, self.acked_offset, self.acked_seq);
        self.pending.clear();
    }

    /// The event ending at `end` is in the stream.
    pub fn ack(&mut self, generation: u64, end: u64, seq: u64) {
        if generation == self.generation && end > self.acked_offset {
            (self.acked_offset, self.acked_seq) = (end, seq);
        }
    }

    /// Everything read so far is acknowledged and nothing is left to read.
    pub fn drained(&self) -> bool {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        self.pending.is_empty() && self.acked_offset == self.file_pos && self.file_pos >= len
    }

    pub fn checkpoint(&self) -> FileCheckpoint {
        FileCheckpoint { path: self.path.clone(), offset: self.acked_offset, seq: self.acked_seq, generation: self.generation }
    }
}

/// At most `max` bytes, cut before a UTF-8 continuation byte when possible.
fn piece_len(bytes: &[u8], max: usize) -> usize {
    let mut n = max.min(bytes.len());
    while n > 0 && n < bytes.len() && (bytes[n] & 0xC0) == 0x80 && max - n < 4 {
        n -= 1;
    }
    if n == 0 {
        max.min(bytes.len())
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn tailer(path: &Path) -> Tailer {
        let key = identity(&std::fs::metadata(path).unwrap());
        Tailer::open(path, key, OrgId::new("acme").unwrap(), "web".into(), None, false).unwrap()
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
        let mut t = tailer(&path);
        let lines = t.read_lines(1024, 1 << 20).unwrap();
        assert_eq!(texts(&lines), ["one", "two"]);
        assert_eq!((lines[1].offset, lines[1].end, lines[1].seq), (5, 9, 2));
        f.write_all(b"ee\n").unwrap();
        let lines = t.read_lines(1024, 1 << 20).unwrap();
        assert_eq!(texts(&lines), ["three"]);
        assert_eq!((lines[0].offset, lines[0].seq), (9, 3));
    }

    #[test]
    fn long_lines_are_split_and_flagged_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, format!("{}\nshort\n", "x".repeat(250))).unwrap();
        let mut t = tailer(&path);
        let lines = t.read_lines(100, 1 << 20).unwrap();
        let sizes: Vec<_> = lines.iter().map(|l| (l.bytes.len(), l.split)).collect();
        assert_eq!(sizes, [(100, true), (100, true), (50, false), (5, false)]);
        let total: usize = lines.iter().map(|l| l.bytes.len()).sum();
        assert_eq!(total, 255);
    }

    #[test]
    fn rewind_returns_to_the_acknowledged_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        let mut t = tailer(&path);
        let lines = t.read_lines(1024, 1 << 20).unwrap();
        t.ack(0, lines[0].end, lines[0].seq);
        t.rewind();
        assert_eq!(texts(&t.read_lines(1024, 1 << 20).unwrap()), ["b", "c"]);
        assert_eq!(t.checkpoint().offset, 2);
    }

    #[test]
    fn truncation_starts_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "aaaa\nbbbb\n").unwrap();
        let mut t = tailer(&path);
        let lines = t.read_lines(1024, 1 << 20).unwrap();
        t.ack(0, lines[1].end, 2);
        std::fs::write(&path, "c\n").unwrap();
        let lines = t.read_lines(1024, 1 << 20).unwrap();
        assert_eq!(texts(&lines), ["c"]);
        assert_eq!((t.generation, lines[0].offset, lines[0].seq), (1, 0, 1));
    }
}
