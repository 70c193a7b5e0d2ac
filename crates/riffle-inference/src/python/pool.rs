//! A pool of Python workers for one `map_batches` (or UDF): at most `concurrency` of them,
//! reused across batches, and shut down when the last operator instance using the pool ends
//! (see [`WorkerPool::attach`]). The first operator instance to attach starts the workers
//! the pool begins with (`python.prestart`), so that their interpreters load while the job
//! reads its first rows; more start when batches wait for one. When the last lease goes,
//! workers still starting are stopped (killed) with the idle ones, so none outlives its job.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::worker::{Worker, WorkerError, WorkerSpec};

/// How long a worker may take to finish after `shutdown` before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a hung worker gets between SIGTERM and SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_secs(2);

/// See the module docs.
#[derive(Debug)]
pub struct WorkerPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    spec: WorkerSpec,
    /// The GPU ids of each worker slot.
    gpus: Vec<Vec<String>>,
    /// One permit per worker that may be busy.
    busy: Arc<Semaphore>,
    /// Workers started and waiting for a batch.
    idle: Mutex<Vec<Worker>>,
    /// Slots without a live worker.
    free_slots: Mutex<Vec<usize>>,
    /// Workers started when the first operator instance attaches.
    prestart: usize,
    /// Told when a worker becomes idle or a slot free (a batch may wait for either while
    /// the workers started ahead are still starting).
    changed: Notify,
    /// Operator instances using the pool.
    leases: AtomicUsize,
    /// Workers started in all.
    started: AtomicU64,
    /// Workers running a batch now.
    running: AtomicUsize,
    /// The tasks starting workers ahead of batches, stopped when the last lease goes.
    prestarting: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Batches and rows handed to the pool so far, to name a batch in errors.
    batches: AtomicU64,
    rows: AtomicU64,
}

/// A worker taken from the pool for one batch.
struct Checkout<'a> {
    worker: Option<Worker>,
    _permit: OwnedSemaphorePermit,
    pool: &'a Inner,
}

impl Checkout<'_> {
    fn worker(&mut self) -> &mut Worker {
        self.worker.as_mut().expect("a checked-out worker")
    }

    /// The worker goes back to the pool for the next batch, or, when the job ended
    /// meanwhile (no lease left), is shut down.
    fn give_back(mut self) {
        let worker = self.worker.take().expect("a checked-out worker");
        self.pool.make_idle(worker);
    }

    /// The worker leaves the pool (to be terminated); its slot is free for a new one.
    fn take(mut self) -> Worker {
        let worker = self.worker.take().expect("a checked-out worker");
        self.pool.free_slot(worker.id);
        worker
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        self.pool.running.fetch_sub(1, Ordering::Relaxed);
        // Neither given back nor taken: its worker died, or its batch was abandoned (a
        // cancelled job). The worker is killed (on drop) and its slot is free for a new one.
        if let Some(worker) = self.worker.take() {
            self.pool.free_slot(worker.id);
        }
    }
}

/// A slot taken for a worker that is starting; freed again unless the worker starts.
struct ReservedSlot<'a> {
    slot: usize,
    pool: &'a Inner,
}

impl Drop for ReservedSlot<'_> {
    fn drop(&mut self) {
        self.pool.free_slot(self.slot);
    }
}

impl Inner {
    fn free_slot(&self, slot: usize) {
        if let Ok(mut free) = self.free_slots.lock() {
            free.push(slot);
        }
        self.changed.notify_waiters();
    }

    /// `worker` waits for the next batch; or, when the last lease went meanwhile (its
    /// shutdown of the idle workers may have run before this push), it is shut down.
    fn make_idle(&self, worker: Worker) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(worker);
        }
        self.changed.notify_waiters();
        if self.leases.load(Ordering::Acquire) == 0 {
            self.shut_down_idle();
        }
    }

    /// Shuts the idle workers down and stops those still starting ahead of batches.
    fn shut_down_idle(&self) {
        let starting: Vec<_> = self
            .prestarting
            .lock()
            .map(|mut tasks| tasks.drain(..).collect())
            .unwrap_or_default();
        for task in starting {
            // The start is dropped: its process is killed, its slot freed.
            task.abort();
        }
        let workers: Vec<Worker> = self
            .idle
            .lock()
            .map(|mut idle| idle.drain(..).collect())
            .unwrap_or_default();
        for worker in workers {
            self.free_slot(worker.id);
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(worker.shutdown(SHUTDOWN_GRACE));
                }
                // No runtime to wait on: killed on drop.
                Err(_) => drop(worker),
            }
        }
    }

    /// Workers now, started or starting: the slots not free.
    fn live(&self) -> usize {
        let free = self.free_slots.lock().map_or(0, |free| free.len());
        self.gpus.len().max(1).saturating_sub(free)
    }

    fn take_free_slot(&self) -> Option<usize> {
        self.free_slots.lock().ok().and_then(|mut free| free.pop())
    }

    fn take_idle(&self) -> Option<Worker> {
        self.idle.lock().ok().and_then(|mut idle| idle.pop())
    }

    /// Starts a worker in `slot` (reserved by the caller, and freed again when the start
    /// fails or is abandoned).
    async fn start(&self, slot: usize) -> Result<Worker, PoolError> {
        let reserved = ReservedSlot { slot, pool: self };
        let gpus = self.gpus.get(slot).cloned().unwrap_or_default();
        match Worker::start(&self.spec, slot, &gpus).await {
            Ok(worker) => {
                std::mem::forget(reserved);
                self.started.fetch_add(1, Ordering::Relaxed);
                Ok(worker)
            }
            Err(WorkerError::UserCode(message)) => Err(PoolError::UserCode(format!(
                "{}: constructing the user's class failed: {message}",
                self.spec.function
            ))),
            Err(WorkerError::Crashed(message)) => Err(PoolError::Crashed(message)),
        }
    }
}

