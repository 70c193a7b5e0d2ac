//! The checkpoint coordinator: one owner of a job's checkpoint state, fed with the tasks'
//! messages, deciding through [`riffle_state::Tracker`] and writing through
//! [`riffle_state::CheckpointStore`].
//!
//! It talks to tasks only by messages stamped with the attempt ([`ToTask`], [`FromTask`]),
//! so that cluster mode can put a network between them. Its I/O (state files, metadata,
//! retention) is awaited in its own loop: the tasks keep running meanwhile, and their
//! messages queue.
//!
//! A task that finished reports its final states; every later checkpoint records them
//! (FLIP-147), and the parts its sinks closed at the end of input are published by the
//! coordinator when such a checkpoint completes, or at the job's final checkpoint.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use riffle_common::{Result, RiffleError};
use riffle_plan::{Sink, StagedPart, VertexId};
use riffle_state::{
    CheckpointKind, CheckpointStore, Decision, Event, Metadata, OperatorEntry, TaskEntry, TaskId,
    Tracker,
};
use tokio::sync::{mpsc, oneshot};

use crate::chain::{FromTask, ToTask};
use crate::message::CheckpointId;
use crate::operator::OperatorState;
use crate::operators::SinkState;
use crate::settings::CheckpointSettings;

/// What identifies a job's graph in its checkpoints: a restore into another graph is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobIdentity {
    /// One line per vertex and edge, without parallelism.
    pub fingerprint: String,
    /// Each vertex's parallelism.
    pub parallelism: Vec<usize>,
    /// The pipeline regions, each as its `(vertex, subtask)` pairs (recorded in each
    /// checkpoint; see [`crate::regions`]).
    pub regions: Vec<Vec<(usize, usize)>>,
}

impl JobIdentity {
    /// The folder name of the job's checkpoints: a hash of its fingerprint, so that the
    /// same job run again finds its own checkpoints (and resumes), and another job does not.
    pub fn folder(&self) -> String {
        // FNV-1a: stable across Rust versions, unlike std's hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.fingerprint.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("job-{hash:016x}")
    }

    /// Refuses `metadata` of another job, saying what differs.
    pub fn check(&self, metadata: &Metadata, location: &str) -> Result<()> {
        if metadata.graph_fingerprint != self.fingerprint {
            let theirs: Vec<&str> = metadata.graph_fingerprint.lines().collect();
            let ours: Vec<&str> = self.fingerprint.lines().collect();
            let mut differences = Vec::new();
            for index in 0..theirs.len().max(ours.len()) {
                let (a, b) = (theirs.get(index), ours.get(index));
                if a != b {
                    differences.push(format!(
                        "checkpoint has {}, the job has {}",
                        a.map_or("nothing".to_string(), |s| format!("'{s}'")),
                        b.map_or("nothing".to_string(), |s| format!("'{s}'"))
                    ));
                }
            }
            return Err(RiffleError::user(format!(
                "checkpoint {} at {location} belongs to another job: {}",
                metadata.id,
                differences.join("; ")
            ))
            .with_hint("restore a checkpoint of this same query, or leave --from-checkpoint out to start afresh"));
        }
        if metadata.parallelism != self.parallelism {
            return Err(RiffleError::user(format!(
                "checkpoint {} at {location} was taken with vertex parallelism {:?}; the job now \
                 plans {:?}",
                metadata.id, metadata.parallelism, self.parallelism
            ))
            .with_hint(format!(
                "run it with the parallelism it was taken with (-p {})",
                metadata.parallelism.iter().max().copied().unwrap_or(1)
            )));
        }
        Ok(())
    }
}

/// The staged sinks of a job: per vertex, each sink operator's name and its sink.
pub(crate) type StagedSinks = HashMap<VertexId, Vec<(String, Arc<dyn Sink>)>>;

/// A sink and parts of it.
pub(crate) type SinkParts = (Arc<dyn Sink>, Vec<StagedPart>);

