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
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use futures::StreamExt;
use futures::stream::BoxStream;
use riffle_common::{JobConfig, Result, RiffleError};
use riffle_plan::{ExchangeInputs, ExchangeRegistry, JobGraph, Sink, VertexId};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use crate::channel::{ChannelStats, Credit, Received, Receiver, Sender, channel};
use crate::message::Message;
use crate::partitioner::{OutputPartitioner, SendError, targets};

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

        // Channels of every edge, receivers registered for the exchange readers.
        let mut receivers = HashMap::new();
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
                let (partition_senders, receiver) = channel(self.credit, feeding);
                channel_stats.push(ChannelInfo {
                    from: edge.from,
                    to: edge.to,
                    partition,
                    stats: receiver.stats(),
                });
                let mut partition_senders = partition_senders.into_iter();
                for (targets, producer_senders) in feeds.iter().zip(senders.iter_mut()) {
                    let sender = if targets.contains(&partition) {
                        partition_senders.next()
                    } else {
                        None
                    };
                    producer_senders.push(sender);
                }
                receivers.insert((edge.to, edge.input, partition), receiver);
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

        // One control mailbox per subtask, for watermarks and barriers that pass through.
        let mut mailboxes = HashMap::new();
        let mut mailbox_receivers = HashMap::new();
        for vertex in &graph.vertices {
            for subtask in 0..vertex.parallelism {
                let (sender, receiver) = mpsc::unbounded_channel();
                mailboxes.insert((vertex.id, subtask), sender);
                mailbox_receivers.insert((vertex.id, subtask), receiver);
            }
        }
        let parallelism = graph.vertices.iter().map(|v| v.parallelism).collect();
        let inputs = Arc::new(ChannelInputs {
            receivers: Mutex::new(receivers),
            mailboxes,
            parallelism,
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

        // Open every fragment before starting any task, so that a planning mistake fails the
        // job before it writes anything.
        let mut tasks = JoinSet::new();
        for vertex in &graph.vertices {
            let running = Arc::new(std::sync::atomic::AtomicUsize::new(vertex.parallelism));
            let mut partitioners = outputs.remove(&vertex.id);
            for subtask in (0..vertex.parallelism).rev() {
                let stream = vertex.fragment.execute(subtask, Arc::clone(&context))?;
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
                let mailbox = mailbox_receivers
                    .remove(&(vertex.id, subtask))
                    .ok_or_else(|| RiffleError::internal("missing mailbox"))?;
                let name = format!("vertex {} ({}) subtask {subtask}", vertex.id, vertex.name);
                let (inputs, running, id) = (Arc::clone(&inputs), Arc::clone(&running), vertex.id);
                tasks.spawn(async move {
                    let outcome = run_task(name, stream, output, mailbox).await;
                    // A fragment need not open every input partition (a LIMIT can end it
                    // first). Once the whole vertex is done, close what it left unopened, so
                    // that producers waiting for credit there stop instead of waiting forever.
                    if running.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                        inputs.close_vertex(id);
                    }
                    outcome
                });
            }
        }

        let cancel = Arc::new(Notify::new());
        let driver = tokio::spawn(drive(tasks, graph.sinks.clone(), Arc::clone(&cancel)));
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

/// Statistics of one channel of a running job.
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    /// Producing vertex.
    pub from: VertexId,
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

/// Where a subtask's output goes.
enum TaskOutput {
    Edge(OutputPartitioner),
    Result(Sender),
}

impl TaskOutput {
    async fn send_batch(&mut self, batch: RecordBatch) -> Result<(), SendError> {
        match self {
            TaskOutput::Edge(partitioner) => partitioner.send_batch(batch).await,
            TaskOutput::Result(sender) => {
                if batch.num_rows() > 0 {
                    sender.send(Message::Batch(batch)).await?;
                }
                Ok(())
            }
        }
    }

    async fn send_control(&mut self, message: Message) -> Result<(), SendError> {
        match self {
            TaskOutput::Edge(partitioner) => partitioner.send_all(message).await,
            // The result consumer wants rows only.
            TaskOutput::Result(_) => Ok(()),
        }
    }
}

/// Marks the error a task reports when its input broke because another task failed, so
/// that the job reports the cause instead.
#[derive(Debug)]
struct UpstreamFailed;

impl fmt::Display for UpstreamFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an upstream task stopped before the end of its input")
    }
}

impl std::error::Error for UpstreamFailed {}

/// How a task ended, when it did not succeed.
enum TaskFailure {
    /// The task's own error: a candidate for the job's error.
    Cause(RiffleError),
    /// A consequence of another task's failure.
    Consequence(RiffleError),
    /// The task's consumer stopped reading; not a failure by itself.
    ConsumerGone,
}

async fn run_task(
    name: String,
    mut stream: SendableRecordBatchStream,
    mut output: TaskOutput,
    mut mailbox: mpsc::UnboundedReceiver<Message>,
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
    let disconnected = || TaskFailure::ConsumerGone;
    loop {
        tokio::select! {
            biased;
            Some(message) = mailbox.recv() => {
                output.send_control(message).await.map_err(|e| match e {
                    SendError::Compute(error) => failed(error),
                    SendError::Disconnected => disconnected(),
                })?;
            }
            next = stream.next() => match next {
                Some(Ok(batch)) => output.send_batch(batch).await.map_err(|e| match e {
                    SendError::Compute(error) => failed(error),
                    SendError::Disconnected => disconnected(),
                })?,
                Some(Err(error)) => return Err(failed(error)),
                None => break,
            }
        }
    }
    while let Ok(message) = mailbox.try_recv() {
        output
            .send_control(message)
            .await
            .map_err(|_| disconnected())?;
    }
    let finished = match &mut output {
        TaskOutput::Edge(partitioner) => partitioner.send_all(Message::EndOfInput).await,
        TaskOutput::Result(sender) => sender.send(Message::EndOfInput).await.map_err(Into::into),
    };
    finished.map_err(|_| disconnected())
}