/// Starts the pool's first workers in the background; each becomes idle when ready (or is
/// shut down, when the job ended meanwhile). A failure to start is left to the batch that
/// starts the worker again, which reports it.
fn prestart(pool: &Arc<Inner>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for _ in pool.live()..pool.prestart {
        let Some(slot) = pool.take_free_slot() else {
            return;
        };
        let task = {
            let pool = Arc::clone(pool);
            runtime.spawn(async move {
                if let Ok(worker) = pool.start(slot).await {
                    pool.make_idle(worker);
                }
            })
        };
        if let Ok(mut tasks) = pool.prestarting.lock() {
            tasks.retain(|task| !task.is_finished());
            tasks.push(task.abort_handle());
        }
    }
}

/// Holds the pool's workers alive; the last one dropped shuts them down.
pub struct Lease {
    pool: Arc<Inner>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.pool.leases.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.pool.shut_down_idle();
        }
    }
}

/// A batch's place among those the pool received, for messages.
#[derive(Debug, Clone, Copy)]
pub struct BatchLabel {
    /// The batch's number (from 0).
    pub seq: u64,
    /// Its first row among the rows the pool received.
    pub first_row: u64,
    /// Its rows.
    pub rows: u64,
}

impl std::fmt::Display for BatchLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "batch {} (rows {}..{})",
            self.seq,
            self.first_row,
            self.first_row + self.rows
        )
    }
}

/// How a batch failed in the pool.
#[derive(Debug, Clone, PartialEq)]
pub enum PoolError {
    /// The user's code raised.
    UserCode(String),
    /// The worker died.
    Crashed(String),
    /// The batch ran past the timeout; the worker was killed.
    Hung(String),
}

impl WorkerPool {
    /// A pool of up to `gpus.len()` workers (one per slot, each slot with its GPU ids), of
    /// which `prestart` start when the first operator instance attaches.
    pub fn new(spec: WorkerSpec, gpus: Vec<Vec<String>>, prestart: usize) -> Self {
        let slots = gpus.len().max(1);
        Self {
            inner: Arc::new(Inner {
                spec,
                busy: Arc::new(Semaphore::new(slots)),
                free_slots: Mutex::new((0..slots).rev().collect()),
                gpus,
                idle: Mutex::new(Vec::new()),
                leases: AtomicUsize::new(0),
                prestart: prestart.min(slots),
                changed: Notify::new(),
                started: AtomicU64::new(0),
                running: AtomicUsize::new(0),
                prestarting: Mutex::new(Vec::new()),
                batches: AtomicU64::new(0),
                rows: AtomicU64::new(0),
            }),
        }
    }

    /// Keeps the workers for one operator instance; see the module docs.
    pub fn attach(&self) -> Lease {
        if self.inner.leases.fetch_add(1, Ordering::AcqRel) == 0 {
            prestart(&self.inner);
        }
        Lease {
            pool: Arc::clone(&self.inner),
        }
    }

    /// Workers now (started or starting), those running a batch, and workers started in
    /// all (more than the pool holds when some crashed, hung, or ended with an earlier job).
    pub fn workers(&self) -> crate::backend::WorkerCounts {
        crate::backend::WorkerCounts {
            live: self.inner.live(),
            busy: self.inner.running.load(Ordering::Relaxed),
            started: self.inner.started.load(Ordering::Relaxed),
        }
    }

    /// Numbers the next batch of `rows` rows.
    pub fn label(&self, rows: usize) -> BatchLabel {
        BatchLabel {
            seq: self.inner.batches.fetch_add(1, Ordering::Relaxed),
            first_row: self.inner.rows.fetch_add(rows as u64, Ordering::Relaxed),
            rows: rows as u64,
        }
    }

