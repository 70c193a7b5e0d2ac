//! What a function does with a row it cannot process: the `on_error` argument.
//!
//! Every function that can fail on one row takes `on_error`: `'raise'` (the default) stops
//! the job with an error naming the function, the row and what was wrong; `'null'` yields
//! NULL for that row.

use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::ColumnarValue;

use crate::string_literal;

/// What a function does with a row it cannot process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Stop the job with an error naming the function, the row and the reason.
    Raise,
    /// Yield NULL for the row.
    Null,
}

/// Reads an `on_error` argument (`'raise'` or `'null'`).
pub fn on_error(function: &str, arg: Option<&ColumnarValue>) -> Result<OnError> {
    match arg {
        None => Ok(OnError::Raise),
        Some(ColumnarValue::Scalar(value)) => match string_literal(value).as_deref() {
            Some(s) if s.eq_ignore_ascii_case("raise") => Ok(OnError::Raise),
            Some(s) if s.eq_ignore_ascii_case("null") => Ok(OnError::Null),
            _ => Err(DataFusionError::Plan(format!(
                "{function}: on_error must be 'raise' or 'null', not {value}"
            ))),
        },
        Some(_) => Err(DataFusionError::Plan(format!(
            "{function}: on_error must be a constant, 'raise' or 'null'"
        ))),
    }
}

/// Applies the `on_error` policy to per-row results: the first error, or NULLs.
pub fn settle<T>(
    function: &str,
    policy: OnError,
    results: Vec<std::result::Result<Option<T>, String>>,
) -> Result<Vec<Option<T>>> {
    results
        .into_iter()
        .enumerate()
        .map(|(row, result)| match (result, policy) {
            (Ok(value), _) => Ok(value),
            (Err(_), OnError::Null) => Ok(None),
            (Err(reason), OnError::Raise) => Err(DataFusionError::Execution(format!(
                "{function}: row {row} of the batch: {reason}; pass on_error 'null' as the last argument to skip bad rows"
            ))),
        })
        .collect()
}
