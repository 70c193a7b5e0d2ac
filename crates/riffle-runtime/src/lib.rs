//! Riffle's dataflow runtime: runs a [`JobGraph`](riffle_plan::JobGraph) as parallel tasks.
//!
//! Entry point: [`LocalExecutor::execute`], which wires every edge of the graph with
//! credit-bounded [`channel`]s carrying [`Message`]s, starts one tokio task per subtask, and
//! returns a [`JobHandle`] that streams the result and can cancel the job.
//!
//! The channel contract (one receiver, a known number of senders, credit in batches and
//! bytes, in-band control messages) is what a network transport implements for cluster mode.

#![warn(missing_docs)]

pub mod channel;
mod executor;
mod message;
mod partitioner;

pub use channel::{ChannelStats, Credit};
pub use executor::{ChannelInfo, JobCanceller, JobHandle, LocalExecutor};
pub use message::{CheckpointId, Message};
