//! Asynchronous functions (`url_download`, `file_read`) in a chain: the design's
//! `AsyncOperator` (../shared/design/fault-tolerance.md §3.6).
//!
//! Each input batch is cut into slices of a few rows, and each slice is one request: its
//! functions are evaluated on a task of their own, so that requests stay in flight while the
//! chain task goes on with barriers, control and the operators after this one. At most
//! `in_flight` requests are started and not yet emitted; the slices of a batch beyond that
//! wait their turn, and while any waits the operator takes no rows (backpressure): the task
//! still reads the barriers, watermarks and ends at the head of its channels. Results leave
//! in input order, and a watermark leaves once every request before it has. At the end of
//! input the task serves the requests left as they complete (`has_pending`); a LIMIT
//! reached after the operator abandons them.
//!
//! At a barrier nothing waits: the snapshot holds the input of every request without a
//! result (sent again after a restore), the results that arrived but were not yet emitted
//! (kept: a model call costs more than the bytes of its answer), and the watermarks between
//! them. What leaves after the barrier belongs to the next epoch, so each row's result is
//! committed exactly once, even when a restore asked for it twice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, new_null_array};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::runtime::SpawnedTask;
use datafusion::config::ConfigOptions;
use datafusion::physical_expr::async_scalar_function::AsyncFuncExpr;
use futures::FutureExt;
use futures::future::BoxFuture;
use riffle_common::{Result, RiffleError};
use serde::{Deserialize, Serialize};

use crate::message::CheckpointId;
use crate::operator::{Operator, OperatorContext, OperatorState, Output};

/// What an async operator's requests do: a slice of input rows in, the rows with the
/// results' columns appended out.
pub trait Requests: Send + Sync {
    /// Starts the request of `input` (it runs when polled).
    fn call(&self, input: RecordBatch) -> BoxFuture<'static, Result<RecordBatch>>;

    /// What the requests' shared state is worth keeping in a checkpoint (an adaptive
    /// limit), as JSON.
    fn save(&self) -> Option<serde_json::Value> {
        None
    }

    /// Takes back what [`Requests::save`] kept.
    fn restore(&self, _saved: &serde_json::Value) {}

    /// Rows of `batch` one request may hold by the requests' own measure (a model's
    /// estimated-token cap); the operator's row and byte caps apply as well.
    fn max_rows(&self, _batch: &RecordBatch) -> usize {
        usize::MAX
    }

    /// Whether no more requests should start (a model call's spend cap reached): the
    /// operator then wants no more input, and the chain ends as at a LIMIT, answering what
    /// it already took.
    fn exhausted(&self) -> bool {
        false
    }
}

/// DataFusion's async functions (`url_download`, `file_read`) as requests.
pub struct AsyncFunctions {
    name: String,
    exprs: Arc<Vec<Arc<AsyncFuncExpr>>>,
    schema: SchemaRef,
    options: Arc<ConfigOptions>,
}

impl AsyncFunctions {
    /// Evaluates `exprs`, whose results with the input make `schema`; `options` are the
    /// session's, which the functions read.
    pub fn new(
        name: String,
        exprs: Vec<Arc<AsyncFuncExpr>>,
        schema: SchemaRef,
        options: Arc<ConfigOptions>,
    ) -> Self {
        Self {
            name,
            exprs: Arc::new(exprs),
            schema,
            options,
        }
    }
}

impl Requests for AsyncFunctions {
    fn call(&self, input: RecordBatch) -> BoxFuture<'static, Result<RecordBatch>> {
        let exprs = Arc::clone(&self.exprs);
        let schema = Arc::clone(&self.schema);
        let options = Arc::clone(&self.options);
        let name = self.name.clone();
        // A task of its own (aborted when the result is dropped: a cancelled job or a
        // failed attempt leaves nothing running).
        let task = SpawnedTask::spawn(async move {
            riffle_plan::evaluate_slice(input, &exprs, schema, options).await
        });
        Box::pin(async move {
            match task.join().await {
                Ok(result) => result.map_err(RiffleError::from),
                Err(error) => Err(RiffleError::internal(format!(
                    "a request of operator {name} stopped: {error}"
                ))),
            }
        })
    }
}

/// How an async operator cuts its input into requests and emits their results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestShape {
    /// Rows per request at most.
    pub rows: usize,
    /// Input bytes per request at most (estimated from the batch's average row).
    pub bytes: u64,
    /// Requests started and not yet emitted, at most.
    pub in_flight: usize,
    /// Whether results leave in input order; otherwise as they arrive, watermarks still
    /// holding them in order.
    pub ordered: bool,
    /// How long rows that do not fill a request wait for more before they go as one
    /// (`None`: each input batch is cut on its own, its last request possibly short).
    pub linger: Option<std::time::Duration>,
}

