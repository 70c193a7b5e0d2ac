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

    async fn snapshot(&mut self, _checkpoint: CheckpointId) -> Result<OperatorState> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::operator::Emitted;

    fn batch(values: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let values: Vec<i64> = values.collect();
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap()
    }

    fn rows(out: &mut Output) -> Vec<i64> {
        out.take()
            .into_iter()
            .flat_map(|item| match item {
                Emitted::Batch(b) => {
                    let v = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    v.values().to_vec()
                }
                Emitted::Watermark(_) => Vec::new(),
            })
            .collect()
    }

    fn context() -> OperatorContext {
        OperatorContext {
            vertex: 0,
            subtask: 0,
            parallelism: 1,
            attempt: 0,
        }
    }

    #[tokio::test]
    async fn skips_then_passes_fetch_rows_across_batches_and_a_restore_resumes_the_counts() {
        let mut limit = LimitOperator::new("limit-1".into(), 3, Some(4));
        limit.open(&context(), None).await.unwrap();
        let mut out = Output::default();
        limit.process_batch(0, batch(0..2), &mut out).await.unwrap();
        limit.process_batch(0, batch(2..5), &mut out).await.unwrap();
        assert_eq!(rows(&mut out), vec![3, 4]);
        assert!(!limit.is_done());
        let state = limit.snapshot(1).await.unwrap();

        let mut restored = LimitOperator::new("limit-1".into(), 3, Some(4));
        restored.open(&context(), Some(state)).await.unwrap();
        restored
            .process_batch(0, batch(5..10), &mut out)
            .await
            .unwrap();
        assert_eq!(rows(&mut out), vec![5, 6], "two more rows make four");
        assert!(restored.is_done());
    }

    #[tokio::test]
    async fn a_state_too_short_is_an_error_naming_the_operator() {
        let mut limit = LimitOperator::new("limit-2".into(), 0, Some(1));
        let state = OperatorState {
            inline: vec![1, 2, 3],
            batches: Vec::new(),
        };
        let error = limit.open(&context(), Some(state)).await.unwrap_err();
        assert!(error.to_string().contains("operator limit-2"), "{error}");
    }
}
