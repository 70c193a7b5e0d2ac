//! The reading end of a chain whose input is a source (a scan, datagen, `files()`, `VALUES`).
//!
//! The position of a source is the number of rows it has emitted. The sources Riffle reads
//! are deterministic for a given plan (files in listed order, datagen rows a function of
//! their index, in-memory tables fixed), so a restore re-executes the source's partition
//! and drops the rows before the position: none is emitted twice, none is skipped. Reading
//! them again costs time; seeking (a Parquet row group, a datagen index, a listing offset)
//! is the next refinement.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use riffle_common::Result;

use crate::operator::OperatorState;
use crate::operators::read_u64;

/// The name that keys a source's position in a checkpoint.
pub const SOURCE_STATE: &str = "source";

/// One partition of a source, read batch by batch, with its position.
pub struct SourceReader {
    stream: SendableRecordBatchStream,
    emitted: u64,
    to_skip: u64,
}

impl SourceReader {
    /// Starts reading partition `partition` of `plan`.
    pub fn new(
        plan: &Arc<dyn ExecutionPlan>,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<Self> {
        Ok(Self {
            stream: plan.execute(partition, context)?,
            emitted: 0,
            to_skip: 0,
        })
    }

    /// Resumes at the position in `state`: the rows before it are read and dropped.
    pub fn restore(&mut self, state: &OperatorState) -> Result<()> {
        let position = read_u64(&state.inline, 0, SOURCE_STATE)?;
        self.emitted = position;
        self.to_skip = position;
        Ok(())
    }

    /// The next batch; `None` at the end. Cancel-safe: a call dropped while waiting loses
    /// nothing.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let Some(batch) = self.stream.next().await else {
                return Ok(None);
            };
            let batch = batch?;
            let rows = batch.num_rows() as u64;
            if self.to_skip >= rows {
                self.to_skip -= rows;
                continue;
            }
            let skip = std::mem::take(&mut self.to_skip);
            let batch = batch.slice(skip as usize, (rows - skip) as usize);
            self.emitted += batch.num_rows() as u64;
            return Ok(Some(batch));
        }
    }

    /// The position: rows emitted so far.
    pub fn snapshot(&self) -> OperatorState {
        OperatorState {
            inline: self.emitted.to_le_bytes().to_vec(),
            batches: Vec::new(),
        }
    }
}
