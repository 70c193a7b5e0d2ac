//! Sinks: where a job's output goes, written in parallel and published all at once.
//!
//! A [`Sink`] writes each partition of its input on its own (one part per subtask), keeps
//! what it wrote invisible, and publishes everything in [`Sink::commit`] once every task of
//! the job has finished; [`Sink::abort`] throws the parts away when the job fails. The runtime
//! calls those two; the plan carries the sink as a [`SinkExec`] node.
//!
//! A sink that publishes only when the job ends ([`Sink::publishes_at_commit`], the file
//! sink) is refused an unbounded input by its [`SinkExec`]: that job never ends, so it
//! would publish nothing, ever. In a chain, a sink that [writes staged
//! parts](Sink::writes_staged_parts) publishes them at every completed checkpoint instead
//! (two-phase commit), which lifts the refusal when checkpointing is on.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    ReplaceChildrenOptions,
};
use riffle_common::RiffleError;

/// A destination for a job's rows, committed when the job succeeds.
#[async_trait]
pub trait Sink: Send + Sync + fmt::Debug {
    /// One line that names the sink and its destination, for EXPLAIN.
    fn describe(&self) -> String;

    /// The table (or location) written, as errors name it; by default [`Sink::describe`].
    fn target(&self) -> String {
        self.describe()
    }

    /// Whether what the sink writes becomes visible only at [`Sink::commit`], as the file
    /// sink's parts do. Such a sink refuses an unbounded input: that job never ends, so it
    /// would never publish anything. By default `false`: what the sink writes shows as it
    /// goes.
    fn publishes_at_commit(&self) -> bool {
        false
    }

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

    /// Whether the sink replaces what its destination held (INSERT OVERWRITE): it then
    /// publishes only at the job's end.
    fn overwrites(&self) -> bool {
        false
    }

    /// Whether the sink writes [staged parts](Sink::open_part) that it can publish per
    /// checkpoint (two-phase commit). A chain's sink operator then rolls a part at every
    /// barrier; otherwise it streams into [`Sink::write`], whose rows show as they go, at
    /// least once across restarts.
    fn writes_staged_parts(&self) -> bool {
        false
    }

    /// Opens a part named `name` (unique within the job: subtask, attempt and sequence),
    /// invisible until [`Sink::publish`]ed.
    async fn open_part(&self, name: &str, schema: SchemaRef) -> Result<Box<dyn PartWriter>> {
        let _ = (name, schema);
        Err(DataFusionError::Internal(format!(
            "{} cannot write staged parts",
            self.describe()
        )))
    }

    /// Publishes staged parts. Idempotent: a part already published is left as it is, so
    /// that commits lost in a failure can be replayed. `last` marks the job's final
    /// publication, where an overwriting sink replaces what was there before.
    async fn publish(&self, parts: &[StagedPart], last: bool) -> Result<()> {
        let _ = (parts, last);
        Err(DataFusionError::Internal(format!(
            "{} cannot publish staged parts",
            self.describe()
        )))
    }

    /// Deletes the staged parts whose names start with `prefix` and that are not in `keep`:
    /// what a failed attempt staged and no checkpoint refers to.
    async fn discard_staged(&self, prefix: &str, keep: &[StagedPart]) -> Result<()> {
        let _ = (prefix, keep);
        Ok(())
    }
}

/// A part a sink wrote and staged at a checkpoint barrier (or at the end of its input):
/// invisible until published. Both names are fixed when it is staged, so that publishing it
/// again after a failure is harmless. Kept in the sink operator's checkpointed state until
/// the checkpoint that covers it completes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StagedPart {
    /// Where the part is staged (an object path).
    pub staged: String,
    /// The path it is published as.
    pub target: String,
    /// Rows it holds.
    pub rows: u64,
}

/// Writes one staged part of a sink.
#[async_trait]
pub trait PartWriter: Send {
    /// Appends rows.
    async fn write(&mut self, batch: &RecordBatch) -> Result<()>;

    /// The part as [`PartWriter::close`] will return it once no more rows are written:
    /// where it is staged, where it is published, its rows. A checkpoint records it while
    /// the part still closes in the background.
    fn staged_part(&self) -> StagedPart;

    /// Finishes the part (a Parquet footer) and stages it, durably.
    async fn close(self: Box<Self>) -> Result<StagedPart>;

    /// Throws the part away.
    async fn abort(self: Box<Self>);
}

/// Writes its input into a [`Sink`] and yields one row per partition with the number of rows
/// written (a column `count`). Bounded when its input is; over an unbounded input, refuses
/// to run a sink that publishes only at commit (see the module docs).
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
            input.boundedness(),
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

/// Refuses to run `sink` over an unbounded input when it publishes only at commit (see the
/// module docs) and the job does not commit at checkpoints (`per_checkpoint`); what
/// [`SinkExec`] and a chain's sink operator check before writing.
pub fn check_sink_input(
    sink: &dyn Sink,
    unbounded_input: bool,
    per_checkpoint: bool,
) -> std::result::Result<(), RiffleError> {
    let publishes = per_checkpoint && sink.writes_staged_parts();
    if unbounded_input && sink.publishes_at_commit() && !publishes {
        return Err(unbounded_input_error(sink));
    }
    Ok(())
}