/// The staged parts recorded in `entry`'s sink states, by sink.
pub(crate) fn staged_parts(sinks: &StagedSinks, entry: &TaskEntry) -> Result<Vec<SinkParts>> {
    let mut found = Vec::new();
    for (name, sink) in sinks.get(&entry.vertex).into_iter().flatten() {
        if let Some(operator) = entry.operators.iter().find(|o| &o.name == name) {
            let state = SinkState::decode(&operator.inline, name)?;
            let parts = state.pending.into_iter().map(|(_, part)| part).collect();
            found.push((Arc::clone(sink), parts));
        }
    }
    Ok(found)
}

/// Publishes the parts of `entries`, one publication per sink (`last` at the job's end, where
/// an overwriting sink replaces the old files).
pub(crate) async fn publish_parts<'a>(
    sinks: &StagedSinks,
    entries: impl IntoIterator<Item = &'a TaskEntry>,
    last: bool,
) -> Result<()> {
    let mut by_sink: Vec<SinkParts> = Vec::new();
    for entry in entries {
        for (sink, parts) in staged_parts(sinks, entry)? {
            match by_sink.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &sink)) {
                Some((_, all)) => all.extend(parts),
                None => by_sink.push((sink, parts)),
            }
        }
    }
    for (sink, parts) in by_sink {
        if !parts.is_empty() || last {
            sink.publish(&parts, last).await.map_err(|e| {
                RiffleError::from(e).context(format!("publishing into {}", sink.target()))
            })?;
        }
    }
    Ok(())
}

/// A finished task's end states as the metadata records them. They hold no rows (operators
/// emitted theirs at the end), so nothing is uploaded: all is inline.
pub(crate) fn end_entry(task: TaskId, states: &[(String, OperatorState)]) -> TaskEntry {
    TaskEntry {
        vertex: task.vertex,
        subtask: task.subtask,
        operators: states
            .iter()
            .map(|(name, state)| OperatorEntry {
                name: name.clone(),
                inline: state.inline.clone(),
                file: None,
            })
            .collect(),
    }
}

/// A task's states as the metadata records them: rows go to state files, uploaded here.
async fn task_entry(
    store: &CheckpointStore,
    id: CheckpointId,
    task: TaskId,
    states: Vec<(String, OperatorState)>,
) -> Result<TaskEntry> {
    let mut operators = Vec::with_capacity(states.len());
    for (index, (name, state)) in states.into_iter().enumerate() {
        let file = if state.batches.is_empty() {
            None
        } else {
            let file_name = format!("v{}-s{}-o{index}", task.vertex, task.subtask);
            Some(
                store
                    .write_batches(id, &file_name, &state.batches)
                    .await
                    .map_err(|e| RiffleError::external(e.message))?,
            )
        };
        operators.push(OperatorEntry {
            name,
            inline: state.inline,
            file,
        });
    }
    Ok(TaskEntry {
        vertex: task.vertex,
        subtask: task.subtask,
        operators,
    })
}

/// Reads a task's states back from a checkpoint.
pub(crate) async fn restore_states(
    store: &CheckpointStore,
    metadata: &Metadata,
    task: TaskId,
) -> Result<Vec<(String, OperatorState)>> {
    let Some(entry) = metadata
        .tasks
        .iter()
        .find(|t| t.vertex == task.vertex && t.subtask == task.subtask)
    else {
        return Ok(Vec::new());
    };
    let mut states = Vec::with_capacity(entry.operators.len());
    for operator in &entry.operators {
        let batches = match &operator.file {
            Some(file) => store.read_batches(metadata.id, file).await.map_err(|e| {
                RiffleError::user(format!(
                    "checkpoint {} cannot be restored: {}",
                    metadata.id, e.message
                ))
            })?,
            None => Vec::new(),
        };
        states.push((
            operator.name.clone(),
            OperatorState {
                inline: operator.inline.clone(),
                batches,
            },
        ));
    }
    Ok(states)
}

