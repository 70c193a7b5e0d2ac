//! The lazy DataFrame: builds a DataFusion logical plan, runs it on Riffle's runtime.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, SortExpr};
use riffle_common::{Result, RiffleError};
use riffle_connectors::{
    FileFormatKind, FileSink, parse_location, register_object_store, registered_store,
};
use riffle_plan::WriteMode;
use riffle_runtime::JobHandle;

use crate::session::{JobPlan, Session};

/// A lazy query: each method returns a new DataFrame; nothing runs until
/// [`DataFrame::collect`], [`DataFrame::execute`] or a `write_*` method.
///
/// The builder methods are DataFusion's (so expressions come from
/// [`datafusion::prelude`]); [`DataFrame::transform`] reaches any DataFusion DataFrame
/// method not wrapped here.
#[derive(Clone)]
pub struct DataFrame {
    session: Session,
    frame: datafusion::dataframe::DataFrame,
}

impl std::fmt::Debug for DataFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataFrame")
            .field(
                "plan",
                &self.frame.logical_plan().display_indent().to_string(),
            )
            .finish()
    }
}

impl DataFrame {
    pub(crate) fn new(session: Session, frame: datafusion::dataframe::DataFrame) -> Self {
        Self { session, frame }
    }

    /// Applies any DataFusion DataFrame method.
    pub fn transform(
        self,
        f: impl FnOnce(
            datafusion::dataframe::DataFrame,
        ) -> datafusion::error::Result<datafusion::dataframe::DataFrame>,
    ) -> Result<Self> {
        Ok(Self {
            frame: f(self.frame)?,
            session: self.session,
        })
    }

    /// `ML_PREDICT`: the rows with the outputs of model `model` (of the session's catalog)
    /// appended, reading the columns `descriptor` names; `options` are the call's (the
    /// keys of `ML_PREDICT`'s MAP). The same plan node SQL builds.
    pub fn ml_predict(
        self,
        model: &str,
        descriptor: &[&str],
        options: &[(&str, &str)],
    ) -> Result<Self> {
        let definition = self.session.planner().model(model)?;
        let node = riffle_plan::MlPredictNode::try_new(
            self.frame.logical_plan().clone(),
            definition,
            descriptor.iter().map(|c| c.to_string()).collect(),
            options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )?;
        let state = self.session.planner().context().state();
        Ok(Self {
            frame: datafusion::dataframe::DataFrame::new(state, node.into_plan()),
            session: self.session,
        })
    }

    /// Keeps the named columns.
    pub fn select_columns(self, columns: &[&str]) -> Result<Self> {
        self.transform(|f| f.select_columns(columns))
    }

    /// Computes these expressions.
    pub fn select(self, exprs: Vec<Expr>) -> Result<Self> {
        self.transform(|f| f.select(exprs))
    }

    /// Keeps the rows where `predicate` is true.
    pub fn filter(self, predicate: Expr) -> Result<Self> {
        self.transform(|f| f.filter(predicate))
    }

    /// Groups by `group` and computes the aggregates `aggregates` (global when `group` is
    /// empty).
    pub fn aggregate(self, group: Vec<Expr>, aggregates: Vec<Expr>) -> Result<Self> {
        self.transform(|f| f.aggregate(group, aggregates))
    }

    /// Equi-joins with `right` on pairs of columns.
    pub fn join(
        self,
        right: DataFrame,
        join_type: JoinType,
        left_on: &[&str],
        right_on: &[&str],
    ) -> Result<Self> {
        self.transform(|f| f.join(right.frame, join_type, left_on, right_on, None))
    }

    /// Sorts.
    pub fn sort(self, order: Vec<SortExpr>) -> Result<Self> {
        self.transform(|f| f.sort(order))
    }

    /// Skips `skip` rows and keeps at most `fetch`.
    pub fn limit(self, skip: usize, fetch: Option<usize>) -> Result<Self> {
        self.transform(|f| f.limit(skip, fetch))
    }

