//! Python user code as a backend of the inference operator: `map_batches`, `map` and the
//! `@riffle.udf` functions of the Python front run in a pool of worker processes.
//!
//! Everything the operator does for a model holds for user code: batches cut by rows and
//! bytes, several in flight (one per worker), results in input order, the batches in
//! flight kept by a checkpoint and sent again after a restore, retries (`max_retries`),
//! and a clear error when a batch fails for good. What is Python's lives in two places:
//! [`worker`] (one process: spawn, shared memory, the control channel) and [`pool`] (up to
//! `concurrency` of them, reused across batches, shut down with the job). The engine never
//! runs Python itself and links no Python: it starts an interpreter (`python.executable`)
//! and hands it the user's pickled code (`python.payload`), which it does not read.

pub mod gpus;
pub mod pool;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use datafusion::arrow::array::{ArrayRef, ListArray, StructArray};
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef, Fields, Schema, SchemaRef};
use riffle_common::{Result, RiffleError};

use crate::Millis;
use crate::backend::{Answer, Backend, CallError, Request};
use crate::hints::ServerHints;
use crate::retry::{Failure, WorkerFailure};

use self::pool::{PoolError, WorkerPool};
use self::worker::WorkerSpec;

/// The `python` provider's options (set by the Python front).
#[derive(Debug, Clone, PartialEq)]
pub struct PythonOptions {
    /// The pickled user code.
    pub payload: Arc<Vec<u8>>,
    /// What the user code is called in messages.
    pub function: String,
    /// The interpreter the workers run.
    pub executable: String,
    /// The workers' `PYTHONPATH`.
    pub python_path: Option<String>,
    /// CPU threads per worker.
    pub num_cpus: usize,
    /// GPUs per worker (a fraction shares one).
    pub num_gpus: f64,
    /// A batch's time limit.
    pub timeout: Option<Millis>,
    /// Whether a batch may give any number of rows (`python.output-rows` = `any`).
    pub any_rows: bool,
    /// Workers started when the job starts (`python.prestart`); default: the lowest
    /// concurrency.
    pub prestart: Option<usize>,
}

impl PythonOptions {
    /// Reads the options of model `model`.
    pub fn read<'a>(
        model: &str,
        get: impl Fn(&str) -> Option<&'a str>,
        timeout: Option<Millis>,
    ) -> Result<Self> {
        let payload = get("python.payload").ok_or_else(|| {
            RiffleError::user(format!(
                "model {model}: provider 'python' needs 'python.payload'"
            ))
            .with_hint("Python models are made by the Python front (map_batches, @riffle.udf)")
        })?;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(payload.trim())
            .map_err(|e| {
                RiffleError::user(format!(
                    "model {model}: 'python.payload' is not base64: {e}"
                ))
            })?;
        let number = |key: &str, default: f64| -> Result<f64> {
            match get(key) {
                None => Ok(default),
                Some(value) => value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| *v >= 0.0)
                    .ok_or_else(|| {
                        RiffleError::user(format!(
                            "model {model}: '{key}' must be a number at least 0, not '{value}'"
                        ))
                    }),
            }
        };
        Ok(Self {
            payload: Arc::new(payload),
            function: get("python.function").unwrap_or(model).to_string(),
            executable: get("python.executable").unwrap_or("python3").to_string(),
            python_path: get("python.path").map(str::to_string),
            num_cpus: number("python.num-cpus", 1.0)?.ceil().max(1.0) as usize,
            num_gpus: number("python.num-gpus", 0.0)?,
            timeout,
            prestart: match get("python.prestart") {
                None => None,
                Some(_) => Some(number("python.prestart", 0.0)? as usize),
            },
            any_rows: match get("python.output-rows").map(str::trim) {
                None | Some("one-per-row") => false,
                Some("any") => true,
                Some(other) => {
                    return Err(RiffleError::user(format!(
                        "model {model}: 'python.output-rows' is 'one-per-row' or 'any', not \
                         '{other}'"
                    )));
                }
            },
        })
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct PythonBackend {
    endpoint: String,
    function: String,
    pool: WorkerPool,
    /// The columns the workers give.
    output: SchemaRef,
    timeout: Option<Duration>,
    /// With `python.output-rows` = `any`: the model's one OUTPUT column, a list of structs
    /// of `output`'s columns, which holds a batch's rows on its first row (and empty lists
    /// on the others), so that the operator still answers each row.
    rows_column: Option<FieldRef>,
}

