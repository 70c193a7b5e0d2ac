//! Keeps a source at the parallelism its table asks for (`'scan.parallelism'`).
//!
//! DataFusion's optimizer splits every file scan to the job's parallelism. A table that asks
//! for fewer (or more) readers wraps its scan in a [`FixedParallelismExec`], which tells the
//! optimizer that its input gains nothing from more partitions, and puts the input back to
//! its fixed width whenever the optimizer splits it anyway (DataFusion splits file scans
//! without asking their parent). The optimizer then adds a round-robin exchange above it
//! where the rest of the job wants more, which Riffle runs as a REBALANCE edge.

use std::fmt;
use std::sync::Arc;

use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    ReplaceChildrenOptions,
};

/// Passes its input through; its input keeps the partitions it has.
#[derive(Debug)]
pub struct FixedParallelismExec {
    input: Arc<dyn ExecutionPlan>,
    readers: usize,
    config: Arc<datafusion::config::ConfigOptions>,
}

impl FixedParallelismExec {
    /// Fixes `scan` at `readers` partitions: file scans are regrouped (split by byte range
    /// when the files are large, whole files otherwise); other plans keep their partitions.
    pub fn new(
        scan: Arc<dyn ExecutionPlan>,
        readers: usize,
        config: &datafusion::config::ConfigOptions,
    ) -> Result<Self> {
        let config = Arc::new(config.clone());
        let input = fix(scan, readers, &config)?;
        Ok(Self {
            input,
            readers,
            config,
        })
    }

    /// The number of partitions its input is kept at.
    pub fn readers(&self) -> usize {
        self.readers
    }
}

fn fix(
    scan: Arc<dyn ExecutionPlan>,
    readers: usize,
    config: &datafusion::config::ConfigOptions,
) -> Result<Arc<dyn ExecutionPlan>> {
    if scan.output_partitioning().partition_count() == readers {
        return Ok(scan);
    }
    Ok(match scan.repartitioned(readers, config)? {
        Some(split) if split.output_partitioning().partition_count() == readers => split,
        _ => regroup_files(&scan, readers).unwrap_or(scan),
    })
}

/// Deals whole files round-robin into `readers` groups.
fn regroup_files(scan: &Arc<dyn ExecutionPlan>, readers: usize) -> Option<Arc<dyn ExecutionPlan>> {
    let source = scan.downcast_ref::<DataSourceExec>()?;
    let config = source.data_source().downcast_ref::<FileScanConfig>()?;
    let files: Vec<_> = config
        .file_groups
        .iter()
        .flat_map(|g| g.iter().cloned())
        .collect();
    let groups = readers.min(files.len()).max(1);
    let mut regrouped = vec![Vec::new(); groups];
    for (index, file) in files.into_iter().enumerate() {
        regrouped[index % groups].push(file);
    }
    let config = FileScanConfigBuilder::from(config.clone())
        .with_file_groups(regrouped.into_iter().map(FileGroup::new).collect())
        .build();
    let exec: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
    Some(exec)
}

impl DisplayAs for FixedParallelismExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "FixedParallelismExec: {}",
            self.input.output_partitioning().partition_count()
        )
    }
}

impl ExecutionPlan for FixedParallelismExec {
    crate::plan_node_defaults!();

    fn name(&self) -> &str {
        "FixedParallelismExec"
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

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "FixedParallelismExec takes one child".into(),
            ));
        }
        let input = fix(children.swap_remove(0), self.readers, &self.config)?;
        Ok(Arc::new(Self {
            input,
            readers: self.readers,
            config: Arc::clone(&self.config),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
