//! Riffle's dataflow runtime: runs a [`JobGraph`](riffle_plan::JobGraph) as parallel tasks.
//!
//! Entry point: [`LocalExecutor::execute`], which wires every edge of the graph with
//! credit-bounded [`channel`]s carrying [`Message`]s, starts one tokio task per subtask, and
//! returns a [`JobHandle`] that streams the result and can cancel the job.
//!
//! The channel contract (one channel per producer and consumer, credit in batches and
//! bytes, barriers, watermarks and end-of-input in band) and the [`gate::InputGate`] over a
//! consumer's channels (barrier alignment, the minimum watermark) are what a network
//! transport implements for cluster mode.
//!
//! The operator contract for chain vertices ([`operator::Operator`], driven by
//! [`chain::ChainTask`] with barriers aligned by the gate and the coordinator's messages
//! [`chain::ToTask`] / [`chain::FromTask`]) is in place and tested on its own; the planner
//! does not build chain vertices yet, so every vertex still runs as a DataFusion fragment.

#![warn(missing_docs)]

pub mod chain;
pub mod channel;
mod executor;
pub mod gate;
mod message;
pub mod operator;
mod partitioner;

pub use channel::{ChannelStats, Credit};
pub use executor::{ChannelInfo, JobCanceller, JobHandle, LocalExecutor};
pub use message::{CheckpointId, Message};
