//! Whether and when a failed request is sent again.
//!
//! - **Classification**: timeouts, broken connections, HTTP 408, 429 and 5xx, and gRPC
//!   `UNAVAILABLE`, `RESOURCE_EXHAUSTED` and `DEADLINE_EXCEEDED` may succeed if tried again;
//!   any other answer (a 400, a 401, a 404, gRPC `INVALID_ARGUMENT`...) fails at once, since
//!   asking again gets the same answer.
//! - **Backoff with full jitter**: the wait before attempt `n + 1` is uniform in
//!   `[0, min(cap, base·2ⁿ))`, so that clients that failed together do not retry together.
//!   A server's `Retry-After` (or `retry-after-ms`) is honoured, up to a cap.
//! - **A per-row deadline** that includes the retries (Flink's "timeout includes retries"):
//!   no retry is scheduled past it.
//! - **A retry budget**: over a sliding window, retries may be at most a share (20%) of
//!   requests, plus a few, so that a failing backend is not hit by a storm of retries.
//!
//! Randomness is passed in (a number in `[0, 1)`), so that tests are deterministic.

use crate::Millis;
use crate::window::RollingCounts;

/// Why a request failed, as the backend or the transport said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the attempt's timeout.
    Timeout,
    /// The connection could not be made or broke.
    Connection,
    /// An HTTP status other than success.
    Http(u16),
    /// A gRPC status code other than `OK` (the numbers of the gRPC spec).
    Grpc(u32),
    /// A Python worker's batch failed (`map_batches` and its kin).
    Worker(WorkerFailure),
}

/// How a Python worker failed a batch; each is its own Python exception class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerFailure {
    /// The user's code raised.
    UserCode,
    /// The worker process died (an exit, a signal, a segfault).
    Crashed,
    /// The batch took longer than the call's timeout; the worker was killed.
    Hung,
}

impl WorkerFailure {
    /// The error code the job's error carries (`riffle.UserCodeError` and its kin).
    pub fn code(self) -> &'static str {
        match self {
            WorkerFailure::UserCode => "user_code_error",
            WorkerFailure::Crashed => "worker_crashed",
            WorkerFailure::Hung => "worker_timeout",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("a timeout"),
            Failure::Connection => f.write_str("a connection failure"),
            Failure::Http(status) => write!(f, "HTTP {status}"),
            Failure::Grpc(code) => write!(f, "gRPC status {code}"),
            Failure::Worker(kind) => f.write_str(kind.code()),
        }
    }
}

/// gRPC status codes that may succeed when tried again.
const GRPC_DEADLINE_EXCEEDED: u32 = 4;
const GRPC_RESOURCE_EXHAUSTED: u32 = 8;
const GRPC_UNAVAILABLE: u32 = 14;

impl Failure {
    /// Whether trying again may succeed.
    pub fn is_retryable(self) -> bool {
        match self {
            // Tried again up to max_retries: the user asked for that many.
            Failure::Timeout | Failure::Connection | Failure::Worker(_) => true,
            Failure::Http(status) => {
                status == 408 || status == 429 || (500..=599).contains(&status)
            }
            Failure::Grpc(code) => matches!(
                code,
                GRPC_DEADLINE_EXCEEDED | GRPC_RESOURCE_EXHAUSTED | GRPC_UNAVAILABLE
            ),
        }
    }

    /// Whether the backend said it is overloaded (what the concurrency limiter cuts for).
    pub fn is_overload(self) -> bool {
        matches!(
            self,
            Failure::Http(429 | 503) | Failure::Grpc(GRPC_RESOURCE_EXHAUSTED | GRPC_UNAVAILABLE)
        )
    }
}

/// How retries are spaced and bounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The backoff's base.
    pub base: Millis,
    /// The backoff's cap.
    pub cap: Millis,
    /// The longest `Retry-After` honoured; a longer one waits this long.
    pub max_retry_after: Millis,
    /// Time from a row's first send until it must have an answer, retries included.
    pub deadline: Millis,
}

