//! The local executor: runs a [`JobGraph`] as tokio tasks in this process.
//!
//! Each subtask of each vertex is one tokio task that pulls its fragment's output stream and
//! pushes every batch into its output edge (or the job's result). Fragments read their
//! inputs through [`ExchangeReadExec`](riffle_plan::ExchangeReadExec) leaves, which this
//! executor connects to credit-bounded [`channel`]s before any task starts. A driver task
//! watches them all: the first failure (or a cancel) aborts every task, aborts the sinks and
//! becomes the job's error; when every task has finished, the sinks are committed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use futures::StreamExt;
use futures::stream::BoxStream;
use riffle_common::{ErrorKind, JobConfig, Options, Result, RiffleError};
use riffle_plan::{
    ChainInput, ExchangeInputs, ExchangeRegistry, JobGraph, Sink, StagedPart, VertexId, VertexKind,
};
use riffle_state::{CheckpointStore, RestoreChoice, TaskId, Validity};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::chain::{ChainTask, FromTask, TaskInput, ToTask};
use crate::channel::{ChannelStats, Credit, Sender, channel_notifying};
use crate::coordinator::{
    CheckpointCounts, Coordinator, JobIdentity, Outcome, Publishing, Restore, SavepointCopy,
    StagedSinks, end_entry, publish_parts, staged_parts,
};
use crate::failure::{TaskFailure, UpstreamFailed};
use crate::fault::TaskFault;
use crate::gate::{GateOutput, InputGate};
use crate::message::Message;
use crate::operator::{OperatorContext, OperatorState};
use crate::operators::{
    ASYNC_OPERATOR, CommitMode, RowOrigin, SinkCommits, build_chain, rows_to_resend,
    staged_sinks as staged_sinks_of,
};
use crate::output::TaskOutput;
use crate::partitioner::{OutputPartitioner, SendError, targets};
use crate::regions::{job_regions, region_tasks};
use crate::settings::{JobSettings, RestartStrategy, checkpoint_location, location_of};
use crate::source::{SOURCE_STATE, SourceProgress, SourceReader};

/// Runs job graphs on the current tokio runtime.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    credit: Credit,
}

/// Where a job starts from.
#[derive(Debug, Clone, Default)]
pub enum StartFrom {
    /// Its own latest complete checkpoint, if its checkpoint folder has one (a job run again
    /// after a crash resumes by itself); otherwise the beginning.
    #[default]
    Latest,
    /// A checkpoint folder (`chk-N`) or a job's checkpoint directory (its latest complete
    /// checkpoint), as `riffle run --from-checkpoint PATH` names it.
    Checkpoint(String),
}

impl LocalExecutor {
    /// An executor whose channels get the credit `config` gives.
    pub fn new(config: &JobConfig) -> Self {
        Self {
            credit: Credit {
                batches: config.channel_credit_batches,
                bytes: config.channel_credit_bytes,
            },
        }
    }

    /// Starts `graph` with default options (no checkpoints, no restarts).
    pub fn execute(&self, graph: JobGraph, context: &TaskContext) -> Result<JobHandle> {
        self.execute_with(graph, context, &Options::new(), StartFrom::Latest)
    }

    /// Starts `graph` under the job options `options` (checkpointing, restarts, sink
    /// commits), from `start`. Its fragments run with `context` (DataFusion's functions,
    /// memory pool and object stores). The returned handle streams the job's result;
    /// dropping it cancels the job.
    pub fn execute_with(
        &self,
        graph: JobGraph,
        context: &TaskContext,
        options: &Options,
        start: StartFrom,
    ) -> Result<JobHandle> {
        graph.check().map_err(RiffleError::internal)?;
        let root = result_vertex(&graph)?;
        let settings = JobSettings::from_options(options)?;
        let schema = graph.vertices[root].fragment.schema();
        let bounded = graph.is_bounded();
        let models = model_calls(&graph);
        let vertices = graph
            .vertices
            .iter()
            .map(|vertex| {
                let reads_source = !graph.edges.iter().any(|edge| edge.to == vertex.id);
                (
                    vertex.id,
                    vertex.name.clone(),
                    vertex.parallelism,
                    reads_source,
                )
            })
            .collect();
        // A plan run again is a new job: its spend caps count from here.
        for (_, call) in &models {
            call.begin_job();
        }
        let job = Job::new(graph, context, self.credit, settings, start)?;
        let cancel = Arc::new(Notify::new());
        let stop = Arc::new(Notify::new());
        let savepoints = Arc::new(SavepointRequests::default());
        let (results, released) = mpsc::channel(self.credit.batches.max(1));
        let report = Arc::new(Mutex::new(JobReport::default()));
        let channel_stats = SharedChannelStats::default();
        let driver = tokio::spawn(job.run(
            Arc::clone(&cancel),
            Arc::clone(&stop),
            Arc::clone(&savepoints),
            results,
            Arc::clone(&report),
            channel_stats.clone(),
        ));
        Ok(JobHandle {
            schema,
            bounded,
            results: released,
            cancel,
            stop,
            savepoints,
            driver: Some(driver),
            reporter: JobReporter {
                report,
                channel_stats,
                models,
                vertices,
            },
        })
    }
}

fn result_vertex(graph: &JobGraph) -> Result<VertexId> {
    let roots: Vec<VertexId> = graph
        .vertices
        .iter()
        .filter(|vertex| graph.output_edge(vertex.id).is_none())
        .map(|vertex| vertex.id)
        .collect();
    match roots.as_slice() {
        [root] => Ok(*root),
        [] => Err(RiffleError::internal(
            "job graph has no vertex without an output",
        )),
        _ => Err(RiffleError::internal(
            "job graph has more than one result vertex",
        )),
    }
}

/// What a job did, for its end-of-run report.
#[derive(Debug, Clone, Default)]
pub struct JobReport {
    /// Times the job restarted after a failure.
    pub restarts: u64,
    /// Checkpoints completed and aborted.
    pub checkpoints: CheckpointCounts,
    /// The checkpoint the job was restored from when it started, if any.
    pub restored_from: Option<u64>,
    /// Newer checkpoints the restore passed over (incomplete or corrupt), and why.
    pub passed_over: Vec<String>,
    /// Why the job takes no checkpoints although checkpointing is on, if it does not.
    pub checkpointing_off: Option<String>,
    /// The errors that caused restarts, in order.
    pub failures: Vec<String>,
    /// The savepoint the job stopped with, when it was stopped with one.
    pub savepoint: Option<u64>,
    /// Rows the sources read again after restarts: between the restored position and where
    /// the failed attempt had got to.
    pub rows_read_again: u64,
    /// Rows whose asynchronous requests (`url_download`, `file_read`) were in flight at a
    /// restored checkpoint and were sent again; results that had arrived were kept.
    pub rows_resent: u64,
    /// Rows before the restored positions that the sources passed over without reading
    /// them (a datagen index, whole Parquet files); the rest before a position is read and
    /// dropped.
    pub rows_passed_over: u64,
    /// For each restart, the time from the failure until a source emitted rows again, not
    /// counting the restart strategy's delay (`restart_delay`).
    pub recoveries: Vec<std::time::Duration>,
    /// The restart strategy's delay before the last restart.
    pub restart_delay: std::time::Duration,
    /// What the session decided before starting the job, in sentences.
    pub notes: Vec<String>,
    /// The job's pipeline regions (subtasks joined by live channels). A restart restarts all
    /// of them for now; region failover is the next step.
    pub pipeline_regions: usize,
    /// What each model call (`ML_PREDICT`) did so far, live while the job runs.
    pub models: Vec<ModelReport>,
    /// What each vertex did so far in the current attempt, live while the job runs.
    pub vertices: Vec<VertexReport>,
}

/// One vertex of a job (a chain of operators, or a DataFusion fragment): the rows through
/// it and the backpressure on it, in the current attempt (a restart counts from zero).
#[derive(Debug, Clone, PartialEq)]
pub struct VertexReport {
    /// The vertex.
    pub vertex: VertexId,
    /// Its operators, as EXPLAIN names them.
    pub name: String,
    /// Its subtasks.
    pub parallelism: usize,
    /// Rows it received: from other vertices, or, when it reads a source, the rows its
    /// sources read (their position, which after a restore counts the rows before it).
    pub rows_in: u64,
    /// Whether it reads a source (else its input comes from other vertices).
    pub reads_source: bool,
    /// Rows it sent on (to other vertices, or as the job's result).
    pub rows_out: u64,
    /// How long its subtasks waited for their consumers' credit, summed over subtasks:
    /// backpressure. A vertex waited for `waited / elapsed / parallelism` of the time.
    pub waited: std::time::Duration,
    /// Its subtasks waiting for credit now.
    pub waiting_now: usize,
}

impl fmt::Display for VertexReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vertex {} [{}] {}: {} rows {}, {} rows out; waited for its consumers {:.1} s",
            self.vertex,
            self.parallelism,
            self.name,
            self.rows_in,
            if self.reads_source { "read" } else { "in" },
            self.rows_out,
            self.waited.as_secs_f64()
        )
    }
}

/// One `ML_PREDICT` of a job: its counters and its endpoint's limit.
#[derive(Debug, Clone)]
pub struct ModelReport {
    /// The vertex that runs it.
    pub vertex: VertexId,
    /// The model's name.
    pub model: String,
    /// The endpoint's concurrency limit now, and requests in flight to it.
    pub limit: usize,
    /// Requests in flight to the endpoint now (all its callers in the process).
    pub in_flight: usize,
    /// The endpoint's circuit breaker: `closed`, `open` or `half-open`.
    pub breaker: &'static str,
    /// Requests, rows, tokens, retries by cause, 429s, latencies.
    pub metrics: riffle_inference::metrics::MetricsSnapshot,
    /// With a spend cap: what the call spent, and whether the cap stopped the job's input.
    pub spend: Option<(riffle_inference::spend::Spent, bool)>,
    /// The worker processes it runs (a Python worker pool), if any.
    pub workers: Option<riffle_inference::backend::WorkerCounts>,
}

