//! What happens to rows whose requests failed for good.
//!
//! - `on-error`: `fail` (the job fails, naming the row), `null` (the result is NULL and the
//!   error column says why) or `default` (the model's declared default value, and the error
//!   column).
//! - `max-error-fraction`: with `null` or `default`, the job still fails when too many rows
//!   fail, since a job whose every row fails has found a bug, not bad rows. The share is
//!   judged once enough rows were seen; before that, the same share of that many rows is
//!   allowed.
//! - Bisection: a request of several rows that the backend refused as a whole with a 4xx is
//!   split in halves and sent again, until the rows at fault are alone, so that one bad row
//!   does not fail its neighbours.

use std::ops::Range;

/// What to do with a row whose request failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Fail the job.
    Fail,
    /// NULL result, and the error column.
    Null,
    /// The model's default value, and the error column.
    Default,
}

impl OnError {
    /// The policy named by an `on-error` option value.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "fail" => Ok(OnError::Fail),
            "null" => Ok(OnError::Null),
            "default" => Ok(OnError::Default),
            other => Err(format!(
                "on-error takes 'fail', 'null' or 'default', not '{other}'"
            )),
        }
    }
}

/// Fails the job when the share of failed rows passes a maximum.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorGuard {
    max_fraction: f64,
    min_rows: u64,
    rows: u64,
    failed: u64,
}

impl ErrorGuard {
    /// At most `max_fraction` of the rows may fail, judged once `min_rows` were seen.
    pub fn new(max_fraction: f64, min_rows: u64) -> Self {
        Self {
            max_fraction,
            min_rows: min_rows.max(1),
            rows: 0,
            failed: 0,
        }
    }

    /// Counts `rows` finished rows of which `failed` failed; an error (a sentence) when
    /// too many failed.
    pub fn record(&mut self, rows: u64, failed: u64) -> Result<(), String> {
        self.rows += rows;
        self.failed += failed;
        let judged = self.rows.max(self.min_rows) as f64;
        if self.failed as f64 > judged * self.max_fraction {
            return Err(format!(
                "{} of {} rows failed, more than max-error-fraction = {}",
                self.failed, self.rows, self.max_fraction
            ));
        }
        Ok(())
    }
}

impl Default for ErrorGuard {
    /// The design's default: 1% once 1,000 rows were seen.
    fn default() -> Self {
        Self::new(0.01, 1_000)
    }
}

/// What to do with a request of several rows that the backend refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The row alone is at fault: it gets the error.
    Row(usize),
    /// Send these halves again.
    Split(Range<usize>, Range<usize>),
}

/// The next step for request `rows` (row indexes of the operator's queue) refused with a
/// client error: a single row is at fault, a larger request is halved.
pub fn bisect(rows: Range<usize>) -> Refused {
    if rows.len() <= 1 {
        return Refused::Row(rows.start);
    }
    let middle = rows.start + rows.len() / 2;
    Refused::Split(rows.start..middle, middle..rows.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_error_names_its_choices_when_given_another() {
        assert_eq!(OnError::parse("NULL"), Ok(OnError::Null));
        assert_eq!(OnError::parse(" fail "), Ok(OnError::Fail));
        let error = OnError::parse("skip").unwrap_err();
        assert!(
            error.contains("'fail', 'null' or 'default', not 'skip'"),
            "{error}"
        );
    }

    #[test]
    fn the_guard_allows_a_share_of_failed_rows_and_no_more() {
        let mut guard = ErrorGuard::default();
        // Early on, 1% of 1,000 rows may fail: 10.
        assert!(guard.record(20, 10).is_ok());
        let error = guard.record(1, 1).unwrap_err();
        assert!(error.contains("11 of 21 rows failed"), "{error}");
        // Later the share is of all rows seen.
        let mut guard = ErrorGuard::default();
        assert!(guard.record(5_000, 50).is_ok());
        assert!(guard.record(1_000, 10).is_ok());
        assert!(guard.record(0, 1).is_err());
    }

    #[test]
    fn bisection_finds_the_rows_at_fault_in_few_requests() {
        // A backend that refuses any request holding row 5 or row 11 of 16.
        let bad = [5usize, 11];
        let mut requests: Vec<Range<usize>> = Vec::new();
        requests.push(0..16);
        let mut sent = 0;
        let mut at_fault = Vec::new();
        while let Some(rows) = requests.pop() {
            sent += 1;
            if !bad.iter().any(|row| rows.contains(row)) {
                continue;
            }
            match bisect(rows) {
                Refused::Row(row) => at_fault.push(row),
                Refused::Split(left, right) => {
                    requests.push(right);
                    requests.push(left);
                }
            }
        }
        at_fault.sort_unstable();
        assert_eq!(at_fault, bad);
        // 2 bad rows of 16: at most 2·log2(16) splits, far fewer than one request per row.
        assert!(sent <= 1 + 2 * 2 * 4, "{sent} requests");
    }
}