impl PythonBackend {
    /// A pool of up to `workers` workers running `options`' code, whose results have the
    /// columns of `output`; `first` of them start when the job starts.
    pub fn new(
        model: &str,
        options: &PythonOptions,
        (first, workers): (usize, usize),
        output: SchemaRef,
    ) -> Result<Self> {
        let (output, rows_column) = if options.any_rows {
            let (fields, column) = rows_of_a_batch(model, &output)?;
            (Arc::new(Schema::new(fields)), Some(column))
        } else {
            (output, None)
        };
        let gpus = gpus::assign(
            &options.function,
            &gpus::inventory(),
            workers.max(1),
            options.num_gpus,
        )?;
        let spec = WorkerSpec {
            function: options.function.clone(),
            executable: options.executable.clone(),
            python_path: options.python_path.clone(),
            payload: Arc::clone(&options.payload),
            num_cpus: options.num_cpus,
            output: Arc::clone(&output),
        };
        // Each plan of the call gets its own pool (and endpoint, so that its limits and
        // breaker are its own).
        static POOLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = POOLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self {
            endpoint: format!("python:{model}#{id}"),
            function: options.function.clone(),
            pool: WorkerPool::new(spec, gpus, options.prestart.unwrap_or(first)),
            output,
            timeout: options.timeout.map(Duration::from_millis),
            rows_column,
        })
    }
}

