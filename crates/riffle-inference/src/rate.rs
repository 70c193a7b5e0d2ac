//! Rate limits per endpoint: requests per second and tokens per minute, as token buckets.
//!
//! A request is charged one request and its *estimated* tokens (prompt estimate plus the
//! output it may produce: providers count `max_tokens` against the limit) before it is sent;
//! the answer's usage corrects the charge ([`RateLimits::settle`]), and a provider's
//! `x-ratelimit-remaining-*` headers lower what the bucket believes is left
//! ([`TokenBucket::sync`]). A request larger than a whole bucket is let through once the
//! bucket is full (it would never fit), leaving it in debt.

use crate::Millis;

/// A token bucket: `capacity` at most, refilled continuously.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    capacity: f64,
    per_ms: f64,
    tokens: f64,
    last: Millis,
}

impl TokenBucket {
    /// `amount` per `period` ms, starting full at `now`; bursts up to one period's amount.
    pub fn new(amount: f64, period: Millis, now: Millis) -> Self {
        let capacity = amount.max(1.0);
        Self {
            capacity,
            per_ms: capacity / period.max(1) as f64,
            tokens: capacity,
            last: now,
        }
    }

    /// What the bucket holds at `now`.
    pub fn available(&mut self, now: Millis) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// When `amount` can be taken, from `now` on (`now` if at once).
    pub fn ready_at(&mut self, now: Millis, amount: f64) -> Millis {
        self.refill(now);
        let needed = amount.min(self.capacity) - self.tokens;
        if needed <= 0.0 {
            now
        } else {
            now + (needed / self.per_ms).ceil() as Millis
        }
    }

    /// Takes `amount` (after [`TokenBucket::ready_at`] said it may).
    pub fn take(&mut self, amount: f64) {
        self.tokens -= amount;
    }

    /// Gives back (or charges more): the estimate was `estimated`, the truth `actual`.
    pub fn settle(&mut self, estimated: f64, actual: f64) {
        self.tokens = (self.tokens + estimated - actual).min(self.capacity);
    }

    /// The server says `remaining` are left: believe it when it is less.
    pub fn sync(&mut self, now: Millis, remaining: f64) {
        self.refill(now);
        self.tokens = self.tokens.min(remaining);
    }

    fn refill(&mut self, now: Millis) {
        let elapsed = now.saturating_sub(self.last) as f64;
        self.tokens = (self.tokens + elapsed * self.per_ms).min(self.capacity);
        self.last = self.last.max(now);
    }
}

/// The rate limits of one endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimits {
    /// Requests per second, when limited.
    pub requests: Option<TokenBucket>,
    /// Tokens per minute, when limited.
    pub tokens: Option<TokenBucket>,
}

impl RateLimits {
    /// Limits of `requests_per_second` and `tokens_per_minute` (either may be absent),
    /// starting at `now`.
    pub fn new(
        requests_per_second: Option<f64>,
        tokens_per_minute: Option<f64>,
        now: Millis,
    ) -> Self {
        Self {
            requests: requests_per_second.map(|rate| TokenBucket::new(rate, 1_000, now)),
            tokens: tokens_per_minute.map(|rate| TokenBucket::new(rate, 60_000, now)),
        }
    }

    /// Charges a request estimated at `tokens` and says `Ok` when it may go at `now`;
    /// otherwise charges nothing and says when to try again.
    pub fn try_send(&mut self, now: Millis, tokens: u64) -> Result<(), Millis> {
        let tokens = tokens as f64;
        let ready = [
            self.requests.as_mut().map(|b| b.ready_at(now, 1.0)),
            self.tokens.as_mut().map(|b| b.ready_at(now, tokens)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now);
        if ready > now {
            return Err(ready);
        }
        if let Some(bucket) = &mut self.requests {
            bucket.take(1.0);
        }
        if let Some(bucket) = &mut self.tokens {
            bucket.take(tokens);
        }
        Ok(())
    }

    /// Corrects a request's token charge once its usage is known.
    pub fn settle(&mut self, estimated: u64, actual: u64) {
        if let Some(bucket) = &mut self.tokens {
            bucket.settle(estimated as f64, actual as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_second_hold_over_time_after_one_burst() {
        let mut limits = RateLimits::new(Some(10.0), None, 0);
        let mut sent = 0;
        let mut now = 0;
        while now < 10_000 {
            match limits.try_send(now, 0) {
                Ok(()) => sent += 1,
                Err(at) => now = at,
            }
        }
        // A burst of 10, then 10 a second for 10 s.
        assert!((109..=111).contains(&sent), "{sent}");
    }

    #[test]
    fn tokens_per_minute_are_charged_by_estimate_and_corrected_by_usage() {
        let mut limits = RateLimits::new(None, Some(6_000.0), 0);
        // 100 tokens a second refill; 6,000 to start.
        assert_eq!(limits.try_send(0, 5_000), Ok(()));
        assert_eq!(limits.try_send(0, 2_000), Err(10_000), "1,000 short: 10 s");
        // The first request used only 1,000: 4,000 come back.
        limits.settle(5_000, 1_000);
        assert_eq!(limits.try_send(0, 2_000), Ok(()));
        // A request bigger than the bucket goes once the bucket is full.
        let mut small = RateLimits::new(None, Some(600.0), 0);
        assert_eq!(small.try_send(0, 1_000), Ok(()));
        assert_eq!(
            small.try_send(0, 1_000),
            Err(100_000),
            "400 in debt, 1,000 more: 100 s"
        );
    }

    #[test]
    fn a_servers_remaining_count_lowers_the_bucket() {
        let mut bucket = TokenBucket::new(1_000.0, 60_000, 0);
        bucket.sync(0, 100.0);
        assert_eq!(bucket.available(0), 100.0);
        assert_eq!(bucket.ready_at(0, 200.0), 6_000, "100 short at 1/60 a ms");
        // A higher count than the bucket believes changes nothing.
        bucket.sync(0, 900.0);
        assert_eq!(bucket.available(0), 100.0);
    }
}