/// Runs requests on slices of its input, several slices in flight; see the module docs.
pub struct AsyncOperator {
    name: String,
    requests: Arc<dyn Requests>,
    shape: RequestShape,
    /// The input's columns, then the results'.
    schema: SchemaRef,
    /// Columns of the input (the output's first columns).
    input_columns: usize,
    /// Requests and watermarks in input order.
    queue: VecDeque<Entry>,
    /// Requests started and not yet emitted (running, or answered behind the head).
    started: usize,
    /// Requests not started yet.
    waiting: usize,
    /// No request waits before this index of the queue (where a search for the next one
    /// to start begins).
    next_waiting: usize,
    /// Rows gathered for the next request while they linger, and when they must go.
    forming: Vec<RecordBatch>,
    forming_rows: usize,
    linger_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// One place in the operator's queue.
enum Entry {
    /// A slice whose request has not started.
    Waiting(RecordBatch),
    /// A slice whose request is in flight.
    Running {
        input: RecordBatch,
        result: BoxFuture<'static, Result<RecordBatch>>,
    },
    /// A request's result, waiting for the requests before it (restored from a checkpoint,
    /// or seen complete when one was taken).
    Done(RecordBatch),
    /// A watermark, held until every request before it is emitted.
    Watermark(i64),
}

/// What the batches of a checkpointed state are, in queue order, and the watermarks between
/// them.
#[derive(Debug, Serialize, Deserialize)]
enum Mark {
    /// A request's input, to be sent again.
    Request,
    /// A request's result, to be emitted.
    Result,
    /// A watermark.
    Watermark(i64),
}

impl Mark {
    /// Whether a stored batch goes with the mark (a watermark has none).
    fn has_batch(&self) -> bool {
        !matches!(self, Mark::Watermark(_))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AsyncState {
    marks: Vec<Mark>,
    /// What the requests' shared state kept ([`Requests::save`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requests: Option<serde_json::Value>,
}

impl AsyncState {
    fn decode(bytes: &[u8], operator: &str) -> Result<Self> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_slice(bytes).map_err(|e| {
            RiffleError::internal(format!(
                "the checkpointed state of operator {operator} cannot be read: {e}"
            ))
        })
    }
}

impl AsyncOperator {
    /// Sends `requests` on slices of its input shaped by `shape`; `schema` is the output's,
    /// whose first `input_columns` columns are the input's.
    pub fn new(
        name: String,
        requests: Arc<dyn Requests>,
        shape: RequestShape,
        schema: SchemaRef,
        input_columns: usize,
    ) -> Self {
        Self {
            name,
            requests,
            shape: RequestShape {
                rows: shape.rows.max(1),
                in_flight: shape.in_flight.max(1),
                ..shape
            },
            schema,
            input_columns,
            queue: VecDeque::new(),
            started: 0,
            waiting: 0,
            next_waiting: 0,
            forming: Vec::new(),
            forming_rows: 0,
            linger_timer: None,
        }
    }

    /// Queues `batch` as one request.
    fn enqueue(&mut self, batch: RecordBatch) {
        self.queue.push_back(Entry::Waiting(batch));
        self.waiting += 1;
    }

    /// Sends the lingering rows as one request (at the linger's end, before a watermark, at
    /// a barrier and at the end of input).
    fn flush_forming(&mut self) -> Result<()> {
        self.linger_timer = None;
        if self.forming.is_empty() {
            return Ok(());
        }
        let pieces = std::mem::take(&mut self.forming);
        self.forming_rows = 0;
        let request = concat_batches(&pieces[0].schema(), &pieces).map_err(|e| {
            RiffleError::internal(format!("gathering rows for operator {}: {e}", self.name))
        })?;
        self.enqueue(request);
        self.start_waiting();
        Ok(())
    }

    /// Adds `batch` to the rows lingering for a request: full requests go at once, the
    /// rest waits at most the linger.
    fn gather(&mut self, batch: RecordBatch, linger: std::time::Duration) -> Result<()> {
        let rows = self.rows_per_request(&batch);
        let mut start = 0;
        // Complete the request begun by earlier batches.
        if self.forming_rows > 0 {
            let take = (rows - self.forming_rows.min(rows)).min(batch.num_rows());
            self.forming.push(batch.slice(0, take));
            self.forming_rows += take;
            start = take;
            if self.forming_rows >= rows {
                self.flush_forming()?;
            }
        }
        // Whole requests straight from the batch (zero-copy slices).
        while batch.num_rows() - start >= rows {
            self.enqueue(batch.slice(start, rows));
            start += rows;
        }
        if start < batch.num_rows() {
            self.forming
                .push(batch.slice(start, batch.num_rows() - start));
            self.forming_rows += batch.num_rows() - start;
        }
        if self.forming_rows > 0 && self.linger_timer.is_none() {
            self.linger_timer = Some(Box::pin(tokio::time::sleep(linger)));
        }
        self.start_waiting();
        Ok(())
    }