    /// Appends the rows of `other` (UNION ALL).
    pub fn union(self, other: DataFrame) -> Result<Self> {
        self.transform(|f| f.union(other.frame))
    }

    /// Removes duplicate rows.
    pub fn distinct(self) -> Result<Self> {
        self.transform(|f| f.distinct())
    }

    /// Adds or replaces a column.
    pub fn with_column(self, name: &str, expr: Expr) -> Result<Self> {
        self.transform(|f| f.with_column(name, expr))
    }

    /// The schema of the result.
    pub fn schema(&self) -> &DFSchema {
        self.frame.schema()
    }

    /// The logical plan, as built (not yet optimized).
    pub fn logical_plan(&self) -> &LogicalPlan {
        self.frame.logical_plan()
    }

    /// Starts the job; the handle streams its result.
    pub async fn execute(self) -> Result<JobHandle> {
        self.session.execute(self.frame.logical_plan()).await
    }

    /// Runs the job and returns every result batch. An insert returns one row, with the
    /// number of rows written in its `count` column.
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        let is_insert = matches!(self.frame.logical_plan(), LogicalPlan::Dml(_));
        let batches = self.execute().await?.collect().await?;
        if !is_insert {
            return Ok(batches);
        }
        let total = sum_counts(&batches)?;
        let count = datafusion::arrow::array::UInt64Array::from(vec![total]);
        Ok(vec![RecordBatch::try_new(
            riffle_plan::count_schema(),
            vec![Arc::new(count)],
        )?])
    }

    /// Runs the job and returns the number of result rows.
    pub async fn count(self) -> Result<usize> {
        Ok(self
            .collect()
            .await?
            .iter()
            .map(RecordBatch::num_rows)
            .sum())
    }

    /// Runs the job and formats its result as a table.
    pub async fn to_pretty_string(self) -> Result<String> {
        let batches = self.collect().await?;
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    /// The optimized logical plan and the job graph, as text.
    pub async fn explain(&self) -> Result<String> {
        self.session.explain_plan(self.frame.logical_plan()).await
    }

    /// Writes the result as Parquet files into the directory `path` (local or object store
    /// URL), one file per parallel writer, published when the job succeeds; returns the
    /// number of rows written.
    pub async fn write_parquet(self, path: &str) -> Result<u64> {
        self.write(path, FileFormatKind::Parquet).await
    }

    /// Writes the result as CSV files (with a header line) into the directory `path`.
    pub async fn write_csv(self, path: &str) -> Result<u64> {
        self.write(path, FileFormatKind::Csv).await
    }

    /// Writes the result as newline-delimited JSON files into the directory `path`.
    pub async fn write_json(self, path: &str) -> Result<u64> {
        self.write(path, FileFormatKind::Json).await
    }

    async fn write(self, path: &str, format: FileFormatKind) -> Result<u64> {
        let url = parse_location(path)?;
        let context = self.session.planner().context();
        let runtime = context.runtime_env();
        register_object_store(&runtime, &url, &Default::default())?;
        let store = registered_store(&runtime, &url)?;
        let sink = FileSink::new(path.to_string(), store, &url, format, true, b',')?
            .with_mode(WriteMode::Append);
        let batches = self
            .session
            .start_job(JobPlan::Sink {
                sink: Arc::new(sink),
                input: self.frame.logical_plan(),
            })
            .await?
            .collect()
            .await?;
        sum_counts(&batches)
    }
}

/// Adds up the `count` column that sinks return.
pub(crate) fn sum_counts(batches: &[RecordBatch]) -> Result<u64> {
    let mut total = 0;
    for batch in batches {
        let counts = batch
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::UInt64Array>()
            .ok_or_else(|| RiffleError::internal("a sink returned no count column"))?;
        total += counts.iter().flatten().sum::<u64>();
    }
    Ok(total)
}
