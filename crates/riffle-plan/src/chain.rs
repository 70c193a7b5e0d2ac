//! Chain vertices: which fragments run as a chain of Riffle operators, and as which.
//!
//! A fragment whose every operator handles one batch at a time without keeping rows across
//! batches (projections, filters, async functions, unnest, limits, a sink) runs as a
//! *chain*: a task loop that owns its input (an input gate or a source) and calls each
//! operator between batches, so that a checkpoint barrier finds nothing inside them but the
//! state they hand over. [`plan_chain`] decomposes such a fragment, from its input up, into
//! a [`ChainPlan`]:
//!
//! | fragment node | chain stage |
//! |---|---|
//! | `ExchangeReadExec` leaf | the task's input gate ([`ChainInput::Exchange`]) |
//! | a scan, datagen, `files()`, `VALUES`, with their wrappers | [`ChainInput::Source`] |
//! | `ProjectionExec`, `FilterExec`, `UnnestExec`, ... | [`ChainStage::Segment`]: the run of such nodes, executed once per batch over a [`BatchSlotExec`] |
//! | `AsyncBatchExec` (`url_download`, `file_read`) | [`ChainStage::Async`]: requests of a few rows, several in flight, results in order |
//! | `GlobalLimitExec`, `LocalLimitExec`, a node's `fetch` | [`ChainStage::Limit`] |
//! | after a filter | [`ChainStage::Coalesce`] |
//! | `SinkExec` | [`ChainStage::Sink`] |
//!
//! Anything else (aggregates, sorts, joins, windows, unions, scalar subqueries) needs more
//! than one batch at a time or more than one input, and the fragment stays a DataFusion
//! fragment; [`plan_chain`] then says which operator kept it one.

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::async_scalar_function::AsyncFuncExpr;
use datafusion::physical_expr::{EquivalenceProperties, ScalarFunctionExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties, ReplaceChildrenOptions,
};
use riffle_inference::call::ModelCall;

use crate::async_batches::AsyncBatchExec;
use crate::exchange::ExchangeReadExec;
use crate::ml_predict::MlPredictExec;
use crate::sink::{Sink, SinkExec};

/// Nodes that transform each batch on its own, kept in a [`ChainStage::Segment`].
const PER_BATCH: &[&str] = &[
    "ProjectionExec",
    "FilterExec",
    "AsyncBatchExec",
    "MlPredictExec",
    // Only when Riffle's rule did not replace it with an `AsyncBatchExec`: then it runs
    // inside a segment, each batch's calls to their end.
    "AsyncFuncExec",
    "UnnestExec",
    "BatchRowsExec",
    "CooperativeExec",
];

/// Requests of an async stage in flight at once (started and not yet emitted). Each is a
/// slice of a few rows whose own rows are fetched concurrently, so a few of them keep the
/// network busy while the operators after them work.
pub const ASYNC_REQUESTS_IN_FLIGHT: usize = 4;

/// Leaves that read a source, and the nodes that wrap a source's stream (naming its files,
/// skipping corrupt ones, fixing its width, yielding to the scheduler): together, a
/// [`ChainInput::Source`].
const SOURCE_LEAVES: &[&str] = &[
    "DataSourceExec",
    "DataGenExec",
    "FilesListExec",
    "EmptyExec",
    "PlaceholderRowExec",
    "LazyMemoryExec",
];
const SOURCE_WRAPPERS: &[&str] = &[
    "ScanContextExec",
    "SkipCorruptFilesExec",
    "FixedParallelismExec",
    "CooperativeExec",
];

/// Where a chain's batches come from.
#[derive(Debug, Clone)]
pub enum ChainInput {
    /// The vertex's exchange input `input`: the task reads its input gate.
    Exchange {
        /// Which input of the vertex.
        input: usize,
    },
    /// A source sub-plan; subtask `i` reads its partition `i`.
    Source(Arc<dyn ExecutionPlan>),
}

