//! The reading end of a chain whose input is a source (a scan, datagen, `files()`, `VALUES`).
//!
//! The position of a source is the number of rows it has emitted. The sources Riffle reads
//! are deterministic for a given plan (files in listed order, datagen rows a function of
//! their index, in-memory tables fixed), so a restore re-executes the source's partition
//! from the position: none is emitted twice, none is skipped. A source that can seek starts
//! there (datagen, told by [`SourceStart`]); a Parquet scan passes over the files and the
//! row groups wholly before the position ([`skip_files_before`]); whatever is left before
//! the position is read and dropped. Seeking in a `files()` listing, and in CSV and JSON
//! files, is the next refinement.
//!
//! A listing is deterministic only while the listed folder does not change. So the position
//! of a source that lists files also holds the file of the last row it emitted, and a
//! restore that reads the listing again checks that the row before its position is still
//! that file (and that the listing still reaches the position): if files were added or
//! removed before it, the job fails with a clear error instead of losing or repeating rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use riffle_common::{ErrorKind, Result, RiffleError};
use riffle_plan::{SourceStart, skip_files_before};

use crate::operator::OperatorState;
use crate::operators::{path_of, read_u64};

/// The name that keys a source's position in a checkpoint.
pub const SOURCE_STATE: &str = "source";

/// One partition of a source, read batch by batch, with its position.
pub struct SourceReader {
    stream: SendableRecordBatchStream,
    /// The plan and partition read, and its context: an error names the rows read.
    plan: Arc<dyn ExecutionPlan>,
    partition: usize,
    context: Arc<TaskContext>,
    emitted: u64,
    to_skip: u64,
    /// The position, readable by the job's driver (rows read again after a restart).
    progress: Arc<SourceProgress>,
    /// The file (`FILE` column's URI, as `files()` lists) of the last row emitted, kept
    /// with the position: a restore that re-reads a listing checks that the row before its
    /// position is still this file, since a listing that changed would shift the rows.
    last_file: Option<String>,
    /// The file the last row before the restored position must be, when the checkpoint
    /// recorded one and the rows before the position are read again.
    expected_last: Option<String>,
    /// The file of the last row dropped while reading up to the restored position.
    last_dropped: Option<String>,
}

/// How far a source got, as the job's driver sees it.
#[derive(Debug, Default)]
pub struct SourceProgress {
    /// The position: rows emitted, counting those before a restored position.
    pub rows: AtomicU64,
    /// When the source emitted its first row (after a restored position): rows flow.
    pub first_row: std::sync::OnceLock<std::time::Instant>,
    /// Rows before the restored position that the source passed over without reading them.
    pub skipped_by_seeking: AtomicU64,
}

