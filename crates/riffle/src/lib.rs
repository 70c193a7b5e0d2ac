//! Riffle: a dataflow engine for AI-oriented data processing. This crate is the Rust API.
//!
//! # A tour
//!
//! A job starts as SQL ([`Session::sql`]) or as a [`DataFrame`] built in Rust. Either way it
//! becomes a DataFusion `LogicalPlan`:
//!
//! 1. **Plan** (`riffle-sql`, `riffle-plan`). SQL goes through DataFusion's SQL planner,
//!    extended with Flink-style DDL (`CREATE TABLE ... WITH ('connector' = ...)`). DataFusion's
//!    optimizer and physical planner choose pushdowns, join strategies and exchanges.
//! 2. **Cut** (`riffle-plan`). The physical plan is cut at its exchanges into a
//!    [`JobGraph`](riffle_plan::JobGraph): vertices (fused operator chains, each with its own
//!    parallelism) joined by partitioned edges (forward, rescale, rebalance, hash, broadcast).
//! 3. **Run** (`riffle-runtime`). The [`LocalExecutor`](riffle_runtime::LocalExecutor) runs
//!    one tokio task per subtask; channels between them carry Arrow batches with credit-based
//!    flow control, so a slow sink slows the sources and memory stays bounded.
//! 4. **Read and write** (`riffle-connectors`). Sources and sinks are connectors: files on
//!    object stores (Parquet, CSV, JSON), generated data, in-memory batches. Sinks publish
//!    only when the whole job succeeds.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> riffle::Result<()> {
//! let session = riffle::Session::new()?;
//! let batches = session
//!     .sql("SELECT x % 3 AS k, count(*) AS n FROM (VALUES (1), (2), (3), (4)) AS t(x) GROUP BY k ORDER BY k")
//!     .await?
//!     .collect()
//!     .await?;
//! assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod dataframe;
mod session;

pub use dataframe::DataFrame;
pub use riffle_common::{ErrorKind, JobConfig, Result, RiffleError};
pub use riffle_connectors::FileFormatKind;
pub use riffle_functions::parameters::{Parameter, all as function_parameters};
pub use riffle_inference::options::{
    OPTION_KEYS as MODEL_OPTION_KEYS, OptionKey, Scope as OptionScope,
};
pub use riffle_plan::SkippedFile;
pub use riffle_runtime::{
    JobHandle, JobReport, JobReporter, JobStopper, ModelReport, VertexReport,
};
pub use session::{ScriptResult, Session};

/// Re-exported so that users build expressions with the same DataFusion version.
pub use datafusion;
