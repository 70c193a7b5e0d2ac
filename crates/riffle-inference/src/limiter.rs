//! How many requests may be in flight to one endpoint: adaptive concurrency.
//!
//! A static concurrency setting is wrong most of the time: the gap between an idle backend
//! and an overloaded one is only 2-3x and moves with the model, the batch size and the
//! prompt. So the limit is discovered, as TCP discovers its window (Netflix's
//! concurrency-limits, ../shared/design/inference.md):
//!
//! - **slow start**: until the first overload or the latency's first rise, the limit
//!   doubles at the end of each window where it was reached;
//! - **additive increase**: +1 at the end of each sampling window (about one round trip),
//!   but only when the limit was actually reached in it (half the limit in flight), so that
//!   an operator starved of input does not inflate a limit it never tested;
//! - **multiplicative decrease**, at most once per window: ×0.9 on an overload answer (429,
//!   503, gRPC `RESOURCE_EXHAUSTED`/`UNAVAILABLE`), ×0.5 from the third window in a row with
//!   one (the capacity fell), ×0.9 on a timeout or a broken connection; a burst of 429s
//!   from one overload counts once;
//! - **slow probing near the capacity found**: the limit of the last overload is remembered,
//!   and past it the limit grows by one only every few windows (a probe that meets no
//!   overload forgets it: the capacity grew). Against a server rejecting above 8, plain
//!   AIMD with ×0.5 kept 79% of the throughput with 2.6% rejected; this keeps 99.6% with
//!   1.1% (the tests' simulation);
//! - **a latency brake** for servers that queue instead of rejecting: latency normalised by
//!   the request's units (rows, or output tokens), a short average against the lowest it has
//!   been (the unloaded latency, drifting up slowly so that a backend that became slower
//!   for good is followed); past half the tolerance the limit stops growing, past the
//!   tolerance it shrinks by their ratio (at most by half). A long average instead of the
//!   lowest follows a limit that grows one step at a time, and never brakes;
//! - **a freeze** on a server's `Retry-After`: nothing is sent until then, and the limit
//!   resumes at 90%.
//!
//! One limiter serves one endpoint in one process, shared by the subtasks that call it.

use crate::Millis;

/// How a limiter adapts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimiterConfig {
    /// The limit to start with.
    pub initial: usize,
    /// The limit never goes below this (at least 1).
    pub min: usize,
    /// The limit never goes above this.
    pub max: usize,
    /// The shortest sampling window; a window lasts at least one smoothed round trip.
    pub window: Millis,
    /// The factor of a cut on an overload answer; a third window in a row with one cuts by
    /// half instead (the capacity fell, not a probe that went one too far).
    pub overload_factor: f64,
    /// Windows between probes above the limit of the last cut: near the capacity it found,
    /// the limiter tries one more only now and then, so that few requests are rejected.
    pub probe_windows: u32,
    /// The factor of a cut on a timeout or a broken connection.
    pub timeout_factor: f64,
    /// How far short-term normalised latency may exceed the unloaded latency before the
    /// brake acts (`None`: no brake, for users who want throughput only).
    pub brake_tolerance: Option<f64>,
    /// The factor the limit resumes at after a `Retry-After` freeze.
    pub resume_factor: f64,
    /// Whether the limit doubles per window until the first sign of load (slow start).
    pub slow_start: bool,
}

impl Default for LimiterConfig {
    /// The design's defaults: start at 4, between 1 and 64, windows of at least 100 ms,
    /// ×0.9 on overload (×0.5 from the third window in a row), ×0.9 on a timeout, a probe
    /// above the last cut every 10 windows, a brake at 1.5× the unloaded latency (holding
    /// from 1.25×).
    fn default() -> Self {
        Self {
            initial: 4,
            min: 1,
            max: 64,
            window: 100,
            overload_factor: 0.9,
            probe_windows: 10,
            timeout_factor: 0.9,
            brake_tolerance: Some(1.3),
            resume_factor: 0.9,
            slow_start: true,
        }
    }
}

