//! One Parquet object being written: zstd pages, streamed to object
//! storage through a bounded upload buffer (multipart once it fills), so
//! memory stays bounded however large the object grows.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::ObjectStore;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

/// Upload buffer per object, and the part size of multipart uploads (S3's
/// minimum part size is 5 MiB).
pub const UPLOAD_BUFFER: usize = 5 << 20;
/// Parts of one object uploading at once.
const UPLOAD_CONCURRENCY: usize = 2;

fn properties(row_group_rows: usize) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_created_by(format!("flotilla-shipper {}", env!("CARGO_PKG_VERSION")))
        .build()
}

pub struct ObjectWriter {
    inner: AsyncArrowWriter<BufWriter>,
    /// `finish` was called: the upload is completed or failed, and there is
    /// nothing left to abort.
    finished: bool,
}

impl ObjectWriter {
    /// Start the object `path`. Nothing is visible at `path` until
    /// [`ObjectWriter::finish`] succeeds.
    pub fn open(
        store: Arc<dyn ObjectStore>,
        path: Path,
        schema: SchemaRef,
        row_group_rows: usize,
    ) -> Result<ObjectWriter, ParquetError> {
        let upload = BufWriter::with_capacity(store, path, UPLOAD_BUFFER).with_max_concurrency(UPLOAD_CONCURRENCY);
        let inner = AsyncArrowWriter::try_new(upload, schema, Some(properties(row_group_rows)))?;
        Ok(ObjectWriter { inner, finished: false })
    }

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        self.inner.write(batch).await
    }

    /// Close the row group in progress (it moves to the upload buffer).
    pub async fn flush_row_group(&mut self) -> Result<(), ParquetError> {
        self.inner.flush().await
    }

    /// About how large the finished object would be now.
    pub fn size(&self) -> u64 {
        (self.inner.bytes_written() + self.inner.in_progress_size()) as u64
    }

    /// Memory held by the row group in progress.
    pub fn encoder_memory(&self) -> u64 {
        self.inner.memory_size() as u64
    }

    /// About how much memory this object holds: the row group in progress
    /// plus the upload buffer.
    pub fn memory(&self) -> u64 {
        self.encoder_memory() + (self.inner.bytes_written().min(UPLOAD_BUFFER * UPLOAD_CONCURRENCY)) as u64
    }

    /// Write the footer and complete the upload; returns the object's size.
    pub async fn finish(&mut self) -> Result<u64, ParquetError> {
        self.finished = true;
        self.inner.finish().await?;
        Ok(self.inner.bytes_written() as u64)
    }

    /// Give up on the object, cleaning up a started multipart upload.
    pub async fn abort(self) {
        if !self.finished {
            let _ = self.inner.into_inner().abort().await;
        }
    }
}
