//! A sink's writer at the end of a chain.
//!
//! For now it hands the chain's batches to [`Sink::write`] through a small queue, as it
//! read a fragment's stream before chains: the files are published when the job commits.
//! The write runs inside the chain's task (polled whenever the operator is called and
//! while it waits for room in the queue), not as a task of its own, so that aborting the
//! job's tasks stops it before the sink discards what it wrote. Rolling files at each barrier and
//! publishing them when the checkpoint completes (two-phase commit) comes with checkpoints.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use riffle_common::{Result, RiffleError};
use riffle_plan::Sink;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::mpsc;

use futures::FutureExt;

use crate::operator::{Operator, OperatorContext, OperatorState, Output};

/// Batches queued between the chain and the sink's writer.
const QUEUED_BATCHES: usize = 2;

/// Writes the chain's rows as one part of a sink; emits the number of rows written (a
/// `count` row, as `SinkExec` does) at the end of input.
pub struct SinkOperator {
    name: String,
    sink: Arc<dyn Sink>,
    schema: SchemaRef,
    partition: usize,
    context: Arc<TaskContext>,
    queue: Option<mpsc::Sender<datafusion::error::Result<RecordBatch>>>,
    writer: Option<Writer>,
}

type Writer = Pin<Box<dyn Future<Output = datafusion::error::Result<u64>> + Send>>;

impl SinkOperator {
    /// The writer of part `partition` of `sink`, for rows of `schema`.
    pub fn new(
        name: String,
        sink: Arc<dyn Sink>,
        schema: SchemaRef,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Self {
        Self {
            name,
            sink,
            schema,
            partition,
            context,
            queue: None,
            writer: None,
        }
    }

    /// The error of a writer that stopped before the end of its input.
    fn stopped_early(&self, outcome: datafusion::error::Result<u64>) -> RiffleError {
        match outcome {
            Err(error) => RiffleError::from(error),
            Ok(_) => RiffleError::internal(format!(
                "the writer of {} stopped before the end of its input",
                self.sink.target()
            )),
        }
    }
}

#[async_trait]
impl Operator for SinkOperator {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(
        &mut self,
        _context: &OperatorContext,
        _restored: Option<OperatorState>,
    ) -> Result<()> {
        let (queue, receiver) = mpsc::channel(QUEUED_BATCHES);
        let rows = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|batch| (batch, receiver))
        });
        let input = Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            rows,
        ));
        let sink = Arc::clone(&self.sink);
        let partition = self.partition;
        let context = Arc::clone(&self.context);
        self.writer = Some(Box::pin(async move {
            sink.write(partition, input, context).await
        }));
        self.queue = Some(queue);
        Ok(())
    }

    async fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _out: &mut Output,
    ) -> Result<()> {
        let (Some(queue), Some(writer)) = (&self.queue, &mut self.writer) else {
            return Err(RiffleError::internal("the sink writer was not started"));
        };
        let stopped = tokio::select! {
            biased;
            outcome = writer.as_mut() => Some(outcome),
            permit = queue.reserve() => match permit {
                Ok(permit) => {
                    permit.send(Ok(batch));
                    // A turn for the writer with what is queued.
                    writer.as_mut().now_or_never()
                }
                Err(_) => Some(writer.as_mut().await),
            },
        };
        match stopped {
            None => Ok(()),
            Some(outcome) => {
                self.writer = None;
                Err(self.stopped_early(outcome))
            }
        }
    }

    async fn finish(&mut self, out: &mut Output) -> Result<()> {
        self.queue = None;
        let Some(writer) = self.writer.take() else {
            return Err(RiffleError::internal("the sink writer was not started"));
        };
        let rows = writer.await?;
        out.batch(super::count_row(rows)?);
        Ok(())
    }
}