    /// Runs one batch on an idle worker (starting one when none is idle and a slot is
    /// free, or waiting for one that is starting), within `timeout`.
    pub async fn run(
        &self,
        label: BatchLabel,
        batch: &datafusion::arrow::array::RecordBatch,
        timeout: Option<Duration>,
    ) -> Result<datafusion::arrow::array::RecordBatch, PoolError> {
        let pool = &self.inner;
        let function = &pool.spec.function;
        let permit = Arc::clone(&pool.busy)
            .acquire_owned()
            .await
            .map_err(|_| PoolError::Crashed(format!("{function}: the worker pool is closed")))?;
        // An idle worker, else a new one in a free slot, else (every slot's worker busy
        // or starting, though this batch holds a permit) the first of those to be ready.
        let worker = loop {
            let changed = pool.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(worker) = pool.take_idle() {
                break worker;
            }
            if let Some(slot) = pool.take_free_slot() {
                break pool.start(slot).await?;
            }
            changed.await;
        };
        pool.running.fetch_add(1, Ordering::Relaxed);
        let mut checkout = Checkout {
            worker: Some(worker),
            _permit: permit,
            pool,
        };
        let running = checkout.worker().run(label.seq, batch);
        let outcome = match timeout {
            Some(limit) => tokio::time::timeout(limit, running).await,
            None => Ok(running.await),
        };
        match outcome {
            Ok(Ok(result)) => {
                checkout.give_back();
                Ok(result)
            }
            Ok(Err(WorkerError::UserCode(message))) => {
                // The worker is healthy.
                checkout.give_back();
                Err(PoolError::UserCode(format!(
                    "{function} raised on {label}: {message}"
                )))
            }
            Ok(Err(WorkerError::Crashed(message))) => Err(PoolError::Crashed(format!(
                "{message}, while processing {label}"
            ))),
            Err(_) => {
                let worker = checkout.take();
                let (id, pid) = (worker.id, worker.pid());
                tokio::spawn(worker.terminate(TERMINATE_GRACE));
                Err(PoolError::Hung(format!(
                    "{function} worker {id} (pid {}) took longer than the timeout of {:.1} s \
                     on {label}; it was killed",
                    pid.map_or("?".into(), |p| p.to_string()),
                    timeout.unwrap_or_default().as_secs_f64()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// A pool whose "interpreter" never says hello, so every worker stays starting. The
    /// script is written once for all tests: executing a file another thread's fork may
    /// still hold open for writing fails (ETXTBSY).
    fn pool_that_never_starts(slots: usize, prestart: usize) -> WorkerPool {
        static SCRIPT: std::sync::OnceLock<(tempfile::TempDir, String)> =
            std::sync::OnceLock::new();
        let (_, script) = SCRIPT.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let script = dir.path().join("python-that-hangs");
            let mut file = std::fs::File::create(&script).unwrap();
            writeln!(file, "#!/bin/sh\nexec sleep 30").unwrap();
            file.sync_all().unwrap();
            drop(file);
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            (dir, script.display().to_string())
        });
        let output = Arc::new(Schema::new(vec![Field::new("y", DataType::Int64, true)]));
        let spec = WorkerSpec {
            function: "map_batches(f)".into(),
            executable: script.clone(),
            python_path: None,
            payload: Arc::new(Vec::new()),
            num_cpus: 1,
            output,
        };
        WorkerPool::new(spec, vec![Vec::new(); slots], prestart)
    }

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2]))]).unwrap()
    }

    fn free_slots(pool: &WorkerPool) -> usize {
        pool.inner.free_slots.lock().unwrap().len()
    }

    #[tokio::test]
    async fn a_batch_cancelled_while_its_worker_starts_gives_the_slot_back() {
        let pool = pool_that_never_starts(2, 0);
        let _lease = pool.attach();
        let batch = batch();
        for _ in 0..3 {
            let starting = async {
                tokio::join!(
                    pool.run(pool.label(2), &batch, None),
                    pool.run(pool.label(2), &batch, None)
                )
            };
            let cancelled = tokio::time::timeout(Duration::from_millis(200), starting).await;
            assert!(cancelled.is_err(), "the workers never start");
            assert_eq!(
                free_slots(&pool),
                2,
                "both slots are free again after the cancel"
            );
        }
    }

    #[tokio::test]
    async fn the_first_attach_starts_workers_and_a_batch_waits_for_them() {
        let pool = pool_that_never_starts(3, 2);
        let _lease = pool.attach();
        let _second = pool.attach();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            free_slots(&pool),
            1,
            "two workers are starting, one slot is left"
        );
        // Three batches: one starts the third worker, two wait for the two starting ahead
        // (none fails for want of a slot).
        let batch = batch();
        let three = async {
            tokio::join!(
                pool.run(pool.label(2), &batch, None),
                pool.run(pool.label(2), &batch, None),
                pool.run(pool.label(2), &batch, None)
            )
        };
        let waited = tokio::time::timeout(Duration::from_millis(300), three).await;
        assert!(waited.is_err(), "the batches wait for the workers to start");
        assert_eq!(
            free_slots(&pool),
            1,
            "the cancelled batch's own start gave its slot back"
        );
    }

    #[tokio::test]
    async fn the_last_lease_stops_the_workers_still_starting() {
        let pool = pool_that_never_starts(2, 2);
        let lease = pool.attach();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!((free_slots(&pool), pool.workers().live), (0, 2));
        drop(lease);
        // The starts are aborted: their processes killed, their slots free.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!((free_slots(&pool), pool.workers().live), (2, 0));
        assert_eq!(pool.workers().started, 0);
    }
}
