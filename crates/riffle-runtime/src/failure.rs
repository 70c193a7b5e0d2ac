//! How a task ends when it does not succeed, so that the job reports the cause.

use std::fmt;

use riffle_common::RiffleError;

/// Marks the error a task reports when its input broke because another task failed, so
/// that the job reports the cause instead.
#[derive(Debug)]
pub(crate) struct UpstreamFailed;

impl fmt::Display for UpstreamFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an upstream task stopped before the end of its input")
    }
}

impl std::error::Error for UpstreamFailed {}

/// How a task ended, when it did not succeed.
#[derive(Debug)]
pub enum TaskFailure {
    /// The task's own error: a candidate for the job's error.
    Cause(RiffleError),
    /// A consequence of another task's failure.
    Consequence(RiffleError),
    /// The task's consumer stopped reading; not a failure by itself.
    ConsumerGone,
}

impl From<RiffleError> for TaskFailure {
    fn from(error: RiffleError) -> Self {
        TaskFailure::Cause(error)
    }
}