impl Default for RetryPolicy {
    /// The design's defaults: 5 attempts, backoff from 0.5 s capped at 30 s, `Retry-After`
    /// up to 120 s, a 10-minute deadline per row.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: 500,
            cap: 30_000,
            max_retry_after: 120_000,
            deadline: 600_000,
        }
    }
}

/// A failed attempt, as the retry decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedAttempt {
    /// Why it failed.
    pub failure: Failure,
    /// Which attempt it was (1 for the first send).
    pub attempt: u32,
    /// When the row was first sent.
    pub first_sent: Millis,
    /// When the failure came back.
    pub now: Millis,
    /// The server's `Retry-After` (or `retry-after-ms`), as a wait in ms.
    pub retry_after: Option<Millis>,
}

/// What to do with a failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send it again at this instant.
    RetryAt(Millis),
    /// Give up, for this reason (a sentence for the row's error).
    GiveUp(String),
}

impl RetryPolicy {
    /// The decision for `failed`; `random` is a number in `[0, 1)`, and `budget` the
    /// endpoint's.
    pub fn decide(&self, failed: FailedAttempt, random: f64, budget: &mut RetryBudget) -> Decision {
        let FailedAttempt {
            failure,
            attempt,
            first_sent,
            now,
            retry_after,
        } = failed;
        if !failure.is_retryable() {
            return Decision::GiveUp(format!("{failure} is not worth trying again"));
        }
        if attempt >= self.max_attempts.max(1) {
            return Decision::GiveUp(format!("{failure} after {attempt} attempts"));
        }
        let backoff = self.backoff(attempt, random);
        let wait = match retry_after {
            Some(hint) => hint.min(self.max_retry_after).max(backoff),
            None => backoff,
        };
        if now + wait > first_sent + self.deadline {
            return Decision::GiveUp(format!(
                "{failure:?}, and a retry in {wait} ms would pass the row's deadline of {} ms",
                self.deadline
            ));
        }
        if !budget.try_retry(now) {
            return Decision::GiveUp(format!(
                "{failure:?}, and the endpoint's retry budget is spent (retries are at most \
                 {}% of requests)",
                (budget.share * 100.0).round()
            ));
        }
        Decision::RetryAt(now + wait)
    }

    /// The wait before the attempt after `attempt`: full jitter over `min(cap, base·2^(attempt-1))`.
    pub fn backoff(&self, attempt: u32, random: f64) -> Millis {
        let exponent = attempt.saturating_sub(1).min(32);
        let ceiling = self.base.saturating_mul(1u64 << exponent).min(self.cap);
        (ceiling as f64 * random.clamp(0.0, 1.0)) as Millis
    }
}

/// Retries allowed as a share of requests over a sliding window, per endpoint.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    share: f64,
    floor: u64,
    /// Requests and retries over the window.
    counts: RollingCounts,
}

impl RetryBudget {
    /// Retries at most `share` of the requests of the last `window` ms, plus `floor` (so
    /// that a trickle of requests may still retry).
    pub fn new(share: f64, floor: u64, window: Millis) -> Self {
        Self {
            share,
            floor,
            counts: RollingCounts::new(window),
        }
    }

    /// Counts a request sent at `now` (first sends and retries alike).
    pub fn on_request(&mut self, now: Millis) {
        self.counts.add(now, 1, 0);
    }

    /// Whether a retry may be sent at `now`; counts it when it may.
    pub fn try_retry(&mut self, now: Millis) -> bool {
        let (requests, retries) = self.counts.totals(now);
        let allowed = (requests as f64 * self.share) as u64 + self.floor;
        if retries >= allowed {
            return false;
        }
        self.counts.add(now, 0, 1);
        true
    }
}

