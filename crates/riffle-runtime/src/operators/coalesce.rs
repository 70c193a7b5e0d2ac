//! Gathers small batches into full ones.

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use riffle_common::{Result, RiffleError};

use crate::message::CheckpointId;
use crate::operator::{Operator, OperatorContext, OperatorState, Output};

/// Buffers batches until they hold about `target_rows` rows, then emits them as one. A
/// batch of at least half the target passes as it is when nothing is buffered. What is
/// buffered at a barrier is its state (the batches themselves, not copies); the rest is
/// emitted at the end of input.
pub struct CoalesceOperator {
    name: String,
    target_rows: usize,
    buffered: Vec<RecordBatch>,
    buffered_rows: usize,
}

impl CoalesceOperator {
    /// A coalescer aiming at `target_rows` rows per batch.
    pub fn new(name: String, target_rows: usize) -> Self {
        Self {
            name,
            target_rows: target_rows.max(1),
            buffered: Vec::new(),
            buffered_rows: 0,
        }
    }

    fn flush(&mut self, out: &mut Output) -> Result<()> {
        let Some(first) = self.buffered.first() else {
            return Ok(());
        };
        let batch = concat_batches(&first.schema(), &self.buffered)
            .map_err(|e| RiffleError::internal(format!("coalescing batches: {e}")))?;
        self.buffered.clear();
        self.buffered_rows = 0;
        out.batch(batch);
        Ok(())
    }
}

#[async_trait]
impl Operator for CoalesceOperator {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(
        &mut self,
        _context: &OperatorContext,
        restored: Option<OperatorState>,
    ) -> Result<()> {
        if let Some(state) = restored {
            self.buffered_rows = state.batches.iter().map(RecordBatch::num_rows).sum();
            self.buffered = state.batches;
        }
        Ok(())
    }

    async fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.buffered.is_empty() && batch.num_rows() * 2 >= self.target_rows {
            out.batch(batch);
            return Ok(());
        }
        self.buffered_rows += batch.num_rows();
        self.buffered.push(batch);
        if self.buffered_rows >= self.target_rows {
            self.flush(out)?;
        }
        Ok(())
    }

    async fn snapshot(&mut self, _checkpoint: CheckpointId) -> Result<OperatorState> {
        Ok(OperatorState {
            inline: Vec::new(),
            batches: self.buffered.clone(),
        })
    }

    async fn finish(&mut self, out: &mut Output) -> Result<()> {
        self.flush(out)
    }
}
