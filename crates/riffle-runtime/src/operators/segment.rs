//! A stateless DataFusion sub-plan run once per batch.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use riffle_common::Result;
use riffle_plan::{BatchSlot, BatchSlotExec};

use crate::operator::{Operator, OperatorContext, OperatorState, Output};

/// Runs a chain segment (projections, filters, functions over a [`BatchSlotExec`]) on each
/// batch: the batch goes into the slot, the plan is executed and drained. Between batches
/// the segment holds nothing, so it has no state.
pub struct SegmentOperator {
    name: String,
    plan: Arc<dyn ExecutionPlan>,
    slot: BatchSlot,
    context: Arc<TaskContext>,
}

impl SegmentOperator {
    /// This subtask's instance of `segment`, with a slot of its own.
    pub fn new(
        name: String,
        segment: &Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
    ) -> Result<Self> {
        let (plan, slot) = BatchSlotExec::instantiate(segment)?;
        Ok(Self {
            name,
            plan,
            slot,
            context,
        })
    }
}

#[async_trait]
impl Operator for SegmentOperator {
    fn name(&self) -> &str {
        &self.name
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
        out: &mut Output,
    ) -> Result<()> {
        self.slot.put(batch);
        let mut stream = self.plan.execute(0, Arc::clone(&self.context))?;
        while let Some(batch) = stream.next().await {
            out.batch(batch?);
        }
        Ok(())
    }
}
