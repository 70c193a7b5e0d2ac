//! A job's spend cap on one model call: tokens (in and out), or money from per-token prices.
//!
//! Tokens are what the server counted (`usage` in its answers), or the request's estimate
//! for an answer without usage. When the cap is reached the operator stops taking input:
//! the chain ends as at a LIMIT, the requests already started are answered and emitted, the
//! sinks commit, and the job ends cleanly with the rows answered so far. Requests not yet
//! started and lingering rows are dropped, like the rows after a LIMIT, so the cap is
//! overshot by the requests in flight when it was reached, never by more. Spend counts from
//! the start of a job ([`crate::call::ModelCall::begin_job`]); a restart within the job keeps
//! it, a new run from a checkpoint in another process starts it again.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::metrics::TokenCounts;

/// The cap and the prices, from the model's options.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SpendCap {
    /// Tokens at most (in and out).
    pub max_tokens: Option<u64>,
    /// Money at most, from the prices.
    pub max_cost: Option<f64>,
    /// Price of a million input tokens.
    pub input_price: f64,
    /// Price of a million output tokens.
    pub output_price: f64,
}

/// What a call spent.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Spent {
    /// Tokens in and out (estimated where the server did not count).
    pub tokens: u64,
    /// Their cost at the model's prices.
    pub cost: f64,
}

impl SpendCap {
    /// Whether a cap is set.
    pub fn is_set(&self) -> bool {
        self.max_tokens.is_some() || self.max_cost.is_some()
    }

    /// What was spent since `base` (the counts when the job started).
    pub fn spent(&self, now: TokenCounts, base: TokenCounts) -> Spent {
        let tokens_in = (now.input + now.estimated).saturating_sub(base.input + base.estimated);
        let tokens_out = now.output.saturating_sub(base.output);
        Spent {
            tokens: tokens_in + tokens_out,
            cost: (tokens_in as f64 * self.input_price + tokens_out as f64 * self.output_price)
                / 1e6,
        }
    }

    /// Whether `spent` reached the cap.
    pub fn reached(&self, spent: Spent) -> bool {
        self.max_tokens.is_some_and(|max| spent.tokens >= max)
            || self.max_cost.is_some_and(|max| spent.cost >= max)
    }
}

/// Whether a call's cap was reached, once and for all (a later look need not count again).
#[derive(Debug, Default)]
pub struct CapLatch(AtomicBool);

impl CapLatch {
    /// Marks the cap reached.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Forgets it (a new job starts).
    pub fn clear(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Whether it was.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_cost_reach_their_caps() {
        let now = TokenCounts {
            input: 600_000,
            estimated: 400_000,
            output: 500_000,
        };
        let cap = SpendCap {
            max_tokens: Some(2_000_000),
            max_cost: None,
            input_price: 0.5,
            output_price: 2.0,
        };
        let spent = cap.spent(now, TokenCounts::default());
        assert_eq!(spent.tokens, 1_500_000);
        assert!((spent.cost - 1.5).abs() < 1e-9);
        assert!(!cap.reached(spent));
        let by_cost = SpendCap {
            max_tokens: None,
            max_cost: Some(1.5),
            ..cap
        };
        assert!(by_cost.reached(spent));
        assert!(!SpendCap::default().is_set());
        // Only what was spent since the job started counts.
        let base = TokenCounts {
            input: 600_000,
            ..Default::default()
        };
        assert_eq!(cap.spent(now, base).tokens, 900_000);
    }
}
