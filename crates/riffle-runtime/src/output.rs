//! Where a task's output goes: its output edge, or the job's result.

use datafusion::arrow::array::RecordBatch;

use crate::channel::Sender;
use crate::message::Message;
use crate::partitioner::{OutputPartitioner, SendError};

/// Where a subtask's output goes.
pub(crate) enum TaskOutput {
    /// The vertex's output edge.
    Edge(OutputPartitioner),
    /// The job's result (the root vertex).
    Result(Sender),
}

impl TaskOutput {
    /// Sends rows (empty batches are not sent to the result).
    pub(crate) async fn send_batch(&mut self, batch: RecordBatch) -> Result<(), SendError> {
        match self {
            TaskOutput::Edge(partitioner) => partitioner.send_batch(batch).await,
            TaskOutput::Result(sender) => {
                if batch.num_rows() > 0 {
                    sender.send(Message::Batch(batch)).await?;
                }
                Ok(())
            }
        }
    }

    /// Sends a control message (watermark, barrier, end of input) on every channel.
    pub(crate) async fn send_all(&mut self, message: Message) -> Result<(), SendError> {
        match self {
            TaskOutput::Edge(partitioner) => partitioner.send_all(message).await,
            TaskOutput::Result(sender) => sender.send(message).await.map_err(Into::into),
        }
    }
}
