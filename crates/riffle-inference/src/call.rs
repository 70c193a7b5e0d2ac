//! One model call over a request's rows, with everything around the backend's single
//! attempt: a permit from the endpoint's shared limits, the per-attempt timeout, retries
//! (classified, full jitter, `Retry-After`, the row deadline, the endpoint's retry budget),
//! bisection of a multi-row request refused with a 4xx, and the per-row error policy.
//!
//! [`ModelCall::call`] takes the operator's input rows and gives them back with the model's
//! output columns appended (and an `__error` column when `on-error` is `null` or
//! `default`); the runtime's asynchronous operator runs several at once and keeps them
//! across checkpoints.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, Int32Array, RecordBatch, StringArray, StructArray, new_null_array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{concat, interleave};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::common::hash_utils::{HLL_RANDOM_STATE, create_hashes};
use riffle_common::{Result, RiffleError};

use crate::backend::{Answer, Backend, CallError, Request};
use crate::endpoint::Endpoint;
use crate::kserve::KserveBackend;
use crate::limiter::Outcome;
use crate::metrics::{InferenceMetrics, TokenCounts};
use crate::onnx::OnnxBackend;
use crate::openai::OpenAiBackend;
use crate::options::{InferenceConfig, Provider};
use crate::policy::{ErrorGuard, OnError, Refused, bisect};
use crate::python::PythonBackend;
use crate::retry::{Decision, FailedAttempt, Failure, RetryPolicy};
use crate::sentence::SentenceBackend;
use crate::spend::{CapLatch, Spent};

/// The name of the error column.
pub const ERROR_COLUMN: &str = "__error";

/// The bytes of `batch`'s rows: for a slice of a larger batch, only its own part of the
/// shared buffers (what `get_array_memory_size` would count whole).
pub fn slice_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            // A view array's slice size counts its views, not the bytes they point to.
            DataType::Utf8View => {
                use datafusion::arrow::array::AsArray;
                column
                    .as_string_view()
                    .iter()
                    .flatten()
                    .map(|s| 16 + s.len())
                    .sum()
            }
            DataType::BinaryView => {
                use datafusion::arrow::array::AsArray;
                column
                    .as_binary_view()
                    .iter()
                    .flatten()
                    .map(|b| 16 + b.len())
                    .sum()
            }
            _ => column
                .to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| column.get_array_memory_size()),
        })
        .sum()
}

/// The error column's type: `{code, http_status, message, attempts}`.
pub fn error_fields() -> Fields {
    Fields::from(vec![
        Field::new("code", DataType::Utf8, false),
        Field::new("http_status", DataType::Int32, true),
        Field::new("message", DataType::Utf8, false),
        Field::new("attempts", DataType::Int32, false),
    ])
}

/// A model call planned for one input schema; see the module docs.
#[derive(Debug)]
pub struct ModelCall {
    config: InferenceConfig,
    backend: Arc<dyn Backend>,
    endpoint: Arc<Endpoint>,
    /// The input columns the model reads (the call's DESCRIPTOR), by index.
    inputs: Vec<usize>,
    /// The model's outputs.
    outputs: SchemaRef,
    /// The operator's output: its input, then the outputs, then the error column.
    schema: SchemaRef,
    guard: Mutex<ErrorGuard>,
    metrics: Arc<InferenceMetrics>,
    /// Set when the job's spend cap on this call was reached.
    capped: CapLatch,
    /// The counters when the running job started: a plan run again spends anew.
    spend_base: Mutex<TokenCounts>,
    /// The model that takes the rows while this one's circuit breaker is open.
    fallback: Option<Arc<ModelCall>>,
}

/// A slot kept during a retry's wait, given back when dropped (also when the request is
/// dropped while it waits: a cancelled job, a failed attempt).
struct HeldSlot<'a> {
    endpoint: Option<&'a Endpoint>,
}

impl Drop for HeldSlot<'_> {
    fn drop(&mut self) {
        if let Some(endpoint) = self.endpoint {
            endpoint.free_held();
        }
    }
}

/// Why one row has no result: the error column's fields.
#[derive(Debug, Clone, Default)]
struct RowError {
    code: String,
    http_status: Option<u16>,
    message: String,
    attempts: u32,
}

/// How a range of a request's rows ended.
struct Part {
    rows: Range<usize>,
    outcome: std::result::Result<Answer, (CallError, u32)>,
    attempts: u32,
}