    /// Columns of the input (the output's first columns).
    fn input_columns(&self) -> usize {
        self.input_columns
    }

    /// Rows per request for `batch`: the row cap, lowered so that a request stays under
    /// the byte cap at the batch's average row size, and under the requests' own cap.
    fn rows_per_request(&self, batch: &RecordBatch) -> usize {
        let rows = batch.num_rows().max(1);
        let per_row = (riffle_inference::call::slice_bytes(batch) / rows).max(1) as u64;
        let by_bytes = (self.shape.bytes / per_row).max(1) as usize;
        self.shape
            .rows
            .min(by_bytes)
            .min(self.requests.max_rows(batch).max(1))
    }

    fn request(&self, input: RecordBatch) -> BoxFuture<'static, Result<RecordBatch>> {
        self.requests.call(input)
    }

    /// Starts waiting requests, in order, while there is room. Once the requests are
    /// exhausted (a spend cap reached), none starts again: those not started are dropped
    /// with the lingering rows, like the rows after a LIMIT.
    fn start_waiting(&mut self) {
        if self.requests.exhausted() {
            self.queue
                .retain(|entry| !matches!(entry, Entry::Waiting(_)));
            self.waiting = 0;
            self.next_waiting = 0;
            self.forming.clear();
            self.forming_rows = 0;
            self.linger_timer = None;
            return;
        }
        while self.started < self.shape.in_flight && self.waiting > 0 {
            let next = self
                .queue
                .iter()
                .enumerate()
                .skip(self.next_waiting)
                .find_map(|(index, entry)| match entry {
                    Entry::Waiting(input) => Some((index, input.clone())),
                    _ => None,
                });
            let Some((index, input)) = next else {
                return;
            };
            let result = self.request(input.clone());
            self.queue[index] = Entry::Running { input, result };
            self.started += 1;
            self.waiting -= 1;
            self.next_waiting = index + 1;
        }
    }

    /// Takes the head of the queue.
    fn pop(&mut self) -> Option<Entry> {
        let entry = self.queue.pop_front()?;
        self.next_waiting = self.next_waiting.saturating_sub(1);
        if matches!(entry, Entry::Running { .. } | Entry::Done(_)) {
            self.started -= 1;
        }
        Some(entry)
    }

    /// In order: a request behind the head that failed fails the operator now (its error is
    /// final: the call already retried it), instead of when the head reaches it, which may
    /// be long (a head waiting for a breaker's probe); one that answered is kept until then.
    fn settle_behind_head(&mut self, cx: &mut Context<'_>) -> Result<()> {
        for entry in self.queue.iter_mut().skip(1) {
            let Entry::Running { result, .. } = entry else {
                continue;
            };
            match result.as_mut().poll(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(batch)) => *entry = Entry::Done(batch),
                Poll::Ready(Err(error)) => {
                    return Err(error.context(format!("evaluating operator {}", self.name)));
                }
            }
        }
        Ok(())
    }

    /// Emits the results that arrived before the first watermark of the queue, in any order
    /// (unordered mode); `true` when one was.
    fn emit_arrived(&mut self, cx: &mut Context<'_>, out: &mut Output) -> Result<bool> {
        let mut emitted = false;
        let mut index = 0;
        while index < self.queue.len() {
            let ready = match &mut self.queue[index] {
                Entry::Watermark(_) => break,
                Entry::Waiting(_) => None,
                Entry::Done(_) => Some(None),
                Entry::Running { result, .. } => match result.as_mut().poll(cx) {
                    Poll::Ready(outcome) => Some(Some(outcome)),
                    Poll::Pending => None,
                },
            };
            let Some(outcome) = ready else {
                index += 1;
                continue;
            };
            let entry = self.queue.remove(index);
            if index < self.next_waiting {
                self.next_waiting -= 1;
            }
            self.started -= 1;
            match (entry, outcome) {
                (Some(Entry::Done(batch)), None) => out.batch(batch),
                (_, Some(outcome)) => out.batch(outcome.map_err(|error| {
                    error.context(format!("evaluating operator {}", self.name))
                })?),
                _ => return Err(RiffleError::internal("async queue out of step")),
            }
            emitted = true;
            self.start_waiting();
        }
        Ok(emitted)
    }

