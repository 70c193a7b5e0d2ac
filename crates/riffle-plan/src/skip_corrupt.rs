//! `'ignore-corrupt' = 'true'`: read a folder of files, skip the ones that cannot be read,
//! and say which.
//!
//! DataFusion's file scans stop a partition at the first unreadable file, losing the files
//! after it. [`SkipCorruptFilesExec`] sits above a table's scan and runs each file of its
//! partition as a scan of its own: a file that fails is recorded in the session's
//! [`SkippedFiles`] (the file and the reason) and the partition goes on with the next
//! file. Rows a file produced before it failed (a bad page in the middle of a Parquet
//! file) are kept. Callers read the report with [`SkippedFiles::take`]; the CLI prints it.

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

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
    fn record(&self, file: SkippedFile) {
        tracing::warn!("skipped {}: {}", file.file, file.reason);
        self.files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(file);
    }

    /// The files skipped since the last call, in the order they were met.
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

/// The file scan under `plan`, through the nodes that pass partitions through unchanged.
fn file_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<FileScanConfig> {
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        return scan.data_source().downcast_ref::<FileScanConfig>().cloned();
    }
    let pass_through = ["ScanContextExec", "FixedParallelismExec", "CooperativeExec"];
    match plan.children().as_slice() {
        [child] if pass_through.contains(&plan.name()) => file_scan(child),
        _ => None,
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
        let Some(config) = file_scan(&self.input) else {
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
            // The file's batches until its first error, which is recorded, not raised.
            futures::stream::unfold(Some(batches), move |state| {
                let report = report.clone();
                let name = name.clone();
                async move {
                    let mut batches = state?;
                    match batches.next().await? {
                        Ok(batch) => Some((Some(batch), Some(batches))),
                        Err(error) => {
                            let skipped = SkippedFile {
                                file: name,
                                reason: error.to_string(),
                            };
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
            .filter_map(|batch| std::future::ready(batch.map(Ok)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
