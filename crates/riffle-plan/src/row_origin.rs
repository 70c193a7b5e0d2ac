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
    let parquet = config.file_source().downcast_ref::<ParquetSource>()?;
    if FileSource::filter(parquet).is_some() || files.iter().any(|file| file.range.is_some()) {
        return None;
    }
    let store = context
        .runtime_env()
        .object_store(&config.object_store_url)
        .ok()?;
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
