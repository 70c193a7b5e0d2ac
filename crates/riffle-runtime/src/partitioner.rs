//! The sending side of an edge: spreads one producer's batches over the consumer's
//! partitions as the edge's [`EdgePartitioning`] says.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::common::hash_utils::create_hashes;
use datafusion::error::Result;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::physical_plan::repartition::REPARTITION_RANDOM_STATE;
use riffle_plan::EdgePartitioning;

use crate::channel::{Disconnected, Sender};
use crate::message::Message;

/// The partitions producer `producer` (of `producers`) feeds, out of `partitions`.
pub(crate) fn targets(
    partitioning: &EdgePartitioning,
    producer: usize,
    producers: usize,
    partitions: usize,
) -> Vec<usize> {
    match partitioning {
        EdgePartitioning::Forward => vec![producer],
        EdgePartitioning::Rescale => {
            if partitions >= producers {
                let start = producer * partitions / producers;
                let end = (producer + 1) * partitions / producers;
                (start..end).collect()
            } else {
                vec![producer * partitions / producers]
            }
        }
        EdgePartitioning::Rebalance | EdgePartitioning::Hash(_) | EdgePartitioning::Broadcast => {
            (0..partitions).collect()
        }
    }
}

/// Why a batch could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Evaluating the partitioning keys failed.
    Compute(datafusion::error::DataFusionError),
    /// The consumer is gone: the job is stopping.
    Disconnected,
}

impl From<Disconnected> for SendError {
    fn from(_: Disconnected) -> Self {
        SendError::Disconnected
    }
}

/// One producer's output on one edge.
pub(crate) struct OutputPartitioner {
    partitioning: EdgePartitioning,
    /// Senders indexed by consumer partition; `None` where this producer sends nothing.
    senders: Vec<Option<Sender>>,
    targets: Vec<usize>,
    next: usize,
}

impl OutputPartitioner {
    pub(crate) fn new(
        partitioning: EdgePartitioning,
        senders: Vec<Option<Sender>>,
        producer: usize,
        producers: usize,
    ) -> Self {
        let targets = targets(&partitioning, producer, producers, senders.len());
        Self {
            partitioning,
            senders,
            // Start producers at different partitions so that round-robin spreads evenly.
            next: producer,
            targets,
        }
    }

    /// Sends a batch, split or copied as the partitioning says. A partition whose consumer
    /// has gone (it needs no more rows, as after a LIMIT) is skipped from then on; the
    /// producer is told to stop only when every partition it feeds is gone.
    pub(crate) async fn send_batch(&mut self, batch: RecordBatch) -> Result<(), SendError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match &self.partitioning {
            EdgePartitioning::Forward | EdgePartitioning::Rescale | EdgePartitioning::Rebalance => {
                let open = self.targets.iter().filter(|p| self.is_open(**p)).count();
                if open == 0 {
                    return Err(SendError::Disconnected);
                }
                // The next target that still has a consumer.
                let partition = loop {
                    let candidate = self.targets[self.next % self.targets.len()];
                    self.next = self.next.wrapping_add(1);
                    if self.is_open(candidate) {
                        break candidate;
                    }
                };
                self.send_to(partition, Message::Batch(batch)).await
            }
            EdgePartitioning::Broadcast => self.send_all(Message::Batch(batch)).await,
            EdgePartitioning::Hash(keys) => {
                let parts =
                    hash_split(&batch, keys, self.senders.len()).map_err(SendError::Compute)?;
                for (partition, part) in parts {
                    self.send_to(partition, Message::Batch(part)).await?;
                }
                Ok(())
            }
        }
    }

    /// Sends a message to every partition this producer feeds.
    pub(crate) async fn send_all(&mut self, message: Message) -> Result<(), SendError> {
        for partition in 0..self.senders.len() {
            if self.is_open(partition) {
                self.send_to(partition, message.clone()).await?;
            }
        }
        Ok(())
    }

    fn is_open(&self, partition: usize) -> bool {
        self.senders.get(partition).is_some_and(Option::is_some)
    }

    async fn send_to(&mut self, partition: usize, message: Message) -> Result<(), SendError> {
        if let Some(sender) = self.senders.get_mut(partition).and_then(Option::as_mut)
            && sender.send(message).await.is_err()
        {
            // That consumer is gone; rows for it are no longer needed.
            self.senders[partition] = None;
        }
        if self.senders.iter().all(Option::is_none) {
            return Err(SendError::Disconnected);
        }
        Ok(())
    }
}

/// Splits a batch by the hash of `keys`, into `(partition, rows)` pairs for the non-empty
/// partitions. Uses the same hash function on every edge, so both inputs of a join agree.
pub(crate) fn hash_split(
    batch: &RecordBatch,
    keys: &[Arc<dyn PhysicalExpr>],
    partitions: usize,
) -> Result<Vec<(usize, RecordBatch)>> {
    if partitions == 1 {
        return Ok(vec![(0, batch.clone())]);
    }
    let arrays = keys
        .iter()
        .map(|key| key.evaluate(batch)?.into_array(batch.num_rows()))
        .collect::<Result<Vec<_>>>()?;
    let mut hashes = vec![0u64; batch.num_rows()];
    create_hashes(
        &arrays,
        REPARTITION_RANDOM_STATE.random_state(),
        &mut hashes,
    )?;
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); partitions];
    for (row, hash) in hashes.iter().enumerate() {
        indices[(*hash % partitions as u64) as usize].push(row as u32);
    }
    let mut parts = Vec::new();
    for (partition, rows) in indices.into_iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        let rows = UInt32Array::from(rows);
        parts.push((partition, take_record_batch(batch, &rows)?));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::col;

    use super::*;

    #[test]
    fn forward_and_rescale_map_producers_pointwise() {
        assert_eq!(targets(&EdgePartitioning::Forward, 2, 4, 4), vec![2]);
        assert_eq!(targets(&EdgePartitioning::Rescale, 1, 2, 4), vec![2, 3]);
        assert_eq!(targets(&EdgePartitioning::Rescale, 3, 4, 2), vec![1]);
        assert_eq!(targets(&EdgePartitioning::Rescale, 3, 4, 1), vec![0]);
        assert_eq!(
            targets(&EdgePartitioning::Broadcast, 0, 4, 3),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn hash_split_sends_equal_keys_to_one_partition() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let keys = Int64Array::from(vec![
            Some(1),
            Some(2),
            None,
            Some(1),
            Some(3),
            None,
            Some(2),
        ]);
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(keys)]).unwrap();
        let key = col("k", &schema).unwrap();
        let parts = hash_split(&batch, &[key], 4).unwrap();
        let total: usize = parts.iter().map(|(_, part)| part.num_rows()).sum();
        assert_eq!(total, 7);
        let mut seen = std::collections::HashMap::new();
        for (partition, part) in &parts {
            let values = part
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            for value in values.iter() {
                let previous = seen.insert(value, *partition);
                assert!(previous.is_none() || previous == Some(*partition));
            }
        }
    }
}
