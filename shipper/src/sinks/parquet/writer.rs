//! Encoding one record batch as a zstd-compressed Parquet object, streamed
//! to object storage (multipart beyond the buffer size, so memory stays
//! bounded).

use std::sync::Arc;

use arrow::array::RecordBatch;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::ObjectStore;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

/// Rows per row group: large enough for scans, small enough to bound the
/// encoder's memory.
const ROW_GROUP_ROWS: usize = 128 * 1024;

fn properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("flotilla-shipper {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Write `batch` as the Parquet object `path`; returns the object's size.
/// The object appears whole or not at all.
pub async fn write_object(store: Arc<dyn ObjectStore>, path: Path, batch: &RecordBatch) -> Result<u64, ParquetError> {
    let mut writer = AsyncArrowWriter::try_new(BufWriter::new(store, path), batch.schema(), Some(properties()))?;
    if let Err(e) = writer.write(batch).await {
        // Clean up a started multipart upload; the write error is what matters.
        let _ = writer.into_inner().abort().await;
        return Err(e);
    }
    writer.finish().await?;
    Ok(writer.bytes_written() as u64)
}