/// One operator of a chain.
#[derive(Debug, Clone)]
pub enum ChainStage {
    /// Per-batch DataFusion nodes over a [`BatchSlotExec`] leaf: each batch is put in the
    /// slot and the plan executed to its end, so the segment holds nothing between batches.
    Segment(Arc<dyn ExecutionPlan>),
    /// Asynchronous functions (`url_download`, `file_read`) evaluated on slices of `rows`
    /// rows, up to `in_flight` slices at once, their results emitted in input order. The
    /// slices in flight at a barrier are the operator's state, so a barrier never waits for
    /// a request (the design's `AsyncOperator`).
    Async {
        /// The functions, each adding a column after the input's.
        exprs: Vec<Arc<AsyncFuncExpr>>,
        /// Rows per slice (one request batch).
        rows: usize,
        /// Slices started and not yet emitted, at most.
        in_flight: usize,
        /// The output: the input's columns, then one per function.
        schema: SchemaRef,
    },
    /// `ML_PREDICT`: the inference operator. Requests of up to `rows` rows (fewer when
    /// `bytes` would be passed), up to `in_flight` started and not yet emitted per subtask
    /// (the endpoint's shared limiter decides how many of them are sent), results in input
    /// order or, when not `ordered`, as they arrive between watermarks.
    Inference {
        /// The model call.
        call: Arc<ModelCall>,
        /// Rows per request at most.
        rows: usize,
        /// Input bytes per request at most.
        bytes: u64,
        /// Requests started and not yet emitted, at most.
        in_flight: usize,
        /// Whether results keep input order.
        ordered: bool,
        /// The output: the input's columns, the model's outputs, the error column.
        schema: SchemaRef,
    },
    /// Skips `skip` rows, then passes `fetch` rows (all when `None`) and ends the chain.
    Limit {
        /// Rows to skip.
        skip: usize,
        /// Rows to pass after them.
        fetch: Option<usize>,
    },
    /// Gathers small batches into batches of about `target_rows`.
    Coalesce {
        /// Rows per batch emitted.
        target_rows: usize,
    },
    /// Writes every batch into the sink; emits the number of rows written at the end.
    Sink {
        /// Where the rows go.
        sink: Arc<dyn Sink>,
        /// The rows' schema.
        schema: SchemaRef,
        /// Whether the rows come from an unbounded source.
        unbounded_input: bool,
    },
}

impl fmt::Display for ChainStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainStage::Segment(plan) => {
                let mut names = Vec::new();
                let mut node = Some(plan);
                while let Some(current) = node {
                    if current.is::<BatchSlotExec>() {
                        break;
                    }
                    names.push(current.name().trim_end_matches("Exec").to_string());
                    node = current.children().into_iter().next();
                }
                names.reverse();
                write!(f, "Segment({})", names.join(", "))
            }
            ChainStage::Async {
                exprs,
                rows,
                in_flight,
                ..
            } => {
                let names: Vec<&str> = exprs.iter().map(|expr| function_name(expr)).collect();
                write!(
                    f,
                    "Async({}, {rows} rows a request, {in_flight} in flight)",
                    names.join(", ")
                )
            }
            ChainStage::Inference {
                call,
                rows,
                in_flight,
                ordered,
                ..
            } => write!(
                f,
                "Inference(model {}, {rows} rows a request, {in_flight} in flight, {})",
                call.config().model,
                if *ordered { "ordered" } else { "unordered" }
            ),
            ChainStage::Limit { skip, fetch } => match fetch {
                Some(fetch) => write!(f, "Limit(skip={skip}, fetch={fetch})"),
                None => write!(f, "Limit(skip={skip})"),
            },
            ChainStage::Coalesce { target_rows } => write!(f, "Coalesce({target_rows} rows)"),
            ChainStage::Sink { sink, .. } => write!(f, "Sink({})", sink.target()),
        }
    }
}

/// The name of the function an async expression calls (`url_download`).
fn function_name(expr: &AsyncFuncExpr) -> &str {
    expr.func
        .downcast_ref::<ScalarFunctionExpr>()
        .map_or(expr.name(), |function| function.name())
}

/// A fragment decomposed into a chain: its input, then its stages from first to last.
#[derive(Debug, Clone)]
pub struct ChainPlan {
    /// Where the batches come from.
    pub input: ChainInput,
    /// The operators, in the order batches pass through them.
    pub stages: Vec<ChainStage>,
    /// The rows per batch the coalescing after a filter aims at (the planner's setting).
    pub batch_rows: usize,
}