    /// Emits what is ready at the head of the queue (and, unordered, before its first
    /// watermark); `Ready` when something was emitted (or a request failed).
    fn emit_ready(&mut self, cx: &mut Context<'_>, out: &mut Output) -> Poll<Result<()>> {
        self.start_waiting();
        let mut emitted = false;
        if !self.shape.ordered {
            match self.emit_arrived(cx, out) {
                Ok(any) => emitted = any,
                Err(error) => return Poll::Ready(Err(error)),
            }
        } else if let Err(error) = self.settle_behind_head(cx) {
            return Poll::Ready(Err(error));
        }
        loop {
            let ready = match self.queue.front_mut() {
                None | Some(Entry::Waiting(_)) => break,
                Some(Entry::Running { result, .. }) => match result.as_mut().poll(cx) {
                    Poll::Ready(outcome) => Some(outcome),
                    Poll::Pending => break,
                },
                Some(Entry::Done(_) | Entry::Watermark(_)) => None,
            };
            match (self.pop(), ready) {
                (Some(Entry::Running { .. }), Some(outcome)) => {
                    out.batch(outcome.map_err(|error| {
                        error.context(format!("evaluating operator {}", self.name))
                    })?);
                    self.start_waiting();
                }
                (Some(Entry::Done(batch)), _) => out.batch(batch),
                (Some(Entry::Watermark(watermark)), _) => out.watermark(watermark),
                _ => return Poll::Ready(Err(RiffleError::internal("async queue out of step"))),
            }
            emitted = true;
        }
        if emitted {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// The schema of the checkpointed batches: the output's, with the functions' columns
    /// nullable, since a request's input is stored with its results missing.
    fn state_schema(&self) -> SchemaRef {
        let inputs = self.input_columns();
        let fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(index, field)| {
                let field = field.as_ref().clone();
                if index >= inputs {
                    field.with_nullable(true)
                } else {
                    field
                }
            })
            .collect();
        Arc::new(Schema::new_with_metadata(
            fields,
            self.schema.metadata().clone(),
        ))
    }

    /// `batch`'s columns, then nulls for the results it lacks, under `schema`.
    fn stored(&self, batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
        let mut columns = batch.columns().to_vec();
        for field in &schema.fields()[columns.len()..] {
            columns.push(new_null_array(field.data_type(), batch.num_rows()));
        }
        RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| {
            RiffleError::internal(format!("storing the state of operator {}: {e}", self.name))
        })
    }
}

/// Rows whose requests a restored state of an async operator sends again.
pub(crate) fn rows_to_resend(state: &OperatorState) -> u64 {
    let Ok(decoded) = AsyncState::decode(&state.inline, "async") else {
        return 0;
    };
    decoded
        .marks
        .iter()
        .filter(|mark| mark.has_batch())
        .zip(&state.batches)
        .filter(|(mark, _)| matches!(mark, Mark::Request))
        .map(|(_, batch)| batch.num_rows() as u64)
        .sum()
}

#[async_trait]
impl Operator for AsyncOperator {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(
        &mut self,
        _context: &OperatorContext,
        restored: Option<OperatorState>,
    ) -> Result<()> {
        let Some(state) = restored else {
            return Ok(());
        };
        let decoded = AsyncState::decode(&state.inline, &self.name)?;
        if let Some(saved) = &decoded.requests {
            self.requests.restore(saved);
        }
        let requests = decoded.marks.iter().filter(|mark| mark.has_batch()).count();
        if requests != state.batches.len() {
            return Err(RiffleError::internal(format!(
                "the checkpointed state of operator {} lists {requests} requests but holds {} \
                 batches",
                self.name,
                state.batches.len()
            )));
        }
        let inputs: Vec<usize> = (0..self.input_columns()).collect();
        let mut batches = state.batches.into_iter();
        for mark in decoded.marks {
            let entry = match mark {
                Mark::Watermark(watermark) => Entry::Watermark(watermark),
                Mark::Request => {
                    // As many batches as requests and results: counted above.
                    let Some(stored) = batches.next() else { break };
                    self.waiting += 1;
                    Entry::Waiting(stored.project(&inputs).map_err(|e| {
                        RiffleError::internal(format!(
                            "a request in the state of operator {}: {e}",
                            self.name
                        ))
                    })?)
                }
                Mark::Result => {
                    let Some(stored) = batches.next() else { break };
                    // An answer not yet emitted holds its place among those in flight.
                    self.started += 1;
                    Entry::Done(
                        RecordBatch::try_new(Arc::clone(&self.schema), stored.columns().to_vec())
                            .map_err(|e| {
                            RiffleError::internal(format!(
                                "a result in the state of operator {}: {e}",
                                self.name
                            ))
                        })?,
                    )
                }
            };
            self.queue.push_back(entry);
        }
        Ok(())
    }