/// The size of a checkpoint: its metadata (JSON, with the inline state) and its state files.
fn metadata_bytes(metadata: &Metadata) -> u64 {
    let json = serde_json::to_vec(metadata).map_or(0, |bytes| bytes.len() as u64);
    let files: u64 = metadata
        .tasks
        .iter()
        .flat_map(|task| &task.operators)
        .filter_map(|operator| operator.file.as_ref())
        .map(|file| file.size)
        .sum();
    json + files
}

/// What the coordinator tells the job's driver.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Checkpoint `id` completed: results up to its barrier may be released.
    Completed(CheckpointId),
    /// Too many checkpoints failed: the job fails over.
    Failed(RiffleError),
}

/// Checkpoints taken and failed, for the job's report.
#[derive(Debug, Clone, Default)]
pub struct CheckpointCounts {
    /// Checkpoints completed.
    pub completed: u64,
    /// Checkpoints aborted (declined, timed out, or lost to a failure).
    pub aborted: u64,
    /// The newest completed checkpoint, if any.
    pub latest: Option<CheckpointId>,
    /// Time from trigger to completion of each completed checkpoint, in order.
    pub durations: Vec<std::time::Duration>,
    /// Bytes of the newest completed checkpoint: metadata (with inline state) and files.
    pub latest_bytes: u64,
}

/// What the coordinator publishes for finished tasks, and when.
pub(crate) struct Publishing {
    /// The staged sinks, by vertex.
    pub(crate) sinks: StagedSinks,
    /// Whether a sink publishes only at the end (`sink.commit-mode = 'end'`, or OVERWRITE).
    pub(crate) end_mode: bool,
}

/// Where the coordinator starts.
pub(crate) struct Restore {
    /// The first checkpoint id to use (past every id in the job's folder).
    pub(crate) first_id: CheckpointId,
    /// The checkpoint restored, if any.
    pub(crate) metadata: Option<Metadata>,
}

/// The coordinator; see the module docs.
pub(crate) struct Coordinator {
    tracker: Tracker,
    store: CheckpointStore,
    settings: CheckpointSettings,
    identity: JobIdentity,
    sinks: StagedSinks,
    started: Instant,
    controls: BTreeMap<TaskId, mpsc::UnboundedSender<ToTask>>,
    sources: Vec<TaskId>,
    acks: BTreeMap<CheckpointId, BTreeMap<TaskId, TaskEntry>>,
    finished: BTreeMap<TaskId, TaskEntry>,
    /// Finished tasks whose parts are published (checkpoint mode).
    published: BTreeMap<TaskId, ()>,
    latest: Option<Metadata>,
    /// The store `latest` lives in: the job's own, or where a restored checkpoint was.
    latest_store: CheckpointStore,
    counts: CheckpointCounts,
    /// Every task of the job.
    tasks: Vec<TaskId>,
    /// The tasks whose end states the newest completed checkpoint records.
    latest_finished: BTreeSet<TaskId>,
    /// One past the newest checkpoint id used.
    next_id: CheckpointId,
    /// When each checkpoint in progress was triggered.
    triggered: BTreeMap<CheckpointId, Instant>,
    /// Why each checkpoint in progress was taken.
    kinds: BTreeMap<CheckpointId, CheckpointKind>,
    /// Whether a sink publishes only at the end (`sink.commit-mode = 'end'`, or OVERWRITE):
    /// finished tasks' parts then wait for the job's end.
    end_mode: bool,
    /// Savepoints taken on demand and not yet complete.
    savepoints: BTreeMap<CheckpointId, SavepointCopy>,
}

/// A savepoint taken on demand while the job runs on. It is a checkpoint of the job like
/// any other (it publishes, releases results, and a failover may restore it: a failover to
/// an older one would repeat what it published), and once complete it is copied into a
/// folder that retention and the job's end leave alone, for the user to restore with
/// `--from-checkpoint`. Flink since FLIP-193 instead keeps intermediate savepoints out of
/// failover and lets them commit nothing; with Riffle's staged parts that would leave the
/// savepoint's parts to a failed job's clean-up.
pub(crate) struct SavepointCopy {
    /// Where the copy goes: the job's folder under the savepoint directory.
    pub(crate) store: CheckpointStore,
    /// That folder, as the user names it.
    pub(crate) location: String,
    /// Who waits for the copy's path.
    pub(crate) reply: oneshot::Sender<Result<String>>,
}

