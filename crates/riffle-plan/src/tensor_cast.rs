//! `CAST(t AS TENSOR(FLOAT, [3, 224, 224]))` as a call of `tensor_fixed_shape`.
//!
//! Arrow's cast knows no way from a variable-shape tensor (a struct of data and shape, as
//! `image_to_tensor` makes) to a fixed-shape one (a fixed-size list with the shape in the
//! field's metadata), so an analyzer rule turns every cast to a fixed-shape tensor into the
//! function that checks each row's shape: a row of another shape is an error naming both.
//! `INSERT INTO` a `TENSOR` column reaches it too: riffle-sql casts such columns explicitly.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Cast, Expr, LogicalPlan, ScalarUDF, TryCast, lit};
use datafusion::optimizer::AnalyzerRule;
use riffle_functions::tensor::TENSOR_FIXED_SHAPE;
use riffle_types::TensorType;

/// See the module docs.
#[derive(Debug)]
pub struct TensorCastRule {
    function: Arc<ScalarUDF>,
}

impl Default for TensorCastRule {
    fn default() -> Self {
        let function = riffle_functions::tensor::functions()
            .into_iter()
            .find(|f| f.name() == TENSOR_FIXED_SHAPE)
            .expect("tensor_fixed_shape is a built-in function");
        Self { function }
    }
}

impl TensorCastRule {
    fn rewrite(&self, expr: Expr) -> Result<Transformed<Expr>> {
        // TRY_CAST gives NULL for a row of another shape; CAST fails naming it.
        let (inner, tensor, on_error) = match expr {
            Expr::Cast(Cast { expr, field }) => match TensorType::from_field(&field) {
                Some(tensor) => (expr, tensor, None),
                None => return Ok(Transformed::no(Expr::Cast(Cast { expr, field }))),
            },
            Expr::TryCast(TryCast { expr, field }) => match TensorType::from_field(&field) {
                Some(tensor) => (expr, tensor, Some("null")),
                None => return Ok(Transformed::no(Expr::TryCast(TryCast { expr, field }))),
            },
            other => return Ok(Transformed::no(other)),
        };
        let mut args = vec![*inner, lit(tensor.to_string())];
        args.extend(on_error.map(lit));
        let call = Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(&self.function), args));
        Ok(Transformed::yes(call))
    }
}

impl AnalyzerRule for TensorCastRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let rewritten = plan.transform_up_with_subqueries(|node| {
            // Expressions keep the names they had before the rewrite, which parents refer to;
            // each rewritten node's schema follows its new types (the function's output is
            // nullable where the cast's input may not have been).
            let names = NamePreserver::new(&node);
            node.map_expressions(|expr| {
                let name = names.save(&expr);
                Ok(expr
                    .transform_up(|e| self.rewrite(e))?
                    .update_data(|e| name.restore(e)))
            })?
            .map_data(|node| node.recompute_schema())
        })?;
        Ok(rewritten.data)
    }

    fn name(&self) -> &str {
        "riffle_tensor_cast"
    }
}