impl fmt::Display for ModelReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.metrics;
        let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
        write!(
            f,
            "model {} (vertex {}): {} rows in {} requests ({:.0} bytes each), {} failed; \
             tokens in {} out {}; retries {} (429 {}, server {}, timeout {}, connection {}); \
             {} answered 429; limit {}, {} in flight, breaker {}; latency per attempt p50 {} p95 {} p99 {}, end to end \
             p50 {} p95 {} p99 {}; mean wait for a slot {:.1} ms",
            self.model,
            self.vertex,
            m.rows,
            m.requests,
            m.mean_request_bytes,
            m.failed_rows,
            m.tokens_in,
            m.tokens_out,
            m.total_retries(),
            m.retries[0],
            m.retries[1],
            m.retries[2],
            m.retries[3],
            m.http_429,
            self.limit,
            self.in_flight,
            self.breaker,
            ms(m.attempt_latency[0]),
            ms(m.attempt_latency[1]),
            ms(m.attempt_latency[2]),
            ms(m.end_to_end_latency[0]),
            ms(m.end_to_end_latency[1]),
            ms(m.end_to_end_latency[2]),
            m.mean_queue_wait,
        )?;
        if m.fallback_rows > 0 {
            write!(f, "; {} rows to its fallback model", m.fallback_rows)?;
        }
        if let Some(workers) = self.workers {
            write!(
                f,
                "; {} workers now ({} busy), {} started",
                workers.live, workers.busy, workers.started
            )?;
        }
        if let Some((spent, capped)) = self.spend {
            write!(
                f,
                "; spent {} tokens (cost {:.6})",
                spent.tokens, spent.cost
            )?;
            if capped {
                f.write_str(", stopped at its spend cap: input after it was not read")?;
            }
        }
        Ok(())
    }
}

