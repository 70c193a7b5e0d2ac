//! `'ignore-corrupt' = 'true'`: read a folder of files, skip the ones that cannot be read,
//! and say which.
//!
//! DataFusion's file scans stop a partition at the first unreadable file, losing the files
//! after it. [`SkipCorruptFilesExec`] sits above a table's scan and runs each file of its
//! partition as a scan of its own: a file that fails is recorded in the session's
//! [`SkippedFiles`] (the file and the reason) and the partition goes on with the next
//! file. Rows a file produced before it failed (a bad page in the middle of a Parquet
//! file) are kept. Callers read the report with [`SkippedFiles::take`]; the CLI prints it.
//!
//! Only a file's own fault skips it: bytes that do not decode in the table's format (a bad
//! magic number, a corrupt footer or page, a truncated file, a malformed CSV or JSON row)
//! or do not fit the table's schema. A file deleted between the listing and the read is
//! skipped too, and reported as such: it is no longer part of the table, and a rerun would
//! not read it either. Any other failure stops the scan with an error naming the file: an
//! object store that cannot be reached, times out or answers 5xx (object_store has already
//! retried it), a denied access, a failing disk, memory running out, a bug. Skipping those
//! would drop the rows of good files without a reason the user could act on.

use std::error::Error;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

use datafusion::arrow::error::ArrowError;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::object_store;
use datafusion::parquet::errors::ParquetError;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

use riffle_common::{PrintedStoreFailure, RiffleError};

use crate::scan_context::file_url;

/// A file a scan skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file's URL.
    pub file: String,
    /// What was wrong with it.
    pub reason: String,
}

/// The files skipped by `ignore-corrupt` scans, kept in the session until read.
#[derive(Debug, Default)]
pub struct SkippedFiles {
    files: Mutex<Vec<SkippedFile>>,
}

impl SkippedFiles {
    /// Records a skipped file once: a large file is read in byte ranges by several
    /// partitions, each of which meets its fault.
    fn record(&self, file: SkippedFile) {
        let mut files = self
            .files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if files.iter().any(|known| known.file == file.file) {
            return;
        }
        tracing::warn!("skipped {}: {}", file.file, file.reason);
        files.push(file);
    }

    /// The files skipped since the last call, each once, in the order they were met.
    pub fn take(&self) -> Vec<SkippedFile> {
        std::mem::take(
            &mut *self
                .files
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

/// Runs its input scan file by file, skipping files that fail (see the module docs).
#[derive(Debug)]
pub struct SkipCorruptFilesExec {
    input: Arc<dyn ExecutionPlan>,
}

impl SkipCorruptFilesExec {
    /// Above `input`, a file scan (possibly under pass-through nodes).
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        Self { input }
    }
}

impl DisplayAs for SkipCorruptFilesExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SkipCorruptFilesExec")
    }
}

impl ExecutionPlan for SkipCorruptFilesExec {
    crate::plan_node_defaults!();

