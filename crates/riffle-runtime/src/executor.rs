//! The local executor: runs a [`JobGraph`] as tokio tasks in this process.
//!
//! Each subtask of each vertex is one tokio task that pulls its fragment's output stream and
//! pushes every batch into its output edge (or the job's result). Fragments read their
//! inputs through [`ExchangeReadExec`](riffle_plan::ExchangeReadExec) leaves, which this
//! executor connects to credit-bounded [`channel`]s before any task starts. A driver task
//! watches them all: the first failure (or a cancel) aborts every task, aborts the sinks and
//! becomes the job's error; when every task has finished, the sinks are committed.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use futures::StreamExt;
use futures::stream::BoxStream;
use riffle_common::{JobConfig, Result, RiffleError};
use riffle_plan::{
    ChainInput, ExchangeInputs, ExchangeRegistry, JobGraph, Sink, VertexId, VertexKind,
};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use crate::chain::{ChainTask, TaskInput, ToTask};
use crate::channel::{
    ChannelStats, Credit, Received, Receiver, Sender, channel, channel_notifying,
};
use crate::failure::{TaskFailure, UpstreamFailed};
use crate::gate::{GateOutput, InputGate};
use crate::message::Message;
use crate::operator::OperatorContext;
use crate::operators::build_chain;
use crate::output::TaskOutput;
use crate::partitioner::{OutputPartitioner, SendError, targets};
use crate::source::SourceReader;

/// Runs job graphs on the current tokio runtime.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    credit: Credit,
}

impl LocalExecutor {
    /// An executor whose channels get the credit `config` gives.
    pub fn new(config: &JobConfig) -> Self {
        Self {
            credit: Credit {
                batches: config.channel_credit_batches,
                bytes: config.channel_credit_bytes,
            },
        }
    }