/// The model calls of `graph`, by vertex (the same objects its chains run).
fn model_calls(graph: &JobGraph) -> Vec<(VertexId, Arc<riffle_inference::call::ModelCall>)> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut calls = Vec::new();
    for vertex in &graph.vertices {
        let _ = vertex.fragment.apply(|node| {
            if let Some(predict) = node.downcast_ref::<riffle_plan::MlPredictExec>() {
                calls.push((vertex.id, Arc::clone(predict.call())));
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }
    calls
}

/// Why `graph` cannot be checkpointed, if it cannot: a vertex that runs as a DataFusion
/// fragment (an aggregate, a sort, a join) has no operator state to snapshot.
fn uncheckpointable(graph: &JobGraph) -> Option<String> {
    graph.vertices.iter().find_map(|vertex| match &vertex.kind {
        VertexKind::Fragment { .. } => Some(format!(
            "vertex {} ({}) runs as a DataFusion fragment, which cannot be checkpointed; the \
             job restarts from the beginning and publishes at its end",
            vertex.id, vertex.name
        )),
        VertexKind::Chain(_) => None,
    })
}

/// What a job of `graph` does about checkpoints under `options`, in a line (for EXPLAIN).
pub fn describe_checkpointing(graph: &JobGraph, options: &Options) -> Result<String> {
    let settings = JobSettings::from_options(options)?;
    let restarts = match &settings.restart {
        RestartStrategy::None => "no restarts".to_string(),
        RestartStrategy::FixedDelay { attempts, delay } => {
            format!("up to {attempts} restarts, {delay:?} apart")
        }
        RestartStrategy::ExponentialDelay {
            attempts, initial, ..
        } if *attempts >= u64::from(i32::MAX as u32) => {
            format!("restarts with exponential delay from {initial:?}")
        }
        RestartStrategy::ExponentialDelay {
            attempts, initial, ..
        } => format!("up to {attempts} restarts with exponential delay from {initial:?}"),
    };
    Ok(match (&settings.checkpointing, uncheckpointable(graph)) {
        (None, _) => {
            format!("checkpoints: off (execution.checkpointing.interval unset); {restarts}")
        }
        (Some(_), Some(reason)) => format!("checkpoints: none, {reason}; {restarts}"),
        (Some(checkpointing), None) => {
            let mode = match settings.commit_mode {
                CommitMode::Checkpoint => "file sinks publish at each checkpoint",
                CommitMode::End => "file sinks publish at the end",
            };
            let regions = match job_regions(graph).len() {
                1 => "one pipeline region".to_string(),
                n => format!("all {n} pipeline regions at once"),
            };
            format!(
                "checkpoints: every {} ms, aligned, exactly-once; {mode}; {restarts}, from the \
                 latest, of {regions}",
                checkpointing.tracker.interval.unwrap_or_default()
            )
        }
    })
}

/// The graph's identity in checkpoints: vertices and edges, without the parallelism.
fn identity(graph: &JobGraph) -> JobIdentity {
    let mut lines: Vec<String> = graph
        .vertices
        .iter()
        .map(|vertex| match &vertex.kind {
            VertexKind::Chain(plan) => format!("vertex {}: {plan}", vertex.id),
            VertexKind::Fragment { .. } => format!("vertex {}: {}", vertex.id, vertex.name),
        })
        .collect();
    lines.extend(graph.edges.iter().map(|edge| {
        format!(
            "edge {} -> {} input {}: {:?}",
            edge.from, edge.to, edge.input, edge.partitioning
        )
    }));
    JobIdentity {
        fingerprint: lines.join("\n"),
        parallelism: graph.vertices.iter().map(|v| v.parallelism).collect(),
        regions: region_tasks(&job_regions(graph)),
    }
}

/// A job being run: its graph and everything that lives across attempts.
struct Job {
    graph: JobGraph,
    context: Arc<TaskContext>,
    credit: Credit,
    settings: JobSettings,
    start: StartFrom,
    root: VertexId,
    /// Sinks of chain vertices that write staged parts, by vertex.
    staged_sinks: StagedSinks,
    /// Sinks written by fragment vertices (or by chains without staged parts): committed
    /// when the job ends.
    other_sinks: Vec<Arc<dyn Sink>>,
    checkpointing_off: Option<String>,
}

impl Job {
    fn new(
        graph: JobGraph,
        context: &TaskContext,
        credit: Credit,
        settings: JobSettings,
        start: StartFrom,
    ) -> Result<Self> {
        let root = result_vertex(&graph)?;
        let mut staged_sinks: StagedSinks = HashMap::new();
        for vertex in &graph.vertices {
            if let VertexKind::Chain(plan) = &vertex.kind {
                let sinks = staged_sinks_of(plan);
                if !sinks.is_empty() {
                    staged_sinks.insert(vertex.id, sinks);
                }
            }
        }
        for (_, sink) in staged_sinks.values().flatten() {
            if sink.overwrites()
                && settings.checkpointing.is_some()
                && settings.commit_mode_set
                && settings.commit_mode == CommitMode::Checkpoint
            {
                return Err(RiffleError::user(format!(
                    "INSERT OVERWRITE {} cannot publish at checkpoints: it replaces the table's \
                     files, which only the job's end may do",
                    sink.target()
                ))
                .with_hint("SET 'sink.commit-mode' = 'end', or append with INSERT INTO"));
            }
        }
        let other_sinks = graph
            .sinks
            .iter()
            .filter(|sink| {
                !staged_sinks
                    .values()
                    .flatten()
                    .any(|(_, staged)| Arc::ptr_eq(staged, sink))
            })
            .cloned()
            .collect();
        let checkpointing_off = settings
            .checkpointing
            .as_ref()
            .and_then(|_| uncheckpointable(&graph));
        let context = crate::source::with_config(context, context.session_config().clone());
        Ok(Self {
            graph,
            context,
            credit,
            settings,
            start,
            root,
            staged_sinks,
            other_sinks,
            checkpointing_off,
        })
    }

    fn checkpointed(&self) -> bool {
        self.settings.checkpointing.is_some() && self.checkpointing_off.is_none()
    }

    fn tasks(&self) -> Vec<TaskId> {
        self.graph
            .vertices
            .iter()
            .flat_map(|v| (0..v.parallelism).map(move |s| TaskId::new(v.id, s)))
            .collect()
    }

    /// The coordinator, with the checkpoint to restore, when the job is checkpointed.
    async fn coordinator(&self, passed_over: &mut Vec<String>) -> Result<Option<Coordinator>> {
        let Some(settings) = &self.settings.checkpointing else {
            if let StartFrom::Checkpoint(path) = &self.start {
                return Err(RiffleError::user(format!(
                    "cannot restore {path}: checkpointing is off for this job"
                ))
                .with_hint("SET 'execution.checkpointing.interval' = '10 s' (or -D) as when the checkpoint was taken"));
            }
            return Ok(None);
        };
        if let Some(reason) = &self.checkpointing_off {
            tracing::warn!("checkpointing is off: {reason}");
            return Ok(None);
        }
        let identity = identity(&self.graph);
        let (restore_store, restored, location) = find_restore(
            &settings.dir,
            &self.start,
            &identity,
            &self.context,
            passed_over,
        )
        .await?;
        if let Some(metadata) = &restored {
            identity.check(metadata, &location)?;
        }
        // New checkpoints go to this job's folder under execution.checkpointing.dir; a
        // restore from elsewhere continues there.
        let (store, folder) = checkpoint_location(&settings.dir, &self.context)?;
        let store = CheckpointStore::new(store, folder.join(identity.folder()));
        // Ids are never reused, also not those of checkpoints that never completed.
        let first_id = store
            .list()
            .await
            .map_err(|e| RiffleError::external(e.message))?
            .into_iter()
            .max()
            .map_or(1, |newest| newest + 1);
        let end_mode = self.settings.commit_mode == CommitMode::End
            || self
                .staged_sinks
                .values()
                .flatten()
                .any(|(_, sink)| sink.overwrites());
        let mut coordinator = Coordinator::new(
            settings.clone(),
            store,
            identity,
            Publishing {
                sinks: self.staged_sinks.clone(),
                end_mode,
            },
            self.tasks(),
            Restore {
                first_id,
                metadata: restored,
            },
        );
        coordinator.set_restore_store(restore_store);
        Ok(Some(coordinator))
    }

    /// Where savepoints taken on demand go: the job's folder under
    /// `execution.checkpointing.savepoint-dir`, created when the first is taken.
    fn savepoint_target(&self) -> SavepointTarget {
        let Some(settings) = &self.settings.checkpointing else {
            return Err(RiffleError::user(
                "a savepoint needs checkpointing: the job takes no checkpoints",
            )
            .with_hint(
                "SET 'execution.checkpointing.interval' = '10 s' (or -D) before starting it",
            ));
        };
        if let Some(reason) = &self.checkpointing_off {
            return Err(RiffleError::user(format!(
                "a savepoint needs checkpoints, and this job takes none: {reason}"
            )));
        }
        let folder = identity(&self.graph).folder();
        let (store, root) = location_of(
            "execution.checkpointing.savepoint-dir",
            &settings.savepoint_dir,
            &self.context,
        )?;
        let location = format!("{}/{folder}", settings.savepoint_dir.trim_end_matches('/'));
        Ok((
            CheckpointStore::new(store, root.join(folder.as_str())),
            location,
        ))
    }

    async fn run(
        self,
        cancel: Arc<Notify>,
        stop: Arc<Notify>,
        savepoints: Arc<SavepointRequests>,
        results: mpsc::Sender<RecordBatch>,
        report: Arc<Mutex<JobReport>>,
        channel_stats: SharedChannelStats,
    ) -> Result<()> {
        let mut coordinator = None;
        let stop_requested = std::sync::atomic::AtomicBool::new(false);
        let savepoint_target = || self.savepoint_target();
        let signals = Signals {
            cancel: &cancel,
            stop: &stop,
            stop_requested: &stop_requested,
            savepoints: &savepoints,
            savepoint_target: &savepoint_target,
        };
        let outcome = self
            .run_attempts(&mut coordinator, signals, &results, &report, &channel_stats)
            .await;
        savepoints.close("the job has ended: it takes no more savepoints");
        channel_stats.started.send_replace(true);
        if outcome.is_err() {
            for sink in &self.other_sinks {
                if let Err(error) = sink.abort().await {
                    tracing::warn!("aborting {}: {error}", sink.describe());
                }
            }
            // Staged parts go, except those the latest checkpoint records: a resumed job
            // publishes them.
            let recorded = coordinator
                .as_ref()
                .and_then(|c: &Coordinator| c.latest().cloned());
            let mut keep: Vec<StagedPart> = Vec::new();
            for entry in recorded.iter().flat_map(|m| &m.tasks) {
                if let Ok(found) = staged_parts(&self.staged_sinks, entry) {
                    keep.extend(found.into_iter().flat_map(|(_, parts)| parts));
                }
            }
            for (_, sink) in self.staged_sinks.values().flatten() {
                if let Err(error) = sink.discard_staged("", &keep).await {
                    tracing::warn!("discarding staged parts of {}: {error}", sink.describe());
                }
            }
        }
        outcome
    }

    async fn run_attempts(
        &self,
        coordinator: &mut Option<Coordinator>,
        signals: Signals<'_>,
        results: &mpsc::Sender<RecordBatch>,
        report: &Mutex<JobReport>,
        channel_stats: &SharedChannelStats,
    ) -> Result<()> {
        let mut passed_over = Vec::new();
        *coordinator = self.coordinator(&mut passed_over).await?;
        let policy = if coordinator.is_some() {
            ReleasePolicy::PerCheckpoint
        } else if self.settings.restart != RestartStrategy::None && self.graph.is_bounded() {
            ReleasePolicy::AtEnd
        } else {
            ReleasePolicy::Immediate
        };
        let mut released = Released::new(policy, self.credit.batches);
        update(report, |r| {
            r.checkpointing_off = self.checkpointing_off.clone();
            r.pipeline_regions = job_regions(&self.graph).len();
            r.passed_over = passed_over;
            r.restored_from = coordinator.as_ref().and_then(|c| c.latest()).map(|m| m.id);
        });
        let mut restarts = 0u64;
        // Where each source had got to when the last attempt failed.
        let mut reached: HashMap<TaskId, u64> = HashMap::new();
        let mut failed_at: Option<std::time::Instant> = None;
        for attempt in 0.. {
            let restored = match coordinator {
                Some(coordinator) => coordinator.restored_states(&self.tasks()).await?,
                None => HashMap::new(),
            };
            let again: u64 = reached
                .iter()
                .map(|(task, reached)| {
                    let from = restored
                        .get(task)
                        .and_then(|states| states.iter().find(|(name, _)| name == SOURCE_STATE))
                        .and_then(|(_, state)| state.inline.get(..8))
                        .and_then(|bytes| bytes.try_into().ok())
                        .map_or(0, u64::from_le_bytes);
                    reached.saturating_sub(from)
                })
                .sum();
            let resent: u64 = restored
                .values()
                .flatten()
                .filter(|(name, _)| name.starts_with(ASYNC_OPERATOR))
                .map(|(_, state)| rows_to_resend(state))
                .sum();
            update(report, |r| {
                r.rows_read_again += again;
                r.rows_resent += resent;
            });
            let mut running = self.start_attempt(attempt, restored)?;
            let sources = running
                .progress
                .iter()
                .map(|(task, progress)| (task.vertex, Arc::clone(progress)))
                .collect();
            channel_stats.set(std::mem::take(&mut running.channel_stats), sources);
            if let Some(coordinator) = coordinator {
                coordinator.start_attempt(
                    attempt,
                    std::mem::take(&mut running.controls),
                    running.sources.clone(),
                );
            }
            let ended = running
                .supervise(signals, coordinator.as_mut(), &mut released, results)
                .await;
            reached = running
                .progress
                .iter()
                .map(|(task, progress)| (*task, progress.rows.load(Ordering::Relaxed)))
                .collect();
            let passed_over: u64 = running
                .progress
                .values()
                .map(|progress| progress.skipped_by_seeking.load(Ordering::Relaxed))
                .sum();
            update(report, |r| r.rows_passed_over += passed_over);
            if let Some(failed_at) = failed_at.take() {
                // Rows flowed again when the first source of this attempt emitted a row.
                let flowing = running
                    .progress
                    .values()
                    .filter_map(|progress| progress.first_row.get().copied())
                    .min();
                if let Some(flowing) = flowing {
                    let recovery = flowing.saturating_duration_since(failed_at);
                    update(report, |r| {
                        r.recoveries.push(recovery.saturating_sub(r.restart_delay));
                    });
                }
            }
            // The end: the final checkpoint and the publication of what it records. A
            // failure there (a store's) restarts the job like any other; publishing again
            // from the restored checkpoint is harmless.
            let ended = match ended {
                Ended::Finished(finished) => {
                    let published = match coordinator {
                        Some(coordinator) => coordinator.finish().await,
                        // Without a checkpoint to restore, a restart would write again what
                        // was published before the failure: the error ends the job.
                        None => {
                            publish_parts(&self.staged_sinks, finished.values(), true).await?;
                            Ok(())
                        }
                    };
                    match published {
                        Ok(()) => Ended::Finished(finished),
                        Err(error) => Ended::Failed(error),
                    }
                }
                other => other,
            };
            match ended {
                Ended::Finished(_) => {
                    for (index, sink) in self.other_sinks.iter().enumerate() {
                        if let Err(error) = sink.commit().await {
                            for later in &self.other_sinks[index + 1..] {
                                let _ = later.abort().await;
                            }
                            return Err(RiffleError::from(error)
                                .context(format!("committing {}", sink.describe())));
                        }
                    }
                    if let Some(coordinator) = coordinator {
                        update(report, |r| r.checkpoints = coordinator.counts());
                    }
                    released.release_all();
                    released.flush(results).await;
                    return Ok(());
                }
                Ended::Cancelled => return Err(RiffleError::user("the job was cancelled")),
                Ended::Stopped(id) => {
                    update(report, |r| r.savepoint = Some(id));
                    released.completed(id);
                    released.flush(results).await;
                    return Err(RiffleError::user(format!(
                        "the job was stopped with savepoint {id}"
                    ))
                    .with_hint("run it again with the same checkpoint directory to resume"));
                }
                Ended::Failed(error) => {
                    if let Some(coordinator) = coordinator {
                        update(report, |r| r.checkpoints = coordinator.counts());
                    }
                    let delay = if restartable(&error) {
                        self.settings.restart.delay(restarts + 1)
                    } else {
                        None
                    };
                    let Some(delay) = delay else {
                        return Err(error);
                    };
                    if coordinator.is_none() && !self.graph.is_bounded() {
                        return Err(error);
                    }
                    tracing::warn!("the job failed and restarts in {delay:?}: {error}");
                    restarts += 1;
                    failed_at = Some(std::time::Instant::now());
                    update(report, |r| {
                        r.restarts = restarts;
                        r.failures.push(error.to_string());
                        r.restart_delay = delay;
                    });
                    for sink in &self.other_sinks {
                        if let Err(error) = sink.abort().await {
                            tracing::warn!("aborting {}: {error}", sink.describe());
                        }
                    }
                    released.restart();
                    tokio::select! {
                        _ = signals.cancel.notified() => return Err(RiffleError::user("the job was cancelled")),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        Err(RiffleError::internal("the job ran out of attempts"))
    }

    /// Wires the channels of one attempt, builds every task (restored where `restored` has
    /// state for it) and starts them.
    fn start_attempt(
        &self,
        attempt: u64,
        mut restored: HashMap<TaskId, Vec<(String, OperatorState)>>,
    ) -> Result<Attempt> {
        let graph = &self.graph;
        // Every edge gets one channel per (producer, consumer partition), so that a consumer
        // can tell its producers apart; the channels of one consumer partition form its
        // input gate and share the edge's credit.
        let mut gates = HashMap::new();
        let mut outputs: HashMap<VertexId, Vec<OutputPartitioner>> = HashMap::new();
        let mut channel_stats = Vec::new();
        for edge in &graph.edges {
            let producers = graph.vertices[edge.from].parallelism;
            let feeds: Vec<Vec<usize>> = (0..producers)
                .map(|producer| targets(&edge.partitioning, producer, producers, edge.partitions))
                .collect();
            // senders[producer][partition]: filled partition by partition.
            let mut senders: Vec<Vec<Option<Sender>>> =
                (0..producers).map(|_| Vec::new()).collect();
            for partition in 0..edge.partitions {
                let feeding = feeds
                    .iter()
                    .filter(|targets| targets.contains(&partition))
                    .count();
                let credit = self.credit.share(feeding);
                let readable = Arc::new(Notify::new());
                let mut channels = Vec::new();
                for (producer, (targets, producer_senders)) in
                    feeds.iter().zip(senders.iter_mut()).enumerate()
                {
                    if !targets.contains(&partition) {
                        producer_senders.push(None);
                        continue;
                    }
                    let (mut sender, receiver) =
                        channel_notifying(credit, 1, Arc::clone(&readable));
                    channel_stats.push(ChannelInfo {
                        from: edge.from,
                        producer,
                        to: Some(edge.to),
                        partition,
                        fan_out: match edge.partitioning {
                            riffle_plan::EdgePartitioning::Broadcast => edge.partitions.max(1),
                            _ => 1,
                        },
                        stats: receiver.stats(),
                    });
                    producer_senders.push(sender.pop());
                    channels.push((edge.input, receiver));
                }
                gates.insert(
                    (edge.to, edge.input, partition),
                    InputGate::new(channels, readable),
                );
            }
            let partitioners = senders
                .into_iter()
                .enumerate()
                .map(|(producer, senders)| {
                    OutputPartitioner::new(edge.partitioning.clone(), senders, producer, producers)
                })
                .collect();
            outputs.insert(edge.from, partitioners);
        }
        // The result: one channel per subtask of the result vertex, behind a gate, so that
        // rows can be released per checkpoint (aligned like any consumer's input).
        let result_width = graph.vertices[self.root].parallelism;
        let result_credit = self.credit.share(result_width);
        let readable = Arc::new(Notify::new());
        let mut result_senders = Vec::new();
        let mut result_channels = Vec::new();
        for producer in 0..result_width {
            let (mut sender, receiver) = channel_notifying(result_credit, 1, Arc::clone(&readable));
            channel_stats.push(ChannelInfo {
                from: self.root,
                producer,
                to: None,
                partition: producer,
                fan_out: 1,
                stats: receiver.stats(),
            });
            result_senders.extend(sender.pop());
            result_channels.push((0, receiver));
        }
        let results = InputGate::new(result_channels, readable);

        let inputs = Arc::new(ChannelInputs {
            gates: Mutex::new(gates),
        });
        let config = self
            .context
            .session_config()
            .clone()
            .with_extension(Arc::new(ExchangeRegistry(Arc::clone(&inputs) as _)));
        let context = crate::source::with_config(&self.context, config);
        let commits = SinkCommits {
            checkpointing: self.checkpointed(),
            mode: self.settings.commit_mode,
        };

        // Open every fragment and build every chain before starting any task, so that a
        // planning mistake fails the job before it writes anything.
        let mut opened: Vec<(String, Runnable, Arc<AtomicUsize>, VertexId, TaskId)> = Vec::new();
        let mut controls = BTreeMap::new();
        let mut sources = Vec::new();
        let mut progress = HashMap::new();
        let (events, events_receiver) = mpsc::unbounded_channel();
        for vertex in &graph.vertices {
            let running = Arc::new(AtomicUsize::new(vertex.parallelism));
            let mut partitioners = outputs.remove(&vertex.id);
            // A source's plan keeps execution state (a scan's file queue): each attempt
            // reads from a fresh copy, shared by the vertex's subtasks as one execution.
            let source = match &vertex.kind {
                VertexKind::Chain(plan) => match &plan.input {
                    ChainInput::Source(source) => Some(reset_plan_states(Arc::clone(source))?),
                    ChainInput::Exchange { .. } => None,
                },
                VertexKind::Fragment { .. } => None,
            };
            let fragment = match &vertex.kind {
                VertexKind::Fragment { .. } if attempt > 0 => {
                    reset_plan_states(Arc::clone(&vertex.fragment))?
                }
                _ => Arc::clone(&vertex.fragment),
            };
            for subtask in (0..vertex.parallelism).rev() {
                let task_id = TaskId::new(vertex.id, subtask);
                let output = match partitioners.as_mut() {
                    Some(partitioners) => match partitioners.pop() {
                        Some(partitioner) => TaskOutput::Edge(partitioner),
                        None => return Err(RiffleError::internal("missing output partitioner")),
                    },
                    None => match result_senders.pop() {
                        Some(sender) => TaskOutput::Result(sender),
                        None => return Err(RiffleError::internal("missing result channel")),
                    },
                };
                let name = format!("vertex {} ({}) subtask {subtask}", vertex.id, vertex.name);
                let runnable = match &vertex.kind {
                    VertexKind::Fragment { .. } => {
                        let stream = fragment.execute(subtask, Arc::clone(&context))?;
                        let fault = TaskFault::new(
                            self.settings.faults.for_task(attempt, vertex.id, subtask),
                        );
                        Runnable::Fragment(stream, output, fault)
                    }
                    VertexKind::Chain(plan) => {
                        let mut origin = None;
                        let input = match &plan.input {
                            ChainInput::Exchange { input } => {
                                let gate = inputs.take(vertex.id, *input, subtask)?;
                                TaskInput::Gate(gate)
                            }
                            ChainInput::Source(planned) => {
                                sources.push(task_id);
                                let source = source.as_ref().unwrap_or(planned);
                                let reader =
                                    SourceReader::new(source, subtask, Arc::clone(&context))?;
                                progress.insert(task_id, reader.progress());
                                origin = Some(RowOrigin {
                                    source: Arc::clone(source),
                                    partition: subtask,
                                    progress: reader.progress(),
                                });
                                TaskInput::Source(reader)
                            }
                        };
                        let (control, control_receiver) = mpsc::unbounded_channel();
                        controls.insert(task_id, control);
                        Runnable::Chain(Box::new(ChainTask {
                            context: OperatorContext {
                                vertex: vertex.id,
                                subtask,
                                parallelism: vertex.parallelism,
                                attempt,
                            },
                            input,
                            chain: build_chain(plan, subtask, &context, commits, origin)?,
                            output,
                            control: control_receiver,
                            events: events.clone(),
                            restored: restored.remove(&task_id).unwrap_or_default(),
                            fault: TaskFault::new(
                                self.settings.faults.for_task(attempt, vertex.id, subtask),
                            ),
                        }))
                    }
                };
                opened.push((name, runnable, Arc::clone(&running), vertex.id, task_id));
            }
        }
        let mut tasks = JoinSet::new();
        let mut task_ids = HashMap::new();
        for (name, runnable, running, id, task_id) in opened {
            let inputs = Arc::clone(&inputs);
            let handle = tasks.spawn(async move {
                let outcome = match runnable {
                    Runnable::Fragment(stream, output, fault) => {
                        run_task(name, stream, output, fault).await
                    }
                    Runnable::Chain(task) => {
                        let outcome = task.run().await;
                        if let Err(TaskFailure::Cause(error)) = &outcome {
                            tracing::debug!("{name} failed: {error}");
                        }
                        outcome
                    }
                };
                // A fragment need not open every input partition (a LIMIT can end it
                // first). Once the whole vertex is done, close what it left unopened, so
                // that producers waiting for credit there stop instead of waiting forever.
                if running.fetch_sub(1, Ordering::AcqRel) == 1 {
                    inputs.close_vertex(id);
                }
                outcome
            });
            task_ids.insert(handle.id(), task_id);
        }
        Ok(Attempt {
            tasks,
            task_ids,
            controls,
            sources,
            events: events_receiver,
            _events: events,
            results,
            channel_stats,
            progress,
            consumers: graph
                .vertices
                .iter()
                .map(|vertex| {
                    let tasks = graph
                        .edges
                        .iter()
                        .filter(|edge| edge.from == vertex.id)
                        .flat_map(|edge| {
                            (0..graph.vertices[edge.to].parallelism)
                                .map(move |s| TaskId::new(edge.to, s))
                        })
                        .collect();
                    (vertex.id, tasks)
                })
                .collect(),
        })
    }
}

fn update(report: &Mutex<JobReport>, change: impl FnOnce(&mut JobReport)) {
    if let Ok(mut report) = report.lock() {
        change(&mut report);
    }
}

/// Whether a restart can help: not for the user's own errors (a bad row, bad SQL, an
/// `on_error => 'fail'`), which would fail again.
fn restartable(error: &RiffleError) -> bool {
    error.kind() != ErrorKind::User
}

/// The checkpoint a job with `identity` restores from `start`, under checkpoint directory
/// `dir`: its store, its metadata (`None`: nothing to restore) and where it is, in words.
async fn find_restore(
    dir: &str,
    start: &StartFrom,
    identity: &JobIdentity,
    context: &TaskContext,
    passed_over: &mut Vec<String>,
) -> Result<(CheckpointStore, Option<riffle_state::Metadata>, String)> {
    let (store, id, location) = match start {
        StartFrom::Latest => {
            let (store, folder) = checkpoint_location(dir, context)?;
            let store = CheckpointStore::new(store, folder.join(identity.folder()));
            (store, None, format!("{dir}/{}", identity.folder()))
        }
        StartFrom::Checkpoint(path) => {
            let (store, id) = checkpoint_at(path, context)?;
            (store, id, path.clone())
        }
    };
    let metadata = restore_point(&store, id, &location, passed_over).await?;
    Ok((store, metadata, location))
}

/// The parallelism of each vertex recorded in the checkpoint that a job of `graph` would
/// restore under `options` from `start`, or `None` when it would restore nothing. A session
/// re-plans the job at that parallelism, so that a machine with another number of cores
/// resumes it. Reads the checkpoint's metadata and nothing else; the job checks it again
/// (and everything else about it) when it starts.
pub async fn recorded_parallelism(
    graph: &JobGraph,
    context: &TaskContext,
    options: &Options,
    start: &StartFrom,
) -> Result<Option<Vec<usize>>> {
    let settings = JobSettings::from_options(options)?;
    let Some(checkpointing) = &settings.checkpointing else {
        return Ok(None);
    };
    if uncheckpointable(graph).is_some() {
        return Ok(None);
    }
    let (_, metadata, _) = find_restore(
        &checkpointing.dir,
        start,
        &identity(graph),
        context,
        &mut Vec::new(),
    )
    .await?;
    Ok(metadata.map(|m| m.parallelism))
}

/// Opens the checkpoint store of `path` (one checkpoint, `.../chk-N`, or a job's folder).
pub(crate) fn checkpoint_at(
    path: &str,
    context: &TaskContext,
) -> Result<(CheckpointStore, Option<u64>)> {
    let trimmed = path.trim_end_matches('/');
    let (folder, id) = match trimmed.rsplit_once('/') {
        Some((parent, last)) => match last.strip_prefix("chk-").and_then(|n| n.parse().ok()) {
            Some(id) => (parent, Some(id)),
            None => (trimmed, None),
        },
        None => (trimmed, None),
    };
    let local = url::Url::parse(folder).map_or(true, |u| u.scheme().len() <= 1);
    if local && !std::path::Path::new(folder).exists() {
        return Err(RiffleError::user(format!(
            "cannot restore {path}: no such checkpoint or checkpoint directory"
        )));
    }
    let (store, root) = checkpoint_location(folder, context)?;
    Ok((CheckpointStore::new(store, root), id))
}

/// The checkpoint to restore: `id` in `store`, or its newest complete one.
pub(crate) async fn restore_point(
    store: &CheckpointStore,
    id: Option<u64>,
    location: &str,
    passed_over: &mut Vec<String>,
) -> Result<Option<riffle_state::Metadata>> {
    let unusable =
        |message: String| RiffleError::user(format!("cannot restore {location}: {message}"));
    if let Some(id) = id {
        return match store.validate(id).await.map_err(|e| unusable(e.message))? {
            Validity::Complete => store.metadata(id).await.map_err(|e| unusable(e.message)),
            Validity::Incomplete => Err(unusable(format!(
                "checkpoint {id} is incomplete (it has no metadata)"
            ))),
            Validity::Corrupt(reason) => {
                Err(unusable(format!("checkpoint {id} is corrupt: {reason}")))
            }
        };
    }
    match store.latest().await.map_err(|e| unusable(e.message))? {
        RestoreChoice::Nothing => Ok(None),
        RestoreChoice::Restore { id, skipped } => {
            for (newer, why) in &skipped {
                // A newer checkpoint that completed (it has metadata, now unreadable) may have
                // published its sinks' parts: restoring an older one would publish those rows
                // again. Only the user can accept that, by naming the older checkpoint.
                if let Validity::Corrupt(reason) = store
                    .validate(*newer)
                    .await
                    .map_err(|e| unusable(e.message))?
                {
                    return Err(unusable(format!(
                        "its newest checkpoint {newer} is corrupt ({reason}); restoring the \
                         older checkpoint {id} instead would publish again what {newer} \
                         committed"
                    ))
                    .with_hint(format!(
                        "restore it anyway with --from-checkpoint {location}/{}, accepting \
                         rows twice in the output, or delete the folder to start afresh",
                        riffle_state::store::checkpoint_folder(id)
                    )));
                }
                tracing::warn!("checkpoint {newer} at {location} passed over: {why}");
                passed_over.push(format!("checkpoint {newer} at {location}: {why}"));
            }
            store.metadata(id).await.map_err(|e| unusable(e.message))
        }
        RestoreChoice::NoneUsable { skipped } => {
            let reasons: Vec<String> = skipped
                .iter()
                .map(|(id, why)| format!("checkpoint {id}: {why}"))
                .collect();
            Err(
                unusable(format!("no complete checkpoint ({})", reasons.join("; ")))
                    .with_hint("delete the folder to start the job afresh"),
            )
        }
    }
}

/// One attempt's running tasks.
struct Attempt {
    tasks: JoinSet<Result<(), TaskFailure>>,
    task_ids: HashMap<tokio::task::Id, TaskId>,
    controls: BTreeMap<TaskId, mpsc::UnboundedSender<ToTask>>,
    sources: Vec<TaskId>,
    events: mpsc::UnboundedReceiver<FromTask>,
    /// Keeps the events channel open while the attempt runs.
    _events: mpsc::UnboundedSender<FromTask>,
    results: InputGate,
    channel_stats: Vec<ChannelInfo>,
    /// Each source task's position as it reads.
    progress: HashMap<TaskId, Arc<SourceProgress>>,
    /// The tasks that read each vertex's output.
    consumers: HashMap<VertexId, Vec<TaskId>>,
}

/// What a job's handle can ask of its driver.
#[derive(Clone, Copy)]
struct Signals<'a> {
    /// Stop now.
    cancel: &'a Notify,
    /// Take a savepoint, then stop.
    stop: &'a Notify,
    /// Whether a stop was asked for: it outlives a restart (a savepoint that failed).
    stop_requested: &'a std::sync::atomic::AtomicBool,
    /// Savepoints asked for while the job runs on.
    savepoints: &'a SavepointRequests,
    /// Where those savepoints are copied, or why the job cannot take them (asked when
    /// the first is taken: the folder is created then).
    savepoint_target: &'a (dyn Fn() -> SavepointTarget + Sync),
}

/// Where a job's savepoints taken on demand are copied: the object store folder, and its
/// name for the user; or why the job takes none.
type SavepointTarget = std::result::Result<(CheckpointStore, String), RiffleError>;

/// Savepoints asked for through a job's handle and not yet started: the driver takes them
/// between two events.
#[derive(Debug, Default)]
struct SavepointRequests {
    state: Mutex<Requests>,
    asked: Notify,
}

#[derive(Debug, Default)]
struct Requests {
    waiting: Vec<oneshot::Sender<Result<String>>>,
    /// Why no more are taken: the job ended.
    closed: Option<String>,
}

impl SavepointRequests {
    fn push(&self, reply: oneshot::Sender<Result<String>>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match &state.closed {
            Some(why) => {
                let _ = reply.send(Err(RiffleError::user(why.clone())));
            }
            None => {
                state.waiting.push(reply);
                self.asked.notify_one();
            }
        }
    }

    fn take(&self) -> Vec<oneshot::Sender<Result<String>>> {
        self.state
            .lock()
            .map(|mut state| std::mem::take(&mut state.waiting))
            .unwrap_or_default()
    }

    /// Refuses what waits, and every later request, with `why`.
    fn close(&self, why: &str) {
        let waiting = match self.state.lock() {
            Ok(mut state) => {
                state.closed = Some(why.to_string());
                std::mem::take(&mut state.waiting)
            }
            Err(_) => Vec::new(),
        };
        for reply in waiting {
            let _ = reply.send(Err(RiffleError::user(why.to_string())));
        }
    }
}

/// Asks for a savepoint of a running job; waits for its path.
async fn request_savepoint(requests: &SavepointRequests) -> Result<String> {
    let (reply, answer) = oneshot::channel();
    requests.push(reply);
    answer.await.map_err(|_| {
        RiffleError::external("the job ended or restarted before the savepoint completed")
    })?
}

/// How an attempt ended.
enum Ended {
    /// Stopped by the user after savepoint `id` completed.
    Stopped(u64),
    /// Every task finished; the end states of chain tasks that finished.
    Finished(BTreeMap<TaskId, riffle_state::TaskEntry>),
    Cancelled,
    Failed(RiffleError),
}

impl Attempt {
    /// Runs the attempt to its end: serves the coordinator, forwards released results, and
    /// stops every task at the first failure.
    async fn supervise(
        &mut self,
        signals: Signals<'_>,
        mut coordinator: Option<&mut Coordinator>,
        released: &mut Released,
        results: &mpsc::Sender<RecordBatch>,
    ) -> Ended {
        let mut failures = Failures::default();
        let mut finished = BTreeMap::new();
        let mut reading = true;
        let mut cancelled = false;
        let mut tasks_done = false;
        let mut stopping_at: Option<Option<u64>> = None;
        // Tasks whose consumers stopped reading, counted as finished once those consumers
        // finished (not when a consumer failed: that is the job's failure).
        let mut gone: Vec<TaskId> = Vec::new();
        if signals.stop_requested.load(Ordering::SeqCst) {
            // Asked to stop during an earlier attempt, whose savepoint did not complete.
            signals.stop.notify_one();
        }
        loop {
            if tasks_done && !reading {
                break;
            }
            let deadline = coordinator.as_ref().and_then(|c| c.next_deadline());
            let room = released.has_room();
            tokio::select! {
                biased;
                _ = signals.cancel.notified() => {
                    cancelled = true;
                    break;
                }
                _ = signals.stop.notified(), if stopping_at.is_none() => {
                    signals.stop_requested.store(true, Ordering::SeqCst);
                    match coordinator.as_deref_mut() {
                        Some(c) => {
                            let (id, outcomes) = c.savepoint().await;
                            if id.is_none() {
                                cancelled = true;
                                break;
                            }
                            stopping_at = Some(id);
                            let stopped = handle_outcomes(outcomes, released, &mut failures, stopping_at);
                            if let Some(id) = stopped {
                                self.stop_tasks(&mut failures).await;
                                self.drain_results(released);
                                return Ended::Stopped(id);
                            }
                            if failures.cause.is_some() {
                                break;
                            }
                        }
                        None => {
                            cancelled = true;
                            break;
                        }
                    }
                }
                _ = signals.savepoints.asked.notified() => {
                    for reply in signals.savepoints.take() {
                        let target = (signals.savepoint_target)();
                        let (Some(c), Ok((store, location))) = (coordinator.as_deref_mut(), target.clone())
                        else {
                            let why = target.err().unwrap_or_else(|| {
                                RiffleError::user("the job takes no checkpoints")
                            });
                            let _ = reply.send(Err(why));
                            continue;
                        };
                        let copy = SavepointCopy { store, location, reply };
                        let outcomes = c.savepoint_copy(copy).await;
                        handle_outcomes(outcomes, released, &mut failures, stopping_at);
                    }
                    if failures.cause.is_some() {
                        break;
                    }
                }
                joined = self.tasks.join_next_with_id(), if !tasks_done => match joined {
                    None => tasks_done = true,
                    Some(Ok((_, Ok(())))) => {}
                    Some(Ok((id, Err(TaskFailure::ConsumerGone)))) => {
                        if let Some(task) = self.task_ids.get(&id) {
                            gone.push(*task);
                        }
                        if let Some(c) = coordinator.as_deref_mut() {
                            let outcomes = self.settle_gone(&mut gone, &finished, c).await;
                            handle_outcomes(outcomes, released, &mut failures, None);
                            if failures.cause.is_some() {
                                break;
                            }
                        }
                    }
                    Some(Ok((id, Err(failure)))) => {
                        if let (Some(c), Some(task)) = (coordinator.as_deref_mut(), self.task_ids.get(&id)) {
                            c.task_failed(*task);
                        }
                        failures.record(failure);
                        break;
                    }
                    Some(Err(join_error)) => {
                        if let (Some(c), Some(task)) = (coordinator.as_deref_mut(), self.task_ids.get(&join_error.id())) {
                            c.task_failed(*task);
                        }
                        let error = if join_error.is_panic() {
                            RiffleError::internal(format!("a task panicked: {}", panic_message(join_error)))
                        } else {
                            RiffleError::internal("a task was aborted")
                        };
                        failures.cause.get_or_insert(error);
                        break;
                    }
                },
                Some(message) = self.events.recv() => {
                    if let FromTask::Finished { task, states, .. } = &message {
                        let task = TaskId::new(task.0, task.1);
                        finished.insert(task, end_entry(task, states));
                    }
                    if let Some(c) = coordinator.as_deref_mut() {
                        let mut outcomes = c.on_message(message).await;
                        outcomes.extend(self.settle_gone(&mut gone, &finished, c).await);
                        if let Some(id) = handle_outcomes(outcomes, released, &mut failures, stopping_at) {
                            self.stop_tasks(&mut failures).await;
                            self.drain_results(released);
                            return Ended::Stopped(id);
                        }
                        if failures.cause.is_some() {
                            break;
                        }
                    }
                }
                _ = tokio::time::sleep(deadline.unwrap_or_default()), if deadline.is_some() => {
                    if let Some(c) = coordinator.as_deref_mut() {
                        let outcomes = c.tick().await;
                        if let Some(id) = handle_outcomes(outcomes, released, &mut failures, stopping_at) {
                            self.stop_tasks(&mut failures).await;
                            self.drain_results(released);
                            return Ended::Stopped(id);
                        }
                        if failures.cause.is_some() {
                            break;
                        }
                    }
                }
                next = self.results.next(), if reading && room => match next {
                    Some(GateOutput::Batch { batch, .. }) => released.batch(batch),
                    Some(GateOutput::Aligned(id)) => released.aligned(id),
                    Some(GateOutput::Watermark(_)) | Some(GateOutput::Abandoned(_)) => {}
                    // A result task broke: its failure comes through the join set.
                    Some(GateOutput::Broken) | None => reading = false,
                },
                permit = results.reserve(), if released.has_ready() => match permit {
                    Ok(permit) => released.send_one(permit),
                    // The handle is gone: the job is being cancelled.
                    Err(_) => {
                        cancelled = true;
                        break;
                    }
                },
            }
        }
        if !(cancelled || failures.cause.is_some() || failures.consequence.is_some()) {
            // Every task ended: take what they reported last.
            while let Ok(message) = self.events.try_recv() {
                if let FromTask::Finished { task, states, .. } = &message {
                    let task = TaskId::new(task.0, task.1);
                    finished.insert(task, end_entry(task, states));
                }
                if let Some(c) = coordinator.as_deref_mut() {
                    let outcomes = c.on_message(message).await;
                    handle_outcomes(outcomes, released, &mut failures, None);
                }
            }
            if let Some(c) = coordinator {
                let outcomes = self.settle_gone(&mut gone, &finished, c).await;
                handle_outcomes(outcomes, released, &mut failures, None);
            }
            if failures.cause.is_none() {
                return Ended::Finished(finished);
            }
        }
        self.stop_tasks(&mut failures).await;
        // Rows a checkpoint completed for may still wait in the result channels, behind
        // that checkpoint's barrier: released, they are not produced again by the restore.
        self.drain_results(released);
        if cancelled {
            return Ended::Cancelled;
        }
        Ended::Failed(
            failures
                .cause
                .or(failures.consequence)
                .unwrap_or_else(|| RiffleError::internal("job stopped without an error")),
        )
    }
}

impl Attempt {
    /// Reads what the result channels still hold (their producers are stopped), so that
    /// rows before the barrier of a completed checkpoint are released.
    fn drain_results(&mut self, released: &mut Released) {
        use futures::FutureExt;
        while let Some(Some(next)) = self.results.next().now_or_never() {
            match next {
                GateOutput::Batch { batch, .. } => released.batch(batch),
                GateOutput::Aligned(id) => released.aligned(id),
                _ => {}
            }
        }
    }

    /// Tells the coordinator of the tasks in `gone` whose consumers all finished.
    async fn settle_gone(
        &self,
        gone: &mut Vec<TaskId>,
        finished: &BTreeMap<TaskId, riffle_state::TaskEntry>,
        coordinator: &mut Coordinator,
    ) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        let mut waiting = Vec::new();
        for task in std::mem::take(gone) {
            let consumers = self.consumers.get(&task.vertex);
            let done = consumers.is_some_and(|consumers| {
                !consumers.is_empty() && consumers.iter().all(|c| finished.contains_key(c))
            });
            if done {
                outcomes.extend(coordinator.task_gone(task).await);
            } else {
                waiting.push(task);
            }
        }
        *gone = waiting;
        outcomes
    }

    /// Aborts every task still running and waits for them, recording their failures.
    async fn stop_tasks(&mut self, failures: &mut Failures) {
        self.tasks.abort_all();
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(Err(failure)) => failures.record(failure),
                Err(join_error) if join_error.is_panic() => {
                    failures.cause.get_or_insert(RiffleError::internal(format!(
                        "a task panicked: {}",
                        panic_message(join_error)
                    )));
                }
                _ => {}
            }
        }
    }
}

/// Applies the coordinator's outcomes: completed checkpoints release results, a failure is
/// recorded. Returns the savepoint id when the savepoint the job stops at completed.
fn handle_outcomes(
    outcomes: Vec<Outcome>,
    released: &mut Released,
    failures: &mut Failures,
    stopping_at: Option<Option<u64>>,
) -> Option<u64> {
    let mut stopped = None;
    for outcome in outcomes {
        match outcome {
            Outcome::Completed(id) => {
                released.completed(id);
                if stopping_at
                    .flatten()
                    .is_some_and(|savepoint| id >= savepoint)
                {
                    stopped = Some(id);
                }
            }
            Outcome::Failed(error) => {
                failures.cause.get_or_insert(error);
            }
        }
    }
    stopped
}

/// When result rows reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReleasePolicy {
    /// As they come: the job cannot repeat them.
    Immediate,
    /// When the checkpoint after them completes: a restart never repeats them.
    PerCheckpoint,
    /// At the job's end: a restart from the beginning cannot repeat them.
    AtEnd,
}

/// Result rows on their way to the client; see [`ReleasePolicy`].
struct Released {
    policy: ReleasePolicy,
    /// Rows since the last aligned barrier.
    open: Vec<RecordBatch>,
    /// Rows before each aligned barrier whose checkpoint has not completed.
    sealed: BTreeMap<u64, Vec<RecordBatch>>,
    ready: std::collections::VecDeque<RecordBatch>,
    limit: usize,
    /// The newest completed checkpoint: its barrier may reach the result after the
    /// coordinator heard every task acknowledge it.
    completed: Option<u64>,
}

impl Released {
    fn new(policy: ReleasePolicy, limit: usize) -> Self {
        Self {
            policy,
            open: Vec::new(),
            sealed: BTreeMap::new(),
            ready: std::collections::VecDeque::new(),
            limit: limit.max(1),
            completed: None,
        }
    }

    /// Whether more rows may be read now (immediate release keeps backpressure).
    fn has_room(&self) -> bool {
        self.policy != ReleasePolicy::Immediate || self.ready.len() < self.limit
    }

    fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    fn batch(&mut self, batch: RecordBatch) {
        match self.policy {
            ReleasePolicy::Immediate => self.ready.push_back(batch),
            _ => self.open.push(batch),
        }
    }

    fn aligned(&mut self, id: u64) {
        if self.policy == ReleasePolicy::PerCheckpoint {
            let rows = std::mem::take(&mut self.open);
            if self.completed.is_some_and(|completed| id <= completed) {
                self.ready.extend(rows);
            } else {
                self.sealed.entry(id).or_default().extend(rows);
            }
        }
    }

    fn completed(&mut self, id: u64) {
        self.completed = self.completed.max(Some(id));
        let later = self.sealed.split_off(&(id + 1));
        for (_, rows) in std::mem::replace(&mut self.sealed, later) {
            self.ready.extend(rows);
        }
    }

    fn release_all(&mut self) {
        for (_, rows) in std::mem::take(&mut self.sealed) {
            self.ready.extend(rows);
        }
        self.ready.extend(self.open.drain(..));
    }

    /// The attempt failed: what it produced and did not release is produced again.
    fn restart(&mut self) {
        self.open.clear();
        self.sealed.clear();
    }

    fn send_one(&mut self, permit: mpsc::Permit<'_, RecordBatch>) {
        if let Some(batch) = self.ready.pop_front() {
            permit.send(batch);
        }
    }

    async fn flush(&mut self, results: &mpsc::Sender<RecordBatch>) {
        while let Some(batch) = self.ready.pop_front() {
            if results.send(batch).await.is_err() {
                return;
            }
        }
    }
}

/// A subtask, ready to run.
enum Runnable {
    /// A fragment's stream and where it goes.
    Fragment(SendableRecordBatchStream, TaskOutput, TaskFault),
    /// A chain task.
    Chain(Box<ChainTask>),
}

/// Statistics of one channel of a running job.
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    /// Producing vertex.
    pub from: VertexId,
    /// Producing subtask: every producer has a channel of its own.
    pub producer: usize,
    /// Consuming vertex; `None` for the job's result.
    pub to: Option<VertexId>,
    /// Consumer partition.
    pub partition: usize,
    /// How many of its producer's channels each row goes to: the consumer's partitions for
    /// a broadcast, else 1 (so that a vertex's rows out count each row once).
    pub fan_out: usize,
    /// High-water marks.
    pub stats: Arc<ChannelStats>,
}

