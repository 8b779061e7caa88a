//! Reading the archive back and counting what is missing or doubled.
//!
//! The Parquet objects under the archive directory are read with the
//! `parquet` crate (not through the shipper's code): the `message` column
//! gives each row's line id ([`super::load::parse_id`]), `ts` its write
//! time, and the object's modification time when it became readable
//! (objects are written whole: an object is visible only once complete).
//! Loss and duplication are counted against the ids the load wrote, never
//! from any counter of the pipeline.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use arrow::array::{Array, StringArray, TimestampMicrosecondArray, TimestampNanosecondArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::load::{parse_id, Sent};

/// One archived row of the load.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub file: usize,
    pub n: u64,
    /// The line's write time (µs since the epoch).
    pub written_us: i64,
    /// When the object holding it was complete (µs since the epoch).
    pub archived_us: i64,
}

#[derive(Debug, Default)]
pub struct Archive {
    pub rows: Vec<Row>,
    pub objects: usize,
    /// Rows whose message carries no load id.
    pub foreign_rows: u64,
    /// Objects that could not be read (a torn object is a failure too).
    pub unreadable: Vec<String>,
}

/// What the archive holds against what was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub expected: u64,
    /// Rows of the load in the archive (duplicates included).
    pub archived_rows: u64,
    /// Distinct ids found.
    pub archived: u64,
    pub lost: u64,
    /// Rows beyond the first of each id.
    pub duplicated: u64,
    /// Rows with an id the load never wrote.
    pub unexpected: u64,
}

/// Every `*.parquet` object under `dir` (in-progress uploads end otherwise).
pub fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Read every object under `dir`.
pub fn read_archive(dir: &Path) -> Archive {
    let mut a = Archive::default();
    for path in objects(dir) {
        a.objects += 1;
        if let Err(e) = read_object(&path, &mut a) {
            a.unreadable.push(format!("{}: {e}", path.display()));
        }
    }
    a
}

fn read_object(path: &Path, a: &mut Archive) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let archived_us = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
    let schema = builder.parquet_schema();
    let leaves: Vec<usize> = schema
        .columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name() == "ts" || c.name() == "message")
        .map(|(i, _)| i)
        .collect();
    if leaves.len() != 2 {
        return Err("no ts and message columns".into());
    }
    let mask = ProjectionMask::leaves(schema, leaves);
    let reader = builder.with_projection(mask).build().map_err(|e| e.to_string())?;
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let msg = batch
            .column_by_name("message")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or("message is not utf8")?;
        let ts = batch.column_by_name("ts").ok_or("no ts")?;
        let ts_us = |i: usize| -> Option<i64> {
            if let Some(t) = ts.as_any().downcast_ref::<TimestampMicrosecondArray>() {
                return t.is_valid(i).then(|| t.value(i));
            }
            let t = ts.as_any().downcast_ref::<TimestampNanosecondArray>()?;
            t.is_valid(i).then(|| t.value(i) / 1000)
        };
        for i in 0..batch.num_rows() {
            match parse_id(msg.value(i)) {
                Some((file, n)) => a.rows.push(Row { file, n, written_us: ts_us(i).unwrap_or_default(), archived_us }),
                None => a.foreign_rows += 1,
            }
        }
    }
    Ok(())
}

/// Count the ids of `sent` found zero times (lost) and more than once
/// (duplicated) among `rows`.
pub fn verify(sent: &Sent, rows: &[Row]) -> Verdict {
    let mut seen: Vec<Vec<u32>> = sent.per_file.iter().map(|&n| vec![0; n as usize]).collect();
    let mut v = Verdict { expected: sent.total(), archived_rows: rows.len() as u64, ..Verdict::default() };
    for r in rows {
        match seen.get_mut(r.file).and_then(|f| f.get_mut(r.n as usize)) {
            Some(c) => *c += 1,
            None => v.unexpected += 1,
        }
    }
    for c in seen.iter().flatten() {
        match *c {
            0 => v.lost += 1,
            1 => v.archived += 1,
            k => {
                v.archived += 1;
                v.duplicated += u64::from(k - 1);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::RecordBatch;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use parquet::arrow::ArrowWriter;

    use super::*;

    fn fake_object(path: &Path, messages: &[&str]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
            Field::new("message", DataType::Utf8, false),
            Field::new("stream_seq", DataType::UInt64, false),
        ]));
        let n = messages.len();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(TimestampMicrosecondArray::from(vec![1_000_000i64; n]).with_timezone("UTC")),
                Arc::new(StringArray::from(messages.to_vec())),
                Arc::new(arrow::array::UInt64Array::from((1..=n as u64).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn a_missing_and_a_doubled_row_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("org=loadtest/app=app0/date=2026-01-01/hour=00");
        fake_object(&part.join("a.parquet"), &["lt:0:0 GET / 200", "lt:0:1 GET / 200", "lt:1:0 x"]);
        // lt:0:1 again (a redelivery written twice), lt:1:1 never archived.
        fake_object(&part.join("b.parquet"), &["lt:0:1 GET / 200", "lt:0:2 y", "not from the load"]);
        // An unfinished upload is not an object.
        std::fs::write(part.join("c.parquet#1"), b"partial").unwrap();
        let archive = read_archive(dir.path());
        assert_eq!(archive.objects, 2);
        assert!(archive.unreadable.is_empty(), "{:?}", archive.unreadable);
        assert_eq!(archive.foreign_rows, 1);
        assert!(archive.rows.iter().all(|r| r.written_us == 1_000_000 && r.archived_us > r.written_us));
        let sent = Sent { per_file: vec![3, 2] };
        let v = verify(&sent, &archive.rows);
        assert_eq!(
            v,
            Verdict { expected: 5, archived_rows: 5, archived: 4, lost: 1, duplicated: 1, unexpected: 0 },
            "{v:?}"
        );
        // Everything once: nothing lost, nothing doubled; an id never written is unexpected.
        let rows: Vec<Row> = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (7, 0)]
            .map(|(file, n)| Row { file, n, written_us: 0, archived_us: 0 })
            .to_vec();
        let v = verify(&sent, &rows);
        assert_eq!((v.lost, v.duplicated, v.unexpected, v.archived), (0, 0, 1, 5));
    }

    #[test]
    fn a_torn_object_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.parquet"), b"PAR1 not really").unwrap();
        let a = read_archive(dir.path());
        assert_eq!(a.unreadable.len(), 1);
    }
}
