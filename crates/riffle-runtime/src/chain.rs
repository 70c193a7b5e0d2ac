//! The chain task: one subtask of a chain vertex, driving its operators from its input gate.
//!
//! The loop serves, in this order of priority:
//!
//! 1. control from the coordinator (a checkpoint complete or aborted, cancel);
//! 2. completions of the chain's asynchronous work;
//! 3. the input gate, but only while every operator can accept input (soft backpressure):
//!    a batch goes down the chain; an advanced watermark too; an aligned barrier makes every
//!    operator snapshot, is acknowledged to the coordinator with the states and forwarded
//!    once on every output, behind the rows already sent; a barrier that can no longer
//!    align is declined; the end of every input finishes the chain.
//!
//! Messages to and from the coordinator carry the task's attempt, so that a coordinator can
//! ignore a zombie of an earlier attempt. The same messages travel over a network in
//! cluster mode.

use std::future::poll_fn;
use std::task::Poll;

use datafusion::arrow::array::RecordBatch;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use riffle_common::{Result, RiffleError};
use tokio::sync::mpsc;

use crate::failure::TaskFailure;
use crate::fault::TaskFault;
use crate::gate::{GateOutput, InputGate};
use crate::message::{CheckpointId, Message};
use crate::operator::{
    Emitted, Operator, OperatorContext, OperatorState, Output, SnapshotCompletion,
};
use crate::operators::END_OF_INPUT;
use crate::output::TaskOutput;
use crate::partitioner::SendError;
use crate::source::{SOURCE_STATE, SourceReader};

/// From the coordinator to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToTask {
    /// Sources only: inject barrier `id` now.
    TriggerCheckpoint {
        /// The checkpoint.
        id: CheckpointId,
    },
    /// Checkpoint `id` is complete: operators may publish what it covers.
    CheckpointComplete {
        /// The checkpoint.
        id: CheckpointId,
    },
    /// Checkpoint `id` will not complete.
    CheckpointAborted {
        /// The checkpoint.
        id: CheckpointId,
    },
    /// Stop now.
    Cancel,
}

/// From a task to the coordinator.
#[derive(Debug)]
pub enum FromTask {
    /// The task took checkpoint `id`; here are its operators' states, by operator name.
    Ack {
        /// The checkpoint.
        id: CheckpointId,
        /// The vertex and subtask.
        task: (usize, usize),
        /// The attempt the task runs in.
        attempt: u64,
        /// Each operator's state, in chain order.
        states: Vec<(String, OperatorState)>,
    },
    /// The task cannot take checkpoint `id`.
    Decline {
        /// The checkpoint.
        id: CheckpointId,
        /// The vertex and subtask.
        task: (usize, usize),
        /// The attempt the task runs in.
        attempt: u64,
        /// Why.
        reason: String,
    },
    /// The task's inputs all ended and its chain finished; here are its final states (the
    /// source at its end, a sink's parts closed at the end of input), which every later
    /// checkpoint records for it (FLIP-147).
    Finished {
        /// The vertex and subtask.
        task: (usize, usize),
        /// The attempt the task ran in.
        attempt: u64,
        /// Each operator's state after the chain finished, in chain order.
        states: Vec<(String, OperatorState)>,
    },
}

/// A chain of operators run one batch at a time: what one operator emits goes through the
/// rest before the next input is read.
pub struct Chain {
    operators: Vec<Box<dyn Operator>>,
}

impl Chain {
    /// The chain of `operators`, first to last.
    pub fn new(operators: Vec<Box<dyn Operator>>) -> Self {
        Self { operators }
    }

    async fn open(
        &mut self,
        context: &OperatorContext,
        mut restored: Vec<(String, OperatorState)>,
    ) -> Result<()> {
        for operator in &mut self.operators {
            let state = restored
                .iter()
                .position(|(name, _)| name == operator.name())
                .map(|index| restored.swap_remove(index).1);
            operator.open(context, state).await?;
        }
        Ok(())
    }