/// A source task's position, with its vertex.
type VertexSource = (VertexId, Arc<SourceProgress>);

/// The channels of a job's current attempt, filled when the attempt starts; and whether the
/// job has started (restored its checkpoint, started its tasks) or failed before.
#[derive(Debug, Clone)]
pub struct SharedChannelStats {
    channels: Arc<Mutex<Vec<ChannelInfo>>>,
    /// Each source task's position, by its vertex.
    sources: Arc<Mutex<Vec<VertexSource>>>,
    started: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for SharedChannelStats {
    fn default() -> Self {
        Self {
            channels: Arc::default(),
            sources: Arc::default(),
            started: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }
}

impl SharedChannelStats {
    /// The channels and their high-water marks.
    pub fn get(&self) -> Vec<ChannelInfo> {
        self.channels.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn set(&self, channels: Vec<ChannelInfo>, sources: Vec<VertexSource>) {
        if let Ok(mut shared) = self.channels.lock() {
            *shared = channels;
        }
        if let Ok(mut shared) = self.sources.lock() {
            *shared = sources;
        }
        self.started.send_replace(true);
    }
}

/// A running job: its result stream, and the means to cancel it.
pub struct JobHandle {
    schema: SchemaRef,
    bounded: bool,
    results: mpsc::Receiver<RecordBatch>,
    cancel: Arc<Notify>,
    stop: Arc<Notify>,
    savepoints: Arc<SavepointRequests>,
    driver: Option<tokio::task::JoinHandle<Result<()>>>,
    reporter: JobReporter,
}

/// Reads a job's report while it runs, from any thread, without holding its [`JobHandle`]
/// (which the task reading the results holds).
#[derive(Clone)]
pub struct JobReporter {
    report: Arc<Mutex<JobReport>>,
    channel_stats: SharedChannelStats,
    /// The job's model calls, whose counters the report reads.
    models: Vec<(VertexId, Arc<riffle_inference::call::ModelCall>)>,
    /// Each vertex's name and parallelism, and whether it reads a source.
    vertices: Vec<(VertexId, String, usize, bool)>,
}

impl fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("schema", &self.schema)
            .finish()
    }
}

impl JobHandle {
    /// Schema of the result batches.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Whether every source of the job is bounded, so that it ends on its own.
    pub fn is_bounded(&self) -> bool {
        self.bounded
    }

