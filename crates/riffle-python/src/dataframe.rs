//! `DataFrame` (a lazy query) and `Job` (a running one).

use std::collections::BTreeMap;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict, PyList};
use pyo3_arrow::{PyRecordBatch, PyRecordBatchReader, PySchema};
use riffle::datafusion::arrow::array::RecordBatch;
use riffle::datafusion::arrow::datatypes::SchemaRef;
use riffle::datafusion::arrow::error::ArrowError;
use riffle::datafusion::arrow::record_batch::RecordBatchReader;
use riffle::datafusion::common::ScalarValue;
use riffle::datafusion::logical_expr::{Expr, JoinType};
use riffle::{DataFrame, FileFormatKind, JobHandle, JobReporter, JobStopper};

use crate::errors::IntoPy;
use crate::expr::{PyExpr, exprs};
use crate::runtime::{runtime, wait_for};

/// A lazy, immutable query: every method returns a new DataFrame; nothing runs until an
/// action (`execute`, `count`, `write`, `__arrow_c_stream__`).
#[pyclass(name = "DataFrame", module = "riffle._internal", frozen)]
pub struct PyDataFrame {
    pub(crate) frame: DataFrame,
}

impl From<DataFrame> for PyDataFrame {
    fn from(frame: DataFrame) -> Self {
        Self { frame }
    }
}

impl PyDataFrame {
    fn then(&self, f: impl FnOnce(DataFrame) -> riffle::Result<DataFrame>) -> PyResult<Self> {
        Ok(f(self.frame.clone()).py()?.into())
    }

    fn arrow_schema(&self) -> SchemaRef {
        Arc::new(self.frame.schema().as_arrow().clone())
    }
}

fn join_type(how: &str) -> PyResult<JoinType> {
    Ok(match how {
        "inner" => JoinType::Inner,
        "left" => JoinType::Left,
        "right" => JoinType::Right,
        "full" | "outer" => JoinType::Full,
        "semi" => JoinType::LeftSemi,
        "anti" => JoinType::LeftAnti,
        other => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "join: how='{other}' is not a join type; valid: 'inner', 'left', 'right', \
                 'full', 'semi', 'anti', 'cross'"
            )));
        }
    })
}

fn format_kind(format: &str) -> PyResult<FileFormatKind> {
    Ok(match format {
        "parquet" => FileFormatKind::Parquet,
        "csv" => FileFormatKind::Csv,
        "json" => FileFormatKind::Json,
        other => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "unknown file format '{other}'; valid: 'parquet', 'csv', 'json'"
            )));
        }
    })
}

