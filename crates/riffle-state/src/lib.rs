//! Riffle's checkpoint protocol, as pure decisions.
//!
//! The checkpoint coordinator (in the runtime) owns the clock, the channels to its tasks and
//! the object store; everything it has to *decide* is here, as functions of what it has seen,
//! with no I/O and no async, so that every decision can be tested exhaustively (Arroyo's
//! `arroyo-state-protocol` has the same split):
//!
//! - [`Tracker`]: when to trigger a checkpoint (interval, minimum pause, checkpoints at once),
//!   when one is complete (every task acknowledged it and its metadata is durable), when it
//!   is aborted (a decline, a timeout, a failed task), and when too many failures in a row
//!   fail the job. Entry point: [`Tracker::on_event`].
//! - [`retention`]: which completed checkpoints to keep and which to delete, and which one to
//!   restore from when some are corrupt or partial.
//! - [`regions`]: the pipeline regions of a job graph, the unit of failover and (later) of
//!   regional checkpoints.
//! - [`store`]: the one module that does I/O: state files (Arrow IPC) and metadata on an
//!   object store, checksums, publication with create-if-absent, validation, retention.
//!
//! Time is milliseconds on the coordinator's clock ([`Millis`]); tests drive it by hand.

#![warn(missing_docs)]

pub mod regions;
pub mod retention;
pub mod store;
mod tracker;

pub use regions::{EdgeLinks, GraphShape, Region, regions};
pub use retention::{RestoreChoice, Validity, choose_restore, to_delete};
pub use store::{CheckpointStore, FileRef, Metadata, OperatorEntry, StoreError, TaskEntry};
pub use tracker::{
    Attempt, CheckpointId, CheckpointKind, Decision, Event, Millis, TaskId, Tracker, TrackerConfig,
};
