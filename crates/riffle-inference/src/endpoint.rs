//! The limits of one endpoint, shared by every call to it in this process: the adaptive
//! concurrency limiter, the rate limits, the circuit breaker and the retry budget.
//!
//! Every subtask of every query that calls the same endpoint with the same limits asks the
//! same [`Endpoint`] for a permit before it sends ([`Endpoint::acquire`]), and gives it back
//! with the outcome ([`Endpoint::release`]). A request that finds no room waits, and so does
//! its subtask once its own requests are all waiting: that is the backpressure. Time is the
//! process's monotonic clock in milliseconds, handed to the pure decisions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::Millis;
use crate::breaker::{Breaker, BreakerState, Permit as BreakerPermit};
use crate::limiter::{Limiter, LimiterConfig, Outcome};
use crate::options::{Concurrency, InferenceConfig};
use crate::rate::RateLimits;
use crate::retry::RetryBudget;

/// The longest a waiting request sleeps before it looks again (a release wakes it sooner).
const MAX_NAP: Millis = 50;

/// What an endpoint decides with.
#[derive(Debug)]
pub struct Controls {
    /// How many requests may be in flight.
    pub limiter: Limiter,
    /// Requests per second and tokens per minute.
    pub rates: RateLimits,
    /// Whether requests may go at all.
    pub breaker: Breaker,
    /// How many retries may go.
    pub budget: RetryBudget,
}

/// One endpoint's shared limits; see the module docs.
#[derive(Debug)]
pub struct Endpoint {
    key: String,
    controls: Mutex<Controls>,
    released: Notify,
    epoch: Instant,
    /// Whether a restored limit was already applied (the first restore wins).
    seeded: Mutex<bool>,
}

/// A slot to send one request; give it back with [`Endpoint::release`]. A permit dropped
/// without that (its request was dropped: a cancelled job, a LIMIT reached) gives its slot
/// back by itself, and lets another probe go if it was the breaker's.
#[derive(Debug)]
#[must_use]
pub struct SendPermit<'a> {
    endpoint: &'a Endpoint,
    released: bool,
    /// Whether the request is the circuit breaker's half-open probe.
    pub probe: bool,
    /// The tokens the request was charged.
    pub tokens: u64,
    /// When it was granted.
    pub sent: Millis,
    /// How long it waited for the slot.
    pub waited: Millis,
}

impl Drop for SendPermit<'_> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let now = self.endpoint.now();
        {
            let mut controls = self.endpoint.controls();
            controls.limiter.release(now, Outcome::Failed);
            if self.probe {
                controls.breaker.cancel_probe();
            }
        }
        self.endpoint.released.notify_one();
    }
}

/// Why no permit came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerStuckOpen {
    /// How long the endpoint has been failing.
    pub failing_for: Millis,
}

fn registry() -> &'static Mutex<HashMap<String, Weak<Endpoint>>> {
    static ENDPOINTS: OnceLock<Mutex<HashMap<String, Weak<Endpoint>>>> = OnceLock::new();
    ENDPOINTS.get_or_init(Default::default)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while the lock was held leaves counters, not broken invariants: go on.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Every endpoint in use in this process: its URL and limits, its current concurrency
/// limit, and the requests in flight (for metrics, reports and benchmarks).
pub fn loads() -> Vec<(String, usize, usize)> {
    let endpoints: Vec<Arc<Endpoint>> = lock(registry())
        .values()
        .filter_map(Weak::upgrade)
        .collect();
    endpoints
        .iter()
        .map(|endpoint| {
            let (limit, in_flight) = endpoint.load();
            (endpoint.key.clone(), limit, in_flight)
        })
        .collect()
}