impl SourceReader {
    /// Starts reading partition `partition` of `plan`.
    pub fn new(
        plan: &Arc<dyn ExecutionPlan>,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<Self> {
        Ok(Self {
            stream: plan.execute(partition, Arc::clone(&context))?,
            plan: Arc::clone(plan),
            partition,
            context,
            emitted: 0,
            to_skip: 0,
            progress: Arc::new(SourceProgress::default()),
            last_file: None,
            expected_last: None,
            last_dropped: None,
        })
    }

    /// The position, as the reader advances: what a failed attempt had read when it failed.
    pub fn progress(&self) -> Arc<SourceProgress> {
        Arc::clone(&self.progress)
    }

    /// Resumes at the position in `state`: the source starts there if it can, and the rows
    /// before it that it reads again are dropped.
    pub async fn restore(&mut self, state: &OperatorState) -> Result<()> {
        let position = read_u64(&state.inline, 0, SOURCE_STATE)?;
        self.emitted = position;
        self.to_skip = position;
        self.last_file = state
            .inline
            .get(8..)
            .filter(|rest| !rest.is_empty())
            .map(|rest| String::from_utf8_lossy(rest).into_owned());
        self.progress.rows.store(position, Ordering::Relaxed);
        if position == 0 {
            return Ok(());
        }
        // Files and row groups wholly before the position are passed over.
        let (plan, passed) =
            match skip_files_before(&self.plan, self.partition, position, &self.context).await {
                Some((plan, passed)) => (plan, passed),
                None => (Arc::clone(&self.plan), 0),
            };
        // A source that seeks starts at what is left.
        let start = Arc::new(SourceStart::new(self.partition, position - passed));
        let config = self
            .context
            .session_config()
            .clone()
            .with_extension(Arc::clone(&start));
        let context = with_config(&self.context, config);
        self.stream = plan.execute(self.partition, context)?;
        self.to_skip = if start.honored() {
            0
        } else {
            position - passed
        };
        // Rows read again up to the position can be checked against the checkpoint's last
        // file; rows passed over cannot.
        if passed == 0 && self.to_skip == position {
            self.expected_last = self.last_file.clone();
        }
        self.progress
            .skipped_by_seeking
            .store(position - self.to_skip, Ordering::Relaxed);
        Ok(())
    }

    /// The next batch; `None` at the end. Cancel-safe: a call dropped while waiting loses
    /// nothing.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let Some(batch) = self.stream.next().await else {
                if self.to_skip > 0 {
                    return Err(self.changed(format!(
                        "it now ends {} rows before that position",
                        self.to_skip
                    )));
                }
                return Ok(None);
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    // Rows read from the stream: a restored reader skips up to its position.
                    let position = self.emitted - self.to_skip;
                    let (plan, context) = (Arc::clone(&self.plan), Arc::clone(&self.context));
                    let partition = self.partition;
                    return Err(
                        name_the_batch(plan, partition, position, context, error.into()).await,
                    );
                }
            };
            let rows = batch.num_rows() as u64;
            if self.to_skip >= rows {
                self.to_skip -= rows;
                self.note_dropped(&batch, rows as usize)?;
                continue;
            }
            let skip = std::mem::take(&mut self.to_skip);
            self.note_dropped(&batch, skip as usize)?;
            let batch = batch.slice(skip as usize, (rows - skip) as usize);
            if batch.num_rows() > 0 {
                self.last_file = path_of(&batch, batch.num_rows() - 1);
            }
            self.emitted += batch.num_rows() as u64;
            self.progress.rows.store(self.emitted, Ordering::Relaxed);
            self.progress.first_row.get_or_init(std::time::Instant::now);
            return Ok(Some(batch));
        }
    }

    /// Records the file of the last of the first `dropped` rows of `batch`, dropped on the
    /// way to the restored position; once the position is reached, checks it is the file
    /// the checkpoint recorded there.
    fn note_dropped(&mut self, batch: &RecordBatch, dropped: usize) -> Result<()> {
        if self.expected_last.is_none() {
            return Ok(());
        }
        if dropped > 0 {
            self.last_dropped = path_of(batch, dropped - 1);
        }
        if self.to_skip > 0 {
            return Ok(());
        }
        let expected = self.expected_last.take();
        if self.last_dropped != expected {
            return Err(self.changed(format!(
                "the row before it was {} and is now {}",
                expected.as_deref().unwrap_or("no file"),
                self.last_dropped.as_deref().unwrap_or("no file")
            )));
        }
        Ok(())
    }

    /// The error of a restore whose input is no longer what the checkpoint read.
    fn changed(&self, what: String) -> RiffleError {
        let position = self.emitted;
        RiffleError::user(format!(
            "cannot resume partition {} of the source at row {position}: its input changed \
             since the checkpoint ({what}); resuming would lose or repeat rows",
            self.partition
        ))
        .with_hint(
            "files were added, removed or renamed where the source reads; restore the files, \
             or run the job from the start without its checkpoints",
        )
    }

    /// The position: rows emitted so far, and the file of the last of them when the
    /// source lists files.
    pub fn snapshot(&self) -> OperatorState {
        let mut inline = self.emitted.to_le_bytes().to_vec();
        if let Some(file) = &self.last_file {
            inline.extend_from_slice(file.as_bytes());
        }
        OperatorState {
            inline,
            batches: Vec::new(),
        }
    }
}

/// `context` with another configuration (an extension added).
pub(crate) fn with_config(
    context: &TaskContext,
    config: datafusion::prelude::SessionConfig,
) -> Arc<TaskContext> {
    Arc::new(TaskContext::new(
        context.task_id(),
        context.session_id(),
        config,
        context.scalar_functions().clone(),
        context.higher_order_functions().clone(),
        context.aggregate_functions().clone(),
        context.window_functions().clone(),
        context.runtime_env(),
    ))
}

