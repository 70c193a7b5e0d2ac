//! Sinks: where a job's output goes, written in parallel and published all at once.
//!
//! A [`Sink`] writes each partition of its input on its own (one part per subtask), keeps
//! what it wrote invisible, and publishes everything in [`Sink::commit`] once every task of
//! the job has finished; [`Sink::abort`] throws the parts away when the job fails. The runtime
//! calls those two; the plan carries the sink as a [`SinkExec`] node.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    ReplaceChildrenOptions,
};

/// A destination for a job's rows, committed when the job succeeds.
#[async_trait]
pub trait Sink: Send + Sync + fmt::Debug {
    /// One line that names the sink and its destination, for EXPLAIN.
    fn describe(&self) -> String;

    /// The sink as `Any`, so that a codec can recognise its own sinks.
    fn as_any(&self) -> &dyn std::any::Any;

    /// Writes every batch of `input` as partition `partition`, without publishing it;
    /// returns the number of rows written.
    async fn write(
        &self,
        partition: usize,
        input: SendableRecordBatchStream,
        context: Arc<TaskContext>,
    ) -> Result<u64>;

    /// Publishes everything written; called once, after every task of the job finished.
    async fn commit(&self) -> Result<()>;

    /// Discards everything written; called when the job failed or was cancelled.
    async fn abort(&self) -> Result<()>;
}

/// Writes its input into a [`Sink`] and yields one row per partition with the number of rows
/// written (a column `count`).
#[derive(Debug)]
pub struct SinkExec {
    input: Arc<dyn ExecutionPlan>,
    sink: Arc<dyn Sink>,
    properties: Arc<PlanProperties>,
}

impl SinkExec {
    /// Writes `input` into `sink`, one part per input partition.
    pub fn new(input: Arc<dyn ExecutionPlan>, sink: Arc<dyn Sink>) -> Self {
        let schema = count_schema();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            datafusion::physical_plan::Partitioning::UnknownPartitioning(
                input.output_partitioning().partition_count(),
            ),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            input,
            sink,
            properties: Arc::new(properties),
        }
    }

    /// The sink written to.
    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.sink
    }
}

/// The schema of what a sink returns: the number of rows it wrote.
pub fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

impl DisplayAs for SinkExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SinkExec: {}", self.sink.describe())
    }
}

impl ExecutionPlan for SinkExec {
    crate::plan_node_defaults!();

    fn name(&self) -> &str {
        "SinkExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
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
                "SinkExec takes exactly one child".into(),
            ));
        }
        Ok(Arc::new(SinkExec::new(
            children.swap_remove(0),
            Arc::clone(&self.sink),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let sink = Arc::clone(&self.sink);
        let schema = count_schema();
        let output_schema = Arc::clone(&schema);
        let written = futures::stream::once(async move {
            let rows = sink.write(partition, input, context).await?;
            let count = UInt64Array::from(vec![rows]);
            Ok(RecordBatch::try_new(output_schema, vec![Arc::new(count)])?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, written)))
    }
}