    /// Runs `emitted` through the operators from `start` on; returns what leaves the chain.
    async fn run_from(&mut self, start: usize, mut emitted: Vec<Emitted>) -> Result<Vec<Emitted>> {
        for operator in &mut self.operators[start..] {
            let mut out = Output::default();
            for item in emitted {
                match item {
                    Emitted::Batch(batch) => operator.process_batch(0, batch, &mut out).await?,
                    Emitted::Watermark(w) => operator.process_watermark(w, &mut out).await?,
                }
            }
            emitted = out.take();
        }
        Ok(emitted)
    }

    async fn process_batch(&mut self, input: usize, batch: RecordBatch) -> Result<Vec<Emitted>> {
        let Some(first) = self.operators.first_mut() else {
            return Ok(vec![Emitted::Batch(batch)]);
        };
        let mut out = Output::default();
        first.process_batch(input, batch, &mut out).await?;
        self.run_from(1, out.take()).await
    }

    async fn process_watermark(&mut self, watermark: i64) -> Result<Vec<Emitted>> {
        self.run_from(0, vec![Emitted::Watermark(watermark)]).await
    }

    async fn snapshot(&mut self, id: CheckpointId) -> Result<Vec<(String, OperatorState)>> {
        let mut states = Vec::with_capacity(self.operators.len());
        for operator in &mut self.operators {
            states.push((operator.name().to_string(), operator.snapshot(id).await?));
        }
        Ok(states)
    }

    /// What the last snapshot left running, from every operator.
    fn snapshot_completions(&mut self) -> Vec<SnapshotCompletion> {
        self.operators
            .iter_mut()
            .filter_map(|operator| operator.snapshot_completion())
            .collect()
    }

    fn can_accept(&self) -> bool {
        self.operators.iter().all(|operator| operator.can_accept())
    }

    /// Whether an operator wants no more input (a LIMIT reached): the chain then finishes.
    fn is_done(&self) -> bool {
        self.operators.iter().any(|operator| operator.is_done())
    }