    /// The next batch of the result; `None` once the job has finished and committed. If the
    /// job failed, its first error.
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        // The driver is taken once the job's outcome is known.
        if self.driver.is_some() {
            if let Some(batch) = self.results.recv().await {
                return Ok(Some(batch));
            }
            self.finish().await?;
        }
        Ok(None)
    }

    async fn finish(&mut self) -> Result<()> {
        if let Some(driver) = self.driver.take() {
            let outcome = match driver.await {
                Ok(outcome) => outcome,
                Err(error) => Err(RiffleError::internal(format!("job driver failed: {error}"))),
            };
            outcome?;
        }
        Ok(())
    }

    /// Runs the job to its end and returns all result batches.
    pub async fn collect(mut self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next_batch().await? {
            batches.push(batch);
        }
        Ok(batches)
    }

    /// Stops the job: every task is aborted, the sinks discard what they wrote, and
    /// [`JobHandle::next_batch`] returns a "cancelled" error.
    pub fn cancel(&self) {
        self.cancel.notify_one();
    }

    /// Takes a savepoint while the job runs on, and returns its path once it is complete
    /// (`.../job-<hash>/chk-N` under `execution.checkpointing.savepoint-dir`). Restore it with
    /// `riffle run --from-checkpoint PATH` or [`StartFrom::Checkpoint`]; it stays until the
    /// user deletes it. The result stream must be read meanwhile for the savepoint's barrier
    /// to get through. Fails when the job takes no checkpoints, or ends or restarts first.
    pub fn savepoint(&self) -> impl Future<Output = Result<String>> + Send + 'static {
        let requests = Arc::clone(&self.savepoints);
        async move { request_savepoint(&requests).await }
    }

    /// A handle that can stop the job with a savepoint, or cancel it, from elsewhere.
    pub fn stopper(&self) -> JobStopper {
        JobStopper {
            cancel: Arc::clone(&self.cancel),
            stop: Arc::clone(&self.stop),
            savepoints: Arc::clone(&self.savepoints),
        }
    }

    /// A handle that can cancel the job from elsewhere (another task, a signal handler).
    pub fn canceller(&self) -> JobCanceller {
        JobCanceller(Arc::clone(&self.cancel))
    }

    /// The channels of the job's current attempt and their high-water marks.
    pub fn channel_stats(&self) -> SharedChannelStats {
        self.reporter.channel_stats.clone()
    }

    /// Waits until the job has started its tasks (after restoring a checkpoint), or ended
    /// before; [`JobHandle::report`] then says what it restored.
    pub async fn started(&self) {
        let mut started = self.reporter.channel_stats.started.subscribe();
        let _ = started.wait_for(|started| *started).await;
    }

    /// What the job did so far: restarts, checkpoints, the checkpoint it started from.
    pub fn report(&self) -> JobReport {
        self.reporter.report()
    }

    /// A handle that reads the report from elsewhere while the job runs.
    pub fn reporter(&self) -> JobReporter {
        self.reporter.clone()
    }

    /// Adds a line to the report's notes: what the session decided about the job before
    /// starting it (the parallelism of a restore).
    pub fn add_note(&self, note: impl Into<String>) {
        update(&self.reporter.report, |report| {
            report.notes.push(note.into())
        });
    }
}