impl fmt::Display for ChainPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.input {
            ChainInput::Exchange { input } => write!(f, "Input({input})")?,
            ChainInput::Source(source) => {
                write!(f, "Source({})", leaf_name(source).trim_end_matches("Exec"))?
            }
        }
        for stage in &self.stages {
            write!(f, " -> {stage}")?;
        }
        Ok(())
    }
}

/// The name of the leaf under a source's wrappers.
fn leaf_name(plan: &Arc<dyn ExecutionPlan>) -> &str {
    match plan.children().first() {
        Some(child) => leaf_name(child),
        None => plan.name(),
    }
}

/// The chain that runs `fragment`, or why it cannot be one: the operator that keeps it a
/// DataFusion fragment, in a sentence. `batch_rows` is the size the coalescing after a
/// filter aims at.
pub fn plan_chain(
    fragment: &Arc<dyn ExecutionPlan>,
    batch_rows: usize,
) -> std::result::Result<ChainPlan, String> {
    // From the root down: the stages in reverse, until the chain's input.
    let mut path: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    let mut node = Arc::clone(fragment);
    let input = loop {
        if let Some(reader) = node.downcast_ref::<ExchangeReadExec>() {
            break ChainInput::Exchange {
                input: reader.input(),
            };
        }
        if is_source(&node) {
            break ChainInput::Source(node);
        }
        let children = node.children();
        let stage_like = PER_BATCH.contains(&node.name())
            || node.is::<GlobalLimitExec>()
            || node.is::<LocalLimitExec>()
            || node.is::<SinkExec>();
        match children.as_slice() {
            [child] if stage_like => {
                let child = Arc::clone(child);
                path.push(node);
                node = child;
            }
            [_] | [] => return Err(format!("{} keeps rows across batches", node.name())),
            _ => return Err(format!("{} reads more than one input", node.name())),
        }
    };
    let mut stages = Vec::new();
    let mut segment: Option<Arc<dyn ExecutionPlan>> = None;
    let below_schema = |path: &[Arc<dyn ExecutionPlan>], index: usize| -> SchemaRef {
        path[index].children()[0].schema()
    };
    for index in (0..path.len()).rev() {
        let plan = &path[index];
        if let Some(limit) = plan.downcast_ref::<GlobalLimitExec>() {
            close_segment(&mut segment, &mut stages, None, batch_rows);
            stages.push(ChainStage::Limit {
                skip: limit.skip(),
                fetch: limit.fetch(),
            });
        } else if let Some(limit) = plan.downcast_ref::<LocalLimitExec>() {
            close_segment(&mut segment, &mut stages, None, batch_rows);
            stages.push(ChainStage::Limit {
                skip: 0,
                fetch: Some(limit.fetch()),
            });
        } else if let Some(exec) = plan.downcast_ref::<AsyncBatchExec>() {
            close_segment(&mut segment, &mut stages, None, batch_rows);
            stages.push(ChainStage::Async {
                exprs: exec.exprs().to_vec(),
                rows: exec.rows(),
                in_flight: ASYNC_REQUESTS_IN_FLIGHT,
                schema: exec.schema(),
            });
        } else if let Some(exec) = plan.downcast_ref::<MlPredictExec>() {
            close_segment(&mut segment, &mut stages, None, batch_rows);
            let config = exec.call().config();
            stages.push(ChainStage::Inference {
                call: Arc::clone(exec.call()),
                rows: config.batch_rows,
                bytes: config.batch_bytes,
                in_flight: config.requests_per_subtask(),
                ordered: config.ordered,
                schema: exec.schema(),
            });
        } else if let Some(sink) = plan.downcast_ref::<SinkExec>() {
            close_segment(&mut segment, &mut stages, None, batch_rows);
            let input = &plan.children()[0];
            stages.push(ChainStage::Sink {
                sink: Arc::clone(sink.sink()),
                schema: input.schema(),
                unbounded_input: input.boundedness().is_unbounded(),
            });
        } else {
            // A per-batch node: it joins the open segment, its own fetch (a filter's
            // pushed-down limit) becoming a limit stage, since a fetch applied per batch
            // would pass `fetch` rows of every batch.
            let fetch = plan.fetch();
            let plan = match fetch {
                Some(_) => plan.with_fetch(None).ok_or_else(|| {
                    format!("{} has a limit that cannot be taken out", plan.name())
                })?,
                None => Arc::clone(plan),
            };
            let child = match segment.take() {
                Some(below) => below,
                None => Arc::new(BatchSlotExec::new(below_schema(&path, index))),
            };
            let rebuilt = Arc::clone(&plan)
                .replace_children(
                    vec![child],
                    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
                )
                .map_err(|e| format!("{} cannot run per batch: {e}", plan.name()))?;
            segment = Some(rebuilt);
            if fetch.is_some() {
                close_segment(&mut segment, &mut stages, fetch, batch_rows);
            }
        }
    }
    close_segment(&mut segment, &mut stages, None, batch_rows);
    Ok(ChainPlan {
        input,
        stages,
        batch_rows,
    })
}

