//! The rows of user code that gives any number of rows per batch (`map_batches` from
//! Python, with `python.output-rows` = `any`), taken out of the inference operator's answer.
//!
//! The inference operator answers every input row; such a backend answers a batch on its
//! first row, a list of structs holding all the rows the batch gave (the other rows get
//! empty lists; a batch that failed with `on-error` = `null` gets NULL lists). So the
//! operator's contract (order, retries, the checkpointed requests in flight) holds as it
//! is, and this node, planned right above the call, turns each answer into those rows: the
//! structs' columns, without a copy when no list is NULL, and one row of NULLs per NULL
//! list. It keeps its input's order and does not ask for more partitions (an UNNEST would
//! be spread round-robin by DataFusion's optimizer, losing the order).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

/// See the module docs.
#[derive(Debug)]
pub struct BatchRowsExec {
    input: Arc<dyn ExecutionPlan>,
    /// The list column's position in the input.
    column: usize,
    properties: Arc<PlanProperties>,
}

impl BatchRowsExec {
    /// The rows held by `input`'s list-of-structs column `column`.
    pub fn try_new(input: Arc<dyn ExecutionPlan>, column: usize) -> Result<Self> {
        let schema = rows_schema(&input.schema(), column)?;
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(input.properties().partitioning.partition_count()),
            input.properties().emission_type,
            input.properties().boundedness,
        );
        Ok(Self {
            input,
            column,
            properties: Arc::new(properties),
        })
    }

    /// The list column's position in the input.
    pub fn column(&self) -> usize {
        self.column
    }
}

/// The structs' fields of `input`'s column `column`, as a schema.
pub fn rows_schema(input: &Schema, column: usize) -> Result<SchemaRef> {
    let field = input.fields().get(column).ok_or_else(|| {
        DataFusionError::Internal(format!("the rows column {column} is not in the input"))
    })?;
    match field.data_type() {
        DataType::List(item) => match item.data_type() {
            // Nullable: a batch that failed with on-error 'null' gives rows of NULLs.
            DataType::Struct(fields) => Ok(Arc::new(Schema::new(
                fields
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            ))),
            other => Err(DataFusionError::Internal(format!(
                "the rows column {} holds {other}, not structs",
                field.name()
            ))),
        },
        other => Err(DataFusionError::Internal(format!(
            "the rows column {} is {other}, not a list",
            field.name()
        ))),
    }
}

/// The rows in `batch`'s list column `column`, in order: each list's structs, and one row
/// of NULLs for a NULL list.
pub fn batch_rows(batch: &RecordBatch, column: usize, schema: &SchemaRef) -> Result<RecordBatch> {
    let lists = batch
        .column(column)
        .as_list_opt::<i32>()
        .ok_or_else(|| DataFusionError::Internal("the rows column is not a list".into()))?;
    let offsets = lists.value_offsets();
    let (first, last) = (offsets[0] as usize, offsets[lists.len()] as usize);
    let values = lists.values().as_struct();
    let rows = if lists.null_count() == 0 {
        values.slice(first, last - first)
    } else {
        let mut indices: Vec<Option<u32>> = Vec::with_capacity(last - first + lists.null_count());
        for row in 0..lists.len() {
            if lists.is_null(row) {
                indices.push(None);
            } else {
                let (start, end) = (offsets[row] as u32, offsets[row + 1] as u32);
                indices.extend((start..end).map(Some));
            }
        }
        take(values, &UInt32Array::from(indices), None)?
            .as_struct()
            .clone()
    };
    let columns = rows.columns().to_vec();
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )?)
}

impl DisplayAs for BatchRowsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BatchRowsExec: column={}", self.column)
    }
}

impl ExecutionPlan for BatchRowsExec {
    crate::plan_node_defaults!();

    fn name(&self) -> &str {
        "BatchRowsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.len() {
            1 => Ok(Arc::new(Self::try_new(
                children.swap_remove(0),
                self.column,
            )?)),
            _ => Err(DataFusionError::Internal(
                "BatchRowsExec takes one child".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = self.schema();
        let column = self.column;
        let rows = {
            let schema = Arc::clone(&schema);
            input.map(move |batch| batch_rows(&batch?, column, &schema))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, Int64Array, ListArray, StructArray};
    use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
    use datafusion::arrow::datatypes::{Field, Fields};

    use super::*;

    #[test]
    fn each_list_gives_its_rows_and_a_null_list_one_null_row() {
        let fields = Fields::from(vec![Field::new("y", DataType::Int64, true)]);
        let values = StructArray::new(
            fields.clone(),
            vec![Arc::new(Int64Array::from(vec![10, 11, 12, 20])) as ArrayRef],
            None,
        );
        let item = Arc::new(Field::new("item", DataType::Struct(fields), true));
        // Batch A's 3 rows on its first row, an empty list; then a failed batch (NULL);
        // then batch B's one row.
        let lists = |nulls: Option<NullBuffer>| {
            ListArray::new(
                Arc::clone(&item),
                OffsetBuffer::from_lengths([3, 0, 0, 1]),
                Arc::new(values.clone()),
                nulls,
            )
        };
        let input = |lists: ListArray| {
            let schema = Schema::new(vec![Field::new("rows", lists.data_type().clone(), true)]);
            RecordBatch::try_new(Arc::new(schema), vec![Arc::new(lists)]).unwrap()
        };
        let schema = rows_schema(&input(lists(None)).schema(), 0).unwrap();
        let all = batch_rows(&input(lists(None)), 0, &schema).unwrap();
        let ys = |b: &RecordBatch| -> Vec<Option<i64>> {
            b.column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .iter()
                .collect()
        };
        assert_eq!(ys(&all), vec![Some(10), Some(11), Some(12), Some(20)]);
        let failed = NullBuffer::from(vec![true, true, false, true]);
        let with_null = batch_rows(&input(lists(Some(failed))), 0, &schema).unwrap();
        assert_eq!(
            ys(&with_null),
            vec![Some(10), Some(11), Some(12), None, Some(20)]
        );
    }
}
