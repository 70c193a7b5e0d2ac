//! Where a row of a source came from, for errors that name it: a function that fails on a
//! row says which file (and which row of which Parquet file) the row was read from.
//!
//! A source's position counts the rows its partition emitted. A file scan reads its
//! partition's files (or byte ranges of them) in order, so the position falls in one of
//! them; which one, and which row group, can be told exactly when nothing is skipped inside
//! the row groups read (no predicate, no limit), by adding up the row counts in the files'
//! footers. Otherwise the error names the partition's files. The same walk lets a restored
//! scan start at the row group its position is in ([`skip_files_before`]).

use std::sync::Arc;

use datafusion::datasource::listing::{FileRange, PartitionedFile};
use datafusion::datasource::physical_plan::parquet::ParquetAccessPlan;
use datafusion::datasource::physical_plan::{FileScanConfig, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{DisplayFormatType, ExecutionPlan};
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader, RowGroupMetaData};

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
    if let Some(found) = seek(&config, &files, position, context).await
        && let Some(file) = files.get(found.file)
    {
        return Some(format!(
            "row {} of {}",
            found.row_in_file,
            file_url(&config, file)
        ));
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

/// Where a position of a Parquet scan's partition falls, found from the files' footers.
struct Seek {
    /// The file the position is in (the partition's file count when it is past the end).
    file: usize,
    /// Rows the partition reads before that file's first row group not skipped.
    passed: u64,
    /// Row groups of that file wholly before the position.
    skipped: Vec<usize>,
    /// Row groups in that file.
    row_groups: usize,
    /// The position's row in that file, counting every row group of the file.
    row_in_file: u64,
}

/// Where `position` falls among the row groups a scan's partition reads from `files`, when
/// the scan reads Parquet without a predicate or a limit: then the rows it emits are every
/// row of every row group it reads, in order. A file read whole gives all its row groups; a
/// byte range of a file, those whose first page starts in the range (DataFusion's rule).
async fn seek(
    config: &FileScanConfig,
    files: &[PartitionedFile],
    position: u64,
    context: &TaskContext,
) -> Option<Seek> {
    let store = seekable_parquet(config, files, context)?;
    let mut passed = 0u64;
    for (index, file) in files.iter().enumerate() {
        let footer = parquet_footer(store.as_ref(), &file.object_meta).await?;
        let groups = footer.row_groups();
        let mut skipped = Vec::new();
        let mut file_row = 0u64;
        for (group_index, group) in groups.iter().enumerate() {
            let rows = u64::try_from(group.num_rows()).ok()?;
            if !read_in_range(group, file.range.as_ref()) {
                file_row += rows;
                continue;
            }
            if passed + rows <= position {
                passed += rows;
                file_row += rows;
                skipped.push(group_index);
                continue;
            }
            return Some(Seek {
                file: index,
                passed,
                skipped,
                row_groups: groups.len(),
                row_in_file: file_row + (position - passed),
            });
        }
    }
    Some(Seek {
        file: files.len(),
        passed,
        skipped: Vec::new(),
        row_groups: 0,
        row_in_file: 0,
    })
}

/// Whether a scan of byte range `range` reads `group`: its first column's first page starts
/// in the range (DataFusion's `prune_by_range`). A file without a range reads every group.
fn read_in_range(group: &RowGroupMetaData, range: Option<&FileRange>) -> bool {
    let Some(range) = range else {
        return true;
    };
    let column = group.column(0);
    range.contains(
        column
            .dictionary_page_offset()
            .unwrap_or_else(|| column.data_page_offset()),
    )
}

/// The store of `files`, when the scan reads them as Parquet without a predicate or a limit
/// and nothing else chose their row groups: then footers map a position to a row group.
fn seekable_parquet(
    config: &FileScanConfig,
    files: &[PartitionedFile],
    context: &TaskContext,
) -> Option<Arc<dyn ObjectStore>> {
    let parquet = config.file_source().downcast_ref::<ParquetSource>()?;
    if FileSource::filter(parquet).is_some()
        || config.limit.is_some()
        || files.iter().any(|file| !file.extensions.is_empty())
        || reorders_row_groups(parquet)
    {
        return None;
    }
    context
        .runtime_env()
        .object_store(&config.object_store_url)
        .ok()
}

/// Whether DataFusion's sort pushdown made the scan read row groups out of file order
/// (reversed, or reordered by statistics). The flags are private; the scan's description
/// shows them.
fn reorders_row_groups(parquet: &ParquetSource) -> bool {
    struct Extra<'a>(&'a ParquetSource);
    impl std::fmt::Display for Extra<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            FileSource::fmt_extra(self.0, DisplayFormatType::Default, f)
        }
    }
    let described = Extra(parquet).to_string();
    described.contains("reverse_row_groups") || described.contains("sort_order_for_reorder")
}

/// The footer of a Parquet file.
async fn parquet_footer(
    store: &dyn ObjectStore,
    file: &object_store::ObjectMeta,
) -> Option<ParquetMetaData> {
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
    ParquetMetaDataReader::decode_metadata(&footer).ok()
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

/// Source `plan` reading `partition` from `position` on as far as footers allow: without
/// the files wholly before it, and, in the file it falls in, without the row groups wholly
/// before it (a `ParquetAccessPlan` on that file); with the rows passed over. Only for
/// Parquet scans without a predicate or a limit (the rows a scan emits are then every row of
/// every row group it reads, in order), whether each file is read whole or by byte range;
/// `None` otherwise, or when nothing can be passed over.
pub async fn skip_files_before(
    plan: &Arc<dyn ExecutionPlan>,
    partition: usize,
    position: u64,
    context: &TaskContext,
) -> Option<(Arc<dyn ExecutionPlan>, u64)> {
    // A scan that skips corrupt files emits fewer rows than their footers hold.
    if contains_node(plan, "SkipCorruptFilesExec") {
        return None;
    }
    let config = file_scan(plan)?;
    let files = config.file_groups.get(partition)?.files().to_vec();
    let found = seek(&config, &files, position, context).await?;
    if found.passed == 0 {
        return None;
    }
    let mut kept = files[found.file..].to_vec();
    if let Some(first) = kept.first_mut()
        && !found.skipped.is_empty()
    {
        let mut access = ParquetAccessPlan::new_all(found.row_groups);
        for group in &found.skipped {
            access.skip(*group);
        }
        first.extensions.insert(access);
    }
    let mut groups = config.file_groups.clone();
    groups[partition] = datafusion::datasource::physical_plan::FileGroup::new(kept);
    let config = datafusion::datasource::physical_plan::FileScanConfigBuilder::from(config)
        .with_file_groups(groups)
        .build();
    let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
    Some((replace_scan(plan, scan)?, found.passed))
}

/// Whether `plan` or a node under it is named `name`.
fn contains_node(plan: &Arc<dyn ExecutionPlan>, name: &str) -> bool {
    plan.name() == name
        || plan
            .children()
            .into_iter()
            .any(|child| contains_node(child, name))
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
