//! A stateless DataFusion sub-plan run once per batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, RecordBatch, StringArray, StructArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use riffle_common::{ErrorKind, Result, RiffleError};
use riffle_plan::{BatchSlot, BatchSlotExec};
use riffle_types::media::FILE;

use crate::operator::{Operator, OperatorContext, OperatorState, Output};
use crate::source::SourceProgress;

/// Runs a chain segment (projections, filters, functions over a [`BatchSlotExec`]) on each
/// batch: the batch goes into the slot, the plan is executed and drained. Between batches
/// the segment holds nothing, so it has no state.
pub struct SegmentOperator {
    name: String,
    plan: Arc<dyn ExecutionPlan>,
    slot: BatchSlot,
    context: Arc<TaskContext>,
    origin: Option<RowOrigin>,
}

/// Where the rows of a chain's first segment come from: the chain's source, read as it
/// emits them. A row that fails is named by its place in the source.
#[derive(Clone)]
pub struct RowOrigin {
    /// The source plan.
    pub source: Arc<dyn ExecutionPlan>,
    /// The partition the chain's task reads.
    pub partition: usize,
    /// The source's position, just after the batch the segment is given.
    pub progress: Arc<SourceProgress>,
}

impl SegmentOperator {
    /// This subtask's instance of `segment`, with a slot of its own; `origin` when the
    /// segment reads the chain's source directly.
    pub fn new(
        name: String,
        segment: &Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
        origin: Option<RowOrigin>,
    ) -> Result<Self> {
        let (plan, slot) = BatchSlotExec::instantiate(segment)?;
        Ok(Self {
            name,
            plan,
            slot,
            context,
            origin,
        })
    }

    /// Whether the segment fails on `batch` (its output is dropped).
    async fn fails(&mut self, batch: &RecordBatch) -> bool {
        self.slot.put(batch.clone());
        let Ok(mut stream) = self.plan.execute(0, Arc::clone(&self.context)) else {
            return true;
        };
        while let Some(output) = stream.next().await {
            if output.is_err() {
                return true;
            }
        }
        false
    }

    /// The first row of `batch` that the segment fails on by itself: the shortest failing
    /// prefix, found by bisection, ends with it. `None` when no single row fails (the batch
    /// failed as a whole, or the failure did not repeat).
    async fn failing_row(&mut self, batch: &RecordBatch) -> Option<usize> {
        let (mut shortest_failing, mut longest_passing) = (batch.num_rows(), 0);
        while longest_passing + 1 < shortest_failing {
            let middle = (longest_passing + shortest_failing) / 2;
            if self.fails(&batch.slice(0, middle)).await {
                shortest_failing = middle;
            } else {
                longest_passing = middle;
            }
        }
        let row = shortest_failing.checked_sub(1)?;
        self.fails(&batch.slice(row, 1)).await.then_some(row)
    }

    /// `error`, which the segment raised on `batch`, with the failing row's place: its file
    /// (a `FILE` column, as `files()` gives), or its place in the chain's source. Only for
    /// errors in the data: a failure of the network or of Riffle is not the row's.
    async fn name_the_row(&mut self, batch: &RecordBatch, error: RiffleError) -> RiffleError {
        if error.kind() != ErrorKind::User || batch.num_rows() == 0 {
            return error;
        }
        let Some(row) = self.failing_row(batch).await else {
            return error;
        };
        if let Some(path) = path_of(batch, row) {
            return error.context(format!("the row of file {path}"));
        }
        let Some(origin) = &self.origin else {
            return match values_of(batch, row) {
                Some(values) => error.context(format!("the row with {values}")),
                None => error,
            };
        };
        let end = origin.progress.rows.load(Ordering::Relaxed);
        let position = (end + row as u64).saturating_sub(batch.num_rows() as u64);
        let place = riffle_plan::describe_source_row(
            &origin.source,
            origin.partition,
            position,
            &self.context,
        )
        .await
        .unwrap_or_else(|| format!("row {position} of source partition {}", origin.partition));
        error.context(format!("the row at {place}"))
    }
}

/// The URI of the file at `row`, when the batch has a `FILE` column (the rows of
/// `files()`).
pub(crate) fn path_of(batch: &RecordBatch, row: usize) -> Option<String> {
    let schema = batch.schema();
    let index = schema
        .fields()
        .iter()
        .position(|field| riffle_types::media::media_extension(field) == Some(FILE))?;
    let files = batch.column(index).as_any().downcast_ref::<StructArray>()?;
    let uris = files
        .column_by_name("uri")?
        .as_any()
        .downcast_ref::<StringArray>()?;
    (files.is_valid(row) && uris.is_valid(row)).then(|| uris.value(row).to_string())
}

/// The first few scalar values of `row` (`id = 27, name = 'cat'`), to find the row by,
/// when nothing tells where it was read.
fn values_of(batch: &RecordBatch, row: usize) -> Option<String> {
    const SHOWN: usize = 3;
    const LONGEST: usize = 60;
    let schema = batch.schema();
    let values: Vec<String> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(field, _)| {
            let kind = field.data_type();
            kind.is_primitive()
                || matches!(
                    kind,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
        })
        .take(SHOWN)
        .filter_map(|(field, column)| {
            let value = array_value_to_string(column, row).ok()?;
            let value = if value.chars().count() > LONGEST {
                format!("{}...", value.chars().take(LONGEST).collect::<String>())
            } else {
                value
            };
            Some(format!("{} = {value}", field.name()))
        })
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

#[async_trait]
impl Operator for SegmentOperator {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(
        &mut self,
        _context: &OperatorContext,
        _restored: Option<OperatorState>,
    ) -> Result<()> {
        Ok(())
    }

    async fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> Result<()> {
        self.slot.put(batch.clone());
        let mut stream = self.plan.execute(0, Arc::clone(&self.context))?;
        while let Some(output) = stream.next().await {
            match output {
                Ok(output) => out.batch(output),
                Err(error) => {
                    drop(stream);
                    return Err(self.name_the_row(&batch, error.into()).await);
                }
            }
        }
        Ok(())
    }
}