impl Coordinator {
    pub(crate) fn new(
        settings: CheckpointSettings,
        store: CheckpointStore,
        identity: JobIdentity,
        publishing: Publishing,
        tasks: Vec<TaskId>,
        start: Restore,
    ) -> Self {
        let Restore {
            first_id,
            metadata: restored,
        } = start;
        let Publishing { sinks, end_mode } = publishing;
        let first_id = first_id.max(restored.as_ref().map_or(1, |m| m.id + 1));
        let attempt = 0;
        let started = Instant::now();
        Self {
            tracker: Tracker::new(
                settings.tracker.clone(),
                tasks.clone(),
                attempt,
                first_id,
                0,
            ),
            tasks,
            latest_finished: BTreeSet::new(),
            next_id: first_id,
            store: store.clone(),
            settings,
            identity,
            sinks,
            started,
            controls: BTreeMap::new(),
            sources: Vec::new(),
            acks: BTreeMap::new(),
            finished: BTreeMap::new(),
            published: BTreeMap::new(),
            latest: restored,
            latest_store: store.clone(),
            counts: CheckpointCounts::default(),
            kinds: BTreeMap::new(),
            triggered: BTreeMap::new(),
            end_mode,
            savepoints: BTreeMap::new(),
        }
    }

    /// Tells who waits for savepoint `id` that it will not complete, and why.
    fn fail_savepoint(&mut self, id: CheckpointId, reason: &str) {
        if let Some(savepoint) = self.savepoints.remove(&id) {
            let _ = savepoint.reply.send(Err(RiffleError::external(format!(
                "savepoint {id} did not complete: {reason}"
            ))));
        }
    }