    /// Starts `graph`. Its fragments run with `context` (DataFusion's functions, memory pool
    /// and object stores). The returned handle streams the job's result; dropping it cancels
    /// the job.
    pub fn execute(&self, graph: JobGraph, context: &TaskContext) -> Result<JobHandle> {
        graph.check().map_err(RiffleError::internal)?;
        let roots: Vec<VertexId> = graph
            .vertices
            .iter()
            .filter(|vertex| graph.output_edge(vertex.id).is_none())
            .map(|vertex| vertex.id)
            .collect();
        let Some(&root) = roots.first() else {
            return Err(RiffleError::internal(
                "job graph has no vertex without an output",
            ));
        };
        if roots.len() > 1 {
            return Err(RiffleError::internal(
                "job graph has more than one result vertex",
            ));
        }
        let schema = graph.vertices[root].fragment.schema();
        let bounded = graph.is_bounded();

        // Every edge gets one channel per (producer, consumer partition), so that a consumer
        // can tell its producers apart; the channels of one consumer partition form its
        // input gate and share the edge's credit.
        let mut gates = HashMap::new();
        let mut outputs: HashMap<VertexId, Vec<OutputPartitioner>> = HashMap::new();
        let mut channel_stats = Vec::new();
        for edge in &graph.edges {
            let producers = graph.vertices[edge.from].parallelism;
            let feeds: Vec<Vec<usize>> = (0..producers)
                .map(|producer| targets(&edge.partitioning, producer, producers, edge.partitions))
                .collect();
            // senders[producer][partition]: filled partition by partition.
            let mut senders: Vec<Vec<Option<Sender>>> =
                (0..producers).map(|_| Vec::new()).collect();
            for partition in 0..edge.partitions {
                let feeding = feeds
                    .iter()
                    .filter(|targets| targets.contains(&partition))
                    .count();
                let credit = self.credit.share(feeding);
                let readable = Arc::new(Notify::new());
                let mut channels = Vec::new();
                for (producer, (targets, producer_senders)) in
                    feeds.iter().zip(senders.iter_mut()).enumerate()
                {
                    if !targets.contains(&partition) {
                        producer_senders.push(None);
                        continue;
                    }
                    let (mut sender, receiver) =
                        channel_notifying(credit, 1, Arc::clone(&readable));
                    channel_stats.push(ChannelInfo {
                        from: edge.from,
                        producer,
                        to: edge.to,
                        partition,
                        stats: receiver.stats(),
                    });
                    producer_senders.push(sender.pop());
                    channels.push((edge.input, receiver));
                }
                gates.insert(
                    (edge.to, edge.input, partition),
                    InputGate::new(channels, readable),
                );
            }
            let partitioners = senders
                .into_iter()
                .enumerate()
                .map(|(producer, senders)| {
                    OutputPartitioner::new(edge.partitioning.clone(), senders, producer, producers)
                })
                .collect();
            outputs.insert(edge.from, partitioners);
        }
        let (mut result_senders, results) = channel(self.credit, graph.vertices[root].parallelism);

        let inputs = Arc::new(ChannelInputs {
            gates: Mutex::new(gates),
        });
        let config = context
            .session_config()
            .clone()
            .with_extension(Arc::new(ExchangeRegistry(Arc::clone(&inputs) as _)));
        let context = Arc::new(TaskContext::new(
            context.task_id(),
            context.session_id(),
            config,
            context.scalar_functions().clone(),
            context.higher_order_functions().clone(),
            context.aggregate_functions().clone(),
            context.window_functions().clone(),
            context.runtime_env(),
        ));

        // Open every fragment and build every chain before starting any task, so that a
        // planning mistake fails the job before it writes anything.
        let mut opened: Vec<(String, Runnable, Arc<AtomicUsize>, VertexId)> = Vec::new();
        let mut controls = Vec::new();
        let (events, _events_receiver) = mpsc::unbounded_channel();
        for vertex in &graph.vertices {
            let running = Arc::new(AtomicUsize::new(vertex.parallelism));
            let mut partitioners = outputs.remove(&vertex.id);
            for subtask in (0..vertex.parallelism).rev() {
                let output = match partitioners.as_mut() {
                    Some(partitioners) => match partitioners.pop() {
                        Some(partitioner) => TaskOutput::Edge(partitioner),
                        None => return Err(RiffleError::internal("missing output partitioner")),
                    },
                    None => match result_senders.pop() {
                        Some(sender) => TaskOutput::Result(sender),
                        None => return Err(RiffleError::internal("missing result channel")),
                    },
                };
                let name = format!("vertex {} ({}) subtask {subtask}", vertex.id, vertex.name);
                let runnable = match &vertex.kind {
                    VertexKind::Fragment { .. } => {
                        let stream = vertex.fragment.execute(subtask, Arc::clone(&context))?;
                        Runnable::Fragment(stream, output)
                    }
                    VertexKind::Chain(plan) => {
                        let input = match &plan.input {
                            ChainInput::Exchange { input } => {
                                let gate = inputs.take(vertex.id, *input, subtask)?;
                                TaskInput::Gate(gate)
                            }
                            ChainInput::Source(source) => TaskInput::Source(SourceReader::new(
                                source,
                                subtask,
                                Arc::clone(&context),
                            )?),
                        };
                        let (control, control_receiver) = mpsc::unbounded_channel();
                        controls.push(control);
                        Runnable::Chain(Box::new(ChainTask {
                            context: OperatorContext {
                                vertex: vertex.id,
                                subtask,
                                parallelism: vertex.parallelism,
                                attempt: 0,
                            },
                            input,
                            chain: build_chain(plan, subtask, &context)?,
                            output,
                            control: control_receiver,
                            events: events.clone(),
                            restored: Vec::new(),
                        }))
                    }
                };
                opened.push((name, runnable, Arc::clone(&running), vertex.id));
            }
        }
        let mut tasks = JoinSet::new();
        for (name, runnable, running, id) in opened {
            let inputs = Arc::clone(&inputs);
            tasks.spawn(async move {
                let outcome = match runnable {
                    Runnable::Fragment(stream, output) => run_task(name, stream, output).await,
                    Runnable::Chain(task) => {
                        let outcome = task.run().await;
                        if let Err(TaskFailure::Cause(error)) = &outcome {
                            tracing::debug!("{name} failed: {error}");
                        }
                        outcome
                    }
                };
                // A fragment need not open every input partition (a LIMIT can end it
                // first). Once the whole vertex is done, close what it left unopened, so
                // that producers waiting for credit there stop instead of waiting forever.
                if running.fetch_sub(1, Ordering::AcqRel) == 1 {
                    inputs.close_vertex(id);
                }
                outcome
            });
        }

        let cancel = Arc::new(Notify::new());
        let driver = tokio::spawn(drive(
            tasks,
            graph.sinks.clone(),
            Arc::clone(&cancel),
            controls,
        ));
        Ok(JobHandle {
            schema,
            bounded,
            results,
            cancel,
            driver: Some(driver),
            channel_stats,
        })
    }
}