    async fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _out: &mut Output,
    ) -> Result<()> {
        if let Some(linger) = self.shape.linger {
            return self.gather(batch, linger);
        }
        let rows = self.rows_per_request(&batch);
        let mut start = 0;
        while start < batch.num_rows() {
            let length = rows.min(batch.num_rows() - start);
            self.enqueue(batch.slice(start, length));
            start += length;
        }
        self.start_waiting();
        Ok(())
    }

    async fn process_watermark(&mut self, watermark: i64, out: &mut Output) -> Result<()> {
        // The rows before the watermark go before it.
        self.flush_forming()?;
        if self.queue.is_empty() {
            out.watermark(watermark);
        } else {
            self.queue.push_back(Entry::Watermark(watermark));
        }
        Ok(())
    }

    async fn snapshot(&mut self, _checkpoint: CheckpointId) -> Result<OperatorState> {
        // Lingering rows are input the operator took: a request of the snapshot.
        self.flush_forming()?;
        let saved = self.requests.save();
        if self.queue.is_empty() && saved.is_none() {
            return Ok(OperatorState::default());
        }
        let schema = self.state_schema();
        let mut marks = Vec::with_capacity(self.queue.len());
        let mut batches = Vec::with_capacity(self.queue.len());
        for index in 0..self.queue.len() {
            // A request that has its answer keeps it; the rest are sent again on restore.
            if let Entry::Running { result, .. } = &mut self.queue[index] {
                match result.as_mut().now_or_never() {
                    // Still in flight until emitted: `started` counts it.
                    Some(Ok(output)) => self.queue[index] = Entry::Done(output),
                    // Kept for the head of the queue to report (a finished future cannot
                    // be polled again).
                    Some(Err(error)) => *result = futures::future::ready(Err(error)).boxed(),
                    None => {}
                }
            }
            match &self.queue[index] {
                Entry::Waiting(input) | Entry::Running { input, .. } => {
                    marks.push(Mark::Request);
                    batches.push(self.stored(input, &schema)?);
                }
                Entry::Done(output) => {
                    marks.push(Mark::Result);
                    batches.push(self.stored(output, &schema)?);
                }
                Entry::Watermark(watermark) => marks.push(Mark::Watermark(*watermark)),
            }
        }
        let state = AsyncState {
            marks,
            requests: saved,
        };
        let inline = serde_json::to_vec(&state).map_err(|e| {
            RiffleError::internal(format!("encoding the state of operator {}: {e}", self.name))
        })?;
        Ok(OperatorState { inline, batches })
    }

    /// Sends the lingering rows; the task then serves the requests left (`has_pending`) as
    /// they complete.
    async fn finish(&mut self, _out: &mut Output) -> Result<()> {
        self.flush_forming()
    }

    fn has_pending(&self) -> bool {
        !self.queue.is_empty() || !self.forming.is_empty()
    }

    fn abandon(&mut self) {
        // Dropping the requests aborts their tasks.
        self.queue.clear();
        self.forming.clear();
        self.forming_rows = 0;
        self.linger_timer = None;
        self.started = 0;
        self.waiting = 0;
        self.next_waiting = 0;
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>, out: &mut Output) -> Poll<Result<()>> {
        if let Some(timer) = &mut self.linger_timer
            && timer.as_mut().poll(cx).is_ready()
            && let Err(error) = self.flush_forming()
        {
            return Poll::Ready(Err(error));
        }
        self.emit_ready(cx, out)
    }

    fn can_accept(&self) -> bool {
        self.waiting == 0
    }

    fn is_done(&self) -> bool {
        self.requests.exhausted()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Int64Type};
    use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
    use datafusion::logical_expr::{
        ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
    };
    use datafusion::physical_expr::ScalarFunctionExpr;
    use datafusion::physical_expr::expressions::Column;

    use std::future::poll_fn;

    use super::*;

    /// Doubles its argument after a delay that depends on the slice's first value, so that
    /// requests complete out of order; records the first value of every request it gets.
    #[derive(Debug)]
    struct SlowDouble {
        requested: Arc<Mutex<Vec<i64>>>,
        signature: Signature,
    }

    impl PartialEq for SlowDouble {
        fn eq(&self, other: &Self) -> bool {
            Arc::ptr_eq(&self.requested, &other.requested)
        }
    }
    impl Eq for SlowDouble {}
    impl std::hash::Hash for SlowDouble {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            "slow_double".hash(state);
        }
    }

    impl ScalarUDFImpl for SlowDouble {
        fn name(&self) -> &str {
            "slow_double"
        }
        fn signature(&self) -> &Signature {
            &self.signature
        }
        fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
            Ok(DataType::Int64)
        }
        fn invoke_with_args(
            &self,
            _args: ScalarFunctionArgs,
        ) -> datafusion::error::Result<ColumnarValue> {
            unreachable!("asynchronous")
        }
    }

    #[async_trait]
    impl AsyncScalarUDFImpl for SlowDouble {
        async fn invoke_async_with_args(
            &self,
            args: ScalarFunctionArgs,
        ) -> datafusion::error::Result<ColumnarValue> {
            let input = args.args[0].clone().into_array(args.number_rows)?;
            let values = input.as_primitive::<Int64Type>();
            let first = values.value(0);
            self.requested.lock().unwrap().push(first);
            if first < 0 {
                return Err(datafusion::error::DataFusionError::Execution(format!(
                    "no double for {first}"
                )));
            }
            tokio::time::sleep(Duration::from_millis((first as u64 * 7919) % 13)).await;
            let doubled: Int64Array = values.iter().map(|v| v.map(|v| v * 2)).collect();
            Ok(ColumnarValue::Array(Arc::new(doubled)))
        }
    }

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]))
    }

    fn operator(requested: &Arc<Mutex<Vec<i64>>>) -> AsyncOperator {
        operator_with(requested, true)
    }

    fn operator_with(requested: &Arc<Mutex<Vec<i64>>>, ordered: bool) -> AsyncOperator {
        lingering(requested, ordered, None)
    }

    fn lingering(
        requested: &Arc<Mutex<Vec<i64>>>,
        ordered: bool,
        linger: Option<Duration>,
    ) -> AsyncOperator {
        let udf = AsyncScalarUDF::new(Arc::new(SlowDouble {
            requested: Arc::clone(requested),
            signature: Signature::exact(vec![DataType::Int64], Volatility::Volatile),
        }))
        .into_scalar_udf();
        let input = input_schema();
        let options = Arc::new(ConfigOptions::default());
        let call = ScalarFunctionExpr::try_new(
            Arc::new(udf),
            vec![Arc::new(Column::new("x", 0))],
            &input,
            Arc::clone(&options),
        )
        .unwrap();
        let expr = AsyncFuncExpr::try_new("doubled", Arc::new(call), &input).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, false),
            Field::new("doubled", DataType::Int64, true),
        ]));
        let functions = AsyncFunctions::new(
            "async-1".into(),
            vec![Arc::new(expr)],
            Arc::clone(&schema),
            options,
        );
        let shape = RequestShape {
            rows: 3,
            bytes: u64::MAX,
            in_flight: 2,
            ordered,
            linger,
        };
        AsyncOperator::new("async-1".into(), Arc::new(functions), shape, schema, 1)
    }

    fn batch(values: std::ops::Range<i64>) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![Arc::new(Int64Array::from_iter_values(values))],
        )
        .unwrap()
    }

    fn context() -> OperatorContext {
        OperatorContext {
            vertex: 1,
            subtask: 0,
            parallelism: 1,
            attempt: 0,
        }
    }

    /// What leaves the operator, flattened: `(x, doubled)` per row, a watermark as
    /// `(i64::MIN, w)`.
    fn flatten(emitted: Vec<crate::operator::Emitted>, into: &mut Vec<(i64, i64)>) {
        for item in emitted {
            match item {
                crate::operator::Emitted::Batch(batch) => {
                    let x = batch.column(0).as_primitive::<Int64Type>();
                    let doubled = batch.column(1).as_primitive::<Int64Type>();
                    for row in 0..batch.num_rows() {
                        into.push((x.value(row), doubled.value(row)));
                    }
                }
                crate::operator::Emitted::Watermark(w) => into.push((i64::MIN, w)),
            }
        }
    }

    /// Feeds `inputs` (a batch, or a watermark as `None`), serving completions while the
    /// operator cannot accept more, the way a chain task does.
    async fn feed(
        operator: &mut AsyncOperator,
        inputs: &[Option<std::ops::Range<i64>>],
        seen: &mut Vec<(i64, i64)>,
        watermark: i64,
    ) {
        for input in inputs {
            while !operator.can_accept() {
                let mut out = Output::default();
                poll_fn(|cx| operator.poll_pending(cx, &mut out))
                    .await
                    .unwrap();
                flatten(out.take(), seen);
            }
            let mut out = Output::default();
            match input {
                Some(values) => operator
                    .process_batch(0, batch(values.clone()), &mut out)
                    .await
                    .unwrap(),
                None => operator
                    .process_watermark(watermark, &mut out)
                    .await
                    .unwrap(),
            }
            flatten(out.take(), seen);
        }
    }

    /// Ends the input as a chain task does: `finish`, then completions until none is left.
    async fn finish_all(operator: &mut AsyncOperator, seen: &mut Vec<(i64, i64)>) -> Result<()> {
        let mut out = Output::default();
        operator.finish(&mut out).await?;
        flatten(out.take(), seen);
        while operator.has_pending() {
            assert!(
                operator.started <= operator.shape.in_flight,
                "the in-flight bound"
            );
            let mut out = Output::default();
            poll_fn(|cx| operator.poll_pending(cx, &mut out)).await?;
            flatten(out.take(), seen);
        }
        Ok(())
    }

    fn inputs() -> Vec<Option<std::ops::Range<i64>>> {
        vec![
            Some(0..10),
            Some(10..17),
            None,
            Some(17..30),
            Some(30..31),
            None,
            Some(31..45),
        ]
    }

    #[tokio::test(start_paused = true)]
    async fn results_leave_in_input_order_with_watermarks_after_the_rows_before_them() {
        let requested = Arc::new(Mutex::new(Vec::new()));
        let mut operator = operator(&requested);
        operator.open(&context(), None).await.unwrap();
        let mut seen = Vec::new();
        feed(&mut operator, &inputs(), &mut seen, 99).await;
        finish_all(&mut operator, &mut seen).await.unwrap();

        let mut expected: Vec<(i64, i64)> = (0..17).map(|x| (x, 2 * x)).collect();
        expected.push((i64::MIN, 99));
        expected.extend((17..31).map(|x| (x, 2 * x)));
        expected.push((i64::MIN, 99));
        expected.extend((31..45).map(|x| (x, 2 * x)));
        assert_eq!(seen, expected);
        // Slices of at most 3 rows, each requested once.
        assert_eq!(requested.lock().unwrap().len(), 4 + 3 + 5 + 1 + 5);
    }

    #[tokio::test(start_paused = true)]
    async fn rows_of_small_batches_linger_into_full_requests_and_a_trickle_still_goes() {
        let requested = Arc::new(Mutex::new(Vec::new()));
        let mut operator = lingering(&requested, true, Some(Duration::from_millis(5)));
        operator.open(&context(), None).await.unwrap();
        let mut seen = Vec::new();
        // Seven batches of one row: two requests of 3 rows at once, one row lingering.
        let inputs: Vec<Option<std::ops::Range<i64>>> = (0..7).map(|x| Some(x..x + 1)).collect();
        feed(&mut operator, &inputs, &mut seen, 0).await;
        assert_eq!(operator.forming_rows, 1);
        // The trickle goes after the linger, with no more input and no end of input.
        while seen.len() < 7 {
            let mut out = Output::default();
            poll_fn(|cx| operator.poll_pending(cx, &mut out))
                .await
                .unwrap();
            flatten(out.take(), &mut seen);
        }
        assert_eq!(seen, (0..7).map(|x| (x, 2 * x)).collect::<Vec<_>>());
        // Requests began at 0, 3 and 6: full ones, then the lingering row alone.
        let mut firsts = requested.lock().unwrap().clone();
        firsts.sort();
        assert_eq!(firsts, vec![0, 3, 6]);
        // A watermark sends what lingers before it.
        feed(&mut operator, &[Some(7..8), None], &mut seen, 42).await;
        finish_all(&mut operator, &mut seen).await.unwrap();
        assert_eq!(&seen[7..], &[(7, 14), (i64::MIN, 42)]);
    }

    #[tokio::test(start_paused = true)]
    async fn unordered_results_leave_as_they_arrive_but_never_across_a_watermark() {
        let requested = Arc::new(Mutex::new(Vec::new()));
        let mut operator = operator_with(&requested, false);
        operator.open(&context(), None).await.unwrap();
        let mut seen = Vec::new();
        feed(&mut operator, &inputs(), &mut seen, 99).await;
        finish_all(&mut operator, &mut seen).await.unwrap();

        // Between watermarks the same rows as in order, each once; the watermarks where
        // they were.
        let segments: Vec<Vec<(i64, i64)>> = seen
            .split(|(x, _)| *x == i64::MIN)
            .map(|segment| {
                let mut rows = segment.to_vec();
                rows.sort();
                rows
            })
            .collect();
        let expected: Vec<Vec<(i64, i64)>> = [0..17, 17..31, 31..45]
            .into_iter()
            .map(|range| range.map(|x| (x, 2 * x)).collect())
            .collect();
        assert_eq!(segments, expected);
        let rows: Vec<i64> = seen
            .iter()
            .map(|(x, _)| *x)
            .filter(|x| *x != i64::MIN)
            .collect();
        assert!(
            rows.windows(2).any(|w| w[0] > w[1]),
            "a faster later request overtook an earlier one: {rows:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_restored_snapshot_goes_on_as_if_nothing_happened_and_resends_only_requests_without_results()
     {
        let expected = {
            let requested = Arc::new(Mutex::new(Vec::new()));
            let mut operator = operator(&requested);
            operator.open(&context(), None).await.unwrap();
            let mut seen = Vec::new();
            feed(&mut operator, &inputs(), &mut seen, 7).await;
            finish_all(&mut operator, &mut seen).await.unwrap();
            seen
        };
        let all = inputs();
        let (mut results_kept, mut requests_kept) = (0, 0);
        for split in 1..all.len() {
            for wait_ms in [0u64, 5, 20] {
                let requested = Arc::new(Mutex::new(Vec::new()));
                let mut first = operator(&requested);
                first.open(&context(), None).await.unwrap();
                let mut seen = Vec::new();
                feed(&mut first, &all[..split], &mut seen, 7).await;
                // Some requests answer before the barrier, some after.
                tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                let state = first.snapshot(1).await.unwrap();
                // Answers kept at the barrier still count against the bound.
                assert!(first.started <= first.shape.in_flight);
                let in_flight_at_barrier = first.started;
                drop(first);
                let resend = rows_to_resend(&state);
                let stored: usize = state.batches.iter().map(RecordBatch::num_rows).sum();
                results_kept += stored - resend as usize;
                requests_kept += resend;

                let before = requested.lock().unwrap().len();
                let mut second = operator(&requested);
                second.open(&context(), Some(state)).await.unwrap();
                assert!(second.started <= second.shape.in_flight);
                feed(&mut second, &all[split..], &mut seen, 7).await;
                finish_all(&mut second, &mut seen).await.unwrap();
                assert_eq!(seen, expected, "split {split}, waited {wait_ms} ms");

                let fed_after: usize = all[split..]
                    .iter()
                    .flatten()
                    .map(|r| (r.end - r.start) as usize)
                    .map(|rows| rows.div_ceil(3))
                    .sum();
                let sent_again = requested.lock().unwrap().len() - before - fed_after;
                assert!(
                    sent_again <= in_flight_at_barrier + 5,
                    "split {split}: {sent_again} requests sent again"
                );
                assert!(resend as usize >= sent_again, "{resend} rows, {sent_again}");
            }
        }
        // Both kinds of state were restored: answers that had arrived, and requests sent
        // again.
        assert!(results_kept > 0 && requests_kept > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_request_fails_the_operator_with_the_functions_error() {
        let requested = Arc::new(Mutex::new(Vec::new()));
        let mut operator = operator(&requested);
        operator.open(&context(), None).await.unwrap();
        let mut out = Output::default();
        operator
            .process_batch(0, batch(-3..3), &mut out)
            .await
            .unwrap();
        let error = finish_all(&mut operator, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no double for -3"), "{error}");
        assert!(error.to_string().contains("async-1"), "{error}");
    }

    /// Requests whose first row is 0 never end; the others fail.
    struct HeadStuckOthersFail;

    impl Requests for HeadStuckOthersFail {
        fn call(&self, input: RecordBatch) -> BoxFuture<'static, Result<RecordBatch>> {
            let first = input.column(0).as_primitive::<Int64Type>().value(0);
            Box::pin(async move {
                if first == 0 {
                    futures::future::pending::<()>().await;
                }
                Err(RiffleError::external(format!(
                    "request from row {first} failed"
                )))
            })
        }
    }

    #[tokio::test]
    async fn a_request_failing_behind_a_stuck_head_fails_the_operator_at_once() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("doubled", DataType::Int64, true),
        ]));
        let shape = RequestShape {
            rows: 3,
            bytes: u64::MAX,
            in_flight: 2,
            ordered: true,
            linger: None,
        };
        let mut operator = AsyncOperator::new(
            "async-1".into(),
            Arc::new(HeadStuckOthersFail),
            shape,
            schema,
            1,
        );
        operator.open(&context(), None).await.unwrap();
        let mut out = Output::default();
        operator
            .process_batch(0, batch(0..6), &mut out)
            .await
            .unwrap();
        let outcome = tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| operator.poll_pending(cx, &mut out)),
        )
        .await
        .expect("the failure behind the head is seen without waiting for the head");
        let error = outcome.unwrap_err();
        assert!(error.to_string().contains("row 3 failed"), "{error}");
    }

    #[test]
    fn a_state_whose_marks_and_batches_disagree_is_refused() {
        let requested = Arc::new(Mutex::new(Vec::new()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut operator = operator(&requested);
        let state = OperatorState {
            inline: serde_json::to_vec(&AsyncState {
                marks: vec![Mark::Request, Mark::Request],
                requests: None,
            })
            .unwrap(),
            batches: vec![batch(0..2)],
        };
        let error = runtime
            .block_on(operator.open(&context(), Some(state)))
            .unwrap_err();
        assert!(
            error.to_string().contains("lists 2 requests but holds 1"),
            "{error}"
        );
    }
}
