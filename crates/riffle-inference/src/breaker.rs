//! A circuit breaker per endpoint: when the backend keeps failing, stop sending for a while
//! instead of failing every row, then try one request before sending again.
//!
//! - **Closed** (normal): outcomes are counted over a rolling window (buckets of a tenth of
//!   it, so old successes do not dilute new failures, the bug Flink's review found in a
//!   counter never reset). The breaker opens when at least half of the window's requests
//!   failed (with enough requests to judge), or after a run of consecutive failures.
//! - **Open**: nothing is sent until the open time ends (5 s, doubling on each reopening up
//!   to 60 s). The operator holds its input meanwhile (backpressure, nothing lost) and fails
//!   the job only once the backend has been failing for longer than a maximum
//!   ([`Breaker::failing_since`]).
//! - **Half-open**: one probe at a time. Its success closes the breaker, and its failure
//!   opens it again for longer.
//!
//! Only failures of the backend count (timeouts, broken connections, 5xx, overload); a
//! 400 for a bad row says nothing about the backend's health.

use crate::Millis;
use crate::window::RollingCounts;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// The rolling window outcomes are counted over.
    pub window: Millis,
    /// Requests in the window below which the failure share is not judged.
    pub min_requests: u64,
    /// The share of failed requests in the window that opens the breaker.
    pub failure_share: f64,
    /// Consecutive failures that open the breaker whatever the window says.
    pub consecutive: u32,
    /// How long the breaker first stays open; doubled on each reopening.
    pub open_first: Millis,
    /// The longest it stays open at once.
    pub open_max: Millis,
}

impl Default for BreakerConfig {
    /// The design's defaults: 50% of at least 20 requests over 10 s, or 10 in a row; open
    /// 5 s, then up to 60 s.
    fn default() -> Self {
        Self {
            window: 10_000,
            min_requests: 20,
            failure_share: 0.5,
            consecutive: 10,
            open_first: 5_000,
            open_max: 60_000,
        }
    }
}

/// The breaker's state, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Sending normally.
    Closed,
    /// Sending nothing until this instant.
    Open {
        /// When a probe may go.
        until: Millis,
    },
    /// One probe may go, or is in flight.
    HalfOpen {
        /// Whether the probe was sent.
        probing: bool,
    },
}

/// Whether a request may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Send it.
    Send,
    /// Send it as the probe: report its outcome with `probe = true`.
    Probe,
    /// Do not send before this instant (`None`: a probe is in flight; wait for it).
    Wait(Option<Millis>),
}