/// A subtask, ready to run.
enum Runnable {
    /// A fragment's stream and where it goes.
    Fragment(SendableRecordBatchStream, TaskOutput),
    /// A chain task.
    Chain(Box<ChainTask>),
}

/// Statistics of one channel of a running job.
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    /// Producing vertex.
    pub from: VertexId,
    /// Producing subtask: every producer has a channel of its own.
    pub producer: usize,
    /// Consuming vertex.
    pub to: VertexId,
    /// Consumer partition.
    pub partition: usize,
    /// High-water marks.
    pub stats: Arc<ChannelStats>,
}

/// A running job: its result stream, and the means to cancel it.
pub struct JobHandle {
    schema: SchemaRef,
    bounded: bool,
    results: Receiver,
    cancel: Arc<Notify>,
    driver: Option<tokio::task::JoinHandle<Result<()>>>,
    channel_stats: Vec<ChannelInfo>,
}

impl fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("schema", &self.schema)
            .finish()
    }
}

impl JobHandle {
    /// Schema of the result batches.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Whether every source of the job is bounded, so that it ends on its own.
    pub fn is_bounded(&self) -> bool {
        self.bounded
    }

    /// The next batch of the result; `None` once the job has finished and committed. If the
    /// job failed, its first error.
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        // The driver is taken once the job's outcome is known.
        if self.driver.is_some() {
            loop {
                match self.results.recv().await {
                    Some(Received::Message(Message::Batch(batch))) => return Ok(Some(batch)),
                    Some(Received::Message(Message::EndOfInput))
                    | Some(Received::Broken)
                    | None => break,
                    Some(Received::Message(_)) => continue,
                }
            }
            self.finish().await?;
        }
        Ok(None)
    }

    async fn finish(&mut self) -> Result<()> {
        if let Some(driver) = self.driver.take() {
            let outcome = match driver.await {
                Ok(outcome) => outcome,
                Err(error) => Err(RiffleError::internal(format!("job driver failed: {error}"))),
            };
            outcome?;
        }
        Ok(())
    }

    /// Runs the job to its end and returns all result batches.
    pub async fn collect(mut self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next_batch().await? {
            batches.push(batch);
        }
        Ok(batches)
    }

    /// Stops the job: every task is aborted, the sinks discard what they wrote, and
    /// [`JobHandle::next_batch`] returns a "cancelled" error.
    pub fn cancel(&self) {
        self.cancel.notify_one();
    }

    /// A handle that can cancel the job from elsewhere (another task, a signal handler).
    pub fn canceller(&self) -> JobCanceller {
        JobCanceller(Arc::clone(&self.cancel))
    }

    /// The channels of the job and their high-water marks.
    pub fn channel_stats(&self) -> &[ChannelInfo] {
        &self.channel_stats
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        if self.driver.is_some() {
            self.cancel.notify_one();
        }
    }
}

/// Cancels a job from anywhere.
#[derive(Debug, Clone)]
pub struct JobCanceller(Arc<Notify>);

impl JobCanceller {
    /// Stops the job, as [`JobHandle::cancel`].
    pub fn cancel(&self) {
        self.0.notify_one();
    }
}

async fn run_task(
    name: String,
    mut stream: SendableRecordBatchStream,
    mut output: TaskOutput,
) -> Result<(), TaskFailure> {
    let failed = |error: DataFusionError| {
        let upstream = matches!(error.find_root(), DataFusionError::External(inner) if inner.is::<UpstreamFailed>());
        let error = RiffleError::from(error);
        tracing::debug!("{name} failed: {error}");
        if upstream {
            TaskFailure::Consequence(error)
        } else {
            TaskFailure::Cause(error)
        }
    };
    // The consumer went away: it needs no more rows (a LIMIT was reached downstream) or the
    // job is stopping because of another task's error, which the job reports instead.
    while let Some(next) = stream.next().await {
        let batch = next.map_err(failed)?;
        output.send_batch(batch).await.map_err(|e| match e {
            SendError::Compute(error) => failed(error),
            SendError::Disconnected => TaskFailure::ConsumerGone,
        })?;
    }
    let finished = match &mut output {
        TaskOutput::Edge(partitioner) => partitioner.send_all(Message::EndOfInput).await,
        TaskOutput::Result(sender) => sender.send(Message::EndOfInput).await.map_err(Into::into),
    };
    finished.map_err(|_| TaskFailure::ConsumerGone)
}