/// Why a sink does not run over an unbounded input.
fn unbounded_input_error(sink: &dyn Sink) -> RiffleError {
    RiffleError::user(format!(
        "INSERT INTO {} reads an unbounded source; its files would be published only when \
         the job ends, which it never does",
        sink.target()
    ))
    .with_hint(
        "bound the source (a LIMIT, or 'number-of-rows' for datagen), or turn checkpointing \
         on (SET 'execution.checkpointing.interval' = '10 s') so that files are published at \
         every checkpoint, with 'sink.commit-mode' = 'checkpoint'",
    )
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
        check_sink_input(
            self.sink.as_ref(),
            self.input.boundedness().is_unbounded(),
            false,
        )?;
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

#[cfg(test)]
mod tests {
    use datafusion::physical_plan::Partitioning;
    use datafusion::physical_plan::execution_plan::Boundedness;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use futures::StreamExt;
    use futures::stream::BoxStream;
    use riffle_common::ErrorKind;

    use super::*;
    use crate::{ExchangeInputs, ExchangeReadExec, ExchangeRegistry};

    /// A sink that drops its rows; `at_commit` says whether it claims to publish them only
    /// at commit.
    #[derive(Debug)]
    struct NullSink {
        at_commit: bool,
    }

    #[async_trait]
    impl Sink for NullSink {
        fn describe(&self) -> String {
            "events (nowhere)".into()
        }

        fn target(&self) -> String {
            "events".into()
        }

        fn publishes_at_commit(&self) -> bool {
            self.at_commit
        }

        fn as_any(&self) -> &dyn std::any::Any {
            self
        }

        async fn write(
            &self,
            _partition: usize,
            mut input: SendableRecordBatchStream,
            _context: Arc<TaskContext>,
        ) -> Result<u64> {
            let mut rows = 0;
            while let Some(batch) = input.next().await {
                rows += batch?.num_rows() as u64;
            }
            Ok(rows)
        }

        async fn commit(&self) -> Result<()> {
            Ok(())
        }

        async fn abort(&self) -> Result<()> {
            Ok(())
        }
    }

    /// Input channels that end at once.
    #[derive(Debug)]
    struct NoRows;

    impl ExchangeInputs for NoRows {
        fn open(
            &self,
            _vertex: usize,
            _input: usize,
            _partition: usize,
        ) -> Result<BoxStream<'static, Result<RecordBatch>>> {
            Ok(futures::stream::empty().boxed())
        }
    }

    fn unbounded() -> Boundedness {
        Boundedness::Unbounded {
            requires_infinite_memory: false,
        }
    }

    /// A two-partition input with `boundedness`.
    fn input(boundedness: Boundedness) -> Arc<dyn ExecutionPlan> {
        let schema = count_schema();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(2),
            EmissionType::Incremental,
            boundedness,
        );
        Arc::new(ExchangeReadExec::new(
            0,
            0,
            &properties,
            Partitioning::UnknownPartitioning(2),
        ))
    }

    #[test]
    fn a_sink_is_bounded_when_its_input_is() {
        let sink = || Arc::new(NullSink { at_commit: true });
        let bounded = SinkExec::new(input(Boundedness::Bounded), sink());
        assert!(!bounded.properties().boundedness.is_unbounded());
        let unbounded = SinkExec::new(input(unbounded()), sink());
        assert!(unbounded.properties().boundedness.is_unbounded());
    }

    #[test]
    fn a_sink_that_publishes_at_commit_refuses_an_unbounded_input() {
        let sink = SinkExec::new(input(unbounded()), Arc::new(NullSink { at_commit: true }));
        let context = SessionContext::new().task_ctx();
        let Err(error) = sink.execute(0, context) else {
            panic!("a sink over an unbounded input started");
        };
        let error = RiffleError::from(error);
        assert_eq!(error.kind(), ErrorKind::User);
        assert!(
            error
                .message()
                .starts_with("INSERT INTO events reads an unbounded source"),
            "{error}"
        );
        assert!(
            error
                .hint()
                .is_some_and(|hint| hint.contains("execution.checkpointing.interval")),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_sink_whose_writes_show_as_they_go_runs_over_an_unbounded_input() {
        let sink = SinkExec::new(input(unbounded()), Arc::new(NullSink { at_commit: false }));
        let config =
            SessionConfig::new().with_extension(Arc::new(ExchangeRegistry(Arc::new(NoRows))));
        let context = Arc::new(TaskContext::default().with_session_config(config));
        let stream = sink.execute(0, context).unwrap();
        let batches: Vec<RecordBatch> = stream.map(|batch| batch.unwrap()).collect().await;
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].num_rows(), 1, "one count row");
    }
}
