//! The lazy DataFrame: builds a DataFusion logical plan, runs it on Riffle's runtime.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, Partitioning, SortExpr};
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

    /// Equi-joins with `right` on pairs of columns, as DataFrame users expect: each pair
    /// of keys with the same name gives one column (for right and full joins, the key of
    /// whichever side has the row), and the other right columns whose names clash with
    /// left ones get the suffix `_right`. Semi and anti joins keep the left columns only.
    pub fn join(
        self,
        right: DataFrame,
        join_type: JoinType,
        left_on: &[&str],
        right_on: &[&str],
    ) -> Result<Self> {
        if left_on.len() != right_on.len() {
            return Err(RiffleError::user(format!(
                "join: {} left keys but {} right keys",
                left_on.len(),
                right_on.len()
            )));
        }
        let (left_name, right_name) = ("__riffle_left", "__riffle_right");
        let left_fields = self.schema().fields().clone();
        let right_fields = right.schema().fields().clone();
        let left_frame = self.frame.alias(left_name)?;
        let right_frame = right.frame.alias(right_name)?;
        let qualified = |qualifier: &str, name: &str| {
            Expr::Column(datafusion::common::Column::new(Some(qualifier), name))
        };
        let left_keys: Vec<String> = left_on.iter().map(|k| format!("{left_name}.{k}")).collect();
        let right_keys: Vec<String> = right_on
            .iter()
            .map(|k| format!("{right_name}.{k}"))
            .collect();
        let left_keys: Vec<&str> = left_keys.iter().map(String::as_str).collect();
        let right_keys: Vec<&str> = right_keys.iter().map(String::as_str).collect();
        let joined = left_frame.join(right_frame, join_type, &left_keys, &right_keys, None)?;
        let shared_key = |name: &str| {
            left_on
                .iter()
                .zip(right_on)
                .any(|(l, r)| *l == name && *r == name)
        };
        let mut columns = Vec::new();
        for field in left_fields.iter() {
            let name = field.name();
            let left = qualified(left_name, name);
            let value = if shared_key(name) && matches!(join_type, JoinType::Right | JoinType::Full)
            {
                datafusion::functions::core::expr_fn::coalesce(vec![
                    left,
                    qualified(right_name, name),
                ])
            } else {
                left
            };
            columns.push(value.alias(name));
        }
        if !matches!(join_type, JoinType::LeftSemi | JoinType::LeftAnti) {
            for field in right_fields.iter() {
                let name = field.name();
                if shared_key(name) {
                    continue;
                }
                let out = if left_fields.iter().any(|f| f.name() == name) {
                    format!("{name}_right")
                } else {
                    name.clone()
                };
                columns.push(qualified(right_name, name).alias(out));
            }
        }
        let frame = joined.select(columns)?;
        Ok(Self {
            frame,
            session: self.session,
        })
    }

    /// Every row of this with every row of `right`.
    pub fn cross_join(self, right: DataFrame) -> Result<Self> {
        self.join(right, JoinType::Inner, &[], &[])
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

    /// The rows of both, duplicates removed (UNION).
    pub fn union_distinct(self, other: DataFrame) -> Result<Self> {
        self.transform(|f| f.union_distinct(other.frame))
    }

    /// One row per element of each list column in `columns` (the other columns repeated);
    /// a NULL list gives one row with NULL, an empty list none (SQL's UNNEST).
    pub fn explode(self, columns: &[&str]) -> Result<Self> {
        self.transform(|f| f.unnest_columns(columns))
    }

    /// Drops the rows with a NULL in any of `columns` (in any column when empty).
    pub fn drop_null(self, columns: &[&str]) -> Result<Self> {
        let names: Vec<String> = if columns.is_empty() {
            self.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        } else {
            columns.iter().map(|c| c.to_string()).collect()
        };
        let Some(predicate) = names
            .iter()
            .map(|name| datafusion::prelude::ident(name).is_not_null())
            .reduce(Expr::and)
        else {
            return Ok(self);
        };
        self.filter(predicate)
    }

    /// Replaces NULLs in `columns` (all columns whose type fits when empty) with `value`.
    pub fn fill_null(self, value: ScalarValue, columns: Vec<String>) -> Result<Self> {
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        self.transform(|f| f.fill_null(&value, &columns))
    }

    /// Spreads the rows round-robin over `partitions` parallel subtasks from here on.
    pub fn repartition(self, partitions: usize) -> Result<Self> {
        if partitions == 0 {
            return Err(RiffleError::user(
                "repartition: the number of partitions must be at least 1",
            ));
        }
        self.transform(|f| f.repartition(Partitioning::RoundRobinBatch(partitions)))
    }

    /// Removes duplicate rows.
    pub fn distinct(self) -> Result<Self> {
        self.transform(|f| f.distinct())
    }

    /// Adds or replaces a column.
    pub fn with_column(self, name: &str, expr: Expr) -> Result<Self> {
        self.transform(|f| f.with_column(name, expr))
    }

    /// The query as a table, for SQL to read under a name (see [`Session::register_view`]).
    pub fn into_view(self) -> Arc<dyn datafusion::catalog::TableProvider> {
        self.frame.into_view()
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
        self.write_with(path, format, &BTreeMap::new()).await
    }

    /// Writes the result into the directory `path` in `format`; `options` are object store
    /// settings (`s3.endpoint`, `s3.access-key-id`, ...), as a table's `WITH` options.
    pub async fn write_with(
        self,
        path: &str,
        format: FileFormatKind,
        options: &BTreeMap<String, String>,
    ) -> Result<u64> {
        let batches = self
            .write_job(path, format, options)
            .await?
            .collect()
            .await?;
        sum_counts(&batches)
    }

    /// Starts the job that writes the result as [`DataFrame::write_with`] does; its result
    /// is the rows written, in a `count` column, and its handle says what it did.
    pub async fn write_job(
        self,
        path: &str,
        format: FileFormatKind,
        options: &BTreeMap<String, String>,
    ) -> Result<JobHandle> {
        let url = parse_location(path)?;
        let context = self.session.planner().context();
        let runtime = context.runtime_env();
        register_object_store(&runtime, &url, options)?;
        let store = registered_store(&runtime, &url)?;
        let sink = FileSink::new(path.to_string(), store, &url, format, true, b',')?
            .with_mode(WriteMode::Append);
        self.session
            .start_job(JobPlan::Sink {
                sink: Arc::new(sink),
                input: self.frame.logical_plan(),
            })
            .await
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
