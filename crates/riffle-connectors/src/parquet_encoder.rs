//! Parquet encoding with one task per column, so that one writer uses several cores.
//!
//! Encoding and compressing columns is most of the cost of writing Parquet. A writer
//! subtask hands each batch's columns to per-column encoder tasks (bounded channels keep
//! memory in check), and when a row group is full it gathers the encoded chunks and
//! appends them to the file in column order. The file bytes accumulate in memory and are
//! taken out by the caller as they come (see [`ParquetEncoder::take_bytes`]).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory,
    compute_leaves,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Rows per row group, as DataFusion writes them.
pub(crate) const ROW_GROUP_ROWS: usize = 1024 * 1024;

/// Leaves queued per column task before the writer waits.
const QUEUED_LEAVES: usize = 2;

type ColumnTask = (
    mpsc::Sender<ArrowLeafColumn>,
    JoinHandle<Result<ArrowColumnChunk>>,
);

/// Encodes batches into one Parquet file (zstd level 3, as DataFusion's default).
pub(crate) struct ParquetEncoder {
    schema: SchemaRef,
    file: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    /// The column tasks of the row group being written; empty between row groups.
    columns: Vec<ColumnTask>,
    rows_in_group: usize,
    row_groups: usize,
    row_group_rows: usize,
}

impl ParquetEncoder {
    /// An encoder closing a row group once it holds `row_group_rows` rows or more.
    pub(crate) fn new(schema: SchemaRef, row_group_rows: usize) -> Result<Self> {
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .build();
        let writer = ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(properties))?;
        let (file, factory) = writer.into_serialized_writer()?;
        Ok(Self {
            schema,
            file,
            factory,
            columns: Vec::new(),
            rows_in_group: 0,
            row_groups: 0,
            row_group_rows: row_group_rows.max(1),
        })
    }

    fn start_row_group(&mut self) -> Result<()> {
        let writers = self.factory.create_column_writers(self.row_groups)?;
        self.columns = writers.into_iter().map(spawn_column).collect();
        Ok(())
    }

    /// Queues a batch's columns with the encoders; closes the row group when it is full.
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.columns.is_empty() {
            self.start_row_group()?;
        }
        let mut tasks = self.columns.iter();
        for (field, array) in self.schema.fields().iter().zip(batch.columns()) {
            for leaf in compute_leaves(field, array)? {
                let (sender, _) = tasks.next().ok_or_else(|| {
                    DataFusionError::Internal("more leaves than column writers".into())
                })?;
                if sender.send(leaf).await.is_err() {
                    // The task ended early: its error comes out when the group closes.
                    return self.close_row_group().await;
                }
            }
        }
        self.rows_in_group += batch.num_rows();
        if self.rows_in_group >= self.row_group_rows {
            self.close_row_group().await?;
        }
        Ok(())
    }

    async fn close_row_group(&mut self) -> Result<()> {
        let columns = std::mem::take(&mut self.columns);
        let mut chunks = Vec::with_capacity(columns.len());
        for (sender, task) in columns {
            drop(sender);
            let chunk = task.await.map_err(|e| {
                DataFusionError::Internal(format!("a column encoder failed: {e}"))
            })??;
            chunks.push(chunk);
        }
        let mut row_group = self.file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        self.rows_in_group = 0;
        self.row_groups += 1;
        Ok(())
    }

    /// Bytes of the file written so far, removed from the encoder. The file writer counts
    /// the bytes it wrote and never reads them back, so its buffer can be drained.
    pub(crate) fn take_bytes(&mut self) -> Vec<u8> {
        std::mem::take(self.file.inner_mut())
    }

    /// Bytes waiting to be taken.
    pub(crate) fn buffered(&self) -> usize {
        self.file.inner().len()
    }

    /// Closes the last row group and writes the footer; returns the remaining bytes.
    pub(crate) async fn finish(mut self) -> Result<Vec<u8>> {
        if !self.columns.is_empty() {
            self.close_row_group().await?;
        }
        self.file.finish()?;
        Ok(self.take_bytes())
    }
}

fn spawn_column(mut writer: ArrowColumnWriter) -> ColumnTask {
    let (sender, mut receiver) = mpsc::channel::<ArrowLeafColumn>(QUEUED_LEAVES);
    let task = tokio::spawn(async move {
        while let Some(leaf) = receiver.recv().await {
            writer.write(&leaf)?;
        }
        Ok(writer.close()?)
    });
    (sender, task)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn columns_encoded_in_parallel_read_back_in_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut encoder = ParquetEncoder::new(Arc::clone(&schema), 2500).unwrap();
        let mut bytes = Vec::new();
        for chunk in 0..10i64 {
            let ids = Int64Array::from_iter_values(chunk * 1000..(chunk + 1) * 1000);
            let names = StringArray::from_iter(
                (chunk * 1000..(chunk + 1) * 1000)
                    .map(|i| (i % 7 != 0).then(|| format!("name-{i}"))),
            );
            let batch =
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(ids), Arc::new(names)])
                    .unwrap();
            encoder.write(&batch).await.unwrap();
            bytes.extend(encoder.take_bytes());
        }
        bytes.extend(encoder.finish().await.unwrap());

        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 4);
        assert_eq!(reader.schema().as_ref(), schema.as_ref());
        let mut next_id = 0i64;
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let ids = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            let names = batch
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            for row in 0..batch.num_rows() {
                assert_eq!(ids.value(row), next_id);
                assert_eq!(names.is_null(row), next_id % 7 == 0);
                if !names.is_null(row) {
                    assert_eq!(names.value(row), format!("name-{next_id}"));
                }
                next_id += 1;
            }
        }
        assert_eq!(next_id, 10_000);
    }
}