    fn name(&self) -> &str {
        "SkipCorruptFilesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.len() {
            1 => Ok(Arc::new(Self::new(children.swap_remove(0)))),
            _ => Err(DataFusionError::Internal(
                "SkipCorruptFilesExec takes one child".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.input.schema();
        let Some(config) = crate::row_origin::file_scan(&self.input) else {
            // Not a plain file scan (the optimizer put something in between): read it as is.
            return self.input.execute(partition, context);
        };
        let files = config
            .file_groups
            .get(partition)
            .map(|group| group.files().to_vec())
            .unwrap_or_default();
        let report = context.session_config().get_extension::<SkippedFiles>();
        let stream = futures::stream::iter(files).flat_map(move |file| {
            let name = file_url(&config, &file);
            let single = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(vec![FileGroup::new(vec![file])])
                .build();
            let opened = DataSourceExec::from_data_source(single).execute(0, Arc::clone(&context));
            let report = report.clone();
            let batches = match opened {
                Ok(stream) => stream.boxed(),
                Err(error) => futures::stream::iter([Err(error)]).boxed(),
            };
            // The file's batches until its first error: the file's own fault is recorded
            // and the partition goes on; any other failure is raised.
            futures::stream::unfold(Some(batches), move |state| {
                let report = report.clone();
                let name = name.clone();
                async move {
                    let mut batches = state?;
                    match batches.next().await? {
                        Ok(batch) => Some((Some(Ok(batch)), Some(batches))),
                        Err(error) => {
                            let reason = match file_failure(&error) {
                                FileFailure::Corrupt => error.to_string(),
                                FileFailure::Gone => {
                                    format!("deleted after the table was listed: {error}")
                                }
                                FileFailure::Other => {
                                    return Some((Some(Err(scan_failed(error, &name))), None));
                                }
                            };
                            let skipped = SkippedFile { file: name, reason };
                            match &report {
                                Some(report) => report.record(skipped),
                                None => {
                                    tracing::warn!("skipped {}: {}", skipped.file, skipped.reason)
                                }
                            }
                            Some((None, None))
                        }
                    }
                }
            })
            .filter_map(std::future::ready)
        });
        // A raised error ends the partition: the files after it are not read.
        let stream = stream.scan(false, |failed, item| {
            if *failed {
                return std::future::ready(None);
            }
            *failed = item.is_err();
            std::future::ready(Some(item))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// What a failed scan of one file says about the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileFailure {
    /// Its bytes do not decode in the table's format, or do not fit its schema: skip it.
    Corrupt,
    /// It was deleted after the table was listed: skip it, and say so.
    Gone,
    /// Not the file's fault (the store, the machine, Riffle): stop the scan.
    Other,
}

/// Classifies the error a one-file scan ended with, by the first error in its chain that
/// decides (context and wrappers are looked through). An error nothing decides is not
/// taken for corruption: skipping a good file loses its rows silently, while stopping on
/// a bad one only asks for a look.
fn file_failure(error: &(dyn Error + 'static)) -> FileFailure {
    let mut link: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(current) = link {
        if let Some(decided) = decide(current) {
            return decided;
        }
        link = current.source();
    }
    FileFailure::Other
}

/// What `error` itself says, or `None` for a wrapper (or an unknown type) whose source
/// decides.
fn decide(error: &(dyn Error + 'static)) -> Option<FileFailure> {
    let datafusion = error.downcast_ref::<DataFusionError>().or_else(|| {
        error
            .downcast_ref::<Arc<DataFusionError>>()
            .map(Arc::as_ref)
    });
    if let Some(datafusion) = datafusion {
        use DataFusionError as E;
        return match datafusion {
            E::Context(..)
            | E::Shared(_)
            | E::Diagnostic(..)
            | E::Collection(_)
            | E::External(_)
            | E::ObjectStore(_)
            | E::IoError(_)
            | E::ArrowError(..)
            | E::ParquetError(_) => None,
            // What file openers and decoders raise for bytes that are not the format, or a
            // file whose columns do not fit the table's.
            E::Plan(_) | E::Execution(_) | E::SchemaError(..) | E::NotImplemented(_) => {
                Some(printed_or_corrupt(&datafusion.to_string()))
            }
            E::SQL(..)
            | E::Configuration(_)
            | E::Internal(_)
            | E::ExecutionJoin(_)
            | E::ResourcesExhausted(_)
            | E::Substrait(_)
            | E::Ffi(_) => Some(FileFailure::Other),
        };
    }
    if let Some(arrow) = error.downcast_ref::<ArrowError>() {
        return match arrow {
            ArrowError::ExternalError(_) | ArrowError::IoError(..) => None,
            ArrowError::MemoryError(_) => Some(FileFailure::Other),
            other => Some(printed_or_corrupt(&other.to_string())),
        };
    }
    if let Some(parquet) = error.downcast_ref::<ParquetError>() {
        return match parquet {
            ParquetError::External(_) => None,
            other => Some(printed_or_corrupt(&other.to_string())),
        };
    }
    if let Some(store) = error.downcast_ref::<object_store::Error>() {
        return Some(match store {
            object_store::Error::NotFound { .. } => FileFailure::Gone,
            _ => FileFailure::Other,
        });
    }
    if let Some(io) = error.downcast_ref::<io::Error>() {
        return Some(match io.kind() {
            io::ErrorKind::NotFound => FileFailure::Gone,
            // A decompressor or reader that ran out of bytes or met garbage.
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => FileFailure::Corrupt,
            // `io::Error::other(e)` carries `e`, which its `source` skips.
            io::ErrorKind::Other => match io.get_ref() {
                Some(inner) => file_failure(inner),
                None => FileFailure::Other,
            },
            _ => FileFailure::Other,
        });
    }
    if let Some(riffle) = error.downcast_ref::<RiffleError>() {
        return Some(match riffle.kind() {
            riffle_common::ErrorKind::User => FileFailure::Corrupt,
            _ => FileFailure::Other,
        });
    }
    None
}

/// A decode or schema error, unless its text holds an object store's failure that
/// DataFusion printed into it, keeping no error to look at (riffle_common reads that
/// wording for both this and the error categories).
fn printed_or_corrupt(text: &str) -> FileFailure {
    match riffle_common::printed_store_failure(text) {
        None => FileFailure::Corrupt,
        Some(PrintedStoreFailure::NotFound) => FileFailure::Gone,
        Some(_) => FileFailure::Other,
    }
}

/// The error that stops the scan when reading `file` failed through no fault of the file.
fn scan_failed(error: DataFusionError, file: &str) -> DataFusionError {
    let error = RiffleError::from(error).context(format!("reading {file}"));
    let error = match error.hint() {
        Some(_) => error,
        None => error.with_hint(
            "'ignore-corrupt' skips files whose data cannot be read, not failures of the \
             store or the machine: the scan stopped rather than lose this file's rows",
        ),
    };
    DataFusionError::from(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_failure(kind: io::ErrorKind) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(io::Error::from(kind)),
        }
    }

    fn parquet_read_failed(store: object_store::Error) -> DataFusionError {
        DataFusionError::ParquetError(Box::new(ParquetError::External(Box::new(store))))
    }

    #[test]
    fn a_file_read_by_several_partitions_is_reported_once() {
        let report = SkippedFiles::default();
        for reason in ["bad page in the first half", "bad page in the second half"] {
            report.record(SkippedFile {
                file: "file:///t/big.parquet".into(),
                reason: reason.into(),
            });
        }
        report.record(SkippedFile {
            file: "file:///t/other.parquet".into(),
            reason: "not Parquet".into(),
        });
        let taken = report.take();
        let files: Vec<&str> = taken.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(files, ["file:///t/big.parquet", "file:///t/other.parquet"]);
        assert_eq!(taken[0].reason, "bad page in the first half");
        assert!(report.take().is_empty());
    }

    #[test]
    fn undecodable_bytes_are_the_files_fault() {
        let cases = [
            DataFusionError::ParquetError(Box::new(ParquetError::General(
                "Invalid Parquet file. Corrupt footer".into(),
            ))),
            DataFusionError::ParquetError(Box::new(ParquetError::EOF("truncated page".into()))),
            DataFusionError::ArrowError(
                Box::new(ArrowError::CsvError("incorrect number of fields".into())),
                None,
            ),
            DataFusionError::ArrowError(
                Box::new(ArrowError::JsonError("expected value at line 1".into())),
                None,
            ),
            DataFusionError::Plan("Cannot cast file schema field id of type Utf8".into()),
            DataFusionError::IoError(io::Error::from(io::ErrorKind::UnexpectedEof)),
        ];
        for error in cases {
            assert_eq!(file_failure(&error), FileFailure::Corrupt, "{error}");
        }
    }

    #[test]
    fn store_and_machine_failures_are_not_the_files_fault() {
        let cases = [
            parquet_read_failed(store_failure(io::ErrorKind::ConnectionRefused)),
            parquet_read_failed(store_failure(io::ErrorKind::TimedOut)),
            DataFusionError::ObjectStore(Box::new(object_store::Error::PermissionDenied {
                path: "lake/x.parquet".into(),
                source: "403".into(),
            })),
            DataFusionError::ArrowError(
                Box::new(ArrowError::ExternalError(Box::new(store_failure(
                    io::ErrorKind::ConnectionReset,
                )))),
                None,
            ),
            DataFusionError::IoError(io::Error::from(io::ErrorKind::PermissionDenied)),
            DataFusionError::ResourcesExhausted("memory".into()),
            DataFusionError::Internal("bad plan".into()),
            DataFusionError::from(RiffleError::external("model server down")),
        ];
        for error in cases {
            assert_eq!(file_failure(&error), FileFailure::Other, "{error}");
        }
    }

    #[test]
    fn a_store_failure_printed_into_a_parquet_error_is_not_the_files_fault() {
        // What DataFusion makes of a footer fetch that failed.
        let printed = |store: &str| {
            DataFusionError::ParquetError(Box::new(ParquetError::General(format!(
                "Failed to fetch metadata for file lake/x.parquet: Object Store error: {store}"
            ))))
        };
        let unreachable =
            printed("Generic S3 error: Error performing GET - HTTP error: error sending request");
        assert_eq!(file_failure(&unreachable), FileFailure::Other);
        let deleted = printed("Object at location /tmp/t/x.parquet not found: No such file");
        assert_eq!(file_failure(&deleted), FileFailure::Gone);
        let corrupt = DataFusionError::ParquetError(Box::new(ParquetError::General(
            "Failed to fetch metadata for file lake/x.parquet: Parquet error: Invalid Parquet \
             file. Corrupt footer"
                .into(),
        )));
        assert_eq!(file_failure(&corrupt), FileFailure::Corrupt);
    }

    #[test]
    fn a_file_deleted_after_the_listing_is_gone() {
        let missing = object_store::Error::NotFound {
            path: "lake/x.parquet".into(),
            source: "404".into(),
        };
        let error = parquet_read_failed(missing).context("opening the file");
        assert_eq!(file_failure(&error), FileFailure::Gone);
    }

    #[test]
    fn an_unknown_error_is_not_taken_for_corruption() {
        #[derive(Debug)]
        struct Strange;
        impl fmt::Display for Strange {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "strange")
            }
        }
        impl Error for Strange {}
        let error = DataFusionError::External(Box::new(Strange));
        assert_eq!(file_failure(&error), FileFailure::Other);
        // DataFusion carries its own errors through I/O interfaces with `io::Error::other`.
        let carried = DataFusionError::IoError(io::Error::other(DataFusionError::ParquetError(
            Box::new(ParquetError::General("Corrupt footer".into())),
        )));
        assert_eq!(file_failure(&carried), FileFailure::Corrupt);
    }

    #[test]
    fn a_failed_scan_names_the_file_and_says_why_it_was_not_skipped() {
        let error = scan_failed(
            parquet_read_failed(store_failure(io::ErrorKind::ConnectionRefused)),
            "s3://lake/part-0.parquet",
        );
        let error = RiffleError::from(error);
        assert_eq!(error.kind(), riffle_common::ErrorKind::External);
        assert!(error.is_retryable());
        assert!(
            error
                .message()
                .starts_with("reading s3://lake/part-0.parquet: ")
        );
        assert!(error.hint().is_some_and(|h| h.contains("'ignore-corrupt'")));
    }
}