/// Waits for every task; on the first failure or a cancel, stops them all. Commits the sinks
/// when the job succeeded and aborts them otherwise.
async fn drive(
    mut tasks: JoinSet<Result<(), TaskFailure>>,
    sinks: Vec<Arc<dyn Sink>>,
    cancel: Arc<Notify>,
    // The chain tasks' control channels: a chain task whose channel closes stops, so they
    // live as long as the job.
    _controls: Vec<mpsc::UnboundedSender<ToTask>>,
) -> Result<()> {
    let mut failures = Failures::default();
    let mut cancelled = false;
    loop {
        tokio::select! {
            _ = cancel.notified() => {
                cancelled = true;
                break;
            }
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(TaskFailure::ConsumerGone))) => {}
                Some(Ok(Err(failure))) => {
                    failures.record(failure);
                    break;
                }
                Some(Err(join_error)) => {
                    let error = if join_error.is_panic() {
                        RiffleError::internal(format!("a task panicked: {}", panic_message(join_error)))
                    } else {
                        RiffleError::internal("a task was aborted")
                    };
                    failures.cause.get_or_insert(error);
                    break;
                }
            }
        }
    }
    let stopping = cancelled || failures.cause.is_some() || failures.consequence.is_some();
    if stopping {
        tasks.abort_all();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Err(failure)) => failures.record(failure),
                Err(join_error) if join_error.is_panic() => {
                    failures.cause.get_or_insert(RiffleError::internal(format!(
                        "a task panicked: {}",
                        panic_message(join_error)
                    )));
                }
                _ => {}
            }
        }
        for sink in &sinks {
            if let Err(error) = sink.abort().await {
                tracing::warn!("aborting {}: {error}", sink.describe());
            }
        }
        let error = if cancelled {
            RiffleError::user("the job was cancelled")
        } else {
            failures
                .cause
                .or(failures.consequence)
                .unwrap_or_else(|| RiffleError::internal("job stopped without an error"))
        };
        return Err(error);
    }
    for (index, sink) in sinks.iter().enumerate() {
        if let Err(error) = sink.commit().await {
            for later in &sinks[index + 1..] {
                let _ = later.abort().await;
            }
            return Err(RiffleError::from(error).context(format!("committing {}", sink.describe())));
        }
    }
    Ok(())
}

/// The failures seen while stopping a job; the job reports the first cause.
#[derive(Default)]
struct Failures {
    cause: Option<RiffleError>,
    consequence: Option<RiffleError>,
}

impl Failures {
    fn record(&mut self, failure: TaskFailure) {
        match failure {
            TaskFailure::Cause(error) => {
                self.cause.get_or_insert(error);
            }
            TaskFailure::Consequence(error) => {
                self.consequence.get_or_insert(error);
            }
            TaskFailure::ConsumerGone => {}
        }
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    let payload = error.into_panic();
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// The runtime's side of [`ExchangeInputs`]: hands out input gates as streams of batches.
///
/// A fragment vertex is a DataFusion stream: it has no operator to snapshot and no notion of
/// event time, so its exchange readers pass rows only. Watermarks are dropped there (the
/// bounded jobs fragments run in have no event-time operators yet), and a checkpoint
/// barrier reaching one is a planning bug: jobs with fragment vertices take no
/// checkpoints.
struct ChannelInputs {
    gates: Mutex<HashMap<(VertexId, usize, usize), InputGate>>,
}

impl fmt::Debug for ChannelInputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelInputs").finish_non_exhaustive()
    }
}

impl ChannelInputs {
    /// Takes the input gate of a chain task, which reads it itself.
    fn take(&self, vertex: VertexId, input: usize, partition: usize) -> Result<InputGate> {
        self.gates
            .lock()
            .map_err(|_| RiffleError::internal("channel registry poisoned"))?
            .remove(&(vertex, input, partition))
            .ok_or_else(|| {
                RiffleError::internal(format!(
                    "no channel for vertex {vertex} input {input} partition {partition}"
                ))
            })
    }

    /// Drops the input gates of `vertex` that were never opened.
    fn close_vertex(&self, vertex: VertexId) {
        if let Ok(mut gates) = self.gates.lock() {
            gates.retain(|(to, _, _), _| *to != vertex);
        }
    }
}

