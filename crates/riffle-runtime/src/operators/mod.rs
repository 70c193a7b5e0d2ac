//! Riffle's chain operators, and the chain that runs a planned [`ChainPlan`].
//!
//! Each [`ChainStage`] of the plan becomes one operator, named by its kind and position
//! (`segment-1`, `limit-2`, ...): the name keys its state in a checkpoint, so it must be the
//! same on every attempt of the same plan.

mod async_calls;
mod coalesce;
mod inference;
mod limit;
mod segment;
mod sink;
mod staged_sink;

use std::sync::Arc;

use datafusion::execution::TaskContext;
use riffle_common::Result;
use riffle_plan::{ChainPlan, ChainStage};

use self::async_calls::{AsyncFunctions, RequestShape};
use self::inference::ModelRequests;

pub use async_calls::{AsyncOperator, Requests};

pub(crate) use async_calls::rows_to_resend;
pub use coalesce::CoalesceOperator;
pub use limit::LimitOperator;
pub(crate) use segment::path_of;
pub use segment::{RowOrigin, SegmentOperator};
pub use sink::SinkOperator;
pub use staged_sink::{CommitMode, END_OF_INPUT, SinkState, StagedSinkOperator};

use crate::chain::Chain;
use crate::operator::Operator;

/// How a job's sinks commit: whether at checkpoints, and in which mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkCommits {
    /// Whether the job takes checkpoints.
    pub checkpointing: bool,
    /// `sink.commit-mode`.
    pub mode: CommitMode,
}

/// The operators of `plan` for subtask `subtask`, built (and their DataFusion segments
/// instantiated) before the task starts, so that a planning mistake fails the job early.
/// `origin` is the chain's source, when it has one: a first segment names failing rows by it.
pub fn build_chain(
    plan: &ChainPlan,
    subtask: usize,
    context: &Arc<TaskContext>,
    commits: SinkCommits,
    origin: Option<RowOrigin>,
) -> Result<Chain> {
    let mut operators: Vec<Box<dyn Operator>> = Vec::with_capacity(plan.stages.len());
    for (index, stage) in plan.stages.iter().enumerate() {
        let position = index + 1;
        let operator: Box<dyn Operator> = match stage {
            ChainStage::Segment(segment) => Box::new(SegmentOperator::new(
                format!("segment-{position}"),
                segment,
                Arc::clone(context),
                origin.clone().filter(|_| index == 0),
            )?),
            ChainStage::Async {
                exprs,
                rows,
                in_flight,
                schema,
            } => {
                let name = async_operator_name(position);
                let functions = AsyncFunctions::new(
                    name.clone(),
                    exprs.clone(),
                    Arc::clone(schema),
                    Arc::clone(context.session_config().options()),
                );
                let shape = RequestShape {
                    rows: *rows,
                    bytes: u64::MAX,
                    in_flight: *in_flight,
                    ordered: true,
                    linger: None,
                };
                let inputs = schema.fields().len() - exprs.len();
                Box::new(AsyncOperator::new(
                    name,
                    Arc::new(functions),
                    shape,
                    Arc::clone(schema),
                    inputs,
                ))
            }
            ChainStage::Inference {
                call,
                rows,
                bytes,
                in_flight,
                ordered,
                schema,
            } => {
                let shape = RequestShape {
                    rows: *rows,
                    bytes: *bytes,
                    in_flight: *in_flight,
                    ordered: *ordered,
                    linger: Some(std::time::Duration::from_millis(call.config().linger)),
                };
                let inputs = schema.fields().len() - call.added_columns();
                Box::new(AsyncOperator::new(
                    async_operator_name(position),
                    Arc::new(ModelRequests::new(Arc::clone(call))),
                    shape,
                    Arc::clone(schema),
                    inputs,
                ))
            }
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
                // An overwriting sink publishes only at the end, whatever the mode.
                let per_checkpoint = commits.checkpointing
                    && commits.mode == CommitMode::Checkpoint
                    && !sink.overwrites();
                riffle_plan::check_sink_input(sink.as_ref(), *unbounded_input, per_checkpoint)?;
                if sink.writes_staged_parts() {
                    Box::new(StagedSinkOperator::new(
                        sink_operator_name(position),
                        Arc::clone(sink),
                        Arc::clone(schema),
                        subtask,
                        if sink.overwrites() {
                            CommitMode::End
                        } else {
                            commits.mode
                        },
                    ))
                } else {
                    Box::new(SinkOperator::new(
                        sink_operator_name(position),
                        Arc::clone(sink),
                        Arc::clone(schema),
                        subtask,
                        Arc::clone(context),
                    ))
                }
            }
        };
        operators.push(operator);
    }
    Ok(Chain::new(operators))
}

/// The name of the async operator at `position` of a chain (its stage index plus one).
pub fn async_operator_name(position: usize) -> String {
    format!("{ASYNC_OPERATOR}-{position}")
}

/// What the names of async operators start with.
pub(crate) const ASYNC_OPERATOR: &str = "async";

/// The name of the sink operator at `position` of a chain (its stage index plus one).
pub fn sink_operator_name(position: usize) -> String {
    format!("sink-{position}")
}

/// The staged sinks of a chain: each sink operator's name and its sink, for the coordinator
/// that publishes the parts of finished tasks.
pub fn staged_sinks(plan: &ChainPlan) -> Vec<(String, Arc<dyn riffle_plan::Sink>)> {
    plan.stages
        .iter()
        .enumerate()
        .filter_map(|(index, stage)| match stage {
            ChainStage::Sink { sink, .. } if sink.writes_staged_parts() => {
                Some((sink_operator_name(index + 1), Arc::clone(sink)))
            }
            _ => None,
        })
        .collect()
}

/// The row a sink operator emits at the end of its input: the rows it wrote, in the
/// `count` column that `SinkExec` returns too.
pub(crate) fn count_row(rows: u64) -> Result<datafusion::arrow::array::RecordBatch> {
    let count = datafusion::arrow::array::UInt64Array::from(vec![rows]);
    datafusion::arrow::array::RecordBatch::try_new(
        riffle_plan::count_schema(),
        vec![Arc::new(count)],
    )
    .map_err(|e| riffle_common::RiffleError::internal(format!("the sink's count row: {e}")))
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
