//! The checkpoint tracker: the coordinator's decisions, as a state machine fed with events.
//!
//! One checkpoint goes through these steps:
//!
//! 1. **Trigger.** On a [`Event::Tick`] the tracker decides whether a periodic checkpoint is
//!    due: the interval has passed since the last trigger, the minimum pause has passed
//!    since the last checkpoint ended, and fewer than `max_concurrent` are in progress.
//!    Savepoints and the final checkpoint of a bounded job ([`Event::Request`]) start at
//!    once. Ids are never reused, also across restarts, so that a sink's files named after
//!    a checkpoint cannot collide with a failed attempt's.
//! 2. **Acknowledge.** Every task that was running at the trigger acknowledges it once its
//!    state is uploaded. A task that finishes (FLIP-147) counts as acknowledged. Messages of
//!    an older attempt are ignored: after a restart, a zombie task cannot complete anything.
//! 3. **Persist.** When every task acknowledged, the coordinator writes the checkpoint's
//!    metadata ([`Decision::Persist`]); only once that is durable ([`Event::Persisted`]) is
//!    the checkpoint complete and the tasks are told ([`Decision::NotifyComplete`]): a sink
//!    publishes data only for a checkpoint a restore would find.
//! 4. **Abort.** A decline, a timeout or a failed metadata write aborts the checkpoint and
//!    counts as a failure; more than `tolerable_failures` in a row fail the job (Flink's
//!    `tolerable-failed-checkpoints`). A failed task aborts every pending checkpoint without
//!    counting (the job restarts anyway). A completed checkpoint subsumes older pending
//!    ones, which are aborted without counting.

use std::collections::{BTreeMap, BTreeSet};

/// Identifies a checkpoint; ids grow and are never reused within a job.
pub type CheckpointId = u64;

/// Counts the (re)starts of a job: messages of an older attempt are stale.
pub type Attempt = u64;

/// Milliseconds on the coordinator's clock.
pub type Millis = u64;

/// One subtask of one vertex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// The vertex.
    pub vertex: usize,
    /// The subtask of that vertex.
    pub subtask: usize,
}

impl TaskId {
    /// Subtask `subtask` of vertex `vertex`.
    pub fn new(vertex: usize, subtask: usize) -> Self {
        Self { vertex, subtask }
    }
}

/// Why a checkpoint is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointKind {
    /// On the interval.
    Periodic,
    /// Asked for by the user; kept apart from retention.
    Savepoint,
    /// The last one of a bounded job, after every source ended: it commits the last data.
    Final,
}

/// The coordinator's settings, from `execution.checkpointing.*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrackerConfig {
    /// Time between periodic triggers; `None` takes no periodic checkpoints.
    pub interval: Option<Millis>,
    /// A checkpoint not complete after this long is aborted.
    pub timeout: Millis,
    /// Least time between the end of one checkpoint and the next trigger.
    pub min_pause: Millis,
    /// Periodic checkpoints in progress at once at most (at least 1).
    pub max_concurrent: usize,
    /// Consecutive failed checkpoints tolerated; one more fails the job.
    pub tolerable_failures: u32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            interval: None,
            timeout: 600_000,
            min_pause: 0,
            max_concurrent: 1,
            tolerable_failures: 0,
        }
    }
}

/// What the coordinator saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Time passed: triggers and timeouts are due.
    Tick {
        /// The clock now.
        now: Millis,
    },
    /// A savepoint or the final checkpoint is wanted now.
    Request {
        /// Savepoint or final.
        kind: CheckpointKind,
        /// The clock now.
        now: Millis,
    },
    /// A task's state for checkpoint `id` is uploaded.
    Ack {
        /// The checkpoint.
        id: CheckpointId,
        /// Which task.
        task: TaskId,
        /// The attempt the task runs in.
        attempt: Attempt,
    },
    /// A task could not take checkpoint `id`.
    Decline {
        /// The checkpoint.
        id: CheckpointId,
        /// Which task.
        task: TaskId,
        /// The attempt the task runs in.
        attempt: Attempt,
        /// Why, for the report.
        reason: String,
    },
    /// A task ended its work: it counts as acknowledged from now on.
    TaskFinished {
        /// Which task.
        task: TaskId,
        /// The attempt the task ran in.
        attempt: Attempt,
    },
    /// A task failed: the job is stopping this attempt.
    TaskFailed {
        /// Which task.
        task: TaskId,
        /// The attempt the task ran in.
        attempt: Attempt,
    },
    /// The job runs again, as `attempt`, from a restored checkpoint or from the start.
    Restarted {
        /// The new attempt (greater than every earlier one).
        attempt: Attempt,
        /// The clock now.
        now: Millis,
    },
    /// The metadata of checkpoint `id` is durable.
    Persisted {
        /// The checkpoint.
        id: CheckpointId,
        /// The clock now.
        now: Millis,
    },
    /// Writing the metadata of checkpoint `id` failed.
    PersistFailed {
        /// The checkpoint.
        id: CheckpointId,
        /// The clock now.
        now: Millis,
        /// Why, for the report.
        reason: String,
    },
}