/// Ends the open segment: the segment, then its limit, then, when it filters, a coalescer
/// that puts the rows a filter leaves back into full batches (a segment runs per batch, so
/// its filter cannot gather rows across batches as DataFusion's does).
fn close_segment(
    segment: &mut Option<Arc<dyn ExecutionPlan>>,
    stages: &mut Vec<ChainStage>,
    fetch: Option<usize>,
    batch_rows: usize,
) {
    let Some(done) = segment.take() else {
        return;
    };
    let filters = contains::<FilterExec>(&done);
    stages.push(ChainStage::Segment(done));
    if fetch.is_some() {
        stages.push(ChainStage::Limit { skip: 0, fetch });
    }
    if filters {
        stages.push(ChainStage::Coalesce {
            target_rows: batch_rows,
        });
    }
}

/// Whether `plan` is a source with its wrappers, and nothing else.
fn is_source(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let children = plan.children();
    if children.is_empty() {
        return SOURCE_LEAVES.contains(&plan.name());
    }
    SOURCE_WRAPPERS.contains(&plan.name()) && children.into_iter().all(is_source)
}

fn contains<T: ExecutionPlan>(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<T>() || plan.children().into_iter().any(contains::<T>)
}

/// The leaf of a chain segment: a slot holding the one batch the segment processes next.
///
/// The slot belongs to the plan instance; [`BatchSlotExec::instantiate`] gives each
/// subtask its own copy of a segment, with fresh slots.
#[derive(Debug)]
pub struct BatchSlotExec {
    slot: Arc<Mutex<Option<RecordBatch>>>,
    properties: Arc<PlanProperties>,
}

impl BatchSlotExec {
    /// An empty slot for batches of `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            slot: Arc::new(Mutex::new(None)),
            properties: Arc::new(properties),
        }
    }

    /// A copy of `segment` whose slot is its own, and a handle to that slot.
    pub fn instantiate(
        segment: &Arc<dyn ExecutionPlan>,
    ) -> Result<(Arc<dyn ExecutionPlan>, BatchSlot)> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        let mut handle = None;
        let plan = Arc::clone(segment).transform_up(|node| {
            if !node.is::<BatchSlotExec>() {
                return Ok(Transformed::no(node));
            }
            let fresh = BatchSlotExec::new(node.schema());
            handle = Some(BatchSlot(Arc::clone(&fresh.slot)));
            Ok(Transformed::yes(Arc::new(fresh) as Arc<dyn ExecutionPlan>))
        })?;
        let handle = handle.ok_or_else(|| {
            DataFusionError::Internal("a chain segment without a batch slot".into())
        })?;
        Ok((plan.data, handle))
    }
}

/// Puts the next batch into a segment's [`BatchSlotExec`].
#[derive(Debug, Clone)]
pub struct BatchSlot(Arc<Mutex<Option<RecordBatch>>>);

impl BatchSlot {
    /// Fills the slot; the segment's next execution reads this batch.
    pub fn put(&self, batch: RecordBatch) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(batch);
        }
    }
}

impl DisplayAs for BatchSlotExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BatchSlotExec")
    }
}

impl datafusion::physical_plan::ExecutionPlan for BatchSlotExec {
    crate::leaf_plan_node!("BatchSlotExec");

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batch = self
            .slot
            .lock()
            .map_err(|_| DataFusionError::Internal("batch slot poisoned".into()))?
            .take()
            .ok_or_else(|| {
                DataFusionError::Internal("a chain segment ran without a batch".into())
            })?;
        let schema = self.schema();
        let stream = futures::stream::once(async move { Ok(batch) });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