/// A circuit breaker; see the module docs.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    /// Requests and failures over the window.
    counts: RollingCounts,
    consecutive: u32,
    /// Openings since the breaker last closed.
    openings: u32,
    failing_since: Option<Millis>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            counts: RollingCounts::new(config.window),
            consecutive: 0,
            openings: 0,
            failing_since: None,
        }
    }

    /// The state, as of the last call.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Since when the backend has been failing, when the breaker opened and has not closed
    /// since: the operator fails the job (or turns to a fallback) past its maximum.
    pub fn failing_since(&self) -> Option<Millis> {
        self.failing_since
    }

    /// Whether a request may be sent at `now`.
    pub fn allow(&mut self, now: Millis) -> Permit {
        match self.state {
            BreakerState::Closed => Permit::Send,
            BreakerState::Open { until } if now < until => Permit::Wait(Some(until)),
            BreakerState::Open { .. } | BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                Permit::Probe
            }
            BreakerState::HalfOpen { probing: true } => Permit::Wait(None),
        }
    }

    /// Records the outcome of a request that ended at `now`: `failed` when the backend
    /// failed it, `probe` when it was sent as the probe.
    pub fn record(&mut self, now: Millis, failed: bool, probe: bool) {
        if probe {
            if failed {
                self.open(now);
            } else {
                self.close();
            }
            return;
        }
        self.counts.add(now, 1, u64::from(failed));
        if failed {
            self.consecutive += 1;
        } else {
            self.consecutive = 0;
        }
        if self.state == BreakerState::Closed && failed && self.should_open(now) {
            self.open(now);
        }
    }

    /// The probe was never answered (its request was dropped: a cancelled job): another
    /// may go.
    pub fn cancel_probe(&mut self) {
        if self.state == (BreakerState::HalfOpen { probing: true }) {
            self.state = BreakerState::HalfOpen { probing: false };
        }
    }

    fn should_open(&mut self, now: Millis) -> bool {
        if self.consecutive >= self.config.consecutive {
            return true;
        }
        let (requests, failures) = self.counts.totals(now);
        requests >= self.config.min_requests
            && failures as f64 >= requests as f64 * self.config.failure_share
    }

    fn open(&mut self, now: Millis) {
        let doubling = 1u64 << self.openings.min(16);
        let open_for = self
            .config
            .open_first
            .saturating_mul(doubling)
            .min(self.config.open_max);
        self.openings += 1;
        self.failing_since.get_or_insert(now);
        self.state = BreakerState::Open {
            until: now + open_for,
        };
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.openings = 0;
        self.failing_since = None;
        self.consecutive = 0;
        self.counts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_on_a_failing_share_of_enough_requests_not_on_a_few_failures() {
        let mut breaker = Breaker::new(BreakerConfig::default());
        // 9 failures among 10 requests: too few requests to judge, and not 10 in a row.
        for i in 0..10 {
            breaker.record(i, i != 4, false);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        // 11 more, alternating: at the 21st request, 15 of 21 failed.
        for i in 10..=20 {
            breaker.record(i, i % 2 == 0, false);
        }
        assert_eq!(breaker.state(), BreakerState::Open { until: 5_020 });
        assert_eq!(breaker.failing_since(), Some(20));
        assert_eq!(breaker.allow(100), Permit::Wait(Some(5_020)));
    }

    #[test]
    fn old_successes_do_not_dilute_new_failures() {
        let mut breaker = Breaker::new(BreakerConfig {
            consecutive: 1000,
            ..BreakerConfig::default()
        });
        // A long healthy stretch...
        for t in 0..10_000 {
            breaker.record(t, false, false);
        }
        // ...then a backend that fails two requests in three: it opens within the window.
        let mut opened_at = None;
        for t in 10_000..20_000 {
            breaker.record(t, t % 3 != 0, false);
            if breaker.state() != BreakerState::Closed {
                opened_at = Some(t);
                break;
            }
        }
        let opened_at = opened_at.expect("the breaker opened");
        assert!(opened_at < 20_000, "{opened_at}");
    }

    #[test]
    fn a_run_of_failures_opens_it_and_one_probe_at_a_time_decides() {
        let mut breaker = Breaker::new(BreakerConfig::default());
        for t in 0..10 {
            breaker.record(t, true, false);
        }
        assert_eq!(breaker.state(), BreakerState::Open { until: 5_009 });
        // After the open time: one probe, the others wait for it.
        assert_eq!(breaker.allow(5_009), Permit::Probe);
        assert_eq!(breaker.allow(5_010), Permit::Wait(None));
        // The probe fails: open again, twice as long; failing since the first opening.
        breaker.record(5_100, true, true);
        assert_eq!(breaker.state(), BreakerState::Open { until: 15_100 });
        assert_eq!(breaker.failing_since(), Some(9));
        // Longer each time, up to the maximum.
        for until in [35_100u64, 75_100, 135_100, 195_100] {
            let BreakerState::Open { until: now } = breaker.state() else {
                unreachable!()
            };
            assert_eq!(breaker.allow(now), Permit::Probe);
            breaker.record(now, true, true);
            assert_eq!(breaker.state(), BreakerState::Open { until });
        }
        // A probe that succeeds closes it and forgets the past.
        assert_eq!(breaker.allow(195_100), Permit::Probe);
        breaker.record(195_200, false, true);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.failing_since(), None);
        assert_eq!(breaker.allow(195_201), Permit::Send);
    }
}