/// With `python.output-rows` = `any`, the model's OUTPUT must be one `LIST<STRUCT<...>>`
/// column: its struct's fields (the columns the workers give) and the column.
fn rows_of_a_batch(model: &str, output: &SchemaRef) -> Result<(Fields, FieldRef)> {
    if let [column] = &output.fields()[..]
        && let DataType::List(item) = column.data_type()
        && let DataType::Struct(fields) = item.data_type()
    {
        return Ok((fields.clone(), Arc::clone(column)));
    }
    Err(RiffleError::user(format!(
        "model {model}: with 'python.output-rows' = 'any', the OUTPUT is one column of type \
         LIST<STRUCT<...>> (the batch's rows), not {}",
        output
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// A list column of `rows` rows whose first row holds all of `columns`' rows (as structs
/// of `fields`) and whose other rows are empty lists; no values are copied.
fn batch_on_first_row(
    column: &FieldRef,
    fields: &SchemaRef,
    columns: Vec<ArrayRef>,
    rows: usize,
) -> Result<ArrayRef, CallError> {
    let internal = |e: datafusion::arrow::error::ArrowError| {
        failed(
            WorkerFailure::UserCode,
            format!("assembling the batch's rows: {e}"),
        )
    };
    let length = columns.first().map_or(0, |c| c.len());
    if rows == 0 && length > 0 {
        return Err(failed(
            WorkerFailure::UserCode,
            format!("{length} rows came back for a batch of none"),
        ));
    }
    let values = StructArray::try_new_with_length(fields.fields().clone(), columns, None, length)
        .map_err(internal)?;
    let DataType::List(item) = column.data_type() else {
        return Err(internal(datafusion::arrow::error::ArrowError::SchemaError(
            "the rows column is not a list".into(),
        )));
    };
    let ends = std::iter::once(0).chain(std::iter::repeat_n(length as i32, rows));
    let offsets = OffsetBuffer::new(ScalarBuffer::from_iter(ends));
    let list =
        ListArray::try_new(Arc::clone(item), offsets, Arc::new(values), None).map_err(internal)?;
    Ok(Arc::new(list))
}

fn failed(kind: WorkerFailure, message: String) -> CallError {
    CallError {
        failure: Some(Failure::Worker(kind)),
        message,
        hints: ServerHints::default(),
    }
}

#[async_trait]
impl Backend for PythonBackend {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn attach(&self) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        Some(Box::new(self.pool.attach()))
    }

    fn workers(&self) -> Option<crate::backend::WorkerCounts> {
        Some(self.pool.workers())
    }

    async fn call(&self, request: Request<'_>) -> Result<Answer, CallError> {
        let rows = request.inputs.num_rows();
        let label = self.pool.label(rows);
        let result = self
            .pool
            .run(label, request.inputs, self.timeout)
            .await
            .map_err(|error| match error {
                PoolError::UserCode(message) => failed(WorkerFailure::UserCode, message),
                PoolError::Crashed(message) => failed(WorkerFailure::Crashed, message),
                PoolError::Hung(message) => failed(WorkerFailure::Hung, message),
            })?;
        if result.num_rows() != rows && self.rows_column.is_none() {
            return Err(failed(
                WorkerFailure::UserCode,
                format!(
                    "{} returned {} rows for {label} of {rows} rows; it must return one row per \
                     input row",
                    self.function,
                    result.num_rows()
                ),
            ));
        }
        if result.num_columns() != self.output.fields().len() {
            return Err(failed(
                WorkerFailure::UserCode,
                format!(
                    "{}: {label} gave {} columns, not the {} declared",
                    self.function,
                    result.num_columns(),
                    self.output.fields().len()
                ),
            ));
        }
        // The worker cast its columns to the declared types; check, and cast what Arrow
        // calls the same type differently (a string and a string view).
        let mut columns = Vec::with_capacity(self.output.fields().len());
        for (field, column) in self.output.fields().iter().zip(result.columns()) {
            if column.data_type() == field.data_type() {
                columns.push(Arc::clone(column));
                continue;
            }
            let cast = cast(column, field.data_type()).map_err(|e| {
                failed(
                    WorkerFailure::UserCode,
                    format!(
                        "{}: column {} of {label} is {}, not the declared {}: {e}",
                        self.function,
                        field.name(),
                        column.data_type(),
                        field.data_type()
                    ),
                )
            })?;
            columns.push(cast);
        }
        if let Some(column) = &self.rows_column {
            columns = vec![batch_on_first_row(column, &self.output, columns, rows)?];
        }
        Ok(Answer {
            columns,
            row_errors: Vec::new(),
            usage: None,
            hints: ServerHints::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray, Int64Array};
    use datafusion::arrow::datatypes::Field;

    use super::*;

    fn read(rows: &str) -> Result<PythonOptions> {
        let get = |key: &str| match key {
            "python.payload" => Some("AA=="),
            "python.output-rows" => Some(rows),
            _ => None,
        };
        PythonOptions::read("m", get, None)
    }

    #[test]
    fn output_rows_is_one_per_row_or_any() {
        assert!(!read("one-per-row").unwrap().any_rows);
        assert!(read("any").unwrap().any_rows);
        let error = read("many").unwrap_err().to_string();
        assert!(error.contains("'python.output-rows' is 'one-per-row' or 'any', not 'many'"));
    }

    #[test]
    fn any_rows_needs_one_list_of_structs_and_puts_a_batch_on_its_first_row() {
        let plain: SchemaRef = Arc::new(Schema::new(vec![Field::new("y", DataType::Int64, true)]));
        let error = rows_of_a_batch("m", &plain).unwrap_err().to_string();
        assert!(
            error.contains("one column of type LIST<STRUCT<...>>"),
            "{error}"
        );
        let item = Field::new("item", DataType::Struct(plain.fields().clone()), true);
        let declared: SchemaRef = Arc::new(Schema::new(vec![Field::new(
            "rows",
            DataType::List(Arc::new(item)),
            true,
        )]));
        let (fields, column) = rows_of_a_batch("m", &declared).unwrap();
        assert_eq!(fields, *plain.fields());
        // Three rows came back for a batch of two input rows.
        let ys: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
        let list = batch_on_first_row(&column, &plain, vec![ys], 2).unwrap();
        let list = list.as_list::<i32>();
        assert_eq!(list.len(), 2);
        assert_eq!((list.value(0).len(), list.value(1).len()), (3, 0));
    }
}
