//! Segment files: the on-disk record format, and a reader that validates
//! every record and resynchronises past damaged bytes.
//!
//! A segment is `<dir>/<first_seq:020>.seg`, a plain concatenation of
//! records (no file header). All integers are little-endian:
//!
//! ```text
//! magic u32 = 0x3151_4C46 ("FLQ1") | len u32 | crc u32 | seq u64 | payload[len]
//! ```
//!
//! `crc` is CRC-32 (IEEE) over `len ‖ seq ‖ payload`: a damaged length,
//! sequence or payload is caught by the checksum.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

pub(crate) const MAGIC: [u8; 4] = 0x3151_4C46u32.to_le_bytes();
/// Bytes before the payload: magic, len, crc, seq.
pub(crate) const HEADER_LEN: u64 = 20;
/// Largest payload `push` accepts, and the largest length the reader
/// believes; anything longer is damage.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// Read-ahead of a [`SegmentReader`]: its buffer stays this small unless a
/// single record is larger.
pub(crate) const CHUNK: usize = 64 << 10;

/// `<dir>/<first_seq:020>.seg`
pub(crate) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

/// The first sequence named by a segment file name, `None` for other files.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One record as written: header and payload in one buffer, so it goes to
/// the file in one `write(2)`.
pub(crate) fn encode(seq: u64, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes();
    let seq = seq.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(&seq);
    crc.update(payload);
    let mut out = Vec::with_capacity(HEADER_LEN as usize + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&seq);
    out.extend_from_slice(payload);
    out
}

/// What the reader found at a position.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    /// A valid record; the next one starts at `end`.
    Record { seq: u64, payload: &'a [u8], end: u64 },
    /// Damaged bytes up to `end`: the next valid record, or the end of the
    /// readable range when there is none.
    Corrupt { end: u64 },
}

/// Reads records from one segment through a small read-ahead buffer. Never
/// reads at or past the `end` it is given, so bytes it has buffered never
/// change under it (segments are append-only below their written length).
pub(crate) struct SegmentReader {
    file: File,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_pos: u64,
}

impl SegmentReader {
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        Ok(SegmentReader { file: File::open(path)?, buf: Vec::new(), buf_pos: 0 })
    }

    /// Bytes held by the read-ahead buffer (its capacity).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.capacity()
    }

    /// The record at `pos`, or the damaged range starting there. `None` when
    /// `pos >= end`. A damaged range ends at the next offset holding a
    /// complete record with a valid checksum (found by scanning forward byte
    /// by byte for the magic), or at `end`.
    pub(crate) fn read(&mut self, pos: u64, end: u64) -> io::Result<Option<Item<'_>>> {
        if pos >= end {
            return Ok(None);
        }
        if let Some((seq, rec_end)) = self.valid_at(pos, end)? {
            let payload = self.window(pos + HEADER_LEN, rec_end - pos - HEADER_LEN, end)?;
            return Ok(Some(Item::Record { seq, payload, end: rec_end }));
        }
        let mut from = pos + 1;
        loop {
            let want = (end - from).min(CHUNK as u64);
            if want < MAGIC.len() as u64 {
                return Ok(Some(Item::Corrupt { end }));
            }
            let window = self.window(from, want, end)?;
            match window.windows(MAGIC.len()).position(|w| w == MAGIC) {
                Some(i) => {
                    let candidate = from + i as u64;
                    if self.valid_at(candidate, end)?.is_some() {
                        return Ok(Some(Item::Corrupt { end: candidate }));
                    }
                    from = candidate + 1;
                }
                // Keep the last 3 bytes: a magic may straddle the windows.
                None => from += want - (MAGIC.len() as u64 - 1),
            }
        }
    }

    /// `Some((seq, end_of_record))` when a whole valid record starts at `pos`.
    fn valid_at(&mut self, pos: u64, end: u64) -> io::Result<Option<(u64, u64)>> {
        if end - pos < HEADER_LEN {
            return Ok(None);
        }
        let header = self.window(pos, HEADER_LEN, end)?;
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let total = HEADER_LEN + u64::from(len);
        if header[..4] != MAGIC || len as usize > MAX_PAYLOAD || end - pos < total {
            return Ok(None);
        }
        let rec = self.window(pos, total, end)?;
        let stored = u32::from_le_bytes([rec[8], rec[9], rec[10], rec[11]]);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&rec[4..8]);
        crc.update(&rec[12..]);
        if crc.finalize() != stored {
            return Ok(None);
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&rec[12..20]);
        Ok(Some((u64::from_le_bytes(seq), pos + total)))
    }

    /// Bytes `[pos, pos + n)`, refilling the buffer from `pos` (reading up to
    /// [`CHUNK`] ahead, never past `end`) when they are not all buffered.
    fn window(&mut self, pos: u64, n: u64, end: u64) -> io::Result<&[u8]> {
        let buffered_end = self.buf_pos + self.buf.len() as u64;
        if pos < self.buf_pos || pos + n > buffered_end {
            let want = n.max(CHUNK as u64).min(end - pos) as usize;
            if self.buf.capacity() > 2 * CHUNK && want <= CHUNK {
                self.buf = Vec::new(); // give back the room a big record took
            }
            self.buf.resize(want, 0);
            self.buf_pos = pos;
            let mut filled = 0;
            while filled < want {
                match self.file.read_at(&mut self.buf[filled..], pos + filled as u64) {
                    Ok(0) => break,
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buf.clear();
                        return Err(e);
                    }
                }
            }
            self.buf.truncate(filled);
            if (filled as u64) < n {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "segment shorter than expected"));
            }
        }
        let start = (pos - self.buf_pos) as usize;
        Ok(&self.buf[start..start + n as usize])
    }
}
