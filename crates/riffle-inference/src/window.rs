//! Two counts over a sliding window of time, in ten buckets (requests and failures for the
//! circuit breaker, requests and retries for the retry budget).

use std::collections::VecDeque;

use crate::Millis;

/// Buckets a window is cut into: the window slides a tenth at a time.
const BUCKETS: u64 = 10;

/// Two counts over the last `window` ms; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RollingCounts {
    bucket: Millis,
    /// (bucket start, first count, second count), oldest first.
    buckets: VecDeque<(Millis, u64, u64)>,
}

impl RollingCounts {
    /// Counts over the last `window` ms.
    pub(crate) fn new(window: Millis) -> Self {
        Self {
            bucket: (window / BUCKETS).max(1),
            buckets: VecDeque::new(),
        }
    }

    /// Adds to both counts at `now`.
    pub(crate) fn add(&mut self, now: Millis, first: u64, second: u64) {
        let bucket = self.current(now);
        bucket.1 += first;
        bucket.2 += second;
    }

    /// Both counts over the window ending at `now`.
    pub(crate) fn totals(&mut self, now: Millis) -> (u64, u64) {
        self.current(now);
        self.buckets
            .iter()
            .fold((0, 0), |(a, b), (_, first, second)| (a + first, b + second))
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.buckets.clear();
    }

    /// The bucket `now` falls in, dropping those out of the window.
    fn current(&mut self, now: Millis) -> &mut (Millis, u64, u64) {
        let start = now - now % self.bucket;
        if self.buckets.back().is_none_or(|(last, _, _)| *last < start) {
            self.buckets.push_back((start, 0, 0));
        }
        let oldest = start.saturating_sub(self.bucket * (BUCKETS - 1));
        while self
            .buckets
            .front()
            .is_some_and(|(first, _, _)| *first < oldest)
        {
            self.buckets.pop_front();
        }
        self.buckets.back_mut().expect("a bucket was just made")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_leave_the_window_a_bucket_at_a_time() {
        let mut counts = RollingCounts::new(1_000);
        counts.add(0, 1, 0);
        counts.add(550, 1, 1);
        assert_eq!(counts.totals(999), (2, 1));
        // At 1,000 the bucket of 0-99 left; at 1,600 the one of 500-599 too.
        assert_eq!(counts.totals(1_000), (1, 1));
        assert_eq!(counts.totals(1_600), (0, 0));
    }
}