impl Default for RetryBudget {
    /// Retries at most 20% of the requests of the last 10 s, plus 10.
    fn default() -> Self {
        Self::new(0.2, 10, 10_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_that_may_pass_on_another_try_are_retried() {
        for retryable in [
            Failure::Timeout,
            Failure::Connection,
            Failure::Http(408),
            Failure::Http(429),
            Failure::Http(500),
            Failure::Http(503),
            Failure::Grpc(14),
            Failure::Grpc(8),
            Failure::Grpc(4),
        ] {
            assert!(retryable.is_retryable(), "{retryable:?}");
        }
        for fatal in [
            Failure::Http(400),
            Failure::Http(401),
            Failure::Http(404),
            Failure::Http(422),
            Failure::Grpc(3),
            Failure::Grpc(16),
        ] {
            assert!(!fatal.is_retryable(), "{fatal:?}");
        }
        assert!(Failure::Http(429).is_overload() && !Failure::Http(500).is_overload());
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_capped_ceiling() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(1, 0.0), 0);
        assert_eq!(policy.backoff(1, 0.999), 499);
        assert_eq!(policy.backoff(3, 0.5), 1000, "half of 2 s");
        assert_eq!(policy.backoff(20, 0.5), 15_000, "half of the 30 s cap");
    }

    #[test]
    fn retry_after_is_honoured_up_to_its_cap_and_the_deadline_counts_retries() {
        let policy = RetryPolicy::default();
        let mut budget = RetryBudget::default();
        let failed = |failure, attempt, now, retry_after| FailedAttempt {
            failure,
            attempt,
            first_sent: 0,
            now,
            retry_after,
        };
        let retry = |now, hint, budget: &mut RetryBudget| {
            policy.decide(failed(Failure::Http(429), 1, now, hint), 0.5, budget)
        };
        assert_eq!(retry(0, Some(2_000), &mut budget), Decision::RetryAt(2_000));
        assert_eq!(
            retry(0, Some(900_000), &mut budget),
            Decision::RetryAt(120_000)
        );
        // A hint shorter than the backoff waits the backoff.
        assert_eq!(retry(0, Some(10), &mut budget), Decision::RetryAt(250));
        // Near the row's deadline, no retry is scheduled past it.
        let late = retry(599_000, Some(5_000), &mut budget);
        assert!(
            matches!(&late, Decision::GiveUp(why) if why.contains("deadline")),
            "{late:?}"
        );
        // A fatal answer and the last attempt give up at once.
        let fatal = policy.decide(failed(Failure::Http(400), 1, 0, None), 0.5, &mut budget);
        assert!(matches!(fatal, Decision::GiveUp(_)));
        let last = policy.decide(failed(Failure::Timeout, 5, 0, None), 0.5, &mut budget);
        assert!(matches!(&last, Decision::GiveUp(why) if why.contains("5 attempts")));
    }

    #[test]
    fn the_budget_keeps_retries_to_a_share_of_requests_in_a_storm() {
        let policy = RetryPolicy::default();
        let mut budget = RetryBudget::default();
        // A backend failing every request for a minute, 100 requests a second.
        let (mut sent, mut retried) = (0u64, 0u64);
        for now in (0..60_000).step_by(10) {
            budget.on_request(now);
            sent += 1;
            let failed = FailedAttempt {
                failure: Failure::Http(503),
                attempt: 1,
                first_sent: now,
                now,
                retry_after: None,
            };
            if let Decision::RetryAt(_) = policy.decide(failed, 0.5, &mut budget) {
                retried += 1;
            }
        }
        let share = retried as f64 / sent as f64;
        assert!(
            (0.15..=0.25).contains(&share),
            "{retried} retries for {sent} requests"
        );
        // A quiet endpoint may still retry a few.
        let mut quiet = RetryBudget::default();
        quiet.on_request(0);
        assert!((0..10).all(|_| quiet.try_retry(1)));
        assert!(!quiet.try_retry(1));
        // Out of the window, the budget is back.
        assert!(quiet.try_retry(20_000));
    }
}