    /// Copies completed savepoint `id` where the user asked for it; returns its path.
    async fn copy_savepoint(&self, id: CheckpointId, copy: &SavepointCopy) -> Result<String> {
        let metadata = self
            .latest
            .as_ref()
            .filter(|m| m.id == id)
            .ok_or_else(|| RiffleError::internal(format!("savepoint {id} has no metadata")))?;
        self.store
            .copy_checkpoint(metadata, &copy.store)
            .await
            .map_err(|e| RiffleError::external(e.message))?;
        Ok(format!(
            "{}/{}",
            copy.location.trim_end_matches('/'),
            riffle_state::store::checkpoint_folder(id)
        ))
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The checkpoint a restart restores: the newest completed one.
    pub(crate) fn latest(&self) -> Option<&Metadata> {
        self.latest.as_ref()
    }

    /// Where the checkpoint given to restore lives, when it is not the job's own folder.
    pub(crate) fn set_restore_store(&mut self, store: CheckpointStore) {
        self.latest_store = store;
    }

    /// Every task's states in the checkpoint a (re)start restores; empty without one.
    pub(crate) async fn restored_states(
        &self,
        tasks: &[TaskId],
    ) -> Result<HashMap<TaskId, Vec<(String, OperatorState)>>> {
        let mut states = HashMap::new();
        if let Some(metadata) = &self.latest {
            for task in tasks {
                states.insert(
                    *task,
                    restore_states(&self.latest_store, metadata, *task).await?,
                );
            }
        }
        Ok(states)
    }

    pub(crate) fn counts(&self) -> CheckpointCounts {
        self.counts.clone()
    }

    /// A new attempt's tasks run: their control channels, and which are sources.
    pub(crate) fn start_attempt(
        &mut self,
        attempt: u64,
        controls: BTreeMap<TaskId, mpsc::UnboundedSender<ToTask>>,
        sources: Vec<TaskId>,
    ) {
        self.controls = controls;
        self.sources = sources;
        self.finished.clear();
        self.published.clear();
        self.acks.clear();
        if attempt > 0 {
            let waiting: Vec<CheckpointId> = self.savepoints.keys().copied().collect();
            for id in waiting {
                self.fail_savepoint(id, "the job restarted");
            }
            // A fresh tracker: what was pending died with the failed attempt (its tasks are
            // gone), and a job that failed over on too many failed checkpoints starts
            // counting again, as in Flink. Ids go on growing.
            self.counts.aborted += self.tracker.pending().count() as u64;
            let tasks = self.tasks.clone();
            self.tracker = Tracker::new(
                self.settings.tracker.clone(),
                tasks,
                attempt,
                self.next_id,
                self.now(),
            );
        }
    }

    /// A task stopped because its consumers need no more rows (a LIMIT reached downstream):
    /// it counts as finished, with nothing to restore (a restored consumer that had enough
    /// stops it again at once).
    pub(crate) async fn task_gone(&mut self, task: TaskId) -> Vec<Outcome> {
        let attempt = self.tracker.attempt();
        self.on_message(FromTask::Finished {
            task: (task.vertex, task.subtask),
            attempt,
            states: Vec::new(),
        })
        .await
    }

    /// A task of the current attempt failed: pending checkpoints are aborted.
    pub(crate) fn task_failed(&mut self, task: TaskId) {
        let attempt = self.tracker.attempt();
        let decisions = self.tracker.on_event(Event::TaskFailed { task, attempt });
        for decision in decisions {
            if let Decision::Abort { id, reason } = decision {
                self.acks.remove(&id);
                self.counts.aborted += 1;
                self.fail_savepoint(id, &reason);
            }
        }
    }

    /// How long until the tracker has something to decide.
    pub(crate) fn next_deadline(&self) -> Option<std::time::Duration> {
        let deadline = self.tracker.next_deadline()?;
        Some(std::time::Duration::from_millis(
            deadline.saturating_sub(self.now()),
        ))
    }

    /// Time passed.
    pub(crate) async fn tick(&mut self) -> Vec<Outcome> {
        let now = self.now();
        let decisions = self.tracker.on_event(Event::Tick { now });
        self.apply(decisions).await
    }

    /// A message from a task.
    pub(crate) async fn on_message(&mut self, message: FromTask) -> Vec<Outcome> {
        let event = match message {
            FromTask::Ack {
                id,
                task,
                attempt,
                states,
            } => {
                let task = TaskId::new(task.0, task.1);
                if attempt != self.tracker.attempt() || !self.tracker.pending().any(|p| p == id) {
                    return Vec::new();
                }
                match task_entry(&self.store, id, task, states).await {
                    Ok(entry) => {
                        self.acks.entry(id).or_default().insert(task, entry);
                        Event::Ack { id, task, attempt }
                    }
                    Err(error) => Event::Decline {
                        id,
                        task,
                        attempt,
                        reason: format!("its state could not be written: {error}"),
                    },
                }
            }
            FromTask::Decline {
                id,
                task,
                attempt,
                reason,
            } => Event::Decline {
                id,
                task: TaskId::new(task.0, task.1),
                attempt,
                reason,
            },
            FromTask::Finished {
                task,
                attempt,
                states,
            } => {
                let task = TaskId::new(task.0, task.1);
                if attempt != self.tracker.attempt() {
                    return Vec::new();
                }
                // Finished tasks' states hold no rows (operators emitted them at the end),
                // so nothing is uploaded for them; a state file would need a checkpoint id.
                self.finished.insert(task, end_entry(task, &states));
                self.controls.remove(&task);
                Event::TaskFinished { task, attempt }
            }
        };
        let decisions = self.tracker.on_event(event);
        self.apply(decisions).await
    }

    /// Starts a savepoint now; returns its id (none when the tracker could not start one)
    /// and what was decided.
    pub(crate) async fn savepoint(&mut self) -> (Option<CheckpointId>, Vec<Outcome>) {
        let (id, decisions) = self.request_savepoint();
        (id, self.apply(decisions).await)
    }

    /// Asks the tracker for a savepoint: its id, when it starts, and the decisions.
    fn request_savepoint(&mut self) -> (Option<CheckpointId>, Vec<Decision>) {
        let now = self.now();
        let decisions = self.tracker.on_event(Event::Request {
            kind: CheckpointKind::Savepoint,
            now,
        });
        let id = decisions.iter().find_map(|d| match d {
            Decision::Trigger { id, .. } => Some(*id),
            _ => None,
        });
        (id, decisions)
    }

    /// Starts a savepoint now that the job runs on after (see [`SavepointCopy`]); its path
    /// goes to `copy.reply` once it completes, or an error when it cannot.
    pub(crate) async fn savepoint_copy(&mut self, copy: SavepointCopy) -> Vec<Outcome> {
        let (id, decisions) = self.request_savepoint();
        match id {
            Some(id) => {
                self.savepoints.insert(id, copy);
            }
            None => {
                let _ = copy.reply.send(Err(RiffleError::user(
                    "a savepoint cannot start now: the job's tasks are not running",
                )));
            }
        }
        self.apply(decisions).await
    }

    /// Every task finished: take the final checkpoint, which records their end states, and
    /// publish what is left (`last`).
    pub(crate) async fn finish(&mut self) -> Result<()> {
        let now = self.now();
        let decisions = self.tracker.on_event(Event::Request {
            kind: CheckpointKind::Final,
            now,
        });
        for outcome in self.apply(decisions).await {
            if let Outcome::Failed(error) = outcome {
                return Err(error);
            }
        }
        if self.latest.as_ref().is_none_or(|m| m.kind != "final") {
            return Err(RiffleError::external(
                "the job's final checkpoint did not complete; its last data is not published",
            ));
        }
        let unpublished: Vec<&TaskEntry> = self
            .finished
            .iter()
            .filter(|(task, _)| !self.published.contains_key(task) || self.end_mode)
            .map(|(_, entry)| entry)
            .collect();
        publish_parts(&self.sinks, unpublished, true).await?;
        // A finished job needs its checkpoints no more: running it again starts afresh.
        // Oldest first, stopping at the first failure, so that what is left always ends
        // with the final checkpoint: a rerun then restores it and writes nothing again,
        // never an older one that would write rows again.
        match self.store.list().await {
            Ok(ids) => {
                for id in ids {
                    if let Err(error) = self.store.delete(id).await {
                        tracing::warn!("deleting the finished job's checkpoint {id}: {error}");
                        break;
                    }
                }
            }
            Err(error) => tracing::warn!("listing the finished job's checkpoints: {error}"),
        }
        Ok(())
    }

    async fn apply(&mut self, decisions: Vec<Decision>) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        let mut queue: std::collections::VecDeque<Decision> = decisions.into();
        while let Some(decision) = queue.pop_front() {
            match decision {
                Decision::Trigger { id, kind, .. } => {
                    tracing::debug!("checkpoint {id} ({kind:?}) triggered");
                    self.kinds.insert(id, kind);
                    self.triggered.insert(id, Instant::now());
                    self.next_id = self.next_id.max(id + 1);
                    for source in &self.sources {
                        if let Some(control) = self.controls.get(source) {
                            let _ = control.send(ToTask::TriggerCheckpoint { id });
                        }
                    }
                }
                Decision::Persist { id } => {
                    let now = self.now();
                    let event = match self.persist(id).await {
                        Ok(()) => Event::Persisted { id, now },
                        Err(error) => Event::PersistFailed {
                            id,
                            now,
                            reason: error.to_string(),
                        },
                    };
                    queue.extend(self.tracker.on_event(event));
                }
                Decision::NotifyComplete { id, .. } => {
                    tracing::debug!("checkpoint {id} complete");
                    self.counts.completed += 1;
                    if let Some(triggered) = self.triggered.remove(&id) {
                        self.counts.durations.push(triggered.elapsed());
                    }
                    if let Some(copy) = self.savepoints.remove(&id) {
                        // Before retention, which may delete it once newer ones complete.
                        let copied = self.copy_savepoint(id, &copy).await;
                        if let Ok(path) = &copied {
                            tracing::info!("savepoint {id} copied to {path}");
                        }
                        let _ = copy.reply.send(copied);
                    }
                    self.triggered.retain(|pending, _| *pending > id);
                    self.counts.latest = Some(id);
                    self.acks.retain(|pending, _| *pending > id);
                    for control in self.controls.values() {
                        let _ = control.send(ToTask::CheckpointComplete { id });
                    }
                    if let Err(error) = self.publish_finished().await {
                        outcomes.push(Outcome::Failed(error));
                    }
                    let in_progress = self.tracker.pending().collect();
                    if let Err(error) = self
                        .store
                        .apply_retention(&in_progress, self.settings.num_retained)
                        .await
                    {
                        tracing::warn!("deleting old checkpoints: {error}");
                    }
                    outcomes.push(Outcome::Completed(id));
                }
                Decision::Abort { id, reason } => {
                    tracing::debug!("checkpoint {id} aborted: {reason}");
                    self.counts.aborted += 1;
                    self.acks.remove(&id);
                    self.fail_savepoint(id, &reason);
                    for control in self.controls.values() {
                        let _ = control.send(ToTask::CheckpointAborted { id });
                    }
                }
                Decision::FailJob { reason } => {
                    outcomes.push(Outcome::Failed(
                        RiffleError::external(reason).with_retryable(true),
                    ));
                }
            }
        }
        outcomes
    }

