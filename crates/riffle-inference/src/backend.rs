//! What every model backend offers the inference operator: a batch of input rows in, one
//! column per model output out, plus health and usage.
//!
//! A backend does one attempt and says how it went; retries, concurrency, rate limits and
//! the circuit breaker are the operator's ([`crate::call`]), the same for every backend.

use std::fmt;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch};

use crate::hints::ServerHints;
use crate::retry::Failure;

/// One request: the rows' input columns (those the call's `DESCRIPTOR` named, in order).
#[derive(Debug)]
pub struct Request<'a> {
    /// The input rows.
    pub inputs: &'a RecordBatch,
    /// The same for every attempt of these rows, also after a restore: a backend sends it
    /// as an `Idempotency-Key` header where the server accepts one.
    pub idempotency_key: &'a str,
}

/// Tokens a request used, as the server counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens read.
    pub input_tokens: u64,
    /// Tokens generated.
    pub output_tokens: u64,
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    /// One array per model output, as long as the request.
    pub columns: Vec<ArrayRef>,
    /// Rows without a result, with a short code and why (a structured output that did not
    /// parse, a text over the context size): row errors; the rest of the request stands.
    pub row_errors: Vec<(usize, &'static str, String)>,
    /// What the server counted, when it said.
    pub usage: Option<Usage>,
    /// What the server said about its limits.
    pub hints: ServerHints,
}

/// A failed attempt.
#[derive(Debug, Clone)]
pub struct CallError {
    /// What failed, when the transport or the server said (`None`: the answer could not be
    /// read, which trying again does not cure).
    pub failure: Option<Failure>,
    /// What happened, for the row's error (never holds credentials).
    pub message: String,
    /// What the server said about its limits (`Retry-After` on a 429).
    pub hints: ServerHints,
}

impl CallError {
    /// An answer that could not be read.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self {
            failure: None,
            message: message.into(),
            hints: ServerHints::default(),
        }
    }

    /// The HTTP status, for the error column.
    pub fn http_status(&self) -> Option<u16> {
        match self.failure {
            Some(Failure::Http(status)) => Some(status),
            _ => None,
        }
    }

    /// A short code for the error column and the metrics.
    pub fn code(&self) -> &'static str {
        match self.failure {
            None => "malformed_response",
            Some(Failure::Timeout) => "timeout",
            Some(Failure::Connection) => "connection",
            Some(Failure::Http(429)) => "rate_limited",
            Some(Failure::Http(status)) if status >= 500 => "server_error",
            Some(Failure::Http(_)) => "client_error",
            Some(Failure::Grpc(_)) => "grpc",
            Some(Failure::Worker(kind)) => kind.code(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A backend's worker processes, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerCounts {
    /// Workers now, started or starting.
    pub live: usize,
    /// Workers running a batch now.
    pub busy: usize,
    /// Workers started in all (more than the pool holds when some crashed or hung, or
    /// ended with an earlier job).
    pub started: u64,
}

/// A model behind one endpoint; see the module docs.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// The endpoint, as the key of the limits shared by every call to it in this process
    /// (never holds credentials).
    fn endpoint(&self) -> &str;

    /// Tokens a request of these rows is estimated to cost (0: the backend counts none).
    fn estimate_tokens(&self, _inputs: &RecordBatch) -> u64 {
        0
    }

    /// Whether the server says it can take requests (`Err`: it could not be asked); the
    /// circuit breaker's half-open probe asks this before it sends rows. Backends without a
    /// health endpoint are always ready.
    async fn ready(&self) -> Result<bool, CallError> {
        Ok(true)
    }

    /// Called by each operator instance that will send requests, before its first; the
    /// backend's resources (a Python worker pool's processes) live while a returned lease
    /// does, so that they end with the job. `None`: nothing to hold.
    fn attach(&self) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        None
    }

    /// The processes the backend runs for its calls (a Python worker pool's workers), for
    /// reports; `None` for a backend that runs none.
    fn workers(&self) -> Option<WorkerCounts> {
        None
    }

    /// Sends one request; see [`Answer`] and [`CallError`].
    async fn call(&self, request: Request<'_>) -> Result<Answer, CallError>;
}
