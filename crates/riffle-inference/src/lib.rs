//! Riffle's inference operator, starting with its decisions as pure code.
//!
//! The operator (issue 8; ../shared/design/inference.md) calls a model in batches, several
//! requests in flight, without overloading the backend and without losing a row across
//! checkpoints. What it has to *decide* lives here, with no I/O, no async and no clock of its
//! own (time is milliseconds passed in), so that each rule is tested deterministically:
//!
//! - [`batcher`]: when the rows gathered so far make a request: a cap on rows, bytes and
//!   estimated tokens, whichever is reached first, and a linger time so that a trickle of
//!   rows still goes out.
//! - [`limiter`]: how many requests may be in flight at once: additive increase while the
//!   limit is actually reached, one multiplicative cut per window on overload, a brake on
//!   normalised latency for servers that queue instead of rejecting, and a freeze on a
//!   server's `Retry-After`.
//! - [`retry`]: which failures are tried again, after how long (full jitter, `Retry-After`),
//!   within a row's deadline and an endpoint's retry budget.
//! - [`breaker`]: a circuit breaker per endpoint over a rolling window, with one half-open
//!   probe at a time.
//! - [`rate`]: requests per second and tokens per minute as token buckets, charged with
//!   estimates and corrected by usage and by a provider's remaining counts.
//! - [`policy`]: `on-error`, the `max-error-fraction` guard, and bisection of a refused
//!   multi-row request to find the rows at fault.
//! - [`hints`]: what servers say about their limits (`Retry-After`, `retry-after-ms`,
//!   OpenAI's and Anthropic's rate-limit headers), for the limiter and the buckets.
//!
//!
//! Around them, what runs: [`options`] reads a model's options (Flink's keys and Riffle's)
//! into an [`options::InferenceConfig`]; [`backend`] is the trait every backend implements
//! (one attempt, a batch in, columns out), [`openai`] the OpenAI-compatible one; [`endpoint`]
//! holds the limits shared by every call to an endpoint in the process; [`call`] is one
//! request's life (permit, timeout, retries, bisection, row errors), which the runtime's
//! asynchronous operator runs several at a time and keeps across checkpoints; [`metrics`]
//! counts.

#![warn(missing_docs)]

pub mod backend;
pub mod batcher;
pub mod breaker;
pub mod call;
#[cfg(feature = "candle")]
pub mod candle_bert;
pub mod columns;
pub mod endpoint;
pub mod fault_server;
pub mod hints;
pub mod http;
pub mod kserve;
pub mod limiter;
pub mod metrics;
pub mod onnx;
pub mod openai;
pub mod options;
pub mod policy;
pub mod python;
pub mod rate;
pub mod retry;
pub mod sentence;
pub mod spend;
pub mod tensors;
pub mod vision;
mod window;

/// Milliseconds on the operator's clock.
pub type Millis = u64;
