//! The tracker's decisions over every interleaving of events, up to a bound.
//!
//! A small model walks all sequences of triggers (by time), acknowledgements (of the current
//! attempt and of a stale one), declines, finished and failed tasks, restarts, and metadata
//! writes that succeed or fail, for two tasks under several configurations. After every
//! event the decisions are checked against invariants that say what exactly-once needs of
//! the coordinator:
//!
//! - a checkpoint is persisted only once every task running at its trigger acknowledged it
//!   in the same attempt (or finished), and is complete only after its metadata is durable;
//! - no checkpoint completes or aborts twice, completed ids only grow, ids are never reused;
//! - no more periodic checkpoints are in progress than allowed;
//! - the job fails exactly when more consecutive checkpoints failed than tolerated, and
//!   nothing is decided after that;
//! - a checkpoint every task acknowledged is never left waiting.
//!
//! States already explored are skipped, so the walk covers the whole bounded space quickly.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use riffle_state::{
    Attempt, CheckpointId, CheckpointKind, Decision, Event, Millis, TaskId, Tracker, TrackerConfig,
};

const TASKS: [TaskId; 2] = [
    TaskId {
        vertex: 0,
        subtask: 0,
    },
    TaskId {
        vertex: 1,
        subtask: 0,
    },
];
const INTERVAL: Millis = 10;
const TIMEOUT: Millis = 25;
const MAX_TIME: Millis = 50;
const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Outcome {
    Completed,
    Aborted,
}

/// What the test knows independently of the tracker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Model {
    now: Millis,
    attempt: Attempt,
    running: bool,
    failed_job: bool,
    finished: BTreeSet<TaskId>,
    /// Per checkpoint: the attempt it was triggered in, its kind, and who must acknowledge.
    triggered: BTreeMap<CheckpointId, (Attempt, CheckpointKind, BTreeSet<TaskId>)>,
    acked: BTreeMap<CheckpointId, BTreeSet<TaskId>>,
    persist_asked: BTreeSet<CheckpointId>,
    outcome: BTreeMap<CheckpointId, Outcome>,
    max_completed: Option<CheckpointId>,
    counted_failures: u32,
    final_requested: bool,
}

impl Model {
    fn unresolved(&self) -> impl Iterator<Item = CheckpointId> + '_ {
        self.triggered
            .keys()
            .copied()
            .filter(|id| !self.outcome.contains_key(id))
    }
}

fn candidate_events(model: &Model) -> Vec<Event> {
    let mut events = Vec::new();
    if model.failed_job {
        return events;
    }
    if model.now + INTERVAL <= MAX_TIME {
        events.push(Event::Tick {
            now: model.now + INTERVAL,
        });
    }
    if !model.running {
        events.push(Event::Restarted {
            attempt: model.attempt + 1,
            now: model.now,
        });
        return events;
    }
    let ids: Vec<CheckpointId> = model.triggered.keys().copied().collect();
    for &id in &ids {
        for task in TASKS {
            events.push(Event::Ack {
                id,
                task,
                attempt: model.attempt,
            });
            if model.attempt > 1 {
                events.push(Event::Ack {
                    id,
                    task,
                    attempt: model.attempt - 1,
                });
            }
        }
        events.push(Event::Decline {
            id,
            task: TASKS[1],
            attempt: model.attempt,
            reason: "declined".into(),
        });
    }
    for &id in &model.persist_asked {
        if !model.outcome.contains_key(&id) {
            events.push(Event::Persisted { id, now: model.now });
            events.push(Event::PersistFailed {
                id,
                now: model.now,
                reason: "store down".into(),
            });
        }
    }
    for task in TASKS {
        if !model.finished.contains(&task) {
            events.push(Event::TaskFinished {
                task,
                attempt: model.attempt,
            });
        }
    }
    if model.attempt < 3 {
        events.push(Event::TaskFailed {
            task: TASKS[0],
            attempt: model.attempt,
        });
    }
    if !model.final_requested {
        events.push(Event::Request {
            kind: CheckpointKind::Final,
            now: model.now,
        });
    }
    events
}

