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

/// A slot to send one request; give it back with [`Endpoint::release`].
#[derive(Debug)]
#[must_use]
pub struct SendPermit {
    /// Whether the request is the circuit breaker's half-open probe.
    pub probe: bool,
    /// The tokens the request was charged.
    pub tokens: u64,
    /// When it was granted.
    pub sent: Millis,
    /// How long it waited for the slot.
    pub waited: Millis,
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

    /// The endpoint's URL and limits.
    pub fn key(&self) -> &str {
        &self.key
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
    ) -> Result<SendPermit, BreakerStuckOpen> {
        let asked = self.now();
        loop {
            let released = self.released.notified();
            let now = self.now();
            let wake = {
                let mut controls = self.controls();
                match Self::try_acquire(&mut controls, now, tokens) {
                    Ok(probe) => {
                        return Ok(SendPermit {
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
                _ = released => {}
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
        permit: SendPermit,
        outcome: Outcome,
        backend_failed: bool,
        retry_after: Option<Millis>,
        used_tokens: Option<u64>,
    ) {
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
        self.released.notify_waiters();
    }

    /// Whether a retry may go now (the retry budget); counts it when it may.
    pub fn try_retry(&self) -> bool {
        let now = self.now();
        self.controls().budget.try_retry(now)
    }

    /// The limit and the requests in flight now.
    pub fn load(&self) -> (usize, usize) {
        let controls = self.controls();
        (controls.limiter.limit(), controls.limiter.in_flight())
    }
}
