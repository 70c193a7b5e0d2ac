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
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
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
        })
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct PythonBackend {
    endpoint: String,
    function: String,
    pool: WorkerPool,
    output: SchemaRef,
    timeout: Option<Duration>,
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
            pool: WorkerPool::new(spec, gpus, first),
            output,
            timeout: options.timeout.map(Duration::from_millis),
        })
    }
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

    fn workers(&self) -> Option<(usize, u64)> {
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
        if result.num_rows() != rows {
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
        Ok(Answer {
            columns,
            row_errors: Vec::new(),
            usage: None,
            hints: ServerHints::default(),
        })
    }
}
