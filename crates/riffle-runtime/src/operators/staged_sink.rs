//! A transactional sink's writer at the end of a chain: two-phase commit, as Flink's Sink V2.
//!
//! Between two barriers the operator writes one staged part ([`Sink::open_part`]). At a
//! barrier it keeps the part in its checkpointed state and closes it (a Parquet footer, the
//! upload completed under the staging folder) on a task of its own, which the chain awaits
//! before acknowledging the checkpoint ([`Operator::snapshot_completion`]) while it reads
//! on; when the checkpoint completes it
//! publishes the parts that checkpoint covers ([`Sink::publish`]). A restore publishes the
//! restored parts again (the checkpoint they belong to is complete; publishing is
//! idempotent) and deletes what failed attempts staged, so after any failure the published
//! output holds each row once.
//!
//! At the end of its input the operator closes its last part under [`END_OF_INPUT`] and
//! the task reports its state as it finishes; the coordinator publishes those parts when a
//! checkpoint that records them completes, or at the job's end. With `sink.commit-mode =
//! 'end'` nothing is published before the job's end.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use riffle_common::{Result, RiffleError};
use riffle_plan::{PartWriter, Sink, StagedPart};
use serde::{Deserialize, Serialize};

use crate::message::CheckpointId;
use crate::operator::{Operator, OperatorContext, OperatorState, Output, SnapshotCompletion};

/// The checkpoint id recorded for a part closed at the end of input: it is published by
/// the first checkpoint completed after the task finished, or at the job's end.
pub const END_OF_INPUT: CheckpointId = CheckpointId::MAX;

/// When staged parts are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    /// When the checkpoint that covers them completes.
    Checkpoint,
    /// Only at the job's end.
    End,
}

/// What a staged sink keeps in a checkpoint: rows written so far and the parts not yet
/// published, each with the checkpoint whose barrier closed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkState {
    /// Rows written by this subtask, over every attempt.
    pub rows: u64,
    /// Staged parts waiting to be published.
    pub pending: Vec<(CheckpointId, StagedPart)>,
    /// Whether the subtask reached the end of its input and emitted its count row. A task
    /// restored from such a state does not emit it again: the checkpoint that recorded the
    /// end released the row to the client.
    #[serde(default)]
    pub finished: bool,
}

impl SinkState {
    /// Reads the state of operator `name`.
    pub fn decode(bytes: &[u8], name: &str) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| {
            RiffleError::internal(format!(
                "the checkpointed state of sink operator {name} does not parse: {e}"
            ))
        })
    }

    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| RiffleError::internal(format!("encoding a sink's state: {e}")))
    }
}

/// Writes one subtask's share of a sink as staged parts; see the module docs.
pub struct StagedSinkOperator {
    name: String,
    sink: Arc<dyn Sink>,
    schema: SchemaRef,
    mode: CommitMode,
    subtask: usize,
    attempt: u64,
    /// Parts opened in this attempt: with the subtask and attempt, a part's unique name.
    sequence: u64,
    part: Option<Box<dyn PartWriter>>,
    state: SinkState,
    /// The part the last snapshot closes in the background.
    closing: Option<Closing>,
}

/// A part closing on a task of its own. Dropped unfinished (the task failed or the job was
/// cancelled), it aborts the close, whose part then aborts its upload.
struct Closing(tokio::task::JoinHandle<Result<()>>);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl StagedSinkOperator {
    /// The writer of `sink` for subtask `subtask`, for rows of `schema`.
    pub fn new(
        name: String,
        sink: Arc<dyn Sink>,
        schema: SchemaRef,
        subtask: usize,
        mode: CommitMode,
    ) -> Self {
        Self {
            name,
            sink,
            schema,
            mode,
            subtask,
            attempt: 0,
            sequence: 0,
            part: None,
            state: SinkState::default(),
            closing: None,
        }
    }

    /// The prefix of this subtask's part names (before the attempt).
    fn subtask_prefix(&self) -> String {
        format!("s{:05}-", self.subtask)
    }

