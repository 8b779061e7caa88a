//! The queue's state behind its mutex: the segment list, the append end,
//! the read cursor, the ack point and the accounting. All file IO here is
//! synchronous and short (one record, one fsync, one unlink).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::ackfile::{self, AckState};
use super::segment::{self, Item, SegmentReader, HEADER_LEN, MAX_PAYLOAD};
use super::{OpenReport, QueueError, Record};

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io { path: path.to_path_buf(), source }
}

/// One segment file. Counters cover the records that were unacked when
/// they were counted (at open, or when pushed).
#[derive(Debug)]
pub(crate) struct SegmentMeta {
    pub path: PathBuf,
    /// Readable end: the end of its last valid record.
    pub len: u64,
    pub first: Option<u64>,
    /// Last valid seq, acked or not.
    pub last: Option<u64>,
    pub records: u64,
    pub bytes: u64,
}

impl SegmentMeta {
    fn fully_acked(&self, acked: u64) -> bool {
        self.last.is_none_or(|l| l <= acked)
    }

    /// Estimated (records, bytes) of its counted records with seq <= acked:
    /// exact when its seqs are contiguous (no damage), proportional if not.
    fn acked_part(&self, acked: u64) -> (u64, u64) {
        match (self.first, self.last) {
            (Some(f), Some(l)) if acked >= f => {
                if acked >= l {
                    return (self.records, self.bytes);
                }
                let (k, span) = (u128::from(acked - f + 1), u128::from(l - f + 1));
                let part = |n: u64| (u128::from(n) * k / span) as u64;
                (part(self.records), part(self.bytes))
            }
            _ => (0, 0),
        }
    }
}

/// Where `next` reads: a segment (by index), an offset, and the last seq
/// handed out (records at or below it, or below the ack point, are skipped).
struct Cursor {
    seg: usize,
    offset: u64,
    last: u64,
    reader: Option<SegmentReader>,
}

pub(crate) struct State {
    dir: PathBuf,
    segment_bytes: u64,
    segments: VecDeque<SegmentMeta>,
    /// The file appended to; when `Some`, it is `segments.back()`.
    active: Option<File>,
    active_dirty: bool,
    /// Sealed segments written since the last `sync`.
    unsynced: Vec<(PathBuf, File)>,
    dir_dirty: bool,
    next_seq: u64,
    acked: u64,
    persisted: AckState,
    /// Leading sealed segments that are fully acked, and their counters.
    prefix: usize,
    prefix_records: u64,
    prefix_bytes: u64,
    /// Counters over all segments in `segments`.
    live_records: u64,
    live_bytes: u64,
    cursor: Cursor,
    pub dropped: u64,
}