/// How a request ended, as the limiter counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer after `latency` ms, for a request of `units` units (rows for an encoder,
    /// output tokens for generation): latency per unit is the load signal.
    Answered {
        /// Time from send to answer.
        latency: Millis,
        /// The request's size in the unit that latency scales with.
        units: u64,
    },
    /// The backend said it is overloaded (429, 503, `RESOURCE_EXHAUSTED`, `UNAVAILABLE`).
    Overloaded,
    /// No answer in time, or the connection broke.
    TimedOut,
    /// An error that says nothing about load (a 400, a bad row).
    Failed,
}

/// How much the unloaded latency may rise per window while latency stays above it.
const BASELINE_DRIFT: f64 = 0.001;
/// Samples in the short-term latency average.
const SHORT_SAMPLES: f64 = 10.0;

/// An adaptive concurrency limit; see the module docs.
#[derive(Debug, Clone)]
pub struct Limiter {
    config: LimiterConfig,
    limit: f64,
    in_flight: usize,
    window_start: Millis,
    /// Whether half the limit was in flight at some point in this window.
    reached: bool,
    /// Whether this window already cut the limit.
    cut: bool,
    /// Smoothed round trip (ms), for the window's length.
    round_trip: Option<f64>,
    /// The lowest short-term latency per unit (the unloaded latency), and the short-term
    /// average.
    baseline: Option<f64>,
    short: Option<f64>,
    /// No request is sent before this instant (a `Retry-After`).
    frozen_until: Option<Millis>,
    /// The limit when overload last cut it: about the capacity found.
    ceiling: Option<f64>,
    /// Windows since the last probe above the ceiling.
    since_probe: u32,
    /// Windows in a row that cut the limit for overload.
    overloaded_windows: u32,
    /// Whether this window cut for overload.
    overloaded: bool,
    /// Until the first cut or the latency's first rise, the limit doubles each window
    /// where it was reached (TCP's slow start), so that a job does not spend its first
    /// seconds below a capacity it has not met yet.
    slow_start: bool,
}

impl Limiter {
    /// A limiter starting at `config.initial`, its first window opening at `now`.
    pub fn new(config: LimiterConfig, now: Millis) -> Self {
        let min = config.min.max(1);
        let config = LimiterConfig {
            min,
            max: config.max.max(min),
            ..config
        };
        Self {
            limit: config.initial.clamp(config.min, config.max) as f64,
            config,
            in_flight: 0,
            window_start: now,
            reached: false,
            cut: false,
            round_trip: None,
            baseline: None,
            short: None,
            frozen_until: None,
            ceiling: None,
            since_probe: 0,
            overloaded_windows: 0,
            overloaded: false,
            slow_start: config.slow_start,
        }
    }

