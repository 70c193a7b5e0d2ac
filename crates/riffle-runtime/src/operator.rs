//! The operator contract: what a chain task drives, one batch at a time.
//!
//! A chain vertex runs a chain of operators in one task. The task owns the inputs (an
//! [`InputGate`](crate::gate::InputGate)) and calls its operators between batches only, so a
//! barrier that reaches the task finds no row inside any operator except what the operator
//! itself holds as state, and hands over in [`Operator::snapshot`]. That is what makes the
//! snapshot of a chain a consistent cut (Flink's `StreamOperator`, Arroyo's `ArrowOperator`).
//!
//! Operators that wait on the outside world (downloads, inference, sinks) are asynchronous:
//! they start work in `process_batch`, report completions through [`Operator::poll_pending`],
//! and say through [`Operator::can_accept`] when they have no capacity, so that the task
//! stops reading data (backpressure) but keeps serving barriers and control.

use std::task::{Context, Poll};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use riffle_common::Result;

use crate::message::CheckpointId;

/// Where an operator runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorContext {
    /// The vertex.
    pub vertex: usize,
    /// This subtask.
    pub subtask: usize,
    /// Subtasks of the vertex.
    pub parallelism: usize,
    /// The job's attempt: restarts count up.
    pub attempt: u64,
}

/// What an operator hands over at a barrier: small bytes inline, rows as Arrow batches
/// (immutable, so handing them over clones handles, not bytes).
#[derive(Debug, Clone, Default)]
pub struct OperatorState {
    /// Positions, counters, commit records: small, encoded by the operator.
    pub inline: Vec<u8>,
    /// Rows the operator holds (buffered input, results not yet emitted).
    pub batches: Vec<RecordBatch>,
}

impl OperatorState {
    /// Whether there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self.inline.is_empty() && self.batches.is_empty()
    }
}

/// The asynchronous part of an operator's snapshot; see [`Operator::snapshot_completion`].
pub type SnapshotCompletion = futures::future::BoxFuture<'static, Result<()>>;

/// What an operator emits, in order.
#[derive(Debug, Clone)]
pub enum Emitted {
    /// Rows for the next operator.
    Batch(RecordBatch),
    /// Event time reached this value on the operator's output.
    Watermark(i64),
}

/// An operator's output while the task calls it: handed to the next operator of the chain
/// (or the task's outputs) once the call returns.
#[derive(Debug, Default)]
pub struct Output {
    emitted: Vec<Emitted>,
}

impl Output {
    /// Emits rows (empty batches are dropped).
    pub fn batch(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.emitted.push(Emitted::Batch(batch));
        }
    }

    /// Emits a watermark.
    pub fn watermark(&mut self, watermark: i64) {
        self.emitted.push(Emitted::Watermark(watermark));
    }

    /// Takes what was emitted, in order.
    pub fn take(&mut self) -> Vec<Emitted> {
        std::mem::take(&mut self.emitted)
    }
}

/// One operator of a chain; see the module docs. Every call happens between batches, on the
/// task that owns the operator: no locks, no calls at once.
#[async_trait]
pub trait Operator: Send {
    /// A stable name, also across restarts (it keys the operator's state in a checkpoint).
    fn name(&self) -> &str;

    /// Prepares the operator, with its state when the job restores a checkpoint.
    async fn open(
        &mut self,
        context: &OperatorContext,
        restored: Option<OperatorState>,
    ) -> Result<()>;

    /// Processes one batch from input `input` (0 for a chain's first operator).
    async fn process_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<()>;

    /// Event time advanced; by default the watermark is passed on.
    async fn process_watermark(&mut self, watermark: i64, out: &mut Output) -> Result<()> {
        out.watermark(watermark);
        Ok(())
    }

    /// The operator's part of a checkpoint, at the barrier: hand over what it holds.
    /// Stateless operators hold nothing. It may do I/O that the checkpoint's consistency
    /// needs (a sink closes its open file, so that the file's rows are exactly the rows
    /// before the barrier); state itself is uploaded by the coordinator, not here.
    async fn snapshot(&mut self, _checkpoint: CheckpointId) -> Result<OperatorState> {
        Ok(OperatorState::default())
    }

    /// Work the last [`Operator::snapshot`] left running that must end before the
    /// checkpoint counts (a sink's part closing in the background). The task acknowledges
    /// the checkpoint once it ends, in checkpoint order, and meanwhile goes on with the
    /// next batches: Flink's asynchronous snapshot phase.
    fn snapshot_completion(&mut self) -> Option<SnapshotCompletion> {
        None
    }

    /// Checkpoint `checkpoint` is complete everywhere: publish what it covers (sinks).
    async fn notify_checkpoint_complete(&mut self, _checkpoint: CheckpointId) -> Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint` will not complete.
    fn notify_checkpoint_aborted(&mut self, _checkpoint: CheckpointId) {}

    /// Every input ended: emit what is left (a coalescer emits its rows). An asynchronous
    /// operator may leave work running; the task then serves its completions through
    /// [`Operator::poll_pending`] until [`Operator::has_pending`] is false, before it
    /// finishes the next operator, so that results leave as they arrive.
    async fn finish(&mut self, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    /// Whether asynchronous work is still running or waiting to be emitted.
    fn has_pending(&self) -> bool {
        false
    }

    /// An operator after this one wants no more input (a LIMIT reached): drop what is held
    /// and stop what runs, instead of finishing (its output would be discarded).
    fn abandon(&mut self) {}

    /// Completions of asynchronous work; `Ready` when something was emitted or failed.
    fn poll_pending(&mut self, _cx: &mut Context<'_>, _out: &mut Output) -> Poll<Result<()>> {
        Poll::Pending
    }

    /// Whether the operator wants no more input, ever (a LIMIT reached): the task then
    /// stops reading and finishes the chain.
    fn is_done(&self) -> bool {
        false
    }

    /// Whether the operator takes more input now; while false, the task reads control and
    /// barriers but no data (soft backpressure, Flink's FLINK-39680 lesson).
    fn can_accept(&self) -> bool {
        true
    }
}