/// What the coordinator must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Tell the sources to inject barrier `id`.
    Trigger {
        /// The new checkpoint.
        id: CheckpointId,
        /// Why it is taken.
        kind: CheckpointKind,
        /// The attempt it belongs to.
        attempt: Attempt,
    },
    /// Every task acknowledged `id`: write its metadata (last, atomically), then report
    /// [`Event::Persisted`] or [`Event::PersistFailed`].
    Persist {
        /// The checkpoint.
        id: CheckpointId,
    },
    /// `id` is complete: tell the tasks (sinks publish) and apply retention.
    NotifyComplete {
        /// The checkpoint.
        id: CheckpointId,
        /// Why it was taken.
        kind: CheckpointKind,
    },
    /// `id` will not complete: tell the tasks to drop what they prepared for it.
    Abort {
        /// The checkpoint.
        id: CheckpointId,
        /// Why, for the report.
        reason: String,
    },
    /// Too many checkpoints failed in a row.
    FailJob {
        /// Why, for the job's error.
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Pending {
    kind: CheckpointKind,
    triggered_at: Millis,
    awaiting: BTreeSet<TaskId>,
    persisting: bool,
}

/// The checkpoint coordinator's state and decisions; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tracker {
    config: TrackerConfig,
    tasks: BTreeSet<TaskId>,
    attempt: Attempt,
    /// Whether the current attempt is running (false between a failure and the restart).
    running: bool,
    next_id: CheckpointId,
    pending: BTreeMap<CheckpointId, Pending>,
    finished: BTreeSet<TaskId>,
    /// When the last periodic checkpoint was triggered, or the attempt started.
    last_trigger_at: Millis,
    /// When the last checkpoint completed or was aborted.
    last_end_at: Option<Millis>,
    consecutive_failures: u32,
    latest_completed: Option<CheckpointId>,
    failed: bool,
}

impl Tracker {
    /// A tracker for a job of `tasks`, running as `attempt` from `now`; its first checkpoint
    /// is `first_id` (one past the newest id of a restored job, so ids are never reused).
    pub fn new(
        config: TrackerConfig,
        tasks: impl IntoIterator<Item = TaskId>,
        attempt: Attempt,
        first_id: CheckpointId,
        now: Millis,
    ) -> Self {
        let config = TrackerConfig {
            max_concurrent: config.max_concurrent.max(1),
            ..config
        };
        Self {
            config,
            tasks: tasks.into_iter().collect(),
            attempt,
            running: true,
            next_id: first_id,
            pending: BTreeMap::new(),
            finished: BTreeSet::new(),
            last_trigger_at: now,
            last_end_at: None,
            consecutive_failures: 0,
            latest_completed: None,
            failed: false,
        }
    }

    /// The attempt now running.
    pub fn attempt(&self) -> Attempt {
        self.attempt
    }

    /// The newest completed checkpoint of this tracker's life.
    pub fn latest_completed(&self) -> Option<CheckpointId> {
        self.latest_completed
    }

