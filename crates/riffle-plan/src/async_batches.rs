//! Asynchronous functions (`file_read`, `url_download`) on small slices of their input.
//!
//! DataFusion plans each call of an async UDF into an `AsyncFuncExec`, which first gathers
//! its input into batches of the session's batch size (8192 rows) and evaluates them one at
//! a time. For multimodal data that is the wrong shape: 8192 fetched images are about a
//! gigabyte before decoding and ten after, and nothing downstream starts until the last of
//! them arrived. [`AsyncBatchesRule`] replaces every `AsyncFuncExec` with an
//! [`AsyncBatchExec`], which cuts its input into slices of a few rows (zero-copy), evaluates
//! them in order with one slice fetched ahead of the consumer, and so hands small batches to
//! the operators after it (decode, resize, inference): memory stays bounded by a few
//! slices, and the network and the CPU overlap.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::async_scalar_function::AsyncFuncExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::async_func::AsyncFuncExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

/// Slices evaluated at once: the one being consumed and the one after it.
const SLICES_IN_FLIGHT: usize = 2;

/// Evaluates async functions on slices of `rows` rows (see the module docs).
#[derive(Debug)]
pub struct AsyncBatchExec {
    exprs: Vec<Arc<AsyncFuncExpr>>,
    input: Arc<dyn ExecutionPlan>,
    rows: usize,
    properties: Arc<PlanProperties>,
}

impl AsyncBatchExec {
    /// Takes over the expressions and properties of DataFusion's operator.
    pub fn replacing(exec: &AsyncFuncExec, rows: usize) -> Result<Self> {
        let mut exprs = Vec::new();
        exec.apply_expressions(&mut |expr: &Arc<dyn PhysicalExpr>| {
            if let Some(async_expr) = expr.downcast_ref::<AsyncFuncExpr>() {
                exprs.push(Arc::new(async_expr.clone()));
            }
            Ok(TreeNodeRecursion::Jump)
        })?;
        Ok(Self {
            exprs,
            input: Arc::clone(exec.input()),
            rows: rows.max(1),
            properties: Arc::clone(exec.properties()),
        })
    }

    /// From its parts, as a decoded job graph has them.
    pub fn new(
        exprs: Vec<Arc<AsyncFuncExpr>>,
        input: Arc<dyn ExecutionPlan>,
        rows: usize,
    ) -> Result<Self> {
        // DataFusion's operator computes the output's properties; borrow them.
        let planned = AsyncFuncExec::try_new(exprs.clone(), Arc::clone(&input))?;
        Ok(Self {
            exprs,
            input,
            rows: rows.max(1),
            properties: Arc::clone(planned.properties()),
        })
    }

    /// The async expressions, each with the name of its output column.
    pub fn exprs(&self) -> &[Arc<AsyncFuncExpr>] {
        &self.exprs
    }

    /// Rows per slice.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

impl DisplayAs for AsyncBatchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let exprs: Vec<String> = self.exprs.iter().map(|e| e.to_string()).collect();
        write!(
            f,
            "AsyncBatchExec: rows={}, async_expr=[{}]",
            self.rows,
            exprs.join(", ")
        )
    }
}

impl ExecutionPlan for AsyncBatchExec {
    fn name(&self) -> &str {
        "AsyncBatchExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for expr in &self.exprs {
            let expr: Arc<dyn PhysicalExpr> = Arc::clone(expr) as _;
            if f(&expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "AsyncBatchExec takes one child".into(),
            ));
        }
        Ok(Arc::new(Self::new(
            self.exprs.clone(),
            children.swap_remove(0),
            self.rows,
        )?))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let rows = self.rows;
        let exprs = Arc::new(self.exprs.clone());
        let schema = self.schema();
        let options = Arc::clone(context.session_config().options());
        let evaluated = row_slices(input, rows)
            .map(move |slice| {
                let exprs = Arc::clone(&exprs);
                let schema = Arc::clone(&schema);
                let options = Arc::clone(&options);
                // A task of its own, so that the next slice's requests go out while the
                // operators above are still busy with this one (aborted if the job stops).
                let task = SpawnedTask::spawn(async move {
                    evaluate_slice(slice?, &exprs, schema, options).await
                });
                async move {
                    task.join()
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?
                }
            })
            .buffered(SLICES_IN_FLIGHT);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            evaluated,
        )))
    }
}

/// `input`'s batches cut into slices of at most `rows` rows (zero-copy), in order.
pub(crate) fn row_slices(
    input: SendableRecordBatchStream,
    rows: usize,
) -> impl futures::Stream<Item = Result<RecordBatch>> {
    let rows = rows.max(1);
    input
        .map_ok(move |batch| {
            let count = batch.num_rows().div_ceil(rows);
            futures::stream::iter((0..count).map(move |i| {
                let start = i * rows;
                Ok::<_, DataFusionError>(batch.slice(start, rows.min(batch.num_rows() - start)))
            }))
        })
        .try_flatten()
}

/// The slice's columns followed by one column per async expression: what an
/// [`AsyncBatchExec`] and a chain's async operator emit for a slice.
pub async fn evaluate_slice(
    slice: RecordBatch,
    exprs: &[Arc<AsyncFuncExpr>],
    schema: datafusion::arrow::datatypes::SchemaRef,
    options: Arc<ConfigOptions>,
) -> Result<RecordBatch> {
    let mut columns = slice.columns().to_vec();
    for expr in exprs {
        let value = expr.invoke_with_args(&slice, Arc::clone(&options)).await?;
        columns.push(value.to_array(slice.num_rows())?);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Replaces DataFusion's `AsyncFuncExec` with [`AsyncBatchExec`].
#[derive(Debug)]
pub struct AsyncBatchesRule {
    rows: usize,
}

impl AsyncBatchesRule {
    /// Slices of `rows` rows.
    pub fn new(rows: usize) -> Self {
        Self { rows }
    }
}

impl PhysicalOptimizerRule for AsyncBatchesRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| match node.downcast_ref::<AsyncFuncExec>() {
            Some(exec) => Ok(Transformed::yes(
                Arc::new(AsyncBatchExec::replacing(exec, self.rows)?) as Arc<dyn ExecutionPlan>,
            )),
            None => Ok(Transformed::no(node)),
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "riffle_async_batches"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