impl Endpoint {
    /// The endpoint `url` with `config`'s limits: the one already in use in this process
    /// when there is one with the same limits, else a new one.
    pub fn shared(url: &str, config: &InferenceConfig) -> Arc<Endpoint> {
        let key = format!(
            "{url} {:?} rps={:?} tpm={:?} breaker={:?}",
            config.concurrency,
            config.max_requests_per_second,
            config.max_tokens_per_minute,
            config.breaker
        );
        let mut endpoints = lock(registry());
        endpoints.retain(|_, endpoint| endpoint.strong_count() > 0);
        if let Some(endpoint) = endpoints.get(&key).and_then(Weak::upgrade) {
            return endpoint;
        }
        let endpoint = Arc::new(Endpoint::new(url.to_string(), config));
        endpoints.insert(key, Arc::downgrade(&endpoint));
        endpoint
    }

    /// An endpoint of its own (tests and benchmarks).
    pub fn new(key: String, config: &InferenceConfig) -> Self {
        let limiter = match config.concurrency {
            Concurrency::Adaptive { min, max } => LimiterConfig {
                initial: LimiterConfig::default().initial.clamp(min, max),
                min,
                max,
                ..LimiterConfig::default()
            },
            Concurrency::Fixed(n) => LimiterConfig {
                initial: n,
                min: n,
                max: n,
                brake_tolerance: None,
                ..LimiterConfig::default()
            },
        };
        Self {
            key,
            controls: Mutex::new(Controls {
                limiter: Limiter::new(limiter, 0),
                rates: RateLimits::new(
                    config.max_requests_per_second,
                    config.max_tokens_per_minute,
                    0,
                ),
                breaker: Breaker::new(config.breaker),
                budget: RetryBudget::default(),
            }),
            released: Notify::new(),
            epoch: Instant::now(),
            seeded: Mutex::new(false),
        }
    }