    /// The checkpoints in progress, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = CheckpointId> + '_ {
        self.pending.keys().copied()
    }

    /// Failed checkpoints since the last completed one.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The earliest time a [`Event::Tick`] can decide something (a trigger or a timeout),
    /// so that the coordinator sleeps until then.
    pub fn next_deadline(&self) -> Option<Millis> {
        if self.failed || !self.running {
            return None;
        }
        let timeouts = self
            .pending
            .values()
            .map(|pending| pending.triggered_at.saturating_add(self.config.timeout));
        // A trigger that cannot fire yet (checkpoints in progress at their maximum, the
        // one-at-a-time rule of a minimum pause, every task finished) is no deadline: the
        // end of a checkpoint is an event of its own, and a deadline already passed would
        // have the coordinator wake without end.
        let periodic_in_progress = self
            .pending
            .values()
            .filter(|p| p.kind == CheckpointKind::Periodic)
            .count();
        let can_trigger = self.finished.len() < self.tasks.len()
            && periodic_in_progress < self.config.max_concurrent
            && (self.config.min_pause == 0 || self.pending.is_empty());
        let trigger = self
            .config
            .interval
            .filter(|_| can_trigger)
            .map(|interval| {
                let after_interval = self.last_trigger_at.saturating_add(interval);
                let after_pause = self
                    .last_end_at
                    .map_or(0, |end| end.saturating_add(self.config.min_pause));
                after_interval.max(after_pause)
            });
        timeouts.chain(trigger).min()
    }

    /// Feeds one event; returns what to do, in order.
    pub fn on_event(&mut self, event: Event) -> Vec<Decision> {
        if self.failed {
            return Vec::new();
        }
        let mut decisions = Vec::new();
        match event {
            Event::Tick { now } => {
                self.expire(now, &mut decisions);
                if self.periodic_due(now) {
                    self.last_trigger_at = now;
                    self.trigger(CheckpointKind::Periodic, now, &mut decisions);
                }
            }
            Event::Request { kind, now } => {
                if self.running {
                    self.trigger(kind, now, &mut decisions);
                }
            }
            Event::Ack { id, task, attempt } => {
                if self.is_current(task, attempt) {
                    self.acknowledge(id, task, &mut decisions);
                }
            }
            Event::Decline {
                id,
                task,
                attempt,
                reason,
            } => {
                if self.is_current(task, attempt) && self.pending.contains_key(&id) {
                    let reason = format!(
                        "vertex {} subtask {} declined it: {reason}",
                        task.vertex, task.subtask
                    );
                    self.fail_checkpoint(id, reason, None, &mut decisions);
                }
            }
            Event::TaskFinished { task, attempt } => {
                if self.is_current(task, attempt) {
                    self.finished.insert(task);
                    let ids: Vec<CheckpointId> = self.pending.keys().copied().collect();
                    for id in ids {
                        self.acknowledge(id, task, &mut decisions);
                    }
                }
            }
            Event::TaskFailed { task, attempt } => {
                if self.is_current(task, attempt) {
                    self.running = false;
                    let ids: Vec<CheckpointId> = self.pending.keys().copied().collect();
                    for id in ids {
                        self.pending.remove(&id);
                        decisions.push(Decision::Abort {
                            id,
                            reason: format!(
                                "vertex {} subtask {} failed",
                                task.vertex, task.subtask
                            ),
                        });
                    }
                }
            }
            Event::Restarted { attempt, now } => {
                if attempt > self.attempt {
                    self.attempt = attempt;
                    self.running = true;
                    self.finished.clear();
                    self.last_trigger_at = now;
                    for id in std::mem::take(&mut self.pending).into_keys() {
                        decisions.push(Decision::Abort {
                            id,
                            reason: "the job restarted".into(),
                        });
                    }
                }
            }
            Event::Persisted { id, now } => {
                if self.pending.get(&id).is_some_and(|p| p.persisting) {
                    self.complete(id, now, &mut decisions);
                }
            }
            Event::PersistFailed { id, now, reason } => {
                if self.pending.get(&id).is_some_and(|p| p.persisting) {
                    let reason = format!("writing its metadata failed: {reason}");
                    self.fail_checkpoint(id, reason, Some(now), &mut decisions);
                }
            }
        }
        decisions
    }

    fn is_current(&self, task: TaskId, attempt: Attempt) -> bool {
        self.running && attempt == self.attempt && self.tasks.contains(&task)
    }

    fn periodic_due(&self, now: Millis) -> bool {
        let Some(interval) = self.config.interval else {
            return false;
        };
        if !self.running || self.finished.len() == self.tasks.len() {
            return false;
        }
        let periodic_in_progress = self
            .pending
            .values()
            .filter(|p| p.kind == CheckpointKind::Periodic)
            .count();
        let paused = self
            .last_end_at
            .is_some_and(|end| now < end.saturating_add(self.config.min_pause));
        // With a minimum pause, the next checkpoint waits for the previous one to end
        // (Flink: min-pause implies one checkpoint at a time).
        let one_at_a_time = self.config.min_pause > 0 && !self.pending.is_empty();
        periodic_in_progress < self.config.max_concurrent
            && now >= self.last_trigger_at.saturating_add(interval)
            && !paused
            && !one_at_a_time
    }

    fn trigger(&mut self, kind: CheckpointKind, now: Millis, decisions: &mut Vec<Decision>) {
        let id = self.next_id;
        self.next_id += 1;
        let awaiting: BTreeSet<TaskId> = self.tasks.difference(&self.finished).copied().collect();
        let persisting = awaiting.is_empty();
        self.pending.insert(
            id,
            Pending {
                kind,
                triggered_at: now,
                awaiting,
                persisting,
            },
        );
        decisions.push(Decision::Trigger {
            id,
            kind,
            attempt: self.attempt,
        });
        if persisting {
            decisions.push(Decision::Persist { id });
        }
    }

    fn acknowledge(&mut self, id: CheckpointId, task: TaskId, decisions: &mut Vec<Decision>) {
        let Some(pending) = self.pending.get_mut(&id) else {
            return;
        };
        pending.awaiting.remove(&task);
        if pending.awaiting.is_empty() && !pending.persisting {
            pending.persisting = true;
            decisions.push(Decision::Persist { id });
        }
    }

    fn complete(&mut self, id: CheckpointId, now: Millis, decisions: &mut Vec<Decision>) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        self.latest_completed = Some(id);
        self.consecutive_failures = 0;
        self.last_end_at = Some(now);
        let older: Vec<CheckpointId> = self.pending.range(..id).map(|(id, _)| *id).collect();
        for old in older {
            self.pending.remove(&old);
            decisions.push(Decision::Abort {
                id: old,
                reason: format!("subsumed by checkpoint {id}"),
            });
        }
        decisions.push(Decision::NotifyComplete {
            id,
            kind: pending.kind,
        });
    }

    fn expire(&mut self, now: Millis, decisions: &mut Vec<Decision>) {
        let timeout = self.config.timeout;
        let expired: Vec<CheckpointId> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.triggered_at.saturating_add(timeout))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let reason = format!("not complete after the timeout of {timeout} ms");
            self.fail_checkpoint(id, reason, Some(now), decisions);
        }
    }

    fn fail_checkpoint(
        &mut self,
        id: CheckpointId,
        reason: String,
        now: Option<Millis>,
        decisions: &mut Vec<Decision>,
    ) {
        if self.pending.remove(&id).is_none() {
            return;
        }
        if let Some(now) = now {
            self.last_end_at = Some(now);
        }
        self.consecutive_failures += 1;
        let message = format!("checkpoint {id} failed: {reason}");
        decisions.push(Decision::Abort { id, reason });
        if self.consecutive_failures > self.config.tolerable_failures {
            self.failed = true;
            decisions.push(Decision::FailJob {
                reason: format!(
                    "{message}; {} checkpoint(s) failed in a row, more than \
                     execution.checkpointing.tolerable-failed-checkpoints = {}",
                    self.consecutive_failures, self.config.tolerable_failures
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_tasks(config: TrackerConfig) -> Tracker {
        Tracker::new(config, [TaskId::new(0, 0), TaskId::new(0, 1)], 1, 1, 0)
    }

    fn every(interval: Millis) -> TrackerConfig {
        TrackerConfig {
            interval: Some(interval),
            ..TrackerConfig::default()
        }
    }

    fn ack(id: CheckpointId, subtask: usize) -> Event {
        Event::Ack {
            id,
            task: TaskId::new(0, subtask),
            attempt: 1,
        }
    }

    #[test]
    fn a_checkpoint_completes_after_every_ack_and_its_metadata() {
        let mut tracker = two_tasks(every(100));
        assert!(tracker.on_event(Event::Tick { now: 99 }).is_empty());
        assert_eq!(
            tracker.on_event(Event::Tick { now: 100 }),
            vec![Decision::Trigger {
                id: 1,
                kind: CheckpointKind::Periodic,
                attempt: 1
            }]
        );
        assert!(tracker.on_event(ack(1, 0)).is_empty());
        assert!(tracker.on_event(ack(1, 0)).is_empty(), "a repeated ack");
        assert_eq!(
            tracker.on_event(ack(1, 1)),
            vec![Decision::Persist { id: 1 }]
        );
        assert_eq!(
            tracker.on_event(Event::Persisted { id: 1, now: 120 }),
            vec![Decision::NotifyComplete {
                id: 1,
                kind: CheckpointKind::Periodic
            }]
        );
        assert_eq!(tracker.latest_completed(), Some(1));
    }

    #[test]
    fn stale_attempts_cannot_acknowledge() {
        let mut tracker = two_tasks(every(100));
        tracker.on_event(Event::TaskFailed {
            task: TaskId::new(0, 0),
            attempt: 1,
        });
        tracker.on_event(Event::Restarted { attempt: 2, now: 0 });
        tracker.on_event(Event::Tick { now: 100 });
        for subtask in 0..2 {
            assert!(tracker.on_event(ack(1, subtask)).is_empty());
        }
        assert_eq!(tracker.pending().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_trigger_that_cannot_fire_is_no_deadline() {
        let mut tracker = two_tasks(TrackerConfig {
            timeout: 1_000,
            ..every(10)
        });
        assert_eq!(tracker.on_event(Event::Tick { now: 10 }).len(), 1);
        // One checkpoint in progress, one at most: the next deadline is its timeout, not
        // the interval (which has passed, and would wake the coordinator without end).
        assert_eq!(tracker.next_deadline(), Some(1_010));
        tracker.on_event(ack(1, 0));
        tracker.on_event(ack(1, 1));
        tracker.on_event(Event::Persisted { id: 1, now: 30 });
        assert_eq!(tracker.next_deadline(), Some(30), "due again");
    }

    #[test]
    fn min_pause_waits_for_the_end_of_the_previous_checkpoint() {
        let mut tracker = two_tasks(TrackerConfig {
            min_pause: 50,
            max_concurrent: 4,
            ..every(10)
        });
        assert_eq!(tracker.on_event(Event::Tick { now: 10 }).len(), 1);
        assert!(tracker.on_event(Event::Tick { now: 40 }).is_empty());
        tracker.on_event(ack(1, 0));
        tracker.on_event(ack(1, 1));
        tracker.on_event(Event::Persisted { id: 1, now: 60 });
        assert_eq!(tracker.next_deadline(), Some(110));
        assert!(tracker.on_event(Event::Tick { now: 109 }).is_empty());
        assert_eq!(tracker.on_event(Event::Tick { now: 110 }).len(), 1);
    }

    #[test]
    fn failures_beyond_the_tolerated_number_fail_the_job() {
        let mut tracker = two_tasks(TrackerConfig {
            tolerable_failures: 1,
            timeout: 30,
            ..every(100)
        });
        tracker.on_event(Event::Tick { now: 100 });
        let decisions = tracker.on_event(Event::Tick { now: 130 });
        assert!(matches!(
            decisions.as_slice(),
            [Decision::Abort { id: 1, .. }]
        ));
        tracker.on_event(Event::Tick { now: 230 });
        let decisions = tracker.on_event(Event::Decline {
            id: 2,
            task: TaskId::new(0, 1),
            attempt: 1,
            reason: "disk full".into(),
        });
        match decisions.as_slice() {
            [Decision::Abort { id: 2, .. }, Decision::FailJob { reason }] => {
                assert!(reason.contains("disk full"), "{reason}");
                assert!(
                    reason.contains("tolerable-failed-checkpoints = 1"),
                    "{reason}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn finished_tasks_count_as_acknowledged() {
        let mut tracker = two_tasks(every(100));
        tracker.on_event(Event::TaskFinished {
            task: TaskId::new(0, 0),
            attempt: 1,
        });
        tracker.on_event(Event::Tick { now: 100 });
        assert_eq!(
            tracker.on_event(ack(1, 1)),
            vec![Decision::Persist { id: 1 }]
        );
        let decisions = tracker.on_event(Event::Request {
            kind: CheckpointKind::Final,
            now: 150,
        });
        assert_eq!(decisions.len(), 1, "task 1 still has to acknowledge");
    }
}