impl JobReporter {
    /// What the job did so far: restarts, checkpoints, the checkpoint it started from,
    /// each model call's and each vertex's figures.
    pub fn report(&self) -> JobReport {
        let mut report = self.report.lock().map(|r| r.clone()).unwrap_or_default();
        report.models = self
            .models
            .iter()
            .map(|(vertex, call)| {
                let (limit, in_flight) = call.endpoint().load();
                ModelReport {
                    vertex: *vertex,
                    model: call.config().model.clone(),
                    limit,
                    in_flight,
                    breaker: call.endpoint().breaker_state(),
                    metrics: call.metrics().snapshot(),
                    spend: call.spend(),
                    workers: call.workers(),
                }
            })
            .collect();
        report.vertices = self.vertex_reports();
        report
    }

    /// Each vertex's rows and backpressure, from the counters of its channels.
    fn vertex_reports(&self) -> Vec<VertexReport> {
        let channels = self.channel_stats.get();
        let sources = self
            .channel_stats
            .sources
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        self.vertices
            .iter()
            .map(|(vertex, name, parallelism, reads_source)| {
                let out = channels.iter().filter(|c| c.from == *vertex);
                let rows_in = if *reads_source {
                    sources
                        .iter()
                        .filter(|(v, _)| v == vertex)
                        .map(|(_, p)| p.rows.load(Ordering::Relaxed))
                        .sum()
                } else {
                    channels
                        .iter()
                        .filter(|c| c.to == Some(*vertex))
                        .map(|c| c.stats.rows())
                        .sum()
                };
                VertexReport {
                    vertex: *vertex,
                    name: name.clone(),
                    parallelism: *parallelism,
                    rows_in,
                    reads_source: *reads_source,
                    rows_out: out.clone().map(|c| c.stats.rows() / c.fan_out as u64).sum(),
                    waited: out.clone().map(|c| c.stats.waited()).sum(),
                    waiting_now: out.map(|c| c.stats.waiting()).sum(),
                }
            })
            .collect()
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        if self.driver.is_some() {
            self.cancel.notify_one();
        }
    }
}