/// Applies `event` to the model, checks the tracker's `decisions` against the invariants.
fn check(config: &TrackerConfig, model: &mut Model, event: &Event, decisions: &[Decision]) {
    // A macro, not a closure: it reads the model where it is used, and only on failure.
    macro_rules! context {
        () => {
            format!("after {event:?} in {model:?}: {decisions:?}")
        };
    }
    assert!(
        !model.failed_job || decisions.is_empty(),
        "decided after the job failed: {}",
        context!()
    );
    // What the event tells the model.
    let mut counts_as_failure: Option<CheckpointId> = None;
    match event {
        Event::Tick { now } => model.now = *now,
        Event::Request { .. } => model.final_requested = true,
        Event::Ack { id, task, attempt } => {
            if *attempt == model.attempt
                && model
                    .triggered
                    .get(id)
                    .is_some_and(|(a, _, _)| a == attempt)
            {
                model.acked.entry(*id).or_default().insert(*task);
            }
        }
        Event::Decline { id, .. } => counts_as_failure = Some(*id),
        Event::TaskFinished { task, .. } => {
            model.finished.insert(*task);
        }
        Event::TaskFailed { .. } => model.running = false,
        Event::Restarted { attempt, .. } => {
            model.attempt = *attempt;
            model.running = true;
            model.finished.clear();
        }
        Event::Persisted { .. } => {}
        Event::PersistFailed { id, .. } => counts_as_failure = Some(*id),
    }
    for decision in decisions {
        match decision {
            Decision::Trigger { id, kind, attempt } => {
                assert!(
                    model.triggered.keys().all(|old| old < id),
                    "id {id} reused or out of order: {}",
                    context!()
                );
                assert_eq!(*attempt, model.attempt, "{}", context!());
                let expected: BTreeSet<TaskId> = TASKS
                    .iter()
                    .copied()
                    .filter(|t| !model.finished.contains(t))
                    .collect();
                model.triggered.insert(*id, (*attempt, *kind, expected));
                let periodic = model
                    .unresolved()
                    .filter(|id| model.triggered[id].1 == CheckpointKind::Periodic)
                    .count();
                assert!(
                    periodic <= config.max_concurrent,
                    "too many at once: {}",
                    context!()
                );
            }
            Decision::Persist { id } => {
                let (attempt, _, expected) = &model.triggered[id];
                assert_eq!(*attempt, model.attempt, "{}", context!());
                let acked = model.acked.get(id).cloned().unwrap_or_default();
                for task in expected {
                    assert!(
                        acked.contains(task) || model.finished.contains(task),
                        "persisted before {task:?} acknowledged: {}",
                        context!()
                    );
                }
                assert!(model.persist_asked.insert(*id), "{}", context!());
            }
            Decision::NotifyComplete { id, .. } => {
                assert!(
                    matches!(event, Event::Persisted { id: p, .. } if p == id),
                    "complete without durable metadata: {}",
                    context!()
                );
                assert!(model.persist_asked.contains(id), "{}", context!());
                assert!(
                    model.outcome.insert(*id, Outcome::Completed).is_none(),
                    "resolved twice: {}",
                    context!()
                );
                assert!(
                    model.max_completed.is_none_or(|max| max < *id),
                    "completed ids must grow: {}",
                    context!()
                );
                model.max_completed = Some(*id);
                model.counted_failures = 0;
            }
            Decision::Abort { id, .. } => {
                assert!(
                    model.outcome.insert(*id, Outcome::Aborted).is_none(),
                    "resolved twice: {}",
                    context!()
                );
                let timed_out = matches!(event, Event::Tick { .. });
                if counts_as_failure == Some(*id) || timed_out {
                    model.counted_failures += 1;
                }
            }
            Decision::FailJob { .. } => {
                assert!(
                    model.counted_failures > config.tolerable_failures,
                    "failed the job early: {}",
                    context!()
                );
                model.failed_job = true;
            }
        }
    }
    if !model.failed_job {
        assert!(
            model.counted_failures <= config.tolerable_failures,
            "should have failed the job: {}",
            context!()
        );
    }
    // Nothing is left waiting: a checkpoint of the running attempt that everyone
    // acknowledged has been sent to persist.
    if model.running && !model.failed_job {
        for id in model.unresolved().collect::<Vec<_>>() {
            let (attempt, _, expected) = &model.triggered[&id];
            if *attempt != model.attempt {
                continue;
            }
            let acked = model.acked.get(&id).cloned().unwrap_or_default();
            if expected
                .iter()
                .all(|t| acked.contains(t) || model.finished.contains(t))
            {
                assert!(
                    model.persist_asked.contains(&id),
                    "checkpoint {id} stuck: {}",
                    context!()
                );
            }
        }
    }
    // A stopped attempt has nothing in progress.
    if !model.running {
        assert_eq!(model.unresolved().count(), 0, "{}", context!());
    }
}

fn explore(config: TrackerConfig) -> usize {
    let tracker = Tracker::new(config.clone(), TASKS, 1, 1, 0);
    let model = Model {
        attempt: 1,
        running: true,
        ..Model::default()
    };
    let mut seen: HashSet<(Tracker, Model)> = HashSet::new();
    let mut stack = vec![(tracker, model, 0usize)];
    while let Some((tracker, model, depth)) = stack.pop() {
        if depth == MAX_DEPTH || !seen.insert((tracker.clone(), model.clone())) {
            continue;
        }
        for event in candidate_events(&model) {
            let mut tracker = tracker.clone();
            let mut model = model.clone();
            let decisions = tracker.on_event(event.clone());
            check(&config, &mut model, &event, &decisions);
            stack.push((tracker, model, depth + 1));
        }
    }
    seen.len()
}

#[test]
fn every_interleaving_keeps_the_invariants() {
    let mut explored = 0;
    for max_concurrent in [1, 2] {
        for tolerable_failures in [0, 1] {
            for min_pause in [0, 5] {
                let config = TrackerConfig {
                    interval: Some(INTERVAL),
                    timeout: TIMEOUT,
                    min_pause,
                    max_concurrent,
                    tolerable_failures,
                };
                explored += explore(config);
            }
        }
    }
    // The walk really branched (guards against a candidate generator that yields nothing).
    println!("explored {explored} states");
    assert!(explored > 10_000, "explored only {explored} states");
}
