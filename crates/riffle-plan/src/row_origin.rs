//! Where a row of a source came from, for errors that name it: a function that fails on a
//! row says which file (and which row of which Parquet file) the row was read from.
//!
//! A source's position counts the rows its partition emitted. A file scan reads its
//! partition's files in order, so the position falls in one of them; which one can be
//! told exactly when each file is read whole and nothing is skipped inside it (no predicate
//! that prunes row groups or rows), by adding up the row counts in the files' footers.
//! Otherwise the error names the partition's files.

use std::sync::Arc;

use datafusion::datasource::physical_plan::{FileScanConfig, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::file::metadata::ParquetMetaDataReader;

use crate::scan_context::file_url;

/// The file scan under `plan`, through the nodes that pass partitions through unchanged.
pub(crate) fn file_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<FileScanConfig> {
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        return scan.data_source().downcast_ref::<FileScanConfig>().cloned();
    }
    let pass_through = [
        "ScanContextExec",
        "FixedParallelismExec",
        "CooperativeExec",
        "SkipCorruptFilesExec",
    ];
    match plan.children().as_slice() {
        [child] if pass_through.contains(&plan.name()) => file_scan(child),
        _ => None,
    }
}

/// Where row `position` (counted from 0) of partition `partition` of source `plan` was
/// read from, in words; `None` when the source reads no files.
pub async fn describe_source_row(
    plan: &Arc<dyn ExecutionPlan>,
    partition: usize,
    position: u64,
    context: &TaskContext,
) -> Option<String> {
    let config = file_scan(plan)?;
    let files = config.file_groups.get(partition)?.files().to_vec();
    if let Some((index, row)) = parquet_row(&config, &files, position, context).await {
        return Some(format!("row {row} of {}", file_url(&config, &files[index])));
    }
    match files.as_slice() {
        [] => None,
        [one] => Some(format!("file {}", file_url(&config, one))),
        [first, rest @ ..] => Some(format!(
            "row {position} of the files {} and {} more, read in that order",
            file_url(&config, first),
            rest.len()
        )),
    }
}

/// The file and the row in it of `position`, when the scan reads whole Parquet files
/// without a predicate: then the rows it emits are every row of every file, in order.
async fn parquet_row(
    config: &FileScanConfig,
    files: &[datafusion::datasource::listing::PartitionedFile],
    position: u64,
    context: &TaskContext,
) -> Option<(usize, u64)> {
    let store = whole_parquet_files(config, files, context)?;
    let mut before = 0u64;
    for (index, file) in files.iter().enumerate() {
        let rows = parquet_rows(store.as_ref(), &file.object_meta).await?;
        if position < before + rows {
            return Some((index, position - before));
        }
        before += rows;
    }
    None
}

/// The store of `files`, when the scan reads them as whole Parquet files without a
/// predicate: then the rows it emits are every row of every file, in order, and footers'
/// row counts map a position to a file.
fn whole_parquet_files(
    config: &FileScanConfig,
    files: &[datafusion::datasource::listing::PartitionedFile],
    context: &TaskContext,
) -> Option<Arc<dyn ObjectStore>> {
    let parquet = config.file_source().downcast_ref::<ParquetSource>()?;
    if FileSource::filter(parquet).is_some() || files.iter().any(|file| file.range.is_some()) {
        return None;
    }
    context
        .runtime_env()
        .object_store(&config.object_store_url)
        .ok()
}

/// The row count in the footer of a Parquet file.
async fn parquet_rows(store: &dyn ObjectStore, file: &object_store::ObjectMeta) -> Option<u64> {
    // The file ends with the footer, its length (4 bytes) and the magic "PAR1".
    let size = file.size;
    let tail = store
        .get_range(&file.location, size.checked_sub(8)?..size)
        .await
        .ok()?;
    if tail.get(4..8)? != b"PAR1" {
        return None;
    }
    let length = u64::from(u32::from_le_bytes(tail.get(..4)?.try_into().ok()?));
    let start = size.checked_sub(8 + length)?;
    let footer = store
        .get_range(&file.location, start..size - 8)
        .await
        .ok()?;
    let metadata = ParquetMetaDataReader::decode_metadata(&footer).ok()?;
    u64::try_from(metadata.file_metadata().num_rows()).ok()
}

/// Where a restored source's partition starts reading, handed to `ExecutionPlan::execute` as
/// an extension of the task context's configuration. A source that can seek (datagen)
/// starts at the position and says so ([`SourceStart::honor`]); any other reads from its
/// start, and the reader drops the rows before the position.
#[derive(Debug)]
pub struct SourceStart {
    partition: usize,
    position: u64,
    honored: std::sync::atomic::AtomicBool,
}

impl SourceStart {
    /// Partition `partition` starts after its first `position` rows.
    pub fn new(partition: usize, position: u64) -> Self {
        Self {
            partition,
            position,
            honored: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The rows to start after, when `partition` is the partition this start is for.
    pub fn position_for(&self, partition: usize) -> Option<u64> {
        (partition == self.partition).then_some(self.position)
    }

    /// Says that the source starts at the position: the reader drops nothing.
    pub fn honor(&self) {
        self.honored
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the source started at the position.
    pub fn honored(&self) -> bool {
        self.honored.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Source `plan` without the files of `partition` that lie wholly before `position`, and
/// the rows those files hold: a restored scan then reads from the file its position is in,
/// not from its partition's first file. Only for whole Parquet files read without a
/// predicate (the rows a scan emits are then every row of every file, in order); `None`
/// otherwise, or when no file can be passed over.
pub async fn skip_files_before(
    plan: &Arc<dyn ExecutionPlan>,
    partition: usize,
    position: u64,
    context: &TaskContext,
) -> Option<(Arc<dyn ExecutionPlan>, u64)> {
    let config = file_scan(plan)?;
    let files = config.file_groups.get(partition)?.files().to_vec();
    let store = whole_parquet_files(&config, &files, context)?;
    let mut passed = 0u64;
    let mut first_kept = 0;
    for file in &files {
        let rows = parquet_rows(store.as_ref(), &file.object_meta).await?;
        if passed + rows > position {
            break;
        }
        passed += rows;
        first_kept += 1;
    }
    if first_kept == 0 {
        return None;
    }
    let mut groups = config.file_groups.clone();
    groups[partition] =
        datafusion::datasource::physical_plan::FileGroup::new(files[first_kept..].to_vec());
    let config = datafusion::datasource::physical_plan::FileScanConfigBuilder::from(config)
        .with_file_groups(groups)
        .build();
    let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
    Some((replace_scan(plan, scan)?, passed))
}

/// `plan` with its file scan (under pass-through nodes) replaced by `scan`.
fn replace_scan(
    plan: &Arc<dyn ExecutionPlan>,
    scan: Arc<dyn ExecutionPlan>,
) -> Option<Arc<dyn ExecutionPlan>> {
    if plan.downcast_ref::<DataSourceExec>().is_some() {
        return Some(scan);
    }
    match plan.children().as_slice() {
        [child] => {
            let child = replace_scan(child, scan)?;
            Arc::clone(plan)
                .replace_children(
                    vec![child],
                    datafusion::physical_plan::ReplaceChildrenOptions::new(
                        datafusion::physical_plan::ChildrenPropertiesMode::Recompute,
                    ),
                )
                .ok()
        }
        _ => None,
    }
}
