//! `ML_PREDICT` in a chain: the asynchronous operator ([`AsyncOperator`]) sending model
//! calls ([`ModelCall`]) as its requests.
//!
//! Everything the async operator does holds for inference: requests several in flight,
//! backpressure when they are all started, a barrier that never waits for a call (the
//! snapshot keeps the inputs of requests without an answer and the answers not yet
//! emitted), results in order or, `allow_unordered`, as they arrive between watermarks. The
//! call adds the endpoint's shared limits, retries and row errors. The snapshot also keeps
//! the endpoint's concurrency limit, so a restored job starts where the limiter had
//! settled, not at its initial guess.
//!
//! [`AsyncOperator`]: super::AsyncOperator

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::runtime::SpawnedTask;
use futures::future::BoxFuture;
use riffle_common::{Result, RiffleError};
use riffle_inference::call::ModelCall;

use super::async_calls::Requests;

/// Model calls as an async operator's requests.
pub struct ModelRequests {
    call: Arc<ModelCall>,
    /// The backend's resources (a Python worker pool's processes), held while the operator
    /// lives.
    _leases: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl ModelRequests {
    /// Requests to `call`; see `_leases`.
    pub fn new(call: Arc<ModelCall>) -> Self {
        let _leases = call.attach();
        Self { call, _leases }
    }
}

impl Requests for ModelRequests {
    fn call(&self, input: RecordBatch) -> BoxFuture<'static, Result<RecordBatch>> {
        let call = Arc::clone(&self.call);
        // A task of its own, aborted when the request is dropped (a failed attempt, a
        // cancelled job, a LIMIT reached).
        let task = SpawnedTask::spawn(async move { call.call(input).await });
        let model = self.call.config().model.clone();
        Box::pin(async move {
            task.join().await.map_err(|error| {
                RiffleError::internal(format!("a request to model {model} stopped: {error}"))
            })?
        })
    }

    fn save(&self) -> Option<serde_json::Value> {
        let (limit, _) = self.call.endpoint().load();
        Some(serde_json::json!({ "limit": limit }))
    }

    fn max_rows(&self, batch: &RecordBatch) -> usize {
        self.call.rows_within_tokens(batch)
    }

    fn exhausted(&self) -> bool {
        self.call.spend_exhausted()
    }

    fn restore(&self, saved: &serde_json::Value) {
        if let Some(limit) = saved.get("limit").and_then(serde_json::Value::as_u64) {
            self.call.endpoint().seed_limit(limit as usize);
        }
    }
}