/// Stops a job from anywhere: with a savepoint, or at once.
#[derive(Debug, Clone)]
pub struct JobStopper {
    cancel: Arc<Notify>,
    stop: Arc<Notify>,
    savepoints: Arc<SavepointRequests>,
}

impl JobStopper {
    /// Takes a savepoint and stops the job once it completes (Flink's stop-with-savepoint);
    /// a job without checkpoints is cancelled. Running the job again with the same
    /// checkpoint directory resumes from the savepoint.
    pub fn stop_with_savepoint(&self) {
        self.stop.notify_one();
    }

    /// Takes a savepoint while the job runs on, as [`JobHandle::savepoint`].
    pub async fn savepoint(&self) -> Result<String> {
        request_savepoint(&self.savepoints).await
    }

    /// Stops the job at once, as [`JobHandle::cancel`].
    pub fn cancel(&self) {
        self.cancel.notify_one();
    }
}

/// Cancels a job from anywhere.
#[derive(Debug, Clone)]
pub struct JobCanceller(Arc<Notify>);

impl JobCanceller {
    /// Stops the job, as [`JobHandle::cancel`].
    pub fn cancel(&self) {
        self.0.notify_one();
    }
}

async fn run_task(
    name: String,
    mut stream: SendableRecordBatchStream,
    mut output: TaskOutput,
    mut fault: TaskFault,
) -> Result<(), TaskFailure> {
    let failed = |error: DataFusionError| {
        let upstream = matches!(error.find_root(), DataFusionError::External(inner) if inner.is::<UpstreamFailed>());
        let error = RiffleError::from(error);
        tracing::debug!("{name} failed: {error}");
        if upstream {
            TaskFailure::Consequence(error)
        } else {
            TaskFailure::Cause(error)
        }
    };
    // The consumer went away: it needs no more rows (a LIMIT was reached downstream) or the
    // job is stopping because of another task's error, which the job reports instead.
    while let Some(next) = stream.next().await {
        let batch = next.map_err(failed)?;
        fault.on_batch()?;
        output.send_batch(batch).await.map_err(|e| match e {
            SendError::Compute(error) => failed(error),
            SendError::Disconnected => TaskFailure::ConsumerGone,
        })?;
    }
    let finished = match &mut output {
        TaskOutput::Edge(partitioner) => partitioner.send_all(Message::EndOfInput).await,
        TaskOutput::Result(sender) => sender.send(Message::EndOfInput).await.map_err(Into::into),
    };
    finished.map_err(|_| TaskFailure::ConsumerGone)
}