#[pymethods]
impl PyDataFrame {
    /// The result's schema, as an Arrow C schema capsule (`pyarrow.schema(df)`).
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        Ok(pyo3_arrow::ffi::to_schema_pycapsule(
            py,
            self.arrow_schema().as_ref(),
        )?)
    }

    /// Runs the query and streams its result through the Arrow C stream interface: pyarrow,
    /// Polars and others read it without copies. Dropping the stream cancels the job.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyCapsule>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let frame = self.frame.clone();
        let job = wait_for(py, async move { frame.execute().await })?;
        let reader = JobReader {
            schema: job.schema(),
            job: Some(job),
        };
        let reader = Bound::new(py, PyRecordBatchReader::new(Box::new(reader)))?;
        reader.call_method1("__arrow_c_stream__", (requested_schema,))
    }

    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PySchema::new(self.arrow_schema()).into_pyarrow(py)
    }

    fn select(&self, exprs_: Vec<PyExpr>) -> PyResult<Self> {
        self.then(|f| f.select(exprs(exprs_)))
    }

    fn filter(&self, predicate: PyExpr) -> PyResult<Self> {
        self.then(|f| f.filter(predicate.expr))
    }

    fn with_column(&self, name: &str, expr: PyExpr) -> PyResult<Self> {
        self.then(|f| f.with_column(name, expr.expr))
    }

    fn aggregate(&self, group: Vec<PyExpr>, aggregates: Vec<PyExpr>) -> PyResult<Self> {
        self.then(|f| f.aggregate(exprs(group), exprs(aggregates)))
    }

    /// Joins on pairs of columns; `how='cross'` takes none.
    fn join(
        &self,
        other: &PyDataFrame,
        how: &str,
        left_on: Vec<String>,
        right_on: Vec<String>,
    ) -> PyResult<Self> {
        let right = other.frame.clone();
        if how == "cross" {
            return self.then(|f| f.cross_join(right));
        }
        let join_type = join_type(how)?;
        let left: Vec<&str> = left_on.iter().map(String::as_str).collect();
        let right_cols: Vec<&str> = right_on.iter().map(String::as_str).collect();
        self.then(|f| f.join(right, join_type, &left, &right_cols))
    }

    /// Sorts by `keys`: `(expr, descending, nulls_first)` each.
    fn sort(&self, keys: Vec<(PyExpr, bool, Option<bool>)>) -> PyResult<Self> {
        let order = keys
            .iter()
            .map(|(expr, descending, nulls_first)| expr.sort(*descending, *nulls_first))
            .collect();
        self.then(|f| f.sort(order))
    }

    #[pyo3(signature = (n, offset=0))]
    fn limit(&self, n: Option<usize>, offset: usize) -> PyResult<Self> {
        self.then(|f| f.limit(offset, n))
    }

    fn distinct(&self) -> PyResult<Self> {
        self.then(|f| f.distinct())
    }

    fn union(&self, other: &PyDataFrame, distinct: bool) -> PyResult<Self> {
        let other = other.frame.clone();
        if distinct {
            self.then(|f| f.union_distinct(other))
        } else {
            self.then(|f| f.union(other))
        }
    }

    fn explode(&self, columns: Vec<String>) -> PyResult<Self> {
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        self.then(|f| f.explode(&columns))
    }

    fn drop_null(&self, columns: Vec<String>) -> PyResult<Self> {
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        self.then(|f| f.drop_null(&columns))
    }

    fn fill_null(&self, value: PyExpr, columns: Vec<String>) -> PyResult<Self> {
        let Expr::Literal(value, _) = value.expr else {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "fill_null: the value must be a literal",
            ));
        };
        let value: ScalarValue = value;
        self.then(|f| f.fill_null(value, columns))
    }

    fn repartition(&self, partitions: usize) -> PyResult<Self> {
        self.then(|f| f.repartition(partitions))
    }

    fn explain(&self, py: Python<'_>) -> PyResult<String> {
        let frame = self.frame.clone();
        wait_for(py, async move { frame.explain().await })
    }

    /// The logical plan as built, without running or optimizing anything (for reprs).
    fn plan(&self) -> String {
        self.frame.logical_plan().display_indent().to_string()
    }

    fn execute(&self, py: Python<'_>) -> PyResult<PyJob> {
        let frame = self.frame.clone();
        let job = wait_for(py, async move { frame.execute().await })?;
        Ok(PyJob::new(job))
    }

    fn count(&self, py: Python<'_>) -> PyResult<usize> {
        let frame = self.frame.clone();
        wait_for(py, async move { frame.count().await })
    }

    /// Starts the job that writes the result as files into the folder `path`; its batches
    /// hold the rows written (a `count` column).
    fn write(
        &self,
        py: Python<'_>,
        path: &str,
        format: &str,
        options: BTreeMap<String, String>,
    ) -> PyResult<PyJob> {
        let format = format_kind(format)?;
        let frame = self.frame.clone();
        let path = path.to_string();
        let job = wait_for(
            py,
            async move { frame.write_job(&path, format, &options).await },
        )?;
        Ok(PyJob::new(job))
    }

    /// `ML_PREDICT` with the model `model` of the session's catalog.
    fn ml_predict(
        &self,
        model: &str,
        descriptor: Vec<String>,
        options: BTreeMap<String, String>,
    ) -> PyResult<Self> {
        let descriptor: Vec<&str> = descriptor.iter().map(String::as_str).collect();
        let options: Vec<(&str, &str)> = options
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.then(|f| f.ml_predict(model, &descriptor, &options))
    }
}

/// A running job: its batches one at a time, its report, and cancelling it. Dropping it
/// cancels the job.
#[pyclass(name = "Job", module = "riffle._internal", frozen)]
pub struct PyJob {
    job: Arc<tokio::sync::Mutex<Option<JobHandle>>>,
    /// Cancels the job while `next_batch` holds `job` (from another thread).
    stopper: JobStopper,
    /// Reads the report while `next_batch` holds `job` (a progress display's thread), and
    /// after the job ended (its figures stay).
    reporter: JobReporter,
}

impl PyJob {
    fn new(job: JobHandle) -> Self {
        Self {
            stopper: job.stopper(),
            reporter: job.reporter(),
            job: Arc::new(tokio::sync::Mutex::new(Some(job))),
        }
    }
}

