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
//! Chain vertices run as [`chain::ChainTask`]s: a task loop that owns its input (an input
//! gate, or a [`source::SourceReader`]) and drives the vertex's [`operators`] one batch at a
//! time on the [`operator::Operator`] contract, with barriers aligned by the gate and the
//! coordinator's messages [`chain::ToTask`] / [`chain::FromTask`]. Fragment vertices run
//! as DataFusion streams, as before chains existed.

#![warn(missing_docs)]

pub mod chain;
pub mod channel;
mod coordinator;
mod executor;
mod failure;
pub mod fault;
pub mod gate;
mod inspect;
mod message;
pub mod operator;
pub mod operators;
mod output;
mod partitioner;
pub mod regions;
pub mod settings;
pub mod source;

pub use channel::{ChannelStats, Credit};
pub use coordinator::{CheckpointCounts, JobIdentity};
pub use executor::{
    ChannelInfo, JobCanceller, JobHandle, JobReport, JobReporter, JobStopper, LocalExecutor,
    ModelReport, SharedChannelStats, StartFrom, VertexReport, describe_checkpointing,
    recorded_parallelism,
};
pub use failure::TaskFailure;
pub use inspect::describe_checkpoint;
pub use message::{CheckpointId, Message};
