//! LIMIT and OFFSET in a chain.

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use riffle_common::Result;

use super::read_u64;
use crate::message::CheckpointId;
use crate::operator::{Operator, OperatorContext, OperatorState, Output};

/// Skips `skip` rows, passes `fetch` rows, then wants no more input (the chain ends). Its
/// state is the rows skipped and passed so far.
pub struct LimitOperator {
    name: String,
    skip: u64,
    fetch: Option<u64>,
    skipped: u64,
    passed: u64,
}

impl LimitOperator {
    /// A limit of `fetch` rows (all when `None`) after `skip`.
    pub fn new(name: String, skip: usize, fetch: Option<usize>) -> Self {
        Self {
            name,
            skip: skip as u64,
            fetch: fetch.map(|fetch| fetch as u64),
            skipped: 0,
            passed: 0,
        }
    }
}

#[async_trait]
impl Operator for LimitOperator {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(
        &mut self,
        _context: &OperatorContext,
        restored: Option<OperatorState>,
    ) -> Result<()> {
        if let Some(state) = restored {
            self.skipped = read_u64(&state.inline, 0, &self.name)?;
            self.passed = read_u64(&state.inline, 1, &self.name)?;
        }
        Ok(())
    }

    async fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<()> {
        let rows = batch.num_rows() as u64;
        let skip = (self.skip - self.skipped).min(rows);
        self.skipped += skip;
        let left = match self.fetch {
            Some(fetch) => fetch - self.passed,
            None => u64::MAX,
        };
        let take = (rows - skip).min(left);
        if take > 0 {
            out.batch(batch.slice(skip as usize, take as usize));
            self.passed += take;
        }
        Ok(())
    }

    fn snapshot(&mut self, _checkpoint: CheckpointId) -> Result<OperatorState> {
        let mut inline = self.skipped.to_le_bytes().to_vec();
        inline.extend_from_slice(&self.passed.to_le_bytes());
        Ok(OperatorState {
            inline,
            batches: Vec::new(),
        })
    }

    fn is_done(&self) -> bool {
        self.fetch.is_some_and(|fetch| self.passed >= fetch)
    }
}