    async fn open_part(&mut self) -> Result<&mut Box<dyn PartWriter>> {
        if self.part.is_none() {
            let name = format!(
                "{}a{}-{:05}",
                self.subtask_prefix(),
                self.attempt,
                self.sequence
            );
            self.sequence += 1;
            let schema = Arc::clone(&self.schema);
            self.part = Some(self.sink.open_part(&name, schema).await?);
        }
        self.part
            .as_mut()
            .ok_or_else(|| RiffleError::internal("no open part"))
    }

    /// Closes the open part, if any, as covered by checkpoint `id`.
    async fn close_part(&mut self, id: CheckpointId) -> Result<()> {
        if let Some(part) = self.part.take() {
            let staged = part.close().await?;
            self.state.pending.push((id, staged));
        }
        Ok(())
    }
}

#[async_trait]
impl Operator for StagedSinkOperator {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(
        &mut self,
        context: &OperatorContext,
        restored: Option<OperatorState>,
    ) -> Result<()> {
        self.attempt = context.attempt;
        if let Some(restored) = restored {
            self.state = SinkState::decode(&restored.inline, &self.name)?;
            if self.mode == CommitMode::Checkpoint {
                // Every restored part is covered by the restored checkpoint, which is
                // complete: its publication may have been lost with the failure.
                let parts: Vec<StagedPart> =
                    self.state.pending.drain(..).map(|(_, part)| part).collect();
                self.sink.publish(&parts, false).await?;
            }
        }
        if context.attempt > 0 {
            let keep: Vec<StagedPart> = self
                .state
                .pending
                .iter()
                .map(|(_, part)| part.clone())
                .collect();
            self.sink
                .discard_staged(&self.subtask_prefix(), &keep)
                .await?;
        }
        Ok(())
    }

    async fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _out: &mut Output,
    ) -> Result<()> {
        let rows = batch.num_rows() as u64;
        self.open_part().await?.write(&batch).await?;
        self.state.rows += rows;
        Ok(())
    }

    async fn snapshot(&mut self, checkpoint: CheckpointId) -> Result<OperatorState> {
        // The part's rows are those before the barrier; it closes (its last row group
        // encoded, its footer written, its upload completed) while the next rows come in,
        // and the task acknowledges the checkpoint once it is staged.
        if let Some(part) = self.part.take() {
            self.state.pending.push((checkpoint, part.staged_part()));
            let name = self.name.clone();
            self.closing = Some(Closing(tokio::spawn(async move {
                part.close()
                    .await
                    .map(|_| ())
                    .map_err(|e| RiffleError::from(e).context(format!("{name}: closing a part")))
            })));
        }
        Ok(OperatorState {
            inline: self.state.encode()?,
            batches: Vec::new(),
        })
    }

    fn snapshot_completion(&mut self) -> Option<SnapshotCompletion> {
        let mut closing = self.closing.take()?;
        Some(Box::pin(async move {
            match (&mut closing.0).await {
                Ok(closed) => closed,
                Err(error) => Err(RiffleError::internal(format!("closing a part: {error}"))),
            }
        }))
    }

    async fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<()> {
        if self.mode == CommitMode::End {
            return Ok(());
        }
        let (covered, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.state.pending)
            .into_iter()
            .partition(|(id, _)| *id <= checkpoint);
        self.state.pending = later;
        let parts: Vec<StagedPart> = covered.into_iter().map(|(_, part)| part).collect();
        if !parts.is_empty() {
            self.sink.publish(&parts, false).await?;
        }
        Ok(())
    }

    async fn finish(&mut self, out: &mut Output) -> Result<()> {
        // Subtask 0 always leaves a file, so that an empty result is still a readable table
        // with its columns.
        if self.subtask == 0
            && self.state.rows == 0
            && self.state.pending.is_empty()
            && !self.state.finished
        {
            self.open_part().await?;
        }
        self.close_part(END_OF_INPUT).await?;
        if !std::mem::replace(&mut self.state.finished, true) {
            out.batch(super::count_row(self.state.rows)?);
        }
        Ok(())
    }
}
