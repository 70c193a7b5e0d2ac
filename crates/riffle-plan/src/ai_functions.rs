//! `ai_embed(model, text)`, `ai_complete(model, prompt)` and `ai_classify(model, text,
//! ARRAY[labels])`: model calls written as scalar functions, planned onto the same batched
//! inference operator as `ML_PREDICT`, never one call per row. `ai_classify` asks a chat
//! model for one of the labels (a prompt over them) and checks that the answer is one; any
//! other answer is a row error.
//!
//! The functions exist so that SQL and DataFrame expressions type-check (their type is the
//! model's first OUTPUT column, read from the session's catalog); they cannot run.
//! [`AiFunctionsRule`], an analyzer rule, takes every call out of a projection, a filter or
//! an aggregate: the argument becomes a column of a projection below, an [`MlPredictNode`]
//! reads it, and the call becomes a reference to the node's output column.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use datafusion::arrow::datatypes::{DataType, FieldRef, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

use crate::ml_predict::{MlPredictNode, ModelDefinition};

/// The session's models, shared with the functions that read their types.
pub type ModelCatalog = Arc<RwLock<BTreeMap<String, ModelDefinition>>>;

/// The AI functions' names.
pub const AI_FUNCTIONS: &[&str] = &["ai_embed", "ai_complete", "ai_classify"];

/// `ai_embed` or `ai_complete`; see the module docs.
#[derive(Debug)]
pub struct AiFunction {
    name: &'static str,
    models: ModelCatalog,
    signature: Signature,
}

impl PartialEq for AiFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.models, &other.models)
    }
}
impl Eq for AiFunction {}
impl std::hash::Hash for AiFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl AiFunction {
    /// The function `name` over the session's `models`.
    pub fn new(name: &'static str, models: ModelCatalog) -> Self {
        Self {
            name,
            models,
            signature: if name == "ai_classify" {
                Signature::any(3, Volatility::Volatile)
            } else {
                Signature::any(2, Volatility::Volatile)
            },
        }
    }

    fn model(&self, name: &str) -> Result<ModelDefinition> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        if !models.contains_key(name) {
            return Err(DataFusionError::Plan(format!(
                "{}: there is no model {name} (CREATE MODEL it first)",
                self.name
            )));
        }
        crate::ml_predict::resolve_model(&models, name)
            .map_err(|e| DataFusionError::Plan(format!("{}: {e}", self.name)))
    }
}

/// The model a call names: its first argument, a string literal.
fn model_name(function: &str, argument: Option<&ScalarValue>) -> Result<String> {
    match argument {
        Some(ScalarValue::Utf8(Some(name)))
        | Some(ScalarValue::Utf8View(Some(name)))
        | Some(ScalarValue::LargeUtf8(Some(name))) => Ok(name.to_ascii_lowercase()),
        _ => Err(DataFusionError::Plan(format!(
            "{function} takes the model's name as a string first, as in {function}('my_model', \
             text)"
        ))),
    }
}

impl ScalarUDFImpl for AiFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Err(DataFusionError::Internal(format!(
            "{}'s type comes from its model",
            self.name
        )))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let name = model_name(self.name, args.scalar_arguments.first().copied().flatten())?;
        let model = self.model(&name)?;
        let output = model.output.fields().first().ok_or_else(|| {
            DataFusionError::Plan(format!("{}: model {name} declares no OUTPUT", self.name))
        })?;
        Ok(Arc::new(
            output
                .as_ref()
                .clone()
                .with_name(self.name)
                .with_nullable(true),
        ))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Err(DataFusionError::NotImplemented(format!(
            "{} runs as a batched model call, which Riffle plans for calls in a SELECT list, \
             a WHERE clause, a GROUP BY or an aggregate's argument; compute it in a SELECT (a \
             subquery) where it is used elsewhere (a JOIN condition, an ORDER BY)",
            self.name
        )))
    }
}