    /// Requests that may be in flight at once now.
    pub fn limit(&self) -> usize {
        (self.limit.floor() as usize).clamp(self.config.min, self.config.max)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Until when nothing may be sent, when a server asked to wait.
    pub fn frozen_until(&self) -> Option<Millis> {
        self.frozen_until
    }

    /// Whether a request could take a slot at `now` (as [`Limiter::try_acquire`] would
    /// say), taking none.
    pub fn has_room(&mut self, now: Millis) -> bool {
        self.thaw(now);
        self.end_window_if_due(now);
        self.frozen_until.is_none() && self.in_flight < self.limit()
    }

    /// Starts from `limit` instead of the configured initial one: a restored operator
    /// resumes where its checkpoint left the endpoint, not at full concurrency.
    pub fn seed(&mut self, limit: usize) {
        self.set(limit as f64);
        self.slow_start = false;
    }

    /// Takes a slot for a request sent at `now`; `false` when the limit is reached or the
    /// endpoint is frozen (the operator then stops taking input: backpressure).
    pub fn try_acquire(&mut self, now: Millis) -> bool {
        self.thaw(now);
        self.end_window_if_due(now);
        if self.frozen_until.is_some() || self.in_flight >= self.limit() {
            return false;
        }
        self.in_flight += 1;
        if self.in_flight * 2 >= self.limit() {
            self.reached = true;
        }
        true
    }

    /// Gives back the slot of a request that ended at `now` with `outcome`.
    pub fn release(&mut self, now: Millis, outcome: Outcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        // A window that is over ends first: this outcome belongs to the next one.
        self.end_window_if_due(now);
        match outcome {
            Outcome::Answered { latency, units } => {
                let latency = latency as f64;
                self.round_trip = Some(average(self.round_trip, latency, SHORT_SAMPLES));
                let per_unit = latency / units.max(1) as f64;
                let short = average(self.short, per_unit, SHORT_SAMPLES);
                self.short = Some(short);
                self.baseline = Some(self.baseline.map_or(short, |b| b.min(short)));
            }
            Outcome::Overloaded => {
                if !self.cut {
                    self.ceiling = Some(self.limit);
                    self.overloaded = true;
                }
                // Slow start overshoots by up to twice the capacity: halve, as TCP does.
                let factor = if self.overloaded_windows >= 2 || self.slow_start {
                    0.5
                } else {
                    self.config.overload_factor
                };
                self.cut(factor);
            }
            Outcome::TimedOut => self.cut(self.config.timeout_factor),
            Outcome::Failed => {}
        }
    }

    /// The server asked for no requests before `until` (`Retry-After`): the whole endpoint
    /// waits, and resumes at a lower limit.
    pub fn retry_after(&mut self, until: Millis) {
        self.frozen_until = Some(self.frozen_until.map_or(until, |t| t.max(until)));
    }

    /// Ends a freeze that is over.
    fn thaw(&mut self, now: Millis) {
        if self.frozen_until.is_some_and(|until| now >= until) {
            self.frozen_until = None;
            self.set(self.limit * self.config.resume_factor);
            self.window_start = now;
            self.reached = false;
            self.cut = false;
        }
    }

    /// Cuts by `factor`, and by at least one whole request: a limit of 5.9 cut to 5.3
    /// would still let 5 go, and the request the server refused would be sent again.
    fn cut(&mut self, factor: f64) {
        self.slow_start = false;
        if !self.cut {
            self.set((self.limit * factor).min(self.limit.floor() - 1.0));
            self.cut = true;
        }
    }

    /// Keeps a slot for a request that the server refused as overloaded while it waits to
    /// be sent again: the slot is not free for another request to be refused in turn (a
    /// herd of waiting requests would otherwise take the freed slot one after the other,
    /// each meeting a 429, before the next window). Give it back with [`Limiter::free`].
    pub fn hold(&mut self) {
        self.in_flight += 1;
    }

    /// Gives back a slot kept by [`Limiter::hold`].
    pub fn free(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    fn set(&mut self, limit: f64) {
        self.limit = limit.clamp(self.config.min as f64, self.config.max as f64);
    }

    /// The window's length: at least the configured one, and one smoothed round trip.
    fn window(&self) -> Millis {
        let round_trip = self.round_trip.unwrap_or(0.0).ceil() as Millis;
        self.config.window.max(round_trip)
    }

    fn end_window_if_due(&mut self, now: Millis) {
        if self.frozen_until.is_some() || now < self.window_start + self.window() {
            return;
        }
        self.overloaded_windows = if self.overloaded {
            self.overloaded_windows + 1
        } else {
            0
        };
        if !self.cut {
            match self.brake() {
                Some(factor) => {
                    self.slow_start = false;
                    self.set(self.limit * factor);
                }
                None if self.reached && !self.holding() => self.increase(),
                None if self.holding() => self.slow_start = false,
                None => {}
            }
        }
        // The unloaded latency follows a backend that became slower for good, slowly.
        if let (Some(baseline), Some(short)) = (self.baseline, self.short)
            && short > baseline
        {
            self.baseline = Some(baseline * (1.0 + BASELINE_DRIFT));
        }
        self.window_start = now;
        self.cut = false;
        self.overloaded = false;
        self.reached = self.in_flight * 2 >= self.limit();
    }

    /// +1, except that near the ceiling found by the last overload only every
    /// `probe_windows` windows; a probe past the ceiling that met no overload forgets it
    /// (the capacity grew).
    fn increase(&mut self) {
        if self.slow_start {
            self.set(self.limit * 2.0);
            return;
        }
        let Some(ceiling) = self.ceiling else {
            self.set(self.limit + 1.0);
            return;
        };
        // Back up to the whole request below the ceiling freely; to the ceiling itself (the
        // limit the server refused) only as a probe.
        if self.limit + 1.0 < ceiling.floor() {
            self.set(self.limit + 1.0);
        } else if self.limit >= ceiling + 1.0 {
            self.ceiling = None;
            self.set(self.limit + 1.0);
        } else {
            self.since_probe += 1;
            if self.since_probe >= self.config.probe_windows {
                self.since_probe = 0;
                self.set(self.limit + 1.0);
            }
        }
    }

    /// The factor the brake cuts by, when short-term latency per unit exceeds the unloaded
    /// latency by more than the tolerance.
    fn brake(&self) -> Option<f64> {
        let tolerance = self.config.brake_tolerance?;
        let (baseline, short) = (self.baseline?, self.short?);
        (short > baseline * tolerance).then(|| (baseline * tolerance / short).clamp(0.5, 1.0))
    }

    /// Whether latency is past half the brake's tolerance: the limit stops growing there,
    /// since a server that queues gains no throughput from more requests in flight.
    fn holding(&self) -> bool {
        match (self.config.brake_tolerance, self.baseline, self.short) {
            (Some(tolerance), Some(baseline), Some(short)) => {
                short > baseline * (1.0 + (tolerance - 1.0) / 2.0)
            }
            _ => false,
        }
    }
}

/// An exponential moving average over about `samples` samples.
fn average(previous: Option<f64>, sample: f64, samples: f64) -> f64 {
    match previous {
        None => sample,
        Some(previous) => previous + (sample - previous) * 2.0 / (samples + 1.0),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn answered(latency: Millis) -> Outcome {
        Outcome::Answered { latency, units: 1 }
    }

    #[test]
    fn the_limit_grows_only_in_windows_where_it_was_reached() {
        let additive = LimiterConfig {
            slow_start: false,
            ..LimiterConfig::default()
        };
        let mut limiter = Limiter::new(additive, 0);
        assert_eq!(limiter.limit(), 4);
        // One request at a time for a second: never half the limit in flight.
        for t in (0..1000).step_by(10) {
            assert!(limiter.try_acquire(t));
            limiter.release(t + 5, answered(100));
        }
        assert_eq!(
            limiter.limit(),
            4,
            "an operator starved of input tests nothing"
        );
        // Every slot used: +1 per window of 100 ms.
        let mut now = 1000;
        for _ in 0..10 {
            while limiter.try_acquire(now) {}
            let held = limiter.in_flight();
            now += 100;
            for _ in 0..held {
                limiter.release(now, answered(100));
            }
        }
        assert!((13..=14).contains(&limiter.limit()), "{}", limiter.limit());

        // Slow start: doubling per window until the first sign of load.
        let mut limiter = Limiter::new(LimiterConfig::default(), 0);
        let mut now = 0;
        for _ in 0..3 {
            while limiter.try_acquire(now) {}
            let held = limiter.in_flight();
            now += 100;
            for _ in 0..held {
                limiter.release(now, answered(100));
            }
        }
        assert_eq!(limiter.limit(), 32);
        assert!(limiter.try_acquire(now));
        limiter.release(now + 1, Outcome::Overloaded);
        assert_eq!(limiter.limit(), 16, "the first overload halves");
    }

    #[test]
    fn a_burst_of_overload_answers_cuts_once_per_window() {
        let config = LimiterConfig {
            initial: 16,
            slow_start: false,
            ..LimiterConfig::default()
        };
        let mut limiter = Limiter::new(config, 0);
        for _ in 0..16 {
            assert!(limiter.try_acquire(0));
        }
        assert!(!limiter.try_acquire(0), "the limit holds");
        for _ in 0..10 {
            limiter.release(10, Outcome::Overloaded);
        }
        assert_eq!(
            limiter.limit(),
            14,
            "ten 429s of one overload: one cut, 16 x 0.9"
        );
        // The next window cuts again; the third in a row halves (the capacity fell).
        limiter.release(150, Outcome::Overloaded);
        assert_eq!(limiter.limit(), 12, "14.4 x 0.9");
        limiter.release(300, Outcome::Overloaded);
        assert_eq!(limiter.limit(), 6, "12.96 x 0.5");
        limiter.release(450, Outcome::TimedOut);
        assert_eq!(limiter.limit(), 5, "6.48 x 0.9");
        // Errors that say nothing about load leave it alone; the minimum holds.
        limiter.release(600, Outcome::Failed);
        assert_eq!(limiter.limit(), 5);
        for t in (750..3000).step_by(150) {
            limiter.release(t, Outcome::Overloaded);
        }
        assert_eq!(limiter.limit(), 1);
    }

    #[test]
    fn retry_after_freezes_the_endpoint_and_it_resumes_lower() {
        let config = LimiterConfig {
            initial: 10,
            ..LimiterConfig::default()
        };
        let mut limiter = Limiter::new(config, 0);
        assert!(limiter.try_acquire(0));
        limiter.retry_after(2000);
        limiter.release(5, Outcome::Failed);
        assert!(!limiter.try_acquire(10));
        assert!(!limiter.try_acquire(1999));
        assert_eq!(limiter.frozen_until(), Some(2000));
        assert!(limiter.try_acquire(2000));
        assert_eq!(limiter.limit(), 9, "10 x 0.9");
        assert_eq!(limiter.frozen_until(), None);
    }

    #[test]
    fn the_brake_shrinks_the_limit_when_latency_per_unit_climbs() {
        let config = LimiterConfig {
            initial: 20,
            ..LimiterConfig::default()
        };
        let mut limiter = Limiter::new(config, 0);
        let mut now = 0;
        // A long calm stretch: 10 ms per row.
        for _ in 0..600 {
            assert!(limiter.try_acquire(now));
            now += 1;
            limiter.release(
                now,
                Outcome::Answered {
                    latency: 40,
                    units: 4,
                },
            );
        }
        let calm = limiter.limit();
        // The server queues: 50 ms per row, no error at all.
        for _ in 0..140 {
            assert!(limiter.try_acquire(now));
            now += 2;
            limiter.release(
                now,
                Outcome::Answered {
                    latency: 200,
                    units: 4,
                },
            );
        }
        assert!(limiter.limit() < calm, "{} then {}", calm, limiter.limit());
        // Bigger requests that take longer in total but not per row are no load signal.
        let mut other = Limiter::new(config, 0);
        let mut now = 0;
        for size in (0..800).map(|i| 1 + i % 8) {
            assert!(other.try_acquire(now));
            now += 1;
            other.release(
                now,
                Outcome::Answered {
                    latency: 10 * size,
                    units: size,
                },
            );
        }
        assert!(other.limit() >= 20, "{}", other.limit());
    }

    /// A server that serves `capacity` requests at once in `service` ms each and answers
    /// 429 after 5 ms to any beyond; requests in flight carry over from one run to the next.
    #[derive(Default)]
    struct RejectingServer {
        serving: VecDeque<Millis>,
        rejecting: VecDeque<Millis>,
    }

    impl RejectingServer {
        /// The limiter sends whenever it may, over `time` (ms); returns (answered, rejected).
        fn run(
            &mut self,
            limiter: &mut Limiter,
            capacity: impl Fn(Millis) -> usize,
            service: Millis,
            time: std::ops::Range<Millis>,
        ) -> (u64, u64) {
            let (mut answered, mut rejected) = (0, 0);
            for now in time {
                while self.serving.front().is_some_and(|&done| done <= now) {
                    self.serving.pop_front();
                    limiter.release(
                        now,
                        Outcome::Answered {
                            latency: service,
                            units: 1,
                        },
                    );
                    answered += 1;
                }
                while self.rejecting.front().is_some_and(|&done| done <= now) {
                    self.rejecting.pop_front();
                    limiter.release(now, Outcome::Overloaded);
                    rejected += 1;
                }
                while limiter.try_acquire(now) {
                    if self.serving.len() < capacity(now) {
                        self.serving.push_back(now + service);
                    } else {
                        self.rejecting.push_back(now + 5);
                    }
                }
            }
            (answered, rejected)
        }
    }

    #[test]
    fn against_a_server_that_rejects_above_eight_it_keeps_the_capacity_busy_with_few_rejections() {
        let mut limiter = Limiter::new(LimiterConfig::default(), 0);
        let (answered, rejected) =
            RejectingServer::default().run(&mut limiter, |_| 8, 100, 0..60_000);
        // Ideal: 8 at a time, 100 ms each, for 60 s.
        let ideal = 8 * 600;
        let share = answered as f64 / ideal as f64;
        let rejected_share = rejected as f64 / (answered + rejected) as f64;
        assert!(share >= 0.75, "{answered} of {ideal} answered");
        assert!(
            rejected_share < 0.05,
            "{rejected} rejected of {}",
            answered + rejected
        );
    }

    #[test]
    fn when_capacity_changes_the_limit_follows() {
        let mut limiter = Limiter::new(LimiterConfig::default(), 0);
        let capacity = |now: Millis| match now {
            0..20_000 => 8,
            20_000..40_000 => 4,
            _ => 12,
        };
        let mut server = RejectingServer::default();
        // Within 5 s of each change (and of the start), the limit is within 25% of the new
        // capacity, the design's target; then it stays there.
        for (change, capacity_now) in [(0u64, 8usize), (20_000, 4), (40_000, 12)] {
            server.run(&mut limiter, capacity, 100, change..change + 5_000);
            let low = (capacity_now as f64 * 0.75).floor() as usize;
            let high = (capacity_now as f64 * 1.25).ceil() as usize;
            let settled = limiter.limit();
            assert!(
                (low..=high).contains(&settled),
                "{settled} 5 s after capacity became {capacity_now}"
            );
            server.run(&mut limiter, capacity, 100, change + 5_000..change + 20_000);
            let later = limiter.limit();
            assert!(
                (low..=high).contains(&later),
                "{later} with capacity {capacity_now}"
            );
        }
    }

    /// A server that serves `capacity` requests at once in `service` ms each and queues
    /// the rest (no rejection, as vLLM and Triton do); returns (answered, latencies).
    fn against_a_queueing_server(
        limiter: &mut Limiter,
        capacity: usize,
        service: Millis,
        duration: Millis,
    ) -> (u64, Vec<Millis>) {
        // (sent, done) of requests being served, and send times of those queued.
        let mut serving: VecDeque<(Millis, Millis)> = VecDeque::new();
        let mut queued: VecDeque<Millis> = VecDeque::new();
        let mut latencies = Vec::new();
        for now in 0..duration {
            while serving.front().is_some_and(|&(_, done)| done <= now) {
                let (sent, _) = serving.pop_front().unwrap();
                latencies.push(now - sent);
                limiter.release(
                    now,
                    Outcome::Answered {
                        latency: now - sent,
                        units: 1,
                    },
                );
            }
            while serving.len() < capacity
                && let Some(sent) = queued.pop_front()
            {
                serving.push_back((sent, now + service));
            }
            while limiter.try_acquire(now) {
                if serving.len() < capacity {
                    serving.push_back((now, now + service));
                } else {
                    queued.push_back(now);
                }
            }
        }
        (latencies.len() as u64, latencies)
    }

    #[test]
    fn against_a_server_that_queues_the_brake_keeps_latency_near_the_unloaded() {
        let mut limiter = Limiter::new(LimiterConfig::default(), 0);
        let (answered, mut latencies) = against_a_queueing_server(&mut limiter, 8, 100, 60_000);
        let ideal = 8 * 600;
        latencies.sort_unstable();
        let p95 = latencies[latencies.len() * 95 / 100];
        assert!(
            answered as f64 >= 0.9 * ideal as f64,
            "{answered} of {ideal}"
        );
        assert!(p95 <= 200, "p95 latency {p95} ms, unloaded 100 ms");
    }
}
