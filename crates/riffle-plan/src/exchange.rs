//! The leaf that stands where a fragment reads from another vertex.
//!
//! When the job graph builder cuts DataFusion's physical plan at an exchange
//! (`RepartitionExec`, `CoalescePartitionsExec`, the input of `SortPreservingMergeExec`),
//! it puts an [`ExchangeReadExec`] in its place. At run time the runtime hands each
//! partition of that leaf the receiving end of its channels, through the
//! [`ExchangeInputs`] it stores in the task's session configuration.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions,
};

use futures::stream::BoxStream;

use crate::job_graph::VertexId;

/// Opens the receiving end of one partition of one vertex input.
///
/// The runtime implements it; the planner only names what is read.
pub trait ExchangeInputs: Send + Sync + fmt::Debug {
    /// The stream of batches that arrive for `partition` of input `input` of `vertex`.
    /// Each partition can be opened once.
    fn open(
        &self,
        vertex: VertexId,
        input: usize,
        partition: usize,
    ) -> Result<BoxStream<'static, Result<RecordBatch>>>;
}

/// The session-configuration extension through which [`ExchangeReadExec`] finds its
/// channels.
#[derive(Debug)]
pub struct ExchangeRegistry(pub Arc<dyn ExchangeInputs>);

/// Reads one input of a vertex: the batches that upstream vertices send to it.
#[derive(Debug)]
pub struct ExchangeReadExec {
    vertex: VertexId,
    input: usize,
    properties: Arc<PlanProperties>,
}

impl ExchangeReadExec {
    /// A reader for input `input` of `vertex`, with `partitions` partitions, that keeps the
    /// equivalences and ordering of the plan it replaces (`replaced`).
    pub fn new(
        vertex: VertexId,
        input: usize,
        replaced: &PlanProperties,
        partitioning: Partitioning,
    ) -> Self {
        let properties = replaced.clone().with_partitioning(partitioning);
        Self {
            vertex,
            input,
            properties: Arc::new(properties),
        }
    }

    /// The vertex this reader belongs to.
    pub fn vertex(&self) -> VertexId {
        self.vertex
    }

    /// Which input of the vertex this reader reads.
    pub fn input(&self) -> usize {
        self.input
    }
}

impl DisplayAs for ExchangeReadExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ExchangeReadExec: input={}, partitions={}",
            self.input,
            self.properties.partitioning.partition_count()
        )
    }
}

impl ExecutionPlan for ExchangeReadExec {
    crate::plan_node_defaults!();

    fn name(&self) -> &str {
        "ExchangeReadExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "ExchangeReadExec is a leaf and takes no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let registry = context
            .session_config()
            .get_extension::<ExchangeRegistry>()
            .ok_or_else(|| {
                DataFusionError::Internal(
                    "ExchangeReadExec runs only inside a Riffle job (no channels registered)"
                        .into(),
                )
            })?;
        let batches = registry.0.open(self.vertex, self.input, partition)?;
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            batches,
        )))
    }
}
