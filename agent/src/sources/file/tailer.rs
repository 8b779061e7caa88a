//! One tailed file: positional reads from where the last line ended, split
//! into lines, with the acknowledged offset kept apart from the read offset so
//! a failed publish rewinds to the last line known to be in the stream.
//!
//! A file is one incarnation of an inode: truncation, or an inode reused by a
//! different file (told apart by a checksum of its first bytes), starts a new
//! incarnation with a new nonce, so de-duplication ids never repeat.

use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flotilla_core::subject::OrgId;

use super::checkpoint::FileCheckpoint;

/// Bytes of a file's start covered by its fingerprint.
const FP_BYTES: u64 = 256;

/// A file's identity: device and inode.
pub fn identity(meta: &std::fs::Metadata) -> String {
    format!("{}:{}", meta.dev(), meta.ino())
}

pub fn new_nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// One line (or one piece of an over-long line) read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Byte offset of the line's first byte.
    pub offset: u64,
    /// Offset just past the line (and its newline, if any).
    pub end: u64,
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
    pub nonce: Arc<str>,
    /// Bytes read from the file so far.
    file_pos: u64,
    /// Offset where `pending` (an unfinished line) begins.
    line_start: u64,
    /// Seq of the last event handed out.
    seq: u64,
    acked_offset: u64,
    acked_seq: u64,
    /// Seq of the last event handed out that was published (not dropped).
    published_seq: u64,
    acked_published_seq: u64,
    pending: Vec<u8>,
    fp_len: u64,
    fp: u32,
    /// Matched by the include patterns in the latest discovery.
    pub seen: bool,
}

