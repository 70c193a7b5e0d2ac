//! Riffle's chain operators, and the chain that runs a planned [`ChainPlan`].
//!
//! Each [`ChainStage`] of the plan becomes one operator, named by its kind and position
//! (`segment-1`, `limit-2`, ...): the name keys its state in a checkpoint, so it must be the
//! same on every attempt of the same plan.

mod coalesce;
mod limit;
mod segment;
mod sink;

use std::sync::Arc;

use datafusion::execution::TaskContext;
use riffle_common::Result;
use riffle_plan::{ChainPlan, ChainStage};

pub use coalesce::CoalesceOperator;
pub use limit::LimitOperator;
pub use segment::SegmentOperator;
pub use sink::SinkOperator;

use crate::chain::Chain;
use crate::operator::Operator;

/// The operators of `plan` for subtask `subtask`, built (and their DataFusion segments
/// instantiated) before the task starts, so that a planning mistake fails the job early.
pub fn build_chain(plan: &ChainPlan, subtask: usize, context: &Arc<TaskContext>) -> Result<Chain> {
    let mut operators: Vec<Box<dyn Operator>> = Vec::with_capacity(plan.stages.len());
    for (index, stage) in plan.stages.iter().enumerate() {
        let position = index + 1;
        let operator: Box<dyn Operator> = match stage {
            ChainStage::Segment(segment) => Box::new(SegmentOperator::new(
                format!("segment-{position}"),
                segment,
                Arc::clone(context),
            )?),
            ChainStage::Limit { skip, fetch } => Box::new(LimitOperator::new(
                format!("limit-{position}"),
                *skip,
                *fetch,
            )),
            ChainStage::Coalesce { target_rows } => Box::new(CoalesceOperator::new(
                format!("coalesce-{position}"),
                *target_rows,
            )),
            ChainStage::Sink {
                sink,
                schema,
                unbounded_input,
            } => {
                riffle_plan::check_sink_input(sink.as_ref(), *unbounded_input)?;
                Box::new(SinkOperator::new(
                    format!("sink-{position}"),
                    Arc::clone(sink),
                    Arc::clone(schema),
                    subtask,
                    Arc::clone(context),
                ))
            }
        };
        operators.push(operator);
    }
    Ok(Chain::new(operators))
}

/// Reads a little-endian `u64` at `index` of an operator's inline state.
pub(crate) fn read_u64(state: &[u8], index: usize, operator: &str) -> Result<u64> {
    let start = index * 8;
    state
        .get(start..start + 8)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| {
            riffle_common::RiffleError::internal(format!(
                "the checkpointed state of operator {operator} is {} bytes, too short",
                state.len()
            ))
        })
}