    /// Waits for the first operator with completed asynchronous work; returns its index and
    /// what it emitted.
    async fn next_completion(&mut self) -> Result<(usize, Vec<Emitted>)> {
        poll_fn(|cx| {
            for (index, operator) in self.operators.iter_mut().enumerate() {
                let mut out = Output::default();
                if let Poll::Ready(outcome) = operator.poll_pending(cx, &mut out) {
                    return Poll::Ready(outcome.map(|()| (index, out.take())));
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Where a chain task's batches come from.
pub enum TaskInput {
    /// The vertex's input gate over its upstream channels.
    Gate(InputGate),
    /// A source the task reads itself; barriers start here, when the coordinator says.
    Source(SourceReader),
}

impl TaskInput {
    /// The next thing to handle; `None` at the end of every input. Without `data` (the
    /// chain takes no rows now), only what is not a batch: barriers, watermarks and ends
    /// at the head of a channel, so that a barrier behind rows the chain already took is
    /// not held back; a source has nothing but batches (its barriers come from the
    /// coordinator) and waits.
    async fn next(&mut self, data: bool) -> Result<Option<GateOutput>> {
        match self {
            TaskInput::Gate(gate) if data => Ok(gate.next().await),
            TaskInput::Gate(gate) => Ok(gate.next_control().await),
            TaskInput::Source(_) if !data => std::future::pending().await,
            TaskInput::Source(source) => Ok(source
                .next()
                .await?
                .map(|batch| GateOutput::Batch { input: 0, batch })),
        }
    }
}

/// Everything a chain task needs.
pub struct ChainTask {
    /// Where it runs.
    pub context: OperatorContext,
    /// Its input.
    pub input: TaskInput,
    /// Its operators.
    pub chain: Chain,
    /// Its output edge, or the job's result.
    pub(crate) output: TaskOutput,
    /// Messages from the coordinator.
    pub control: mpsc::UnboundedReceiver<ToTask>,
    /// Messages to the coordinator.
    pub events: mpsc::UnboundedSender<FromTask>,
    /// The operators' states from a restored checkpoint (the source's under
    /// [`SOURCE_STATE`]).
    pub restored: Vec<(String, OperatorState)>,
    /// A fault injected by `riffle.test.fail`, if any.
    pub(crate) fault: TaskFault,
}

/// Checkpoints a task has snapshotted whose asynchronous part still runs: acknowledged in
/// checkpoint order as each ends, so that a completed checkpoint never covers a part still
/// being written.
type PendingAcks = FuturesOrdered<
    futures::future::BoxFuture<'static, (CheckpointId, Vec<(String, OperatorState)>, Result<()>)>,
>;

impl ChainTask {
    fn task(&self) -> (usize, usize) {
        (self.context.vertex, self.context.subtask)
    }

    fn report(&self, event: FromTask) {
        // A coordinator that is gone is stopping the job; the task learns it from cancel.
        let _ = self.events.send(event);
    }

    /// Runs the task until its inputs end (or its chain wants no more), it is cancelled, or
    /// it fails.
    pub async fn run(mut self) -> std::result::Result<(), TaskFailure> {
        let mut restored = std::mem::take(&mut self.restored);
        if let Some(index) = restored.iter().position(|(name, _)| name == SOURCE_STATE) {
            let (_, state) = restored.swap_remove(index);
            match &mut self.input {
                TaskInput::Source(source) => source.restore(&state).await?,
                TaskInput::Gate(_) => {
                    return Err(RiffleError::internal(
                        "a checkpoint holds a source position for a task without a source",
                    )
                    .into());
                }
            }
        }
        self.chain.open(&self.context, restored).await?;
        let mut acks = PendingAcks::new();
        while !self.chain.is_done() {
            let accepting = self.chain.can_accept();
            tokio::select! {
                biased;
                Some((id, states, completed)) = acks.next(), if !acks.is_empty() => {
                    self.acknowledge(id, states, completed)?;
                }
                control = self.control.recv() => match control {
                    Some(ToTask::CheckpointComplete { id }) => {
                        self.fault.on_commit()?;
                        for operator in &mut self.chain.operators {
                            operator.notify_checkpoint_complete(id).await?;
                        }
                    }
                    Some(ToTask::CheckpointAborted { id }) => {
                        for operator in &mut self.chain.operators {
                            operator.notify_checkpoint_aborted(id);
                        }
                    }
                    // Barriers come through the gate for a task with inputs; a source task
                    // starts them between two batches.
                    Some(ToTask::TriggerCheckpoint { id }) => {
                        if matches!(self.input, TaskInput::Source(_)) {
                            self.checkpoint(id, &mut acks).await?;
                        }
                    }
                    Some(ToTask::Cancel) | None => {
                        return Err(RiffleError::user("the job was cancelled").into());
                    }
                },
                completion = self.chain.next_completion() => {
                    let (index, emitted) = completion?;
                    let leaving = self.chain.run_from(index + 1, emitted).await?;
                    self.send(leaving).await?;
                }
                next = self.input.next(accepting) => match next? {
                    Some(GateOutput::Batch { input, batch }) => {
                        self.fault.on_batch()?;
                        let leaving = self.chain.process_batch(input, batch).await?;
                        self.send(leaving).await?;
                    }
                    Some(GateOutput::Watermark(watermark)) => {
                        let leaving = self.chain.process_watermark(watermark).await?;
                        self.send(leaving).await?;
                    }
                    Some(GateOutput::Aligned(id)) => self.checkpoint(id, &mut acks).await?,
                    Some(GateOutput::Abandoned(id)) => self.report(FromTask::Decline {
                        id,
                        task: self.task(),
                        attempt: self.context.attempt,
                        reason: "a newer barrier arrived before this one aligned".into(),
                    }),
                    Some(GateOutput::Broken) => {
                        return Err(TaskFailure::Consequence(RiffleError::external(
                            "an upstream task stopped before the end of its input",
                        )));
                    }
                    None => break,
                },
            }
        }
        // The source's end position, taken before the input is dropped: a checkpoint that
        // records this task's end state must restore the source at its end, not its start.
        let source = self.source_state();
        // The input is not read any further: a chain that wanted no more (a LIMIT reached)
        // lets its producers go at once.
        self.input = TaskInput::Gate(InputGate::closed());
        self.finish_chain().await?;
        self.forward(Message::EndOfInput).await?;
        let operators = self.chain.snapshot(END_OF_INPUT).await?;
        let states = source.into_iter().chain(operators).collect();
        // Parts still closing are durable before the task says it finished: its end state
        // lists them for publication.
        for completion in self.chain.snapshot_completions() {
            completion.await?;
        }
        while let Some((id, states, completed)) = acks.next().await {
            self.acknowledge(id, states, completed)?;
        }
        self.report(FromTask::Finished {
            task: self.task(),
            attempt: self.context.attempt,
            states,
        });
        Ok(())
    }

    /// Finishes each operator in order: what it flushes goes through the rest and out at
    /// once, then its asynchronous work as each piece completes, so that results leave as
    /// they arrive rather than all at the end. Operators before one that wants no more
    /// input (a LIMIT reached) are abandoned: their output would be dropped.
    async fn finish_chain(&mut self) -> std::result::Result<(), TaskFailure> {
        let operators = self.chain.operators.len();
        let done = self
            .chain
            .operators
            .iter()
            .rposition(|operator| operator.is_done());
        for index in 0..operators {
            if done.is_some_and(|done| index < done) {
                self.chain.operators[index].abandon();
                continue;
            }
            let mut out = Output::default();
            self.chain.operators[index].finish(&mut out).await?;
            let leaving = self.chain.run_from(index + 1, out.take()).await?;
            self.send(leaving).await?;
            while self.chain.operators[index].has_pending() {
                let (at, emitted) = self.chain.next_completion().await?;
                let leaving = self.chain.run_from(at + 1, emitted).await?;
                self.send(leaving).await?;
            }
        }
        Ok(())
    }

    /// The source's position, for a task that reads a source.
    fn source_state(&self) -> Option<(String, OperatorState)> {
        match &self.input {
            TaskInput::Source(source) => Some((SOURCE_STATE.to_string(), source.snapshot())),
            TaskInput::Gate(_) => None,
        }
    }

    /// The source's position and every operator's state.
    async fn states(&mut self, id: CheckpointId) -> Result<Vec<(String, OperatorState)>> {
        let source = self.source_state();
        let operators = self.chain.snapshot(id).await?;
        Ok(source.into_iter().chain(operators).collect())
    }

    /// Snapshots the source and every operator, acknowledges, and forwards the barrier once.
    /// A snapshot that fails fails the task: an operator that could not hand over its state
    /// (a sink whose part did not close) cannot go on consistently.
    async fn checkpoint(
        &mut self,
        id: CheckpointId,
        acks: &mut PendingAcks,
    ) -> std::result::Result<(), TaskFailure> {
        self.fault.on_snapshot().await?;
        let states = self
            .states(id)
            .await
            .map_err(|error| error.context(format!("taking checkpoint {id}")))?;
        let completions = self.chain.snapshot_completions();
        if completions.is_empty() && acks.is_empty() {
            self.acknowledge(id, states, Ok(()))?;
        } else {
            acks.push_back(Box::pin(async move {
                let completed = futures::future::try_join_all(completions).await.map(|_| ());
                (id, states, completed)
            }));
        }
        self.forward(Message::Barrier(id)).await
    }

    /// Acknowledges checkpoint `id` with `states`, once its asynchronous part `completed`;
    /// a part that failed fails the task.
    fn acknowledge(
        &self,
        id: CheckpointId,
        states: Vec<(String, OperatorState)>,
        completed: Result<()>,
    ) -> std::result::Result<(), TaskFailure> {
        completed.map_err(|error| error.context(format!("taking checkpoint {id}")))?;
        self.report(FromTask::Ack {
            id,
            task: self.task(),
            attempt: self.context.attempt,
            states,
        });
        Ok(())
    }

    async fn send(&mut self, leaving: Vec<Emitted>) -> std::result::Result<(), TaskFailure> {
        for item in leaving {
            let sent = match item {
                Emitted::Batch(batch) => self.output.send_batch(batch).await,
                Emitted::Watermark(w) => self.output.send_all(Message::Watermark(w)).await,
            };
            sent.map_err(send_failure)?;
        }
        Ok(())
    }

    async fn forward(&mut self, message: Message) -> std::result::Result<(), TaskFailure> {
        self.output.send_all(message).await.map_err(send_failure)
    }
}

fn send_failure(error: SendError) -> TaskFailure {
    match error {
        SendError::Compute(error) => TaskFailure::Cause(RiffleError::from(error)),
        SendError::Disconnected => TaskFailure::ConsumerGone,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use riffle_plan::EdgePartitioning;
    use tokio::sync::Notify;

    use super::*;
    use crate::channel::{Credit, Received, Receiver, Sender, channel, channel_notifying};
    use crate::partitioner::OutputPartitioner;

    fn rows_schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]))
    }

    fn batch(values: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            rows_schema(),
            vec![Arc::new(Int64Array::from(values.to_vec()))],
        )
        .unwrap()
    }

    /// Counts the rows it passes on; its state is the count. Publishes on completion.
    struct Counter {
        rows: u64,
        completed: Arc<std::sync::Mutex<Vec<CheckpointId>>>,
    }

    #[async_trait]
    impl Operator for Counter {
        fn name(&self) -> &str {
            "counter"
        }
        async fn open(
            &mut self,
            _context: &OperatorContext,
            restored: Option<OperatorState>,
        ) -> Result<()> {
            if let Some(state) = restored {
                let bytes: [u8; 8] = state.inline.as_slice().try_into().unwrap();
                self.rows = u64::from_le_bytes(bytes);
            }
            Ok(())
        }
        async fn process_batch(
            &mut self,
            _input: usize,
            batch: RecordBatch,
            out: &mut Output,
        ) -> Result<()> {
            self.rows += batch.num_rows() as u64;
            out.batch(batch);
            Ok(())
        }
        async fn snapshot(&mut self, _checkpoint: CheckpointId) -> Result<OperatorState> {
            Ok(OperatorState {
                inline: self.rows.to_le_bytes().to_vec(),
                batches: Vec::new(),
            })
        }
        async fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<()> {
            self.completed.lock().unwrap().push(checkpoint);
            Ok(())
        }
        async fn finish(&mut self, out: &mut Output) -> Result<()> {
            out.batch(batch(&[-(self.rows as i64)]));
            Ok(())
        }
    }

    struct Harness {
        inputs: Vec<Sender>,
        downstream: Receiver,
        control: mpsc::UnboundedSender<ToTask>,
        events: mpsc::UnboundedReceiver<FromTask>,
        completed: Arc<std::sync::Mutex<Vec<CheckpointId>>>,
        task: tokio::task::JoinHandle<std::result::Result<(), TaskFailure>>,
    }

    fn start(producers: usize, restored: Vec<(String, OperatorState)>) -> Harness {
        start_with(producers, restored, Vec::new())
    }

    /// A task whose chain is a [`Counter`] and then `more`.
    fn start_with(
        producers: usize,
        restored: Vec<(String, OperatorState)>,
        more: Vec<Box<dyn Operator>>,
    ) -> Harness {
        let credit = Credit {
            batches: 8,
            bytes: 1 << 20,
        };
        let readable = Arc::new(Notify::new());
        let mut inputs = Vec::new();
        let mut channels = Vec::new();
        for _ in 0..producers {
            let (mut sender, receiver) = channel_notifying(credit, 1, Arc::clone(&readable));
            inputs.push(sender.pop().unwrap());
            channels.push((0, receiver));
        }
        let (senders, downstream) = channel(credit, 1);
        let output = OutputPartitioner::new(
            EdgePartitioning::Forward,
            senders.into_iter().map(Some).collect(),
            0,
            1,
        );
        let (control, control_receiver) = mpsc::unbounded_channel();
        let (events_sender, events) = mpsc::unbounded_channel();
        let completed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let counter = Counter {
            rows: 0,
            completed: Arc::clone(&completed),
        };
        let task = ChainTask {
            context: OperatorContext {
                vertex: 1,
                subtask: 0,
                parallelism: 1,
                attempt: 3,
            },
            input: TaskInput::Gate(InputGate::new(channels, readable)),
            chain: Chain::new(
                std::iter::once(Box::new(counter) as Box<dyn Operator>)
                    .chain(more)
                    .collect(),
            ),
            output: TaskOutput::Edge(output),
            control: control_receiver,
            events: events_sender,
            restored,
            fault: TaskFault::default(),
        };
        Harness {
            inputs,
            downstream,
            control,
            events,
            completed,
            task: tokio::spawn(task.run()),
        }
    }

    async fn downstream(receiver: &mut Receiver) -> Vec<String> {
        let mut seen = Vec::new();
        while let Some(Received::Message(message)) = receiver.recv().await {
            seen.push(match message {
                Message::Batch(b) => {
                    let values = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    format!("{:?}", values.values().to_vec())
                }
                Message::Watermark(w) => format!("w{w}"),
                Message::Barrier(id) => format!("barrier {id}"),
                Message::EndOfInput => "end".into(),
            });
        }
        seen
    }

    /// Its first snapshot's asynchronous part ends when `release` is notified.
    struct SlowToClose {
        release: Arc<Notify>,
        first: bool,
    }

    #[async_trait]
    impl Operator for SlowToClose {
        fn name(&self) -> &str {
            "slow"
        }
        async fn open(&mut self, _: &OperatorContext, _: Option<OperatorState>) -> Result<()> {
            Ok(())
        }
        async fn process_batch(
            &mut self,
            _: usize,
            batch: RecordBatch,
            out: &mut Output,
        ) -> Result<()> {
            out.batch(batch);
            Ok(())
        }
        fn snapshot_completion(&mut self) -> Option<SnapshotCompletion> {
            if !std::mem::replace(&mut self.first, false) {
                return None;
            }
            let release = Arc::clone(&self.release);
            Some(Box::pin(async move {
                release.notified().await;
                Ok(())
            }))
        }
    }

    #[tokio::test]
    async fn a_snapshot_still_completing_holds_its_ack_not_the_rows_and_acks_stay_in_order() {
        let release = Arc::new(Notify::new());
        let slow = SlowToClose {
            release: Arc::clone(&release),
            first: true,
        };
        let mut harness = start_with(1, Vec::new(), vec![Box::new(slow)]);
        let input = &mut harness.inputs[0];
        input.send(Message::Batch(batch(&[1]))).await.unwrap();
        input.send(Message::Barrier(5)).await.unwrap();
        input.send(Message::Batch(batch(&[2]))).await.unwrap();
        input.send(Message::Barrier(6)).await.unwrap();
        input.send(Message::Batch(batch(&[3]))).await.unwrap();
        // The rows and barriers after the first checkpoint pass while it completes.
        let mut seen = Vec::new();
        while seen.len() < 5 {
            match harness.downstream.recv().await {
                Some(Received::Message(Message::Batch(b))) => seen.push(format!(
                    "{:?}",
                    b.column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap()
                        .values()
                        .to_vec()
                )),
                Some(Received::Message(Message::Barrier(id))) => seen.push(format!("barrier {id}")),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, ["[1]", "barrier 5", "[2]", "barrier 6", "[3]"]);
        assert!(
            harness.events.try_recv().is_err(),
            "no checkpoint acknowledged before its part completed"
        );
        release.notify_one();
        for expected in [5, 6] {
            match harness.events.recv().await.unwrap() {
                FromTask::Ack { id, .. } => assert_eq!(id, expected, "acks in checkpoint order"),
                other => panic!("unexpected {other:?}"),
            }
        }
        harness.inputs[0].send(Message::EndOfInput).await.unwrap();
        assert!(harness.task.await.unwrap().is_ok());
        assert!(matches!(
            harness.events.recv().await.unwrap(),
            FromTask::Finished { .. }
        ));
    }

    /// Holds every batch it takes and takes no more after the first until released: an
    /// asynchronous operator whose requests are all waiting. Its state is the rows held.
    struct Holding {
        held: Vec<RecordBatch>,
        release: Arc<Notify>,
        released: bool,
    }

    #[async_trait]
    impl Operator for Holding {
        fn name(&self) -> &str {
            "holding"
        }
        async fn open(
            &mut self,
            _context: &OperatorContext,
            _restored: Option<OperatorState>,
        ) -> Result<()> {
            Ok(())
        }
        async fn process_batch(
            &mut self,
            _input: usize,
            batch: RecordBatch,
            _out: &mut Output,
        ) -> Result<()> {
            self.held.push(batch);
            Ok(())
        }
        async fn snapshot(&mut self, _checkpoint: CheckpointId) -> Result<OperatorState> {
            Ok(OperatorState {
                inline: Vec::new(),
                batches: self.held.clone(),
            })
        }
        fn poll_pending(
            &mut self,
            cx: &mut std::task::Context<'_>,
            out: &mut Output,
        ) -> Poll<Result<()>> {
            if self.held.is_empty() {
                return Poll::Pending;
            }
            if self.released {
                for batch in self.held.drain(..) {
                    out.batch(batch);
                }
                return Poll::Ready(Ok(()));
            }
            let notified = self.release.notified();
            futures::pin_mut!(notified);
            if notified.as_mut().poll(cx).is_ready() {
                self.released = true;
                for batch in self.held.drain(..) {
                    out.batch(batch);
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Pending
        }
        fn has_pending(&self) -> bool {
            !self.held.is_empty()
        }
        fn can_accept(&self) -> bool {
            self.released || self.held.is_empty()
        }
    }

    #[tokio::test]
    async fn a_barrier_behind_rows_an_operator_took_passes_while_it_takes_no_more() {
        let release = Arc::new(Notify::new());
        let holding = Holding {
            held: Vec::new(),
            release: Arc::clone(&release),
            released: false,
        };
        let mut harness = start_with(1, Vec::new(), vec![Box::new(holding)]);
        let input = &mut harness.inputs[0];
        input.send(Message::Batch(batch(&[1]))).await.unwrap();
        input.send(Message::Barrier(5)).await.unwrap();
        input.send(Message::Batch(batch(&[2]))).await.unwrap();
        // The operator takes no rows now; the barrier at the head of the channel is read
        // anyway, its snapshot holding the row it took, and acknowledged.
        match tokio::time::timeout(std::time::Duration::from_secs(5), harness.events.recv())
            .await
            .expect("the barrier is not held behind the operator's requests")
            .unwrap()
        {
            FromTask::Ack { id, states, .. } => {
                assert_eq!(id, 5);
                let held = &states.iter().find(|(name, _)| name == "holding").unwrap().1;
                assert_eq!(held.batches.len(), 1);
            }
            other => panic!("unexpected {other:?}"),
        }
        match harness.downstream.recv().await {
            Some(Received::Message(Message::Barrier(5))) => {}
            other => panic!("the barrier first: {other:?}"),
        }
        // Released, the operator emits its row, then takes the next.
        release.notify_one();
        harness.inputs[0].send(Message::EndOfInput).await.unwrap();
        let mut rows = Vec::new();
        while let Some(Received::Message(message)) = harness.downstream.recv().await {
            if let Message::Batch(b) = message {
                rows.extend(
                    b.column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap()
                        .values()
                        .to_vec(),
                );
            }
        }
        assert_eq!(rows, [1, 2, -2]);
        assert!(harness.task.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn an_aligned_barrier_snapshots_the_rows_before_it_and_is_forwarded_once() {
        let mut harness = start(2, Vec::new());
        let [first, second] = &mut harness.inputs[..] else {
            unreachable!()
        };
        first.send(Message::Batch(batch(&[1, 2]))).await.unwrap();
        first.send(Message::Barrier(5)).await.unwrap();
        first.send(Message::Batch(batch(&[3]))).await.unwrap();
        second
            .send(Message::Batch(batch(&[10, 11, 12])))
            .await
            .unwrap();
        second.send(Message::Barrier(5)).await.unwrap();
        for input in &mut harness.inputs {
            input.send(Message::EndOfInput).await.unwrap();
        }
        assert!(harness.task.await.unwrap().is_ok());

        match harness.events.recv().await.unwrap() {
            FromTask::Ack {
                id,
                task,
                attempt,
                states,
            } => {
                assert_eq!((id, task, attempt), (5, (1, 0), 3));
                assert_eq!(states[0].0, "counter");
                assert_eq!(
                    states[0].1.inline,
                    5u64.to_le_bytes().to_vec(),
                    "rows before it"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            harness.events.recv().await.unwrap(),
            FromTask::Finished { .. }
        ));
        let seen = downstream(&mut harness.downstream).await;
        let barrier = seen.iter().position(|s| s == "barrier 5").unwrap();
        let mut before = seen[..barrier].to_vec();
        before.sort();
        assert_eq!(before, vec!["[1, 2]", "[10, 11, 12]"]);
        assert_eq!(&seen[barrier + 1..], ["[3]", "[-6]", "end"]);
    }

    #[tokio::test]
    async fn completion_reaches_the_operators_and_a_restore_brings_their_state_back() {
        let restored = vec![(
            "counter".to_string(),
            OperatorState {
                inline: 40u64.to_le_bytes().to_vec(),
                batches: Vec::new(),
            },
        )];
        let mut harness = start(1, restored);
        harness.inputs[0]
            .send(Message::Batch(batch(&[1, 2])))
            .await
            .unwrap();
        harness.inputs[0].send(Message::Barrier(9)).await.unwrap();
        let FromTask::Ack { states, .. } = harness.events.recv().await.unwrap() else {
            panic!("expected an ack")
        };
        assert_eq!(states[0].1.inline, 42u64.to_le_bytes().to_vec());
        harness
            .control
            .send(ToTask::CheckpointComplete { id: 9 })
            .unwrap();
        harness.inputs[0].send(Message::EndOfInput).await.unwrap();
        assert!(harness.task.await.unwrap().is_ok());
        assert_eq!(*harness.completed.lock().unwrap(), vec![9]);
        let seen = downstream(&mut harness.downstream).await;
        assert_eq!(seen, vec!["[1, 2]", "barrier 9", "[-42]", "end"]);
    }

    #[tokio::test]
    async fn a_finished_source_task_reports_its_end_position() {
        use datafusion::datasource::memory::MemorySourceConfig;
        use datafusion::prelude::SessionContext;
        let rows = batch(&[1, 2, 3]);
        let plan: Arc<dyn datafusion::physical_plan::ExecutionPlan> =
            MemorySourceConfig::try_new_exec(&[vec![rows.clone(), rows]], rows_schema(), None)
                .unwrap();
        let source = SourceReader::new(&plan, 0, SessionContext::new().task_ctx()).unwrap();
        let (senders, mut downstream) = channel(
            Credit {
                batches: 8,
                bytes: 1 << 20,
            },
            1,
        );
        let (_control, control_receiver) = mpsc::unbounded_channel();
        let (events_sender, mut events) = mpsc::unbounded_channel();
        let task = ChainTask {
            context: OperatorContext {
                vertex: 0,
                subtask: 0,
                parallelism: 1,
                attempt: 0,
            },
            input: TaskInput::Source(source),
            chain: Chain::new(Vec::new()),
            output: TaskOutput::Result(senders.into_iter().next().unwrap()),
            control: control_receiver,
            events: events_sender,
            restored: Vec::new(),
            fault: TaskFault::default(),
        };
        let running = tokio::spawn(task.run());
        while let Some(Received::Message(message)) = downstream.recv().await {
            if matches!(message, Message::EndOfInput) {
                break;
            }
        }
        assert!(running.await.unwrap().is_ok());
        let FromTask::Finished { states, .. } = events.recv().await.unwrap() else {
            panic!("expected the task to finish")
        };
        // Restoring a checkpoint that records this end state must not read the rows again.
        assert_eq!(states[0].0, SOURCE_STATE);
        assert_eq!(states[0].1.inline, 6u64.to_le_bytes().to_vec());
    }

    #[tokio::test]
    async fn cancel_stops_the_task() {
        let harness = start(1, Vec::new());
        harness.control.send(ToTask::Cancel).unwrap();
        match harness.task.await.unwrap() {
            Err(TaskFailure::Cause(error)) => assert!(error.to_string().contains("cancelled")),
            other => panic!("unexpected {other:?}"),
        }
    }
}