/// Random numbers for jitter, without a dependency: a per-thread xorshift seeded from the
/// clock and the thread.
fn random() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            let thread = std::thread::current().id();
            nanos ^ (format!("{thread:?}").len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

impl ModelCall {
    /// Plans a call of model `config.model`, whose outputs are `outputs`, over rows of
    /// `input`, reading the columns named `descriptor`.
    pub fn new(
        config: InferenceConfig,
        outputs: SchemaRef,
        input: &Schema,
        descriptor: &[String],
    ) -> Result<Self> {
        let model = config.model.clone();
        let mut inputs = Vec::with_capacity(descriptor.len());
        for name in descriptor {
            let index = input.index_of(name).map_err(|_| {
                RiffleError::user(format!(
                    "ML_PREDICT with model {model}: the input has no column {name}"
                ))
                .with_hint(format!(
                    "the input's columns are: {}",
                    input
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            inputs.push(index);
        }
        if inputs.is_empty() {
            return Err(RiffleError::user(format!(
                "ML_PREDICT with model {model}: DESCRIPTOR names no input column"
            )));
        }
        let input_names: Vec<String> = descriptor.to_vec();
        let backend: Arc<dyn Backend> = match &config.provider {
            Provider::OpenAi(options) => Arc::new(
                OpenAiBackend::new(&model, options.clone(), input_names, Arc::clone(&outputs))
                    .map_err(RiffleError::user)?,
            ),
            Provider::Onnx(options) => Arc::new(
                OnnxBackend::new(
                    &model,
                    &options.path,
                    options.threads,
                    options.library.as_deref(),
                    input_names.len(),
                    Arc::clone(&outputs),
                )
                .map_err(RiffleError::user)?,
            ),
            Provider::Sentence(options) => Arc::new(
                SentenceBackend::new(&model, options, input_names.len(), Arc::clone(&outputs))
                    .map_err(RiffleError::user)?,
            ),
            Provider::Triton(options) => Arc::new(
                KserveBackend::new(&model, options.clone(), input_names, Arc::clone(&outputs))
                    .map_err(RiffleError::user)?,
            ),
            Provider::Python(options)
                if options.any_rows && config.on_error == OnError::Default =>
            {
                return Err(RiffleError::user(format!(
                    "model {model}: 'on-error' = 'default' needs one result per row; with \
                     'python.output-rows' = 'any' use 'fail' or 'null'"
                )));
            }
            Provider::Python(options) => Arc::new(PythonBackend::new(
                &model,
                options,
                (
                    config.concurrency.lowest(),
                    config.concurrency.per_subtask(),
                ),
                Arc::clone(&outputs),
            )?),
        };
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        for output in outputs.fields() {
            if input.index_of(output.name()).is_ok() {
                return Err(RiffleError::user(format!(
                    "ML_PREDICT with model {model}: output column {} is also an input column",
                    output.name()
                ))
                .with_hint("select the input without it, or rename the model's output"));
            }
            // Rows without a result are NULL (on-error 'null', a NULL input).
            fields.push(output.as_ref().clone().with_nullable(true));
        }
        if config.on_error != OnError::Fail {
            fields.push(Field::new(
                ERROR_COLUMN,
                DataType::Struct(error_fields()),
                true,
            ));
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        let endpoint = Endpoint::shared(backend.endpoint(), &config);
        Ok(Self {
            guard: Mutex::new(ErrorGuard::new(config.max_error_fraction, 1_000)),
            capped: CapLatch::default(),
            spend_base: Mutex::new(TokenCounts::default()),
            fallback: None,
            config,
            backend,
            endpoint,
            inputs,
            outputs,
            schema,
            metrics: Arc::new(InferenceMetrics::default()),
        })
    }

    /// The rows out: the input's columns, the model's outputs, and the error column.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Columns the call adds after the input's: the outputs, and the error column.
    pub fn added_columns(&self) -> usize {
        self.outputs.fields().len() + usize::from(self.config.on_error != OnError::Fail)
    }

    /// The options this call runs with.
    pub fn config(&self) -> &InferenceConfig {
        &self.config
    }

    /// The endpoint's shared limits.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// With user code that gives any number of rows per batch (`python.output-rows` =
    /// `any`): the position in [`ModelCall::schema`] of the column holding each batch's
    /// rows (a list of structs, on the batch's first row).
    pub fn batch_rows_column(&self) -> Option<usize> {
        match &self.config.provider {
            Provider::Python(options) if options.any_rows => {
                Some(self.schema.fields().len() - self.added_columns())
            }
            _ => None,
        }
    }

    /// The processes the backend runs (a Python pool's workers), if it runs any.
    pub fn workers(&self) -> Option<crate::backend::WorkerCounts> {
        self.backend.workers()
    }

    /// What this call spent in the job, when it has a spend cap, and whether the cap was
    /// reached (the operator then takes no more input; see [`crate::spend`]).
    pub fn spend(&self) -> Option<(Spent, bool)> {
        let cap = self.config.spend;
        if !cap.is_set() {
            return None;
        }
        let base = *self.spend_base.lock().unwrap_or_else(|p| p.into_inner());
        let spent = cap.spent(self.metrics.tokens(), base);
        if cap.reached(spent) {
            self.capped.set();
        }
        Some((spent, self.capped.is_set()))
    }

    /// This call, sending its rows to `fallback` while its circuit breaker is open (the
    /// fallback reads the same columns and gives the same outputs).
    pub fn with_fallback(mut self, fallback: Arc<ModelCall>) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// Rows of `input` one request may hold under `batch-tokens`, at the rows' average
    /// estimated tokens (unbounded without the option, or when the backend estimates none).
    pub fn rows_within_tokens(&self, input: &RecordBatch) -> usize {
        let (Some(cap), rows) = (self.config.batch_tokens, input.num_rows()) else {
            return usize::MAX;
        };
        let Ok(inputs) = input.project(&self.inputs) else {
            return usize::MAX;
        };
        let tokens = self.backend.estimate_tokens(&inputs);
        if tokens == 0 || rows == 0 {
            return usize::MAX;
        }
        let per_row = tokens.div_ceil(rows as u64);
        (cap / per_row).max(1) as usize
    }

    /// A job starts running this call: its spend counts from here. (A restart of the same
    /// job does not call this: what it spent before the failure stays spent.)
    pub fn begin_job(&self) {
        *self.spend_base.lock().unwrap_or_else(|p| p.into_inner()) = self.metrics.tokens();
        self.capped.clear();
    }

    /// Whether the job's spend cap on this call was reached.
    pub fn spend_exhausted(&self) -> bool {
        self.capped.is_set() || self.spend().is_some_and(|(_, reached)| reached)
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<InferenceMetrics> {
        &self.metrics
    }

    /// The key of a request of these rows: the same for the same rows, in every process.
    fn idempotency_key(&self, inputs: &RecordBatch) -> String {
        let mut hashes = vec![0u64; inputs.num_rows()];
        if create_hashes(inputs.columns(), &HLL_RANDOM_STATE, &mut hashes).is_err() {
            hashes.iter_mut().for_each(|h| *h = 0);
        }
        let combined = hashes.iter().fold(
            0xcbf2_9ce4_8422_2325u64 ^ inputs.num_rows() as u64,
            |acc, h| (acc ^ h).wrapping_mul(0x0100_0000_01b3).rotate_left(17),
        );
        format!("riffle-{}-{combined:016x}", self.config.model)
    }

    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.config.max_attempts,
            base: self.config.backoff_base,
            deadline: self.config.deadline,
            ..RetryPolicy::default()
        }
    }

    /// Sends `rows` of `inputs` until it has an answer or gives up.
    async fn attempt_range(&self, inputs: &RecordBatch, rows: Range<usize>) -> Result<Part> {
        let slice = inputs.slice(rows.start, rows.len());
        let key = self.idempotency_key(&slice);
        let tokens = self.backend.estimate_tokens(&slice);
        let bytes = slice_bytes(&slice) as u64;
        let policy = self.policy();
        let first_sent = self.endpoint.now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // With a fallback, rows go to it as soon as the breaker keeps them from this
            // endpoint; without one, they wait up to max-open-duration.
            let max_open = if self.fallback.is_some() {
                0
            } else {
                self.config.max_open
            };
            let acquired = self.endpoint.acquire(tokens, max_open).await;
            if acquired.is_err()
                && let Some(fallback) = &self.fallback
            {
                InferenceMetrics::add(&self.metrics.fallback_rows, rows.len() as u64);
                return Box::pin(fallback.attempt_range(inputs, rows)).await;
            }
            let permit = acquired.map_err(|stuck| {
                RiffleError::external(format!(
                    "model {}: the endpoint {} has failed for {} s, longer than \
                         circuit-breaker.max-open-duration",
                    self.config.model,
                    self.backend.endpoint(),
                    stuck.failing_for / 1000
                ))
                .with_retryable(true)
            })?;
            InferenceMetrics::add(&self.metrics.requests, 1);
            InferenceMetrics::add(&self.metrics.queue_wait_ms, permit.waited);
            InferenceMetrics::add(&self.metrics.request_bytes, bytes);
            let sent = permit.sent;
            let probe = permit.probe;
            let backend = &self.backend;
            let call = async {
                // The breaker's half-open probe first asks whether the server is ready, so
                // that rows are not sent to a server that says it is not.
                if probe && !backend.ready().await? {
                    return Err(CallError {
                        failure: Some(Failure::Connection),
                        message: format!("{} says it is not ready", backend.endpoint()),
                        hints: Default::default(),
                    });
                }
                backend
                    .call(Request {
                        inputs: &slice,
                        idempotency_key: &key,
                    })
                    .await
            };
            let result = match tokio::time::timeout(
                Duration::from_millis(self.config.request_timeout),
                call,
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(CallError {
                    failure: Some(Failure::Timeout),
                    message: format!(
                        "no answer from {} within request-timeout ({} ms)",
                        self.backend.endpoint(),
                        self.config.request_timeout
                    ),
                    hints: Default::default(),
                }),
            };
            let now = self.endpoint.now();
            let latency = now.saturating_sub(sent);
            self.metrics.attempt(latency);
            match result {
                Ok(answer) => {
                    let used = answer.usage.map(|u| u.input_tokens + u.output_tokens);
                    if let Some(usage) = answer.usage {
                        InferenceMetrics::add(&self.metrics.tokens_in, usage.input_tokens);
                        InferenceMetrics::add(&self.metrics.tokens_out, usage.output_tokens);
                    } else {
                        InferenceMetrics::add(&self.metrics.estimated_tokens, tokens);
                    }
                    let units = answer
                        .usage
                        .map(|u| u.output_tokens)
                        .filter(|t| *t > 0)
                        .unwrap_or(rows.len() as u64);
                    self.endpoint.release(
                        permit,
                        Outcome::Answered { latency, units },
                        false,
                        None,
                        used,
                    );
                    self.metrics.end_to_end(now.saturating_sub(first_sent));
                    return Ok(Part {
                        rows,
                        outcome: Ok(answer),
                        attempts: attempt,
                    });
                }
                Err(error) => {
                    let outcome = match error.failure {
                        Some(Failure::Timeout | Failure::Connection) => Outcome::TimedOut,
                        Some(failure) if failure.is_overload() => Outcome::Overloaded,
                        _ => Outcome::Failed,
                    };
                    if error.failure == Some(Failure::Http(429)) {
                        InferenceMetrics::add(&self.metrics.http_429, 1);
                    }
                    // The backend failed (not the rows, and not busy: overload is the
                    // limiter's to answer, and a breaker opened by 429s would stop an
                    // endpoint that only asked for fewer requests): what the breaker counts.
                    let backend_failed = error
                        .failure
                        .is_some_and(|f| f.is_retryable() && !f.is_overload());
                    self.endpoint.release(
                        permit,
                        outcome,
                        backend_failed,
                        error.hints.retry_after,
                        None,
                    );
                    let decision = match error.failure {
                        None => Decision::GiveUp("the answer could not be read".into()),
                        Some(failure) => {
                            let failed = FailedAttempt {
                                failure,
                                attempt,
                                first_sent,
                                now,
                                retry_after: error.hints.retry_after,
                            };
                            let mut controls = self.endpoint.controls();
                            policy.decide(failed, random(), &mut controls.budget)
                        }
                    };
                    match decision {
                        Decision::RetryAt(at) => {
                            let counter = match error.failure {
                                Some(Failure::Http(429)) => &self.metrics.retries_rate_limited,
                                Some(Failure::Timeout) => &self.metrics.retries_timeout,
                                Some(Failure::Connection) => &self.metrics.retries_connection,
                                _ => &self.metrics.retries_server,
                            };
                            InferenceMetrics::add(counter, 1);
                            let wait = at.saturating_sub(self.endpoint.now());
                            // A request refused as overloaded keeps its slot while it
                            // waits, so that the next waiting request is not refused in
                            // turn; the slot is given back when it is sent again.
                            let overloaded = error.failure.is_some_and(Failure::is_overload);
                            if overloaded {
                                self.endpoint.hold();
                            }
                            let held = HeldSlot {
                                endpoint: overloaded.then_some(&*self.endpoint),
                            };
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                            drop(held);
                        }
                        Decision::GiveUp(reason) => {
                            let error = CallError {
                                message: format!("{} ({reason})", error.message),
                                ..error
                            };
                            self.metrics.end_to_end(now.saturating_sub(first_sent));
                            return Ok(Part {
                                rows,
                                outcome: Err((error, attempt)),
                                attempts: attempt,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Holds the backend's resources (a Python worker pool's processes) for one operator
    /// instance; see [`Backend::attach`].
    pub fn attach(&self) -> Vec<Box<dyn std::any::Any + Send + Sync>> {
        let mut leases: Vec<_> = self.backend.attach().into_iter().collect();
        if let Some(fallback) = &self.fallback {
            leases.extend(fallback.attach());
        }
        leases
    }

    /// Calls the model on `input`'s rows; see the module docs.
    pub async fn call(&self, input: RecordBatch) -> Result<RecordBatch> {
        let rows = input.num_rows();
        let inputs = input.project(&self.inputs).map_err(|e| {
            RiffleError::internal(format!(
                "model {}: projecting the input: {e}",
                self.config.model
            ))
        })?;
        let mut pending = VecDeque::new();
        pending.push_back(0..rows);
        let mut parts = Vec::new();
        while let Some(range) = pending.pop_front() {
            if range.is_empty() {
                continue;
            }
            let part = self.attempt_range(&inputs, range).await?;
            let refused_rows = matches!(
                &part.outcome,
                Err((CallError { failure: Some(Failure::Http(status)), .. }, _))
                    if (400..500).contains(status) && !matches!(status, 408 | 429)
            );
            if refused_rows
                && part.rows.len() > 1
                && let Refused::Split(left, right) = bisect(part.rows.clone())
            {
                InferenceMetrics::add(&self.metrics.bisections, 1);
                pending.push_front(right);
                pending.push_front(left);
                continue;
            }
            parts.push(part);
        }
        parts.sort_by_key(|part| part.rows.start);
        self.assemble(input, parts)
    }

    /// The input with the parts' outputs and errors appended, in row order.
    fn assemble(&self, input: RecordBatch, parts: Vec<Part>) -> Result<RecordBatch> {
        let rows = input.num_rows();
        let model = &self.config.model;
        // The parts cover the rows in order, so their columns concatenate into the result.
        let mut errors: Vec<Option<RowError>> = vec![None; rows];
        let mut sources: Vec<Vec<ArrayRef>> = vec![Vec::new(); self.outputs.fields().len()];
        for part in &parts {
            match &part.outcome {
                Ok(answer) => {
                    if answer.columns.len() != self.outputs.fields().len()
                        || answer.columns.iter().any(|c| c.len() != part.rows.len())
                    {
                        return Err(RiffleError::internal(format!(
                            "model {model}: the backend gave columns that do not fit the request"
                        )));
                    }
                    for (index, column) in answer.columns.iter().enumerate() {
                        sources[index].push(Arc::clone(column));
                    }
                    for (row, code, message) in &answer.row_errors {
                        errors[part.rows.start + row] = Some(RowError {
                            code: code.to_string(),
                            http_status: None,
                            message: message.clone(),
                            attempts: part.attempts,
                        });
                    }
                }
                Err((error, attempts)) => {
                    for (index, field) in self.outputs.fields().iter().enumerate() {
                        sources[index].push(new_null_array(field.data_type(), part.rows.len()));
                    }
                    for row in part.rows.clone() {
                        errors[row] = Some(RowError {
                            code: error.code().to_string(),
                            http_status: error.http_status(),
                            message: error.message.clone(),
                            attempts: *attempts,
                        });
                    }
                }
            }
        }
        let failed = errors.iter().filter(|e| e.is_some()).count();
        InferenceMetrics::add(&self.metrics.rows, rows as u64);
        InferenceMetrics::add(&self.metrics.failed_rows, failed as u64);
        if let Some(row) = errors.iter().position(Option::is_some)
            && self.config.on_error == OnError::Fail
        {
            let RowError {
                code,
                message,
                attempts,
                ..
            } = errors[row].clone().unwrap_or_default();
            let hint = if matches!(self.config.provider, Provider::Python(_)) {
                "pass max_retries=n to try a failed batch again, or on_error='null' to keep going \
                 with NULL results"
            } else {
                "set 'on-error' = 'null' on the model or in ML_PREDICT's MAP to keep going with \
                 NULL results and an __error column"
            };
            let text = if matches!(self.config.provider, Provider::Python(_)) {
                // The pool's message names the function, the batch and its rows.
                message
            } else {
                format!(
                    "model {model}: row {row} of a request of {rows} failed ({code}, after \
                     {attempts} attempts): {message}"
                )
            };
            return Err(RiffleError::external(text).with_code(code).with_hint(hint));
        }
        {
            let mut guard = self.guard.lock().unwrap_or_else(|p| p.into_inner());
            guard
                .record(rows as u64, failed as u64)
                .map_err(|e| RiffleError::user(format!("model {model}: {e}")))?;
        }
        let mut columns = input.columns().to_vec();
        for (index, field) in self.outputs.fields().iter().enumerate() {
            let column = self.joined(&sources[index])?;
            let column = if self.config.on_error == OnError::Default && failed > 0 {
                with_defaults(&column, field, &errors)?
            } else {
                column
            };
            columns.push(column);
        }
        if self.config.on_error != OnError::Fail {
            columns.push(error_column(&errors));
        }
        RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(|e| {
            RiffleError::internal(format!("model {model}: assembling the output: {e}"))
        })
    }

    fn joined(&self, sources: &[ArrayRef]) -> Result<ArrayRef> {
        let result = if sources.len() == 1 {
            Ok(Arc::clone(&sources[0]))
        } else {
            let refs: Vec<&dyn Array> = sources.iter().map(|a| a.as_ref()).collect();
            concat(&refs)
        };
        result.map_err(|e| {
            RiffleError::internal(format!(
                "model {}: joining the answers: {e}",
                self.config.model
            ))
        })
    }
}

/// The error column of a request's rows.
fn error_column(errors: &[Option<RowError>]) -> ArrayRef {
    let codes: StringArray = errors
        .iter()
        .map(|e| Some(e.as_ref().map_or("", |e| e.code.as_str())))
        .collect();
    let statuses: Int32Array = errors
        .iter()
        .map(|e| e.as_ref().and_then(|e| e.http_status).map(i32::from))
        .collect();
    let messages: StringArray = errors
        .iter()
        .map(|e| Some(e.as_ref().map_or("", |e| e.message.as_str())))
        .collect();
    let attempts: Int32Array = errors
        .iter()
        .map(|e| Some(e.as_ref().map_or(0, |e| e.attempts as i32)))
        .collect();
    let nulls = NullBuffer::from(errors.iter().map(Option::is_some).collect::<Vec<_>>());
    Arc::new(StructArray::new(
        error_fields(),
        vec![
            Arc::new(codes),
            Arc::new(statuses),
            Arc::new(messages),
            Arc::new(attempts),
        ],
        Some(nulls),
    ))
}

/// `column` with the failed rows set to the type's zero value (`on-error` = `default`).
fn with_defaults(
    column: &ArrayRef,
    field: &Field,
    errors: &[Option<RowError>],
) -> Result<ArrayRef> {
    let zero = match field.data_type() {
        DataType::FixedSizeList(_, size) => {
            crate::columns::vectors(field, vec![Some(vec![0.0; *size as usize])])
        }
        DataType::List(_) => crate::columns::vectors(field, vec![Some(Vec::new())]),
        DataType::Boolean => crate::columns::scalars(field, &[Some(serde_json::json!(false))]),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            crate::columns::scalars(field, &[Some(serde_json::json!(""))])
        }
        _ => crate::columns::scalars(field, &[Some(serde_json::json!(0))]),
    }
    .map_err(RiffleError::user)?;
    let sources: [&dyn Array; 2] = [column.as_ref(), zero.as_ref()];
    let picks: Vec<(usize, usize)> = errors
        .iter()
        .enumerate()
        .map(|(row, e)| if e.is_some() { (1, 0) } else { (0, row) })
        .collect();
    interleave(&sources, &picks)
        .map_err(|e| RiffleError::internal(format!("filling default results: {e}")))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringViewArray};

    use super::*;

    #[test]
    fn a_slice_counts_its_own_bytes_not_the_shared_buffers() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8View, false),
        ]));
        let texts: Vec<String> = (0..1000)
            .map(|i| format!("a text long enough {i:04}"))
            .collect();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..1000)),
                Arc::new(StringViewArray::from_iter_values(&texts)),
            ],
        )
        .unwrap();
        let whole = slice_bytes(&batch);
        let tenth = slice_bytes(&batch.slice(0, 100));
        assert!(whole >= 1000 * (8 + 16 + 23), "{whole}");
        assert!(
            tenth * 10 <= whole + 100 && tenth * 10 + 100 >= whole,
            "{tenth} of {whole}"
        );
    }
}