impl Tailer {
    /// Open `path`, resuming from its checkpoint when the checkpoint is about
    /// this same file.
    pub fn open(
        path: &Path,
        key: String,
        org: OrgId,
        app: String,
        cp: Option<&FileCheckpoint>,
        start_at_end: bool,
    ) -> std::io::Result<Tailer> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let (fp_len, fp) = fingerprint(&file, len.min(FP_BYTES))?;
        let resume = cp.filter(|cp| {
            let same = cp.offset <= len && cp.fp_len <= len && fingerprint(&file, cp.fp_len).map(|f| f.1 == cp.fp).unwrap_or(false);
            if !same {
                tracing::info!(path = %path.display(), "a different file (or a truncated one) has this inode now: reading it from the start");
            }
            same
        });
        let (offset, seq, published, nonce) = match resume {
            Some(cp) => (cp.offset, cp.seq, cp.published_seq.unwrap_or(cp.seq), Arc::from(cp.nonce.as_str())),
            None if start_at_end && cp.is_none() => (len, 0, 0, new_nonce().into()),
            None => (0, 0, 0, new_nonce().into()),
        };
        Ok(Tailer {
            key,
            path: path.to_path_buf(),
            file,
            org,
            app,
            nonce,
            file_pos: offset,
            line_start: offset,
            seq,
            acked_offset: offset,
            acked_seq: seq,
            published_seq: published,
            acked_published_seq: published,
            pending: Vec::new(),
            fp_len,
            fp,
            seen: true,
        })
    }

    /// Read up to about `budget` new bytes and return the complete lines.
    pub fn read_lines(&mut self, max_line: usize, budget: usize) -> std::io::Result<Vec<Line>> {
        let len = self.file.metadata()?.len();
        if len < self.file_pos {
            tracing::info!(path = %self.path.display(), "file truncated: reading it again from the start");
            self.nonce = new_nonce().into();
            (self.file_pos, self.line_start, self.seq, self.acked_offset, self.acked_seq) = (0, 0, 0, 0, 0);
            (self.published_seq, self.acked_published_seq) = (0, 0);
            self.pending.clear();
            (self.fp_len, self.fp) = (0, 0);
        }
        if self.fp_len < FP_BYTES && len > self.fp_len {
            (self.fp_len, self.fp) = fingerprint(&self.file, len.min(FP_BYTES))?;
        }
        // Read straight into `pending` (no chunk buffer to allocate).
        const CHUNK: usize = 64 * 1024;
        let mut read = 0;
        while read < budget {
            // What the file holds now, so a small file gets a small buffer.
            let want = (len.saturating_sub(self.file_pos) as usize).min(CHUNK).min(budget - read);
            if want == 0 {
                break;
            }
            let at = self.pending.len();
            self.pending.resize(at + want, 0);
            let n = match self.file.read_at(&mut self.pending[at..], self.file_pos) {
                Ok(n) => n,
                Err(e) => {
                    self.pending.truncate(at);
                    return Err(e);
                }
            };
            self.pending.truncate(at + n);
            if n == 0 {
                break;
            }
            self.file_pos += n as u64;
            read += n;
        }
        let lines = self.split_lines(max_line);
        if self.pending.is_empty() && self.pending.capacity() > CHUNK {
            // An idle file keeps no read buffer.
            self.pending = Vec::new();
        }
        Ok(lines)
    }

    fn split_lines(&mut self, max_line: usize) -> Vec<Line> {
        // ~200-byte lines are typical: one allocation for the list.
        let mut lines = Vec::with_capacity(self.pending.len() / 160 + 1);
        let mut at = 0;
        loop {
            let rest = &self.pending[at..];
            let newline = memchr::memchr(b'\n', &rest[..rest.len().min(max_line + 1)]);
            let (take, consumed, split) = match newline {
                Some(i) => (i, i + 1, false),
                None if rest.len() > max_line => (piece_len(rest, max_line), piece_len(rest, max_line), true),
                None => break,
            };
            let mut bytes = rest[..take].to_vec();
            if bytes.last() == Some(&b'\r') && !split {
                bytes.pop();
            }
            lines.push(Line { offset: self.line_start, end: self.line_start + consumed as u64, bytes, split });
            self.line_start += consumed as u64;
            at += consumed;
        }
        self.pending.drain(..at);
        lines
    }

    /// The seq of the next event made from this file's lines.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The event with `seq` (from [`Tailer::next_seq`]) is being published,
    /// not dropped: how many seqs right before it were consumed by dropped
    /// events (the shipper's ledger counts them as accounted for).
    pub fn publishing(&mut self, seq: u64) -> u64 {
        let dropped = seq.saturating_sub(self.published_seq + 1);
        self.published_seq = self.published_seq.max(seq);
        dropped
    }

    /// The published event with `seq` is in the stream.
    pub fn ack_published(&mut self, nonce: &str, seq: u64) {
        if nonce == &*self.nonce {
            self.acked_published_seq = self.acked_published_seq.max(seq);
        }
    }

    /// The last acknowledged event that was published (not dropped).
    pub fn acked_published_seq(&self) -> u64 {
        self.acked_published_seq
    }

    /// A publish failed: go back to the last acknowledged event.
    pub fn rewind(&mut self) {
        self.published_seq = self.acked_published_seq;
        (self.file_pos, self.line_start, self.seq) = (self.acked_offset, self.acked_offset, self.acked_seq);
        self.pending.clear();
    }

    /// The event ending at `end` is in the stream.
    pub fn ack(&mut self, nonce: &str, end: u64, seq: u64) {
        if nonce == &*self.nonce && end >= self.acked_offset {
            (self.acked_offset, self.acked_seq) = (end, seq.max(self.acked_seq));
        }
    }

    pub fn acked_seq(&self) -> u64 {
        self.acked_seq
    }

    /// Bytes of the file not yet acknowledged.
    pub fn lag(&self) -> u64 {
        self.file.metadata().map(|m| m.len().saturating_sub(self.acked_offset)).unwrap_or(0)
    }

    /// Everything read so far is acknowledged and nothing is left to read.
    pub fn drained(&self) -> bool {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        self.pending.is_empty() && self.acked_offset == self.file_pos && self.file_pos >= len
    }

    pub fn checkpoint(&self) -> FileCheckpoint {
        FileCheckpoint {
            path: self.path.clone(),
            offset: self.acked_offset,
            seq: self.acked_seq,
            nonce: self.nonce.to_string(),
            fp_len: self.fp_len,
            fp: self.fp,
            published_seq: Some(self.acked_published_seq),
        }
    }
}

/// CRC-32 of the first `len` bytes.
fn fingerprint(file: &File, len: u64) -> std::io::Result<(u64, u32)> {
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok((got as u64, crc32fast::hash(&buf[..got])))
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
mod tests;