/// The labels of an `ai_classify` call: `ARRAY['a', 'b']`, which the analyzer still sees as
/// `make_array` of literals (constants are folded later), or an array literal.
fn labels_of(expr: &Expr) -> Result<Vec<String>> {
    let literal = |expr: &Expr| match expr {
        Expr::Literal(ScalarValue::Utf8(Some(s)), _)
        | Expr::Literal(ScalarValue::Utf8View(Some(s)), _)
        | Expr::Literal(ScalarValue::LargeUtf8(Some(s)), _) => Some(s.clone()),
        Expr::Cast(cast) => match cast.expr.as_ref() {
            Expr::Literal(ScalarValue::Utf8(Some(s)), _) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    };
    match expr {
        Expr::Literal(value, _) => label_list(value),
        Expr::ScalarFunction(function) if function.func.name() == "make_array" => {
            let labels: Option<Vec<String>> = function.args.iter().map(literal).collect();
            match labels {
                Some(labels) if !labels.is_empty() => Ok(labels),
                _ => label_list(&ScalarValue::Null),
            }
        }
        _ => label_list(&ScalarValue::Null),
    }
}

/// The labels of an array literal of strings.
fn label_list(value: &ScalarValue) -> Result<Vec<String>> {
    let bad = || {
        DataFusionError::Plan(
            "ai_classify's labels are an ARRAY of strings, as in ARRAY['positive', 'negative']"
                .into(),
        )
    };
    let ScalarValue::List(list) = value else {
        return Err(bad());
    };
    let values = list.values();
    let strings = datafusion::arrow::compute::cast(values, &DataType::Utf8).map_err(|_| bad())?;
    let strings = datafusion::arrow::array::AsArray::as_string::<i32>(&strings);
    let labels: Vec<String> = strings.iter().flatten().map(str::to_string).collect();
    if labels.is_empty() {
        return Err(bad());
    }
    Ok(labels)
}

/// Takes AI function calls out of projections into inference nodes; see the module docs.
#[derive(Debug)]
pub struct AiFunctionsRule {
    models: ModelCatalog,
}

impl AiFunctionsRule {
    /// The rule over the session's `models`.
    pub fn new(models: ModelCatalog) -> Self {
        Self { models }
    }

    /// One call taken out: the model (its output renamed to `output`), the argument.
    fn take_out(
        &self,
        expr: Expr,
        calls: &mut Vec<(ModelDefinition, Expr, String, BTreeMap<String, String>)>,
    ) -> Result<Transformed<Expr>> {
        expr.transform_up(|expr| {
            let Expr::ScalarFunction(function) = &expr else {
                return Ok(Transformed::no(expr));
            };
            let name = function.func.name();
            if !AI_FUNCTIONS.contains(&name) {
                return Ok(Transformed::no(expr));
            }
            let (model, argument, labels) = match function.args.as_slice() {
                [model, argument] if name != "ai_classify" => (model, argument, None),
                [model, argument, labels] if name == "ai_classify" => {
                    (model, argument, Some(labels_of(labels)?))
                }
                _ if name == "ai_classify" => {
                    return Err(DataFusionError::Plan(
                        "ai_classify takes a model, a text and an ARRAY of labels, as in \
                         ai_classify('m', text, ARRAY['positive', 'negative'])"
                            .into(),
                    ));
                }
                _ => {
                    return Err(DataFusionError::Plan(format!(
                        "{name} takes a model and a text"
                    )));
                }
            };
            let model = match model {
                Expr::Literal(value, _) => model_name(name, Some(value))?,
                _ => model_name(name, None)?,
            };
            let mut definition = {
                let models = self.models.read().unwrap_or_else(|p| p.into_inner());
                if !models.contains_key(&model) {
                    return Err(DataFusionError::Plan(format!(
                        "{name}: there is no model {model}"
                    )));
                }
                crate::ml_predict::resolve_model(&models, &model)
                    .map_err(|e| DataFusionError::Plan(format!("{name}: {e}")))?
            };
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            let output = format!("__ai_{id}");
            // The node adds the model's first output, under a name of its own.
            let first = definition.output.fields().first().cloned().ok_or_else(|| {
                DataFusionError::Plan(format!("{name}: model {model} declares no OUTPUT"))
            })?;
            definition.output =
                Arc::new(Schema::new(vec![first.as_ref().clone().with_name(&output)]));
            let mut options = BTreeMap::new();
            if let Some(labels) = labels {
                // A chat model asked to answer with one label; the answer is checked.
                let input = format!("{output}_in");
                options.insert(
                    "prompt-template".to_string(),
                    format!(
                        "Classify the text below as exactly one of these labels: {}. Answer \
                         with the label only.\n\nText: {{{input}}}",
                        labels.join(", ")
                    ),
                );
                options.insert(
                    "labels".to_string(),
                    serde_json::to_string(&labels).unwrap_or_default(),
                );
            }
            calls.push((definition, argument.clone(), output.clone(), options));
            Ok(Transformed::yes(Expr::Column(Column::from_name(output))))
        })
    }

    /// Takes the calls out of a projection, a filter or an aggregate: each call's argument
    /// becomes a column below the node, an inference node computes it, and the call becomes
    /// a reference to its output. Expressions keep their names (parents refer to them); a
    /// filter's output drops the columns it gained.
    fn rewrite(&self, plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
        if !matches!(
            plan,
            LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::Aggregate(_)
        ) {
            return Ok(Transformed::no(plan));
        }
        let mut calls = Vec::new();
        let names = NamePreserver::new(&plan);
        let mut exprs = Vec::new();
        for expr in plan.expressions() {
            let name = names.save(&expr);
            let rewritten = self.take_out(expr, &mut calls)?;
            exprs.push(if rewritten.transformed {
                name.restore(rewritten.data)
            } else {
                rewritten.data
            });
        }
        if calls.is_empty() {
            return Ok(Transformed::no(plan));
        }
        let inputs = plan.inputs();
        let [input] = inputs.as_slice() else {
            return Ok(Transformed::no(plan));
        };
        let mut input = (*input).clone();
        for (model, argument, output, options) in calls {
            let argument_name = format!("{output}_in");
            let mut columns: Vec<Expr> = input
                .schema()
                .iter()
                .map(|(qualifier, field)| Expr::Column(Column::from((qualifier, field))))
                .collect();
            columns.push(argument.alias(&argument_name));
            let with_argument = LogicalPlanBuilder::from(input).project(columns)?.build()?;
            input = MlPredictNode::try_new(with_argument, model, vec![argument_name], options)
                .map_err(|e| DataFusionError::Plan(e.to_string()))?
                .into_plan();
            // A scalar call's failed row is NULL: the node's error column (on-error null or
            // default) is not the call's, and a second call would add another.
            let fields = input.schema().fields().len();
            let added_error = input
                .schema()
                .fields()
                .last()
                .is_some_and(|f| f.name() == riffle_inference::call::ERROR_COLUMN);
            if added_error {
                let kept: Vec<Expr> = input
                    .schema()
                    .iter()
                    .take(fields - 1)
                    .map(|(qualifier, field)| Expr::Column(Column::from((qualifier, field))))
                    .collect();
                input = LogicalPlanBuilder::from(input).project(kept)?.build()?;
            }
        }
        let rewritten = plan.with_new_exprs(exprs, vec![input])?;
        let rewritten = match &plan {
            // A filter passes its input's columns: the ones it had before.
            LogicalPlan::Filter(_) => {
                let columns: Vec<Expr> = plan
                    .schema()
                    .iter()
                    .map(|(qualifier, field)| Expr::Column(Column::from((qualifier, field))))
                    .collect();
                LogicalPlanBuilder::from(rewritten)
                    .project(columns)?
                    .build()?
            }
            _ => rewritten,
        };
        Ok(Transformed::yes(rewritten))
    }
}

impl AnalyzerRule for AiFunctionsRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        Ok(plan.transform_up(|node| self.rewrite(node))?.data)
    }

    fn name(&self) -> &str {
        "riffle_ai_functions"
    }
}
