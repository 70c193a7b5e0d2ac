//! Names the files behind a failed scan.
//!
//! DataFusion's file readers report what went wrong ("Corrupt footer") but not in which
//! file. After planning, Riffle wraps each file scan in a [`ScanContextExec`] that knows the
//! files of each partition and adds them to any error the partition raises.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;
use riffle_common::RiffleError;

/// Wraps every file scan of `plan` so that its errors name the files read.
pub fn name_scanned_files(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(scan) = node.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(Transformed::no(node));
        };
        let files = config
            .file_groups
            .iter()
            .map(|group| group.iter().map(|file| file_url(config, file)).collect())
            .collect();
        let wrapped: Arc<dyn ExecutionPlan> =
            Arc::new(ScanContextExec::new(Arc::clone(&node), files));
        Ok(Transformed::yes(wrapped))
    })
    .map(|transformed| transformed.data)
}

/// The URL of a file of a scan: its store's URL and its path.
pub(crate) fn file_url(
    config: &FileScanConfig,
    file: &datafusion::datasource::listing::PartitionedFile,
) -> String {
    let store = config.object_store_url.as_str();
    let store = store.strip_suffix('/').unwrap_or(store);
    format!("{store}/{}", file.object_meta.location)
}

/// Passes its input through, prefixing errors with the partition's files.
#[derive(Debug)]
pub struct ScanContextExec {
    input: Arc<dyn ExecutionPlan>,
    /// Files of each partition.
    files: Arc<Vec<Vec<String>>>,
}

impl ScanContextExec {
    /// Wraps `input`, whose partition `i` reads the files `files[i]`.
    pub fn new(input: Arc<dyn ExecutionPlan>, files: Vec<Vec<String>>) -> Self {
        Self {
            input,
            files: Arc::new(files),
        }
    }

    /// The files of each partition.
    pub fn files(&self) -> &[Vec<String>] {
        &self.files
    }
}

impl DisplayAs for ScanContextExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ScanContextExec")
    }
}

fn describe_files(files: &[String]) -> String {
    match files {
        [] => "no file".to_string(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} or one of {} more files", rest.len()),
    }
}

impl ExecutionPlan for ScanContextExec {
    crate::plan_node_defaults!();

    fn name(&self) -> &str {
        "ScanContextExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "ScanContextExec takes one child".into(),
            ));
        }
        Ok(Arc::new(ScanContextExec {
            input: children.swap_remove(0),
            files: Arc::clone(&self.files),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let files = self
            .files
            .get(partition)
            .map(|f| describe_files(f))
            .unwrap_or_default();
        let context_of = move |error: DataFusionError| {
            DataFusionError::from(RiffleError::from(error).context(format!("reading {files}")))
        };
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let stream = input.map(move |batch| batch.map_err(&context_of));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