#[pymethods]
impl PyJob {
    /// The next result batch (a pyarrow RecordBatch), or None at the end; raises
    /// `TimeoutError` when none came within `timeout` seconds (the job goes on).
    #[pyo3(signature = (timeout=None))]
    fn next_batch<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let job = Arc::clone(&self.job);
        let limit = timeout.map(std::time::Duration::from_secs_f64);
        let batch = wait_for(py, async move {
            let mut guard = job.lock().await;
            let Some(handle) = guard.as_mut() else {
                return Ok(Some(None));
            };
            let batch = match limit {
                Some(limit) => match tokio::time::timeout(limit, handle.next_batch()).await {
                    Ok(batch) => batch,
                    Err(_) => return Ok(None),
                },
                None => handle.next_batch().await,
            };
            // Ended or failed: release the job's resources now (its report stays readable).
            if !matches!(batch, Ok(Some(_))) {
                *guard = None;
            }
            Ok(Some(batch?))
        })?;
        let Some(batch) = batch else {
            return Err(pyo3::exceptions::PyTimeoutError::new_err(format!(
                "no batch within {} s",
                timeout.unwrap_or_default()
            )));
        };
        batch
            .map(|batch| PyRecordBatch::new(batch).into_pyarrow(py))
            .transpose()
    }

    /// Stops the job; a later `next_batch` returns None.
    fn cancel(&self) {
        self.stopper.cancel();
        if let Ok(mut guard) = self.job.try_lock() {
            guard.take();
        }
    }

    /// What the job did so far (live while it runs, from any thread): restarts,
    /// checkpoints, each model call's and each vertex's figures.
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        report_fields(py, self.reporter.report())
    }
}

fn report_fields(py: Python<'_>, report: riffle::JobReport) -> PyResult<Bound<'_, PyDict>> {
    let fields = PyDict::new(py);
    fields.set_item("restarts", report.restarts)?;
    fields.set_item("checkpoints_completed", report.checkpoints.completed)?;
    fields.set_item("checkpoints_aborted", report.checkpoints.aborted)?;
    fields.set_item("rows_read_again", report.rows_read_again)?;
    fields.set_item("failures", report.failures)?;
    let models = PyList::empty(py);
    for model in &report.models {
        let m = PyDict::new(py);
        m.set_item("vertex", model.vertex)?;
        m.set_item("model", &model.model)?;
        m.set_item("rows", model.metrics.rows)?;
        m.set_item("requests", model.metrics.requests)?;
        m.set_item("failed_rows", model.metrics.failed_rows)?;
        m.set_item("in_flight", model.in_flight)?;
        m.set_item("limit", model.limit)?;
        m.set_item("breaker", model.breaker)?;
        m.set_item("workers", model.workers.map(|w| w.live))?;
        m.set_item("workers_busy", model.workers.map(|w| w.busy))?;
        m.set_item("workers_started", model.workers.map(|w| w.started))?;
        m.set_item("retries", model.metrics.total_retries())?;
        m.set_item("text", model.to_string())?;
        models.append(m)?;
    }
    fields.set_item("models", models)?;
    let vertices = PyList::empty(py);
    for vertex in &report.vertices {
        let v = PyDict::new(py);
        v.set_item("vertex", vertex.vertex)?;
        v.set_item("name", &vertex.name)?;
        v.set_item("parallelism", vertex.parallelism)?;
        v.set_item("rows_in", vertex.rows_in)?;
        v.set_item("reads_source", vertex.reads_source)?;
        v.set_item("rows_out", vertex.rows_out)?;
        v.set_item("waited_seconds", vertex.waited.as_secs_f64())?;
        v.set_item("waiting_now", vertex.waiting_now)?;
        vertices.append(v)?;
    }
    fields.set_item("vertices", vertices)?;
    Ok(fields)
}

/// A job's result as an Arrow record batch reader: each `next` waits for the next batch.
struct JobReader {
    schema: SchemaRef,
    job: Option<JobHandle>,
}

impl Iterator for JobReader {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let job = self.job.as_mut()?;
        match runtime().block_on(job.next_batch()) {
            Ok(Some(batch)) => Some(Ok(batch)),
            Ok(None) => {
                self.job = None;
                None
            }
            Err(error) => {
                self.job = None;
                Some(Err(ArrowError::ExternalError(Box::new(error))))
            }
        }
    }
}

impl RecordBatchReader for JobReader {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}