    /// Writes checkpoint `id`'s metadata: the acknowledged states, and the end states of the
    /// tasks that finished.
    async fn persist(&mut self, id: CheckpointId) -> Result<()> {
        let acked = self.acks.remove(&id).unwrap_or_default();
        let mut recorded_finished = BTreeSet::new();
        let mut tasks: Vec<TaskEntry> = acked.into_values().collect();
        for (task, entry) in &self.finished {
            if !tasks
                .iter()
                .any(|t| t.vertex == task.vertex && t.subtask == task.subtask)
            {
                // Its end state, not its state at this checkpoint's barrier (which it
                // acknowledged before finishing, when it did).
                tasks.push(entry.clone());
                recorded_finished.insert(*task);
            }
        }
        tasks.sort_by_key(|t| (t.vertex, t.subtask));
        let kind = match self.kinds.remove(&id) {
            Some(CheckpointKind::Final) => "final",
            Some(CheckpointKind::Savepoint) => "savepoint",
            _ => "checkpoint",
        };
        let metadata = Metadata {
            format_version: riffle_state::store::FORMAT_VERSION,
            graph_fingerprint: self.identity.fingerprint.clone(),
            parallelism: self.identity.parallelism.clone(),
            id,
            kind: kind.to_string(),
            attempt: self.tracker.attempt(),
            completed_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            tasks,
            regions: self.identity.regions.clone(),
        };
        self.store
            .commit(&metadata)
            .await
            .map_err(|e| RiffleError::external(e.message))?;
        self.counts.latest_bytes = metadata_bytes(&metadata);
        self.latest = Some(metadata);
        self.latest_finished = recorded_finished;
        self.latest_store = self.store.clone();
        Ok(())
    }

    /// Publishes the end parts of finished tasks whose end states the newest checkpoint
    /// records (a task that acknowledged it and finished after has parts it does not cover).
    async fn publish_finished(&mut self) -> Result<()> {
        if self.end_mode {
            return Ok(());
        }
        let recorded: Vec<TaskId> = self
            .finished
            .keys()
            .filter(|task| !self.published.contains_key(task))
            .filter(|task| self.latest_finished.contains(task))
            .copied()
            .collect();
        let entries: Vec<&TaskEntry> = recorded
            .iter()
            .filter_map(|t| self.finished.get(t))
            .collect();
        publish_parts(&self.sinks, entries, false).await?;
        for task in recorded {
            self.published.insert(task, ());
        }
        Ok(())
    }
}