/// Waits for every task; on the first failure or a cancel, stops them all. Commits the sinks
/// when the job succeeded and aborts them otherwise.
async fn drive(
    mut tasks: JoinSet<Result<(), TaskFailure>>,
    sinks: Vec<Arc<dyn Sink>>,
    cancel: Arc<Notify>,
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

/// The runtime's side of [`ExchangeInputs`]: hands out channel receivers as streams.
struct ChannelInputs {
    receivers: Mutex<HashMap<(VertexId, usize, usize), Receiver>>,
    mailboxes: HashMap<(VertexId, usize), mpsc::UnboundedSender<Message>>,
    parallelism: Vec<usize>,
}

impl fmt::Debug for ChannelInputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelInputs").finish_non_exhaustive()
    }
}

impl ChannelInputs {
    /// Drops the receivers of `vertex` that were never opened.
    fn close_vertex(&self, vertex: VertexId) {
        if let Ok(mut receivers) = self.receivers.lock() {
            receivers.retain(|(to, _, _), _| *to != vertex);
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
        let receiver = self
            .receivers
            .lock()
            .map_err(|_| DataFusionError::Internal("channel registry poisoned".into()))?
            .remove(&(vertex, input, partition))
            .ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "no channel for vertex {vertex} input {input} partition {partition}, or it was opened twice"
                ))
            })?;
        let width = self.parallelism.get(vertex).copied().unwrap_or(1).max(1);
        let mailbox = self.mailboxes.get(&(vertex, partition % width)).cloned();
        let stream =
            futures::stream::unfold((receiver, mailbox), |(mut receiver, mailbox)| async move {
                loop {
                    match receiver.recv().await? {
                        Received::Message(Message::Batch(batch)) => {
                            return Some((Ok(batch), (receiver, mailbox)));
                        }
                        Received::Message(Message::EndOfInput) => return None,
                        Received::Message(control) => {
                            if let Some(mailbox) = &mailbox {
                                // The task may already be gone; its control is moot then.
                                let _ = mailbox.send(control);
                            }
                        }
                        Received::Broken => {
                            let error = DataFusionError::External(Box::new(UpstreamFailed));
                            return Some((Err(error), (receiver, mailbox)));
                        }
                    }
                }
            });
        Ok(stream.boxed())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use riffle_plan::EdgePartitioning;

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap()
    }

    fn credit() -> Credit {
        Credit {
            batches: 4,
            bytes: 1 << 20,
        }
    }

    #[tokio::test]
    async fn control_messages_pass_through_a_task_in_order() {
        // Upstream channel into vertex 0, partition 0: a batch, a watermark, a barrier.
        let (mut upstream, receiver) = channel(credit(), 1);
        let (mailbox, mut mailbox_receiver) = mpsc::unbounded_channel();
        let inputs = ChannelInputs {
            receivers: Mutex::new(HashMap::from([((0, 0, 0), receiver)])),
            mailboxes: HashMap::from([((0, 0), mailbox)]),
            parallelism: vec![1],
        };
        let mut sender = upstream.pop().unwrap();
        sender.send(Message::Batch(batch())).await.unwrap();
        sender.send(Message::Watermark(42)).await.unwrap();
        sender.send(Message::Barrier(7)).await.unwrap();
        sender.send(Message::EndOfInput).await.unwrap();

        // The reader yields the rows and hands the control messages to the task's mailbox.
        let stream = inputs.open(0, 0, 0).unwrap();
        let batches: Vec<_> = stream.collect().await;
        assert_eq!(batches.len(), 1);
        let mut control = Vec::new();
        while let Ok(message) = mailbox_receiver.try_recv() {
            control.push(message);
        }
        assert!(matches!(
            control.as_slice(),
            [Message::Watermark(42), Message::Barrier(7)]
        ));

        // The task forwards them downstream, then ends its output.
        let (downstream_senders, mut downstream) = channel(credit(), 1);
        let partitioner = OutputPartitioner::new(
            EdgePartitioning::Forward,
            downstream_senders.into_iter().map(Some).collect(),
            0,
            1,
        );
        let (mailbox, task_mailbox) = mpsc::unbounded_channel();
        for message in control {
            mailbox.send(message).unwrap();
        }
        let schema = batch().schema();
        let rows = futures::stream::iter(vec![Ok(batch())]);
        let stream = Box::pin(RecordBatchStreamAdapter::new(schema, rows));
        assert!(
            run_task(
                "test".into(),
                stream,
                TaskOutput::Edge(partitioner),
                task_mailbox
            )
            .await
            .is_ok()
        );
        let mut seen = Vec::new();
        while let Some(Received::Message(message)) = downstream.recv().await {
            seen.push(match message {
                Message::Batch(_) => "batch".to_string(),
                Message::Watermark(w) => format!("watermark {w}"),
                Message::Barrier(b) => format!("barrier {b}"),
                Message::EndOfInput => "end".to_string(),
            });
        }
        assert_eq!(seen, vec!["watermark 42", "barrier 7", "batch", "end"]);
    }
}