    /// Milliseconds on the endpoint's clock.
    pub fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// The controls, for a decision or a look.
    pub fn controls(&self) -> MutexGuard<'_, Controls> {
        lock(&self.controls)
    }

    /// Starts the limiter at a checkpointed limit, once per endpoint.
    pub fn seed_limit(&self, limit: usize) {
        let mut seeded = lock(&self.seeded);
        if !*seeded {
            self.controls().limiter.seed(limit);
            *seeded = true;
        }
    }

    /// Waits for a slot for a request estimated at `tokens`: the breaker lets it go, the
    /// rates have room, and the limiter has a slot. Fails when the breaker has been open
    /// longer than `max_open`.
    pub async fn acquire(
        &self,
        tokens: u64,
        max_open: Millis,
    ) -> Result<SendPermit<'_>, BreakerStuckOpen> {
        let asked = self.now();
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before looking, so that a slot freed meanwhile wakes it.
            released.as_mut().enable();
            let now = self.now();
            let wake = {
                let mut controls = self.controls();
                match Self::try_acquire(&mut controls, now, tokens) {
                    Ok(probe) => {
                        // Room for more: the next waiter need not wait for a release.
                        if controls.limiter.has_room(now) {
                            self.released.notify_one();
                        }
                        return Ok(SendPermit {
                            endpoint: self,
                            released: false,
                            probe,
                            tokens,
                            sent: now,
                            waited: now - asked,
                        });
                    }
                    Err(wake) => {
                        if let Some(since) = controls.breaker.failing_since()
                            && now.saturating_sub(since) > max_open
                        {
                            return Err(BreakerStuckOpen {
                                failing_for: now - since,
                            });
                        }
                        wake
                    }
                }
            };
            let nap = wake.map_or(MAX_NAP, |at| at.saturating_sub(now).clamp(1, MAX_NAP));
            tokio::select! {
                _ = &mut released => {}
                _ = tokio::time::sleep(Duration::from_millis(nap)) => {}
            }
        }
    }

    /// Takes a slot when every control allows one (`Ok(probe)`), else says when to look
    /// again (`None`: when a request ends).
    fn try_acquire(
        controls: &mut Controls,
        now: Millis,
        tokens: u64,
    ) -> Result<bool, Option<Millis>> {
        match controls.breaker.state() {
            BreakerState::Open { until } if now < until => return Err(Some(until)),
            BreakerState::HalfOpen { probing: true } => return Err(None),
            _ => {}
        }
        if !controls.limiter.has_room(now) {
            return Err(controls.limiter.frozen_until());
        }
        controls.rates.try_send(now, tokens).map_err(Some)?;
        let probe = match controls.breaker.allow(now) {
            BreakerPermit::Send => false,
            BreakerPermit::Probe => true,
            BreakerPermit::Wait(at) => return Err(at),
        };
        let acquired = controls.limiter.try_acquire(now);
        debug_assert!(acquired, "has_room said there was room");
        controls.budget.on_request(now);
        Ok(probe)
    }

    /// Gives back `permit` with how the request ended; `retry_after` is a server's wait.
    pub fn release(
        &self,
        mut permit: SendPermit<'_>,
        outcome: Outcome,
        backend_failed: bool,
        retry_after: Option<Millis>,
        used_tokens: Option<u64>,
    ) {
        permit.released = true;
        let now = self.now();
        {
            let mut controls = self.controls();
            controls.limiter.release(now, outcome);
            controls.breaker.record(now, backend_failed, permit.probe);
            if let Some(wait) = retry_after {
                controls.limiter.retry_after(now + wait);
            }
            if let Some(used) = used_tokens {
                controls.rates.settle(permit.tokens, used);
            }
        }
        self.released.notify_one();
    }

    /// Keeps a slot for a request refused as overloaded while it waits to be sent again
    /// (see [`Limiter::hold`]); give it back with [`Endpoint::free_held`].
    pub fn hold(&self) {
        self.controls().limiter.hold();
    }

    /// Gives back a slot kept by [`Endpoint::hold`].
    pub fn free_held(&self) {
        self.controls().limiter.free();
        self.released.notify_one();
    }

    /// The limit and the requests in flight now.
    pub fn load(&self) -> (usize, usize) {
        let controls = self.controls();
        (controls.limiter.limit(), controls.limiter.in_flight())
    }

    /// The circuit breaker's state, in words: `closed`, `open` or `half-open`.
    pub fn breaker_state(&self) -> &'static str {
        match self.controls().breaker.state() {
            crate::breaker::BreakerState::Closed => "closed",
            crate::breaker::BreakerState::Open { .. } => "open",
            crate::breaker::BreakerState::HalfOpen { .. } => "half-open",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config(concurrency: &str) -> InferenceConfig {
        let options: BTreeMap<String, String> = [
            ("provider", "openai"),
            ("endpoint", "http://127.0.0.1:1/v1/embeddings"),
            ("concurrency", concurrency),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        InferenceConfig::from_options("m", &options).unwrap()
    }

    #[tokio::test]
    async fn a_dropped_permit_gives_its_slot_back() {
        let endpoint = Endpoint::new("test".into(), &config("2"));
        let first = endpoint.acquire(0, 1_000).await.unwrap();
        let second = endpoint.acquire(0, 1_000).await.unwrap();
        assert_eq!(endpoint.load(), (2, 2));
        drop(first);
        assert_eq!(endpoint.load(), (2, 1));
        endpoint.release(second, Outcome::Failed, false, None, None);
        assert_eq!(endpoint.load(), (2, 0));
        // A held slot counts until it is freed.
        endpoint.hold();
        assert_eq!(endpoint.load(), (2, 1));
        endpoint.free_held();
        assert_eq!(endpoint.load(), (2, 0));
    }

    #[test]
    fn calls_with_the_same_limits_share_an_endpoint() {
        let a = Endpoint::shared("http://x/v1/embeddings", &config("3"));
        let b = Endpoint::shared("http://x/v1/embeddings", &config("3"));
        let c = Endpoint::shared("http://x/v1/embeddings", &config("4"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
