//! What travels on a channel.

use datafusion::arrow::array::RecordBatch;

/// Identifies a checkpoint; barriers with the same id cut the streams at one consistent point.
pub type CheckpointId = u64;

/// One element of a stream between tasks. Control messages travel in band, so that they
/// keep their place relative to the batches around them.
#[derive(Debug, Clone)]
pub enum Message {
    /// Rows.
    Batch(RecordBatch),
    /// Event time has reached this value (milliseconds since the epoch) on this stream.
    Watermark(i64),
    /// A checkpoint barrier. Passed through unchanged until checkpoints land.
    Barrier(CheckpointId),
    /// The producer has no more data.
    EndOfInput,
}

impl Message {
    /// Bytes this message holds in Arrow buffers: what channel credits count.
    pub fn size_bytes(&self) -> usize {
        match self {
            Message::Batch(batch) => batch.get_array_memory_size(),
            _ => 0,
        }
    }
}