/// The failures seen while stopping a job; the job reports the first cause.
#[derive(Default)]
struct Failures {
    cause: Option<RiffleError>,
    consequence: Option<RiffleError>,
}

impl Failures {
    fn record(&mut self, failure: TaskFailure) {
        match failure {
            TaskFailure::Cause(error) => {
                self.cause.get_or_insert(error);
            }
            TaskFailure::Consequence(error) => {
                self.consequence.get_or_insert(error);
            }
            TaskFailure::ConsumerGone => {}
        }
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    let payload = error.into_panic();
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// The runtime's side of [`ExchangeInputs`]: hands out input gates as streams of batches.
///
/// A fragment vertex is a DataFusion stream: it has no operator to snapshot and no notion of
/// event time, so its exchange readers pass rows only. Watermarks are dropped there (the
/// bounded jobs fragments run in have no event-time operators yet), and a checkpoint
/// barrier reaching one is a planning bug: jobs with fragment vertices take no
/// checkpoints.
struct ChannelInputs {
    gates: Mutex<HashMap<(VertexId, usize, usize), InputGate>>,
}

impl fmt::Debug for ChannelInputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelInputs").finish_non_exhaustive()
    }
}

impl ChannelInputs {
    /// Takes the input gate of a chain task, which reads it itself.
    fn take(&self, vertex: VertexId, input: usize, partition: usize) -> Result<InputGate> {
        self.gates
            .lock()
            .map_err(|_| RiffleError::internal("channel registry poisoned"))?
            .remove(&(vertex, input, partition))
            .ok_or_else(|| {
                RiffleError::internal(format!(
                    "no channel for vertex {vertex} input {input} partition {partition}"
                ))
            })
    }

    /// Drops the input gates of `vertex` that were never opened.
    fn close_vertex(&self, vertex: VertexId) {
        if let Ok(mut gates) = self.gates.lock() {
            gates.retain(|(to, _, _), _| *to != vertex);
        }
    }
}

impl ExchangeInputs for ChannelInputs {
    fn open(
        &self,
        vertex: VertexId,
        input: usize,
        partition: usize,
    ) -> datafusion::error::Result<BoxStream<'static, datafusion::error::Result<RecordBatch>>> {
        let gate = self
            .gates
            .lock()
            .map_err(|_| DataFusionError::Internal("channel registry poisoned".into()))?
            .remove(&(vertex, input, partition))
            .ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "no channel for vertex {vertex} input {input} partition {partition}, or it was opened twice"
                ))
            })?;
        let stream = futures::stream::unfold(Some(gate), move |gate| async move {
            let mut gate = gate?;
            loop {
                let error = match gate.next().await? {
                    GateOutput::Batch { batch, .. } => return Some((Ok(batch), Some(gate))),
                    GateOutput::Watermark(_) => continue,
                    GateOutput::Broken => DataFusionError::External(Box::new(UpstreamFailed)),
                    GateOutput::Aligned(id) | GateOutput::Abandoned(id) => {
                        DataFusionError::Internal(format!(
                            "checkpoint barrier {id} reached fragment vertex {vertex}, which takes no checkpoints"
                        ))
                    }
                };
                // The stream ends after its error.
                return Some((Err(error), None));
            }
        });
        Ok(stream.boxed())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(value: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![value]))]).unwrap()
    }

    fn credit() -> Credit {
        Credit {
            batches: 4,
            bytes: 1 << 20,
        }
    }

    /// Exchange inputs for vertex 0, input 0, partition 0, fed by `producers` channels.
    fn inputs(producers: usize) -> (Vec<Sender>, ChannelInputs) {
        let readable = Arc::new(Notify::new());
        let mut senders = Vec::new();
        let mut channels = Vec::new();
        for _ in 0..producers {
            let (mut sender, receiver) = channel_notifying(credit(), 1, Arc::clone(&readable));
            senders.push(sender.pop().unwrap());
            channels.push((0, receiver));
        }
        let gates = HashMap::from([((0, 0, 0), InputGate::new(channels, readable))]);
        (
            senders,
            ChannelInputs {
                gates: Mutex::new(gates),
            },
        )
    }

    fn value(batch: &RecordBatch) -> i64 {
        let values = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        values.value(0)
    }

    #[test]
    fn results_are_released_when_the_checkpoint_after_them_completes() {
        let mut released = Released::new(ReleasePolicy::PerCheckpoint, 4);
        released.batch(batch(1));
        released.aligned(1);
        released.batch(batch(2));
        assert!(
            !released.has_ready(),
            "nothing before checkpoint 1 completes"
        );
        released.completed(1);
        assert_eq!(released.ready.len(), 1);
        // Checkpoint 2 completes before its barrier reaches the result: the rows before
        // the barrier are released when it comes, not held forever.
        released.completed(2);
        released.aligned(2);
        assert_eq!(released.ready.len(), 2);
        released.batch(batch(3));
        released.restart();
        released.release_all();
        assert_eq!(
            released.ready.len(),
            2,
            "a failed attempt's unreleased rows are dropped"
        );
    }

    #[tokio::test]
    async fn a_fragment_reads_every_producer_and_ends_after_the_last() {
        let (mut senders, inputs) = inputs(2);
        senders[0].send(Message::Batch(batch(1))).await.unwrap();
        senders[0].send(Message::Watermark(5)).await.unwrap();
        senders[0].send(Message::EndOfInput).await.unwrap();
        senders[1].send(Message::Batch(batch(2))).await.unwrap();
        senders[1].send(Message::Watermark(6)).await.unwrap();
        senders[1].send(Message::EndOfInput).await.unwrap();
        let read: Vec<i64> = inputs
            .open(0, 0, 0)
            .unwrap()
            .map(|batch| value(&batch.unwrap()))
            .collect()
            .await;
        let mut sorted = read.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![1, 2],
            "rows only, watermarks dropped: {read:?}"
        );
        assert!(inputs.open(0, 0, 0).is_err(), "a gate opens once");
    }

    #[tokio::test]
    async fn a_barrier_reaching_a_fragment_vertex_is_an_error() {
        let (mut senders, inputs) = inputs(1);
        senders[0].send(Message::Batch(batch(1))).await.unwrap();
        senders[0].send(Message::Barrier(3)).await.unwrap();
        senders[0].send(Message::Batch(batch(2))).await.unwrap();
        let read: Vec<_> = inputs.open(0, 0, 0).unwrap().collect().await;
        assert_eq!(
            read.len(),
            2,
            "the row before the barrier, then the error: {read:?}"
        );
        let error = read[1].as_ref().unwrap_err().to_string();
        assert!(
            error.contains("checkpoint barrier 3 reached fragment vertex 0"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_producer_that_breaks_fails_its_consumer_as_a_consequence() {
        let (mut senders, inputs) = inputs(2);
        senders[1].send(Message::EndOfInput).await.unwrap();
        senders.remove(0);
        let read: Vec<_> = inputs.open(0, 0, 0).unwrap().collect().await;
        match read.as_slice() {
            [Err(DataFusionError::External(inner))] => assert!(inner.is::<UpstreamFailed>()),
            other => panic!("unexpected {other:?}"),
        }
    }
}