impl State {
    pub(crate) fn open(dir: &Path, segment_bytes: u64) -> Result<(State, OpenReport), QueueError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let persisted = ackfile::load(dir)?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            if let Some(seq) = entry.file_name().to_str().and_then(segment::parse_segment_name) {
                names.push(seq);
            }
        }
        names.sort_unstable();

        let acked = persisted.acked;
        let mut report = OpenReport::default();
        let mut segments = VecDeque::with_capacity(names.len());
        let mut scan = Scanner { acked, prev: 0, pending_regions: 0, pending_bytes: 0, floor: 0 };
        for name in names {
            let path = segment::segment_path(dir, name);
            segments.push_back(scan.segment(path, name, &mut report)?);
        }
        report.corrupted_records += scan.pending_regions;

        let mut active = None;
        if let Some(last) = segments.back() {
            let file = OpenOptions::new().append(true).open(&last.path).map_err(io_err(&last.path))?;
            let on_disk = file.metadata().map_err(io_err(&last.path))?.len();
            if on_disk > last.len {
                // A torn or damaged tail: cut it so appends continue cleanly.
                file.set_len(last.len).and_then(|()| file.sync_all()).map_err(io_err(&last.path))?;
            }
            active = Some(file);
        }
        let next_seq = persisted.next.max(acked + 1).max(scan.prev + 1).max(scan.floor);
        let live_records = segments.iter().map(|s| s.records).sum();
        let live_bytes = segments.iter().map(|s| s.bytes).sum();
        let mut state = State {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments,
            active,
            active_dirty: false,
            unsynced: Vec::new(),
            dir_dirty: false,
            next_seq,
            acked,
            persisted,
            prefix: 0,
            prefix_records: 0,
            prefix_bytes: 0,
            live_records,
            live_bytes,
            cursor: Cursor { seg: 0, offset: 0, last: acked, reader: None },
            dropped: 0,
        };
        state.advance_prefix();
        state.rewind();
        (report.records, report.bytes) = state.unacked();
        Ok((state, report))
    }

    /// (records, bytes) not yet acked; see [`SegmentMeta::acked_part`].
    pub(crate) fn unacked(&self) -> (u64, u64) {
        let (r, b) = self.segments.get(self.prefix).map_or((0, 0), |s| s.acked_part(self.acked));
        (self.live_records - self.prefix_records - r, self.live_bytes - self.prefix_bytes - b)
    }

    pub(crate) fn push(&mut self, payload: &[u8]) -> Result<u64, QueueError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(QueueError::TooLarge { len: payload.len(), max: MAX_PAYLOAD });
        }
        let needs_new = match (&self.active, self.segments.back()) {
            (Some(_), Some(seg)) => seg.len >= self.segment_bytes,
            _ => true,
        };
        if needs_new {
            self.start_segment()?;
        }
        let (Some(file), Some(seg)) = (self.active.as_mut(), self.segments.back_mut()) else {
            unreachable!("start_segment leaves an active segment");
        };
        let seq = self.next_seq;
        let rec = segment::encode(seq, payload);
        if let Err(source) = file.write_all(&rec) {
            // Undo a partial write; if even that fails, seal the segment (the
            // torn bytes lie past its readable end) and burn the seq so the
            // next segment's name is new.
            let err = QueueError::Io { path: seg.path.clone(), source };
            if file.set_len(seg.len).is_err() {
                self.seal_active();
                self.next_seq += 1;
            }
            return Err(err);
        }
        let size = rec.len() as u64;
        seg.len += size;
        seg.records += 1;
        seg.bytes += size;
        seg.first.get_or_insert(seq);
        seg.last = Some(seq);
        self.live_records += 1;
        self.live_bytes += size;
        self.active_dirty = true;
        self.next_seq += 1;
        Ok(seq)
    }

    fn start_segment(&mut self) -> Result<(), QueueError> {
        self.seal_active();
        let path = segment::segment_path(&self.dir, self.next_seq);
        let file = OpenOptions::new().append(true).create_new(true).open(&path).map_err(io_err(&path))?;
        self.segments.push_back(SegmentMeta { path, len: 0, first: None, last: None, records: 0, bytes: 0 });
        self.active = Some(file);
        self.dir_dirty = true;
        Ok(())
    }

    fn seal_active(&mut self) {
        if let (Some(file), Some(seg)) = (self.active.take(), self.segments.back()) {
            if std::mem::take(&mut self.active_dirty) {
                self.unsynced.push((seg.path.clone(), file));
            }
        }
        self.advance_prefix();
    }

    fn advance_prefix(&mut self) {
        let sealed = self.segments.len() - usize::from(self.active.is_some());
        while self.prefix < sealed && self.segments[self.prefix].fully_acked(self.acked) {
            self.prefix_records += self.segments[self.prefix].records;
            self.prefix_bytes += self.segments[self.prefix].bytes;
            self.prefix += 1;
        }
    }

    pub(crate) fn ack(&mut self, seq: u64) {
        let seq = seq.min(self.next_seq - 1);
        if seq > self.acked {
            self.acked = seq;
            self.advance_prefix();
        }
    }

    pub(crate) fn rewind(&mut self) {
        self.cursor.last = self.acked;
        if self.cursor.seg != self.prefix || self.cursor.offset != 0 {
            self.cursor = Cursor { seg: self.prefix, offset: 0, last: self.acked, reader: None };
        }
    }

    /// The next record after the cursor, skipping acked records and damaged
    /// bytes; `None` when the cursor is at the append end.
    pub(crate) fn read_next(&mut self) -> Result<Option<Record>, QueueError> {
        let cur = &mut self.cursor;
        loop {
            let Some(seg) = self.segments.get(cur.seg) else {
                return Ok(None);
            };
            if cur.offset >= seg.len {
                if cur.seg + 1 >= self.segments.len() {
                    return Ok(None);
                }
                *cur = Cursor { seg: cur.seg + 1, offset: 0, last: cur.last, reader: None };
                continue;
            }
            if cur.reader.is_none() {
                match SegmentReader::open(&seg.path) {
                    Ok(r) => cur.reader = Some(r),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        tracing::warn!(path = %seg.path.display(), "spill queue segment vanished; its records are lost");
                        cur.offset = seg.len;
                        continue;
                    }
                    Err(source) => return Err(QueueError::Io { path: seg.path.clone(), source }),
                }
            }
            let Some(reader) = cur.reader.as_mut() else {
                continue;
            };
            match reader.read(cur.offset, seg.len).map_err(io_err(&seg.path))? {
                None => cur.offset = seg.len,
                Some(Item::Corrupt { end }) => {
                    tracing::warn!(path = %seg.path.display(), from = cur.offset, to = end, "spill queue: skipping damaged bytes");
                    cur.offset = end;
                }
                Some(Item::Record { seq, payload, end }) => {
                    cur.offset = end;
                    if seq > cur.last && seq > self.acked {
                        cur.last = seq;
                        return Ok(Some(Record { seq, payload: payload.to_vec() }));
                    }
                }
            }
        }
    }

    /// Read-ahead bytes held for `next` (the memory a large queue costs).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.cursor.reader.as_ref().map_or(0, SegmentReader::buffered)
    }

    #[cfg(test)]
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub(crate) fn sync(&mut self) -> Result<(), QueueError> {
        for (path, file) in std::mem::take(&mut self.unsynced) {
            file.sync_data().map_err(io_err(&path))?;
        }
        if let (Some(file), Some(seg)) = (&self.active, self.segments.back()) {
            if self.active_dirty {
                file.sync_data().map_err(io_err(&seg.path))?;
                self.active_dirty = false;
            }
        }
        if self.dir_dirty {
            ackfile::sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        let now = AckState { acked: self.acked, next: self.next_seq };
        if now != self.persisted {
            ackfile::store(&self.dir, now)?;
            self.persisted = now;
        }
        // Only now, with the ack point and the seq high-water on disk, may
        // acked segments go — the active one too, once it is fully acked.
        if self.active.is_some()
            && self.prefix + 1 == self.segments.len()
            && self.segments[self.prefix].fully_acked(self.acked)
        {
            self.seal_active();
        }
        while self.prefix > 0 {
            let Some(seg) = self.segments.front() else {
                break;
            };
            match std::fs::remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(QueueError::Io { path: seg.path.clone(), source }),
            }
            self.prefix -= 1;
            self.prefix_records -= seg.records;
            self.prefix_bytes -= seg.bytes;
            self.live_records -= seg.records;
            self.live_bytes -= seg.bytes;
            self.segments.pop_front();
            if self.cursor.seg == 0 {
                self.cursor = Cursor { seg: 0, offset: 0, last: self.cursor.last, reader: None };
            } else {
                self.cursor.seg -= 1;
            }
        }
        Ok(())
    }
}

