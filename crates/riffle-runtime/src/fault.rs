//! Failure injection by configuration (`riffle.test.fail`), for tests and benchmarks.
//!
//! Compiled in always and inert unless set. A plan is a list of faults separated by `;`,
//! each `attempt=A,vertex=V,subtask=S,after-batches=N,kind=K`: in attempt `A` of the job,
//! subtask `S` of vertex `V` fails once it has processed `N` batches, in the way `K` says:
//!
//! - `error`: the task returns an external (retryable) error;
//! - `panic`: an operator panics (these two also in fragment vertices);
//! - `snapshot`: the task fails while it takes its next checkpoint;
//! - `commit`: the task fails when it is next told a checkpoint completed;
//! - `stall-snapshot`: the task's next snapshot never ends (the checkpoint times out).
//!
//! `attempt` defaults to 0 and `subtask` to 0, `kind` to `error`.

use riffle_common::{Result, RiffleError};

/// How an injected fault shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The task fails with an external error.
    Error,
    /// The task panics.
    Panic,
    /// The task fails while snapshotting.
    Snapshot,
    /// The task fails on a checkpoint-complete notification.
    Commit,
    /// The task's snapshot hangs.
    StallSnapshot,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The job attempt it fires in.
    pub attempt: u64,
    /// The vertex.
    pub vertex: usize,
    /// The subtask.
    pub subtask: usize,
    /// Batches the task processes before the fault is armed.
    pub after_batches: u64,
    /// How it shows.
    pub kind: FaultKind,
}

/// The faults of a job; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    faults: Vec<Fault>,
}

impl FaultPlan {
    /// Parses `riffle.test.fail`; an empty text injects nothing.
    pub fn parse(text: &str) -> Result<Self> {
        let mut faults = Vec::new();
        for spec in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            faults.push(parse_fault(spec)?);
        }
        Ok(Self { faults })
    }

    /// The fault armed for a task, if any.
    pub fn for_task(&self, attempt: u64, vertex: usize, subtask: usize) -> Option<Fault> {
        self.faults
            .iter()
            .find(|f| f.attempt == attempt && f.vertex == vertex && f.subtask == subtask)
            .cloned()
    }
}

fn parse_fault(spec: &str) -> Result<Fault> {
    let bad = |what: String| {
        RiffleError::user(format!("option 'riffle.test.fail': {what} in '{spec}'")).with_hint(
            "write attempt=0,vertex=1,subtask=0,after-batches=10,kind=error (kinds: error, \
             panic, snapshot, commit, stall-snapshot)",
        )
    };
    let mut fault = Fault {
        attempt: 0,
        vertex: usize::MAX,
        subtask: 0,
        after_batches: 0,
        kind: FaultKind::Error,
    };
    for pair in spec.split(',').map(str::trim) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("'{pair}' is not key=value")))?;
        let number = || {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| bad(format!("{key} takes a whole number, not '{value}'")))
        };
        match key.trim() {
            "attempt" => fault.attempt = number()?,
            "vertex" => fault.vertex = number()? as usize,
            "subtask" => fault.subtask = number()? as usize,
            "after-batches" => fault.after_batches = number()?,
            "kind" => {
                fault.kind = match value.trim() {
                    "error" => FaultKind::Error,
                    "panic" => FaultKind::Panic,
                    "snapshot" => FaultKind::Snapshot,
                    "commit" => FaultKind::Commit,
                    "stall-snapshot" => FaultKind::StallSnapshot,
                    other => return Err(bad(format!("unknown kind '{other}'"))),
                }
            }
            other => return Err(bad(format!("unknown key '{other}'"))),
        }
    }
    if fault.vertex == usize::MAX {
        return Err(bad("no vertex".into()));
    }
    Ok(fault)
}

/// A task's armed fault and its count of batches.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskFault {
    fault: Option<Fault>,
    batches: u64,
}

impl TaskFault {
    pub(crate) fn new(fault: Option<Fault>) -> Self {
        Self { fault, batches: 0 }
    }

    fn armed(&self, kind: FaultKind) -> bool {
        self.fault
            .as_ref()
            .is_some_and(|f| f.kind == kind && self.batches >= f.after_batches)
    }

    fn error(&self, during: &str) -> RiffleError {
        let fault = self.fault.as_ref();
        RiffleError::external(format!(
            "injected failure (riffle.test.fail) {during} in vertex {} subtask {} after {} batches",
            fault.map_or(0, |f| f.vertex),
            fault.map_or(0, |f| f.subtask),
            self.batches
        ))
        .with_retryable(true)
    }

    /// Counts a batch; fails or panics when an `error` or `panic` fault is due.
    pub(crate) fn on_batch(&mut self) -> Result<()> {
        self.batches += 1;
        if self.armed(FaultKind::Panic) {
            // Deliberately: what a bug in an operator looks like to the job.
            panic!("{}", self.error("as a panic"));
        }
        if self.armed(FaultKind::Error) {
            return Err(self.error("while processing"));
        }
        Ok(())
    }

    /// Fails or stalls when a snapshot fault is due.
    pub(crate) async fn on_snapshot(&self) -> Result<()> {
        if self.armed(FaultKind::StallSnapshot) {
            std::future::pending::<()>().await;
        }
        if self.armed(FaultKind::Snapshot) {
            return Err(self.error("during a snapshot"));
        }
        Ok(())
    }

    /// Fails when a commit fault is due.
    pub(crate) fn on_commit(&self) -> Result<()> {
        if self.armed(FaultKind::Commit) {
            return Err(self.error("during a commit"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_faults_and_finds_the_one_of_a_task() {
        let plan = FaultPlan::parse(
            "vertex=1,after-batches=3; attempt=1,vertex=0,subtask=2,after-batches=7,kind=snapshot",
        )
        .unwrap();
        assert_eq!(plan.for_task(0, 1, 0).unwrap().after_batches, 3);
        let second = plan.for_task(1, 0, 2).unwrap();
        assert_eq!(second.kind, FaultKind::Snapshot);
        assert!(plan.for_task(1, 1, 0).is_none());
        assert!(FaultPlan::parse("").unwrap().for_task(0, 0, 0).is_none());
    }

    #[test]
    fn a_malformed_plan_names_what_is_wrong() {
        for (text, expected) in [
            ("vertex=x", "vertex takes a whole number"),
            ("vertex=1,kind=boom", "unknown kind 'boom'"),
            ("after-batches=3", "no vertex"),
            ("vertex=1,when=now", "unknown key 'when'"),
        ] {
            let error = FaultPlan::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn an_error_fault_fires_after_its_batches() {
        let mut fault = TaskFault::new(
            FaultPlan::parse("vertex=0,after-batches=2")
                .unwrap()
                .for_task(0, 0, 0),
        );
        assert!(fault.on_batch().is_ok());
        let error = fault.on_batch().unwrap_err();
        assert!(error.is_retryable() && error.to_string().contains("injected failure"));
    }
}
