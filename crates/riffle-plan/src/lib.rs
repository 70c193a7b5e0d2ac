//! Riffle's planning layer: the session and catalog ([`RiffleSession`]), and the translation
//! of DataFusion physical plans into the [`JobGraph`] that Riffle's runtime runs.
//!
//! Entry point: [`RiffleSession::query_job`] (and [`RiffleSession::insert_job`]), which
//! plan a DataFusion `LogicalPlan` with DataFusion's optimizer and physical planner and then
//! cut the physical plan at its exchanges ([`build_job_graph`]).

#![warn(missing_docs)]

mod ai_functions;
mod async_batches;
mod batch_rows;
mod builder;
mod chain;
mod codec;
mod exchange;
mod fixed_parallelism;
mod job_graph;
mod ml_predict;
mod node;
mod row_origin;
mod scan_context;
mod session;
mod sink;
mod skip_corrupt;
mod tensor_cast;
mod unbounded;

pub use ai_functions::{AI_FUNCTIONS, AiFunction, AiFunctionsRule, ModelCatalog};
pub use async_batches::{AsyncBatchExec, AsyncBatchesRule, evaluate_slice};
pub use batch_rows::BatchRowsExec;
pub use builder::{ChainOptions, build_job_graph, build_job_graph_with};
pub use chain::{
    ASYNC_REQUESTS_IN_FLIGHT, BatchSlot, BatchSlotExec, ChainInput, ChainPlan, ChainStage,
    plan_chain,
};
pub use codec::{ConnectorCodec, RiffleCodec};
pub use exchange::{ExchangeInputs, ExchangeReadExec, ExchangeRegistry};
pub use fixed_parallelism::FixedParallelismExec;
pub use job_graph::{
    Edge, EdgePartitioning, EdgeSummary, JobGraph, JobGraphSummary, Vertex, VertexId, VertexKind,
    VertexSummary,
};
pub use ml_predict::{MlPredictExec, MlPredictNode, ModelDefinition};
pub use row_origin::{SourceStart, describe_source_row, skip_files_before};
pub use scan_context::{ScanContextExec, name_scanned_files};
pub use session::{RiffleSession, TableDefinition, TableFactory, WriteMode};
pub use sink::{PartWriter, Sink, SinkExec, StagedPart, check_sink_input, count_schema};
pub use skip_corrupt::{SkipCorruptFilesExec, SkippedFile, SkippedFiles};