/// Walks the segments at open, counting damage and the seqs it implies.
struct Scanner {
    acked: u64,
    /// Last valid seq seen; later records must be above it.
    prev: u64,
    /// Damaged ranges not yet followed by a valid record.
    pending_regions: u64,
    pending_bytes: u64,
    /// Lowest next seq the damage allows: a damaged tail may have held a
    /// record that was handed out, so its seq is never reused.
    floor: u64,
}

impl Scanner {
    fn segment(&mut self, path: PathBuf, name: u64, report: &mut OpenReport) -> Result<SegmentMeta, QueueError> {
        let mut reader = SegmentReader::open(&path).map_err(io_err(&path))?;
        let file_len = std::fs::metadata(&path).map_err(io_err(&path))?.len();
        let mut meta = SegmentMeta { path, len: 0, first: None, last: None, records: 0, bytes: 0 };
        let mut pos = 0;
        while let Some(item) = reader.read(pos, file_len).map_err(io_err(&meta.path))? {
            let (end, valid) = match item {
                Item::Record { seq, end, .. } if seq > self.prev => (end, Some(seq)),
                Item::Record { end, .. } | Item::Corrupt { end } => (end, None),
            };
            let size = end - pos;
            match valid {
                None => {
                    // A record out of order counts as damage too.
                    self.pending_regions += 1;
                    self.pending_bytes += size;
                    report.corrupted_bytes += size;
                }
                Some(seq) => {
                    if self.pending_regions > 0 {
                        // The seq gap says how many records the damage held.
                        let gap = seq - self.prev - 1;
                        let fit = self.pending_bytes / HEADER_LEN;
                        report.corrupted_records += gap.min(fit).max(self.pending_regions);
                        self.pending_regions = 0;
                        self.pending_bytes = 0;
                    }
                    if seq > self.acked {
                        meta.records += 1;
                        meta.bytes += size;
                        meta.first.get_or_insert(seq);
                    }
                    meta.last = Some(seq);
                    meta.len = end;
                    self.prev = seq;
                }
            }
            pos = end;
        }
        if meta.len < file_len {
            self.floor = self.floor.max(meta.last.map_or(name, |l| l + 1) + 1);
            tracing::warn!(path = %meta.path.display(), bytes = file_len - meta.len, "spill queue segment has a damaged tail");
        }
        Ok(meta)
    }
}