/// `error`, raised while reading the batch at `position` of `partition` of source `plan`,
/// with where that batch starts (a row of a file), when the error is in the data: a
/// function the scan evaluated names the row of the batch, and so the row.
async fn name_the_batch(
    plan: Arc<dyn ExecutionPlan>,
    partition: usize,
    position: u64,
    context: Arc<TaskContext>,
    error: RiffleError,
) -> RiffleError {
    if error.kind() != ErrorKind::User {
        return error;
    }
    match riffle_plan::describe_source_row(&plan, partition, position, &context).await {
        Some(place) => error.context(format!("the batch from {place}")),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn source() -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batches: Vec<RecordBatch> = (0..3)
            .map(|b| {
                let values: Vec<i64> = (b * 4..b * 4 + 4).collect();
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(Int64Array::from(values))],
                )
                .unwrap()
            })
            .collect();
        MemorySourceConfig::try_new_exec(&[batches], schema, None).unwrap()
    }

    async fn read_all(reader: &mut SourceReader) -> Vec<i64> {
        let mut seen = Vec::new();
        while let Some(batch) = reader.next().await.unwrap() {
            let values = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            seen.extend(values.values().iter().copied());
        }
        seen
    }

    #[tokio::test]
    async fn a_restored_source_emits_exactly_the_rows_after_its_position() {
        let context = SessionContext::new().task_ctx();
        let mut first = SourceReader::new(&source(), 0, Arc::clone(&context)).unwrap();
        first.next().await.unwrap().unwrap();
        let state = first.snapshot();
        let after = read_all(&mut first).await;
        assert_eq!(after, (4..12).collect::<Vec<i64>>());

        // A position in the middle of a batch too.
        for position in [4u64, 6, 12] {
            let mut restored = SourceReader::new(&source(), 0, Arc::clone(&context)).unwrap();
            let state = OperatorState {
                inline: position.to_le_bytes().to_vec(),
                batches: Vec::new(),
            };
            restored.restore(&state).await.unwrap();
            let rows = read_all(&mut restored).await;
            assert_eq!(rows, (position as i64..12).collect::<Vec<i64>>());
            assert_eq!(restored.snapshot().inline, 12u64.to_le_bytes().to_vec());
        }
        assert_eq!(
            state.inline,
            4u64.to_le_bytes().to_vec(),
            "one batch of four read"
        );
    }

    /// A scan of the Parquet files in `dir` as table `t`, on one partition, and its context.
    async fn parquet_scan(dir: &std::path::Path) -> (Arc<dyn ExecutionPlan>, Arc<TaskContext>) {
        let mut config = datafusion::prelude::SessionConfig::new().with_target_partitions(1);
        // As in Riffle's sessions: a partition reads its own files, whoever executes it.
        config
            .options_mut()
            .execution
            .enable_file_stream_work_stealing = false;
        let session = SessionContext::new_with_config(config);
        session
            .register_parquet("t", dir.to_str().unwrap(), Default::default())
            .await
            .unwrap();
        let plan = session
            .sql("SELECT x FROM t")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        (plan, session.task_ctx())
    }

    #[tokio::test]
    async fn a_restored_parquet_scan_passes_over_the_files_before_its_position() {
        use datafusion::parquet::arrow::ArrowWriter;
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        for file in 0..3i64 {
            let values: Vec<i64> = (file * 10..file * 10 + 10).collect();
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from(values))],
            )
            .unwrap();
            let out = std::fs::File::create(dir.path().join(format!("f{file}.parquet"))).unwrap();
            let mut writer = ArrowWriter::try_new(out, Arc::clone(&schema), None).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
        }
        let (plan, context) = parquet_scan(dir.path()).await;
        let all = read_all(&mut SourceReader::new(&plan, 0, Arc::clone(&context)).unwrap()).await;
        assert_eq!(all.len(), 30);
        for (position, passed_over) in [(5u64, 0u64), (10, 10), (25, 20), (30, 30)] {
            let mut restored = SourceReader::new(&plan, 0, Arc::clone(&context)).unwrap();
            let state = OperatorState {
                inline: position.to_le_bytes().to_vec(),
                batches: Vec::new(),
            };
            restored.restore(&state).await.unwrap();
            let rows = read_all(&mut restored).await;
            assert_eq!(rows, all[position as usize..], "from {position}");
            assert_eq!(
                restored
                    .progress()
                    .skipped_by_seeking
                    .load(Ordering::Relaxed),
                passed_over,
                "from {position}"
            );
        }
    }

    #[tokio::test]
    async fn a_restored_scan_of_a_byte_range_starts_at_the_row_group_of_its_position() {
        use datafusion::parquet::arrow::ArrowWriter;
        use datafusion::parquet::file::properties::WriterProperties;
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from_iter_values(0..40))],
        )
        .unwrap();
        // Ten row groups of four rows, in one file that two partitions read by byte range.
        let out = std::fs::File::create(dir.path().join("f.parquet")).unwrap();
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(4))
            .build();
        let mut writer = ArrowWriter::try_new(out, Arc::clone(&schema), Some(properties)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let (scan, context) = parquet_scan(dir.path()).await;
        // Two partitions, each reading half of the file's bytes, as DataFusion splits large
        // files.
        use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
        use datafusion::datasource::source::DataSourceExec;
        let config = scan
            .downcast_ref::<DataSourceExec>()
            .and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>())
            .cloned()
            .unwrap();
        let file = config.file_groups[0].files()[0].clone();
        let size = file.object_meta.size as i64;
        // Split where the sixth row group starts: the first half reads five row groups.
        let written = std::fs::File::open(dir.path().join("f.parquet")).unwrap();
        let footer = datafusion::parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&written)
            .unwrap();
        assert_eq!(footer.num_row_groups(), 10);
        let column = footer.row_group(5).column(0);
        let middle = column
            .dictionary_page_offset()
            .unwrap_or_else(|| column.data_page_offset());
        let halves = vec![
            FileGroup::new(vec![file.clone().with_range(0, middle)]),
            FileGroup::new(vec![file.with_range(middle, size)]),
        ];
        let config = datafusion::datasource::physical_plan::FileScanConfigBuilder::from(config)
            .with_file_groups(halves)
            .build();
        let plan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        let mut everything = Vec::new();
        for partition in 0..2 {
            let all =
                read_all(&mut SourceReader::new(&plan, partition, Arc::clone(&context)).unwrap())
                    .await;
            assert!(!all.is_empty(), "partition {partition} reads a range");
            everything.extend(all.iter().copied());
            for position in 0..=all.len() as u64 {
                let mut restored =
                    SourceReader::new(&plan, partition, Arc::clone(&context)).unwrap();
                let state = OperatorState {
                    inline: position.to_le_bytes().to_vec(),
                    batches: Vec::new(),
                };
                restored.restore(&state).await.unwrap();
                let rows = read_all(&mut restored).await;
                assert_eq!(
                    rows,
                    all[position as usize..],
                    "{partition} from {position}"
                );
                // Whole row groups before the position are not read.
                assert_eq!(
                    restored
                        .progress()
                        .skipped_by_seeking
                        .load(Ordering::Relaxed),
                    position / 4 * 4,
                    "{partition} from {position}"
                );
            }
        }
        everything.sort_unstable();
        assert_eq!(everything, (0..40).collect::<Vec<i64>>());
    }

    /// A listing of `names` as `files()` gives it: one `FILE` column, batches of two rows.
    fn listing(names: &[&str]) -> Arc<dyn ExecutionPlan> {
        use datafusion::arrow::array::{BinaryArray, StringArray, StructArray, UInt64Array};
        let field =
            riffle_types::media::media_field("file", riffle_types::media::FILE, false).unwrap();
        let DataType::Struct(fields) = field.data_type().clone() else {
            unreachable!("a FILE is a struct")
        };
        let schema = Arc::new(Schema::new(vec![field]));
        let batches: Vec<RecordBatch> = names
            .chunks(2)
            .map(|chunk| {
                let rows = chunk.len();
                let files = StructArray::new(
                    fields.clone(),
                    vec![
                        Arc::new(StringArray::from(chunk.to_vec())),
                        Arc::new(UInt64Array::new_null(rows)),
                        Arc::new(UInt64Array::new_null(rows)),
                        Arc::new(BinaryArray::new_null(rows)),
                    ],
                    None,
                );
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(files)]).unwrap()
            })
            .collect();
        MemorySourceConfig::try_new_exec(&[batches], schema, None).unwrap()
    }

    async fn drain(reader: &mut SourceReader) -> Result<usize> {
        let mut rows = 0;
        while let Some(batch) = reader.next().await? {
            rows += batch.num_rows();
        }
        Ok(rows)
    }

    #[tokio::test]
    async fn a_listing_that_changed_since_the_checkpoint_is_refused_not_resumed() {
        let context = Arc::new(TaskContext::default());
        let before = listing(&["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]);
        let mut reader = SourceReader::new(&before, 0, Arc::clone(&context)).unwrap();
        // Four rows emitted: the position holds the last one's file.
        reader.next().await.unwrap().unwrap();
        reader.next().await.unwrap().unwrap();
        let state = reader.snapshot();
        assert_eq!(&state.inline[8..], b"d.jpg");

        // The same listing resumes after d.jpg.
        let mut same = SourceReader::new(&before, 0, Arc::clone(&context)).unwrap();
        same.restore(&state).await.unwrap();
        assert_eq!(drain(&mut same).await.unwrap(), 1);

        // A file added before d.jpg would shift every row: refused, naming both files.
        let added = listing(&["a.jpg", "aa.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]);
        let mut shifted = SourceReader::new(&added, 0, Arc::clone(&context)).unwrap();
        shifted.restore(&state).await.unwrap();
        let error = drain(&mut shifted).await.unwrap_err().to_string();
        assert!(
            error.contains("input changed since the checkpoint")
                && error.contains("was d.jpg and is now c.jpg"),
            "{error}"
        );

        // A listing that shrank below the position is refused too.
        let shrunk = listing(&["a.jpg", "b.jpg"]);
        let mut short = SourceReader::new(&shrunk, 0, Arc::clone(&context)).unwrap();
        short.restore(&state).await.unwrap();
        let error = drain(&mut short).await.unwrap_err().to_string();
        assert!(
            error.contains("ends 2 rows before that position"),
            "{error}"
        );
    }
}
