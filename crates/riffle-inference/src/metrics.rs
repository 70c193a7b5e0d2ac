//! What an inference call counts: requests, rows, tokens, retries by cause, latencies per
//! attempt and end to end. Shared by the subtasks of one `ML_PREDICT`; read at any time
//! ([`InferenceMetrics::snapshot`]) for EXPLAIN ANALYZE, the job's report and benchmarks.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Millis;

/// Buckets of the latency histograms: bucket `i` holds latencies up to `GROWTH^i` ms.
const BUCKETS: usize = 160;
const GROWTH: f64 = 1.12;

/// A latency histogram with about 6% resolution, from 1 ms to about 2 hours.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

impl Histogram {
    /// Counts one latency.
    pub fn record(&mut self, latency: Millis) {
        let bucket = if latency <= 1 {
            0
        } else {
            ((latency as f64).ln() / GROWTH.ln()).ceil() as usize
        };
        self.counts[bucket.min(BUCKETS - 1)] += 1;
        self.total += 1;
    }

    /// The latency below which `share` of the counted ones lie (the bucket's upper edge).
    pub fn quantile(&self, share: f64) -> Option<Millis> {
        if self.total == 0 {
            return None;
        }
        let rank = ((self.total as f64) * share).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(GROWTH.powi(bucket as i32).round() as Millis);
            }
        }
        None
    }
}

/// The counters; see the module docs.
#[derive(Debug, Default)]
pub struct InferenceMetrics {
    /// Requests sent, retries included.
    pub requests: AtomicU64,
    /// Rows answered (with a result or a row error).
    pub rows: AtomicU64,
    /// Rows that failed for good.
    pub failed_rows: AtomicU64,
    /// Tokens read, as servers counted them.
    pub tokens_in: AtomicU64,
    /// Tokens generated.
    pub tokens_out: AtomicU64,
    /// Tokens estimated for answers that did not say what they used.
    pub estimated_tokens: AtomicU64,
    /// Rows sent to the fallback model while the breaker was open.
    pub fallback_rows: AtomicU64,
    /// Retries after a 429.
    pub retries_rate_limited: AtomicU64,
    /// Retries after a 5xx or a gRPC unavailable.
    pub retries_server: AtomicU64,
    /// Retries after a timeout.
    pub retries_timeout: AtomicU64,
    /// Retries after a broken connection.
    pub retries_connection: AtomicU64,
    /// Answers with status 429.
    pub http_429: AtomicU64,
    /// Requests split to find the rows a server refused.
    pub bisections: AtomicU64,
    /// Time requests waited for a permit, in all.
    pub queue_wait_ms: AtomicU64,
    /// Input bytes sent, in all.
    pub request_bytes: AtomicU64,
    /// Time attempts took, in all: for an in-process model called once at a time, the time
    /// the model was busy.
    pub busy_ms: AtomicU64,
    latency: Mutex<(Histogram, Histogram)>,
}

/// Tokens counted so far: read by servers, generated, and estimated where an answer did not
/// say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Tokens read, as servers counted them.
    pub input: u64,
    /// Tokens generated.
    pub output: u64,
    /// Tokens estimated for answers without usage.
    pub estimated: u64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Requests sent, retries included.
    pub requests: u64,
    /// Rows answered.
    pub rows: u64,
    /// Rows that failed for good.
    pub failed_rows: u64,
    /// Tokens read.
    pub tokens_in: u64,
    /// Tokens generated.
    pub tokens_out: u64,
    /// Tokens estimated for answers that did not say what they used.
    pub estimated_tokens: u64,
    /// Rows sent to the fallback model.
    pub fallback_rows: u64,
    /// Retries by cause: rate limited, server error, timeout, connection.
    pub retries: [u64; 4],
    /// Answers with status 429.
    pub http_429: u64,
    /// Requests split to find refused rows.
    pub bisections: u64,
    /// Mean wait for a permit per request, ms.
    pub mean_queue_wait: f64,
    /// Mean input bytes per request.
    pub mean_request_bytes: f64,
    /// Time attempts took, in all, ms.
    pub busy_ms: u64,
    /// p50, p95, p99 of one attempt, ms.
    pub attempt_latency: [Option<Millis>; 3],
    /// p50, p95, p99 from a request's first send to its result, ms.
    pub end_to_end_latency: [Option<Millis>; 3],
}

impl MetricsSnapshot {
    /// Retries in all.
    pub fn total_retries(&self) -> u64 {
        self.retries.iter().sum()
    }
}

fn quantiles(histogram: &Histogram) -> [Option<Millis>; 3] {
    [0.5, 0.95, 0.99].map(|share| histogram.quantile(share))
}

impl InferenceMetrics {
    /// Counts one attempt's latency.
    pub fn attempt(&self, latency: Millis) {
        Self::add(&self.busy_ms, latency);
        self.lock().0.record(latency);
    }

    /// Counts one request's latency from first send to result.
    pub fn end_to_end(&self, latency: Millis) {
        self.lock().1.record(latency);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Histogram, Histogram)> {
        self.latency.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `value` to `counter`.
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    /// The token counters now (cheap: no histogram is read), for the spend cap.
    pub fn tokens(&self) -> TokenCounts {
        TokenCounts {
            input: self.tokens_in.load(Ordering::Relaxed),
            output: self.tokens_out.load(Ordering::Relaxed),
            estimated: self.estimated_tokens.load(Ordering::Relaxed),
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let requests = get(&self.requests);
        let latency = self.lock();
        MetricsSnapshot {
            requests,
            rows: get(&self.rows),
            failed_rows: get(&self.failed_rows),
            tokens_in: get(&self.tokens_in),
            tokens_out: get(&self.tokens_out),
            estimated_tokens: get(&self.estimated_tokens),
            fallback_rows: get(&self.fallback_rows),
            retries: [
                get(&self.retries_rate_limited),
                get(&self.retries_server),
                get(&self.retries_timeout),
                get(&self.retries_connection),
            ],
            http_429: get(&self.http_429),
            bisections: get(&self.bisections),
            mean_queue_wait: get(&self.queue_wait_ms) as f64 / requests.max(1) as f64,
            mean_request_bytes: get(&self.request_bytes) as f64 / requests.max(1) as f64,
            busy_ms: get(&self.busy_ms),
            attempt_latency: quantiles(&latency.0),
            end_to_end_latency: quantiles(&latency.1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_within_a_bucket_of_the_truth() {
        let mut histogram = Histogram::default();
        for latency in 1..=1000 {
            histogram.record(latency);
        }
        let p50 = histogram.quantile(0.5).unwrap() as f64;
        let p99 = histogram.quantile(0.99).unwrap() as f64;
        assert!((500.0..=560.0).contains(&p50), "{p50}");
        assert!((990.0..=1110.0).contains(&p99), "{p99}");
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