impl ExchangeInputs for ChannelInputs {
    fn open(
        &self,
        vertex: VertexId,
        input: usize,
        partition: usize,
    ) -> datafusion::error::Result<BoxStream<'static, datafusion::error::Result<RecordBatch>>> {
        let gate = self
            .gates
            .lock()
            .map_err(|_| DataFusionError::Internal("channel registry poisoned".into()))?
            .remove(&(vertex, input, partition))
            .ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "no channel for vertex {vertex} input {input} partition {partition}, or it was opened twice"
                ))
            })?;
        let stream = futures::stream::unfold(Some(gate), move |gate| async move {
            let mut gate = gate?;
            loop {
                let error = match gate.next().await? {
                    GateOutput::Batch { batch, .. } => return Some((Ok(batch), Some(gate))),
                    GateOutput::Watermark(_) => continue,
                    GateOutput::Broken => DataFusionError::External(Box::new(UpstreamFailed)),
                    GateOutput::Aligned(id) | GateOutput::Abandoned(id) => {
                        DataFusionError::Internal(format!(
                            "checkpoint barrier {id} reached fragment vertex {vertex}, which takes no checkpoints"
                        ))
                    }
                };
                // The stream ends after its error.
                return Some((Err(error), None));
            }
        });
        Ok(stream.boxed())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(value: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![value]))]).unwrap()
    }

    fn credit() -> Credit {
        Credit {
            batches: 4,
            bytes: 1 << 20,
        }
    }

    /// Exchange inputs for vertex 0, input 0, partition 0, fed by `producers` channels.
    fn inputs(producers: usize) -> (Vec<Sender>, ChannelInputs) {
        let readable = Arc::new(Notify::new());
        let mut senders = Vec::new();
        let mut channels = Vec::new();
        for _ in 0..producers {
            let (mut sender, receiver) = channel_notifying(credit(), 1, Arc::clone(&readable));
            senders.push(sender.pop().unwrap());
            channels.push((0, receiver));
        }
        let gates = HashMap::from([((0, 0, 0), InputGate::new(channels, readable))]);
        (
            senders,
            ChannelInputs {
                gates: Mutex::new(gates),
            },
        )
    }

    fn value(batch: &RecordBatch) -> i64 {
        let values = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        values.value(0)
    }

    #[tokio::test]
    async fn a_fragment_reads_every_producer_and_ends_after_the_last() {
        let (mut senders, inputs) = inputs(2);
        senders[0].send(Message::Batch(batch(1))).await.unwrap();
        senders[0].send(Message::Watermark(5)).await.unwrap();
        senders[0].send(Message::EndOfInput).await.unwrap();
        senders[1].send(Message::Batch(batch(2))).await.unwrap();
        senders[1].send(Message::Watermark(6)).await.unwrap();
        senders[1].send(Message::EndOfInput).await.unwrap();
        let read: Vec<i64> = inputs
            .open(0, 0, 0)
            .unwrap()
            .map(|batch| value(&batch.unwrap()))
            .collect()
            .await;
        let mut sorted = read.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![1, 2],
            "rows only, watermarks dropped: {read:?}"
        );
        assert!(inputs.open(0, 0, 0).is_err(), "a gate opens once");
    }

    #[tokio::test]
    async fn a_barrier_reaching_a_fragment_vertex_is_an_error() {
        let (mut senders, inputs) = inputs(1);
        senders[0].send(Message::Batch(batch(1))).await.unwrap();
        senders[0].send(Message::Barrier(3)).await.unwrap();
        senders[0].send(Message::Batch(batch(2))).await.unwrap();
        let read: Vec<_> = inputs.open(0, 0, 0).unwrap().collect().await;
        assert_eq!(
            read.len(),
            2,
            "the row before the barrier, then the error: {read:?}"
        );
        let error = read[1].as_ref().unwrap_err().to_string();
        assert!(
            error.contains("checkpoint barrier 3 reached fragment vertex 0"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_producer_that_breaks_fails_its_consumer_as_a_consequence() {
        let (mut senders, inputs) = inputs(2);
        senders[1].send(Message::EndOfInput).await.unwrap();
        senders.remove(0);
        let read: Vec<_> = inputs.open(0, 0, 0).unwrap().collect().await;
        match read.as_slice() {
            [Err(DataFusionError::External(inner))] => assert!(inner.is::<UpstreamFailed>()),
            other => panic!("unexpected {other:?}"),
        }
    }
}
