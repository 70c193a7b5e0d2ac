//! `ML_PREDICT(TABLE t, MODEL m, DESCRIPTOR(cols) [, MAP[...]])` as plan nodes of its own:
//! a logical [`MlPredictNode`] (which the SQL front, the DataFrame API, EXPLAIN and the
//! optimizer all see), planned into an [`MlPredictExec`], which a chain runs as the
//! inference operator (`ChainStage::Inference`) and a fragment runs as a stream.
//!
//! The rows out are the input's columns, then the model's OUTPUT columns, then an `__error`
//! column when `on-error` is `null` or `default`; or, for user code that gives any number of
//! rows per batch, those rows (a [`BatchRowsExec`](crate::BatchRowsExec) above the call). The model's options and the call's are
//! checked when the node is made, so that a bad key fails the statement, not the job.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::StreamExt;
use riffle_common::RiffleError;
use riffle_inference::call::ModelCall;
use riffle_inference::options::{Concurrency, InferenceConfig, merge_options};

use crate::async_batches::row_slices;

/// A model in the catalog: `CREATE MODEL name INPUT (...) OUTPUT (...) WITH (...)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelDefinition {
    /// The model's name.
    pub name: String,
    /// The declared inputs.
    pub input: SchemaRef,
    /// The declared outputs: the columns a prediction adds.
    pub output: SchemaRef,
    /// The `WITH` options, as written.
    pub options: BTreeMap<String, String>,
    /// The model named by its `fallback-model` option, as the catalog had it when the model
    /// was looked up: it takes the rows while this model's circuit breaker is open.
    pub fallback: Option<Box<ModelDefinition>>,
}

/// Model `name` of `models`, with its fallback model resolved.
pub fn resolve_model(
    models: &BTreeMap<String, ModelDefinition>,
    name: &str,
) -> riffle_common::Result<ModelDefinition> {
    let mut model = models.get(name).cloned().ok_or_else(|| {
        RiffleError::user(format!("there is no model {name}"))
            .with_hint("CREATE MODEL it first; SHOW MODELS lists the models of this session")
    })?;
    let Some(fallback_name) = model
        .options
        .get("fallback-model")
        .map(|n| n.trim().to_string())
    else {
        return Ok(model);
    };
    let fallback = models.get(&fallback_name).cloned().ok_or_else(|| {
        RiffleError::user(format!(
            "model {name}: its fallback-model {fallback_name} is not a model of the catalog"
        ))
        .with_hint("CREATE MODEL the fallback first")
    })?;
    if fallback.options.contains_key("fallback-model") {
        return Err(RiffleError::user(format!(
            "model {name}: its fallback {fallback_name} has a fallback of its own; a fallback \
             takes rows alone"
        )));
    }
    let columns = |schema: &SchemaRef| -> Vec<(String, DataType)> {
        schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect()
    };
    if columns(&fallback.output) != columns(&model.output) {
        return Err(RiffleError::user(format!(
            "model {name}: its fallback {fallback_name} declares other OUTPUT columns; a \
             fallback gives the same columns"
        )));
    }
    model.fallback = Some(Box::new(fallback));
    Ok(model)
}

impl ModelDefinition {
    /// The options with the API key hidden, for SHOW and DESCRIBE.
    pub fn printable_options(&self) -> BTreeMap<String, String> {
        let mut options = self.options.clone();
        if let Some(key) = options.get_mut("api-key") {
            *key = "<hidden>".into();
        }
        options
    }

    /// Checks the options as a call without options of its own would read them.
    pub fn check(&self) -> riffle_common::Result<InferenceConfig> {
        let merged = merge_options(&self.name, &self.options, &BTreeMap::new())?;
        InferenceConfig::from_options(&self.name, &merged)
    }
}

/// A prediction over `input`'s rows; see the module docs.
#[derive(Debug, Clone)]
pub struct MlPredictNode {
    input: LogicalPlan,
    model: ModelDefinition,
    descriptor: Vec<String>,
    call_options: BTreeMap<String, String>,
    schema: DFSchemaRef,
    /// The call, planned against the input's schema.
    call: Arc<ModelCall>,
}

impl PartialEq for MlPredictNode {
    fn eq(&self, other: &Self) -> bool {
        self.input == other.input
            && self.model == other.model
            && self.descriptor == other.descriptor
            && self.call_options == other.call_options
    }
}
impl Eq for MlPredictNode {}

impl Hash for MlPredictNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.input.hash(state);
        self.model.hash(state);
        self.descriptor.hash(state);
        self.call_options.hash(state);
    }
}

impl PartialOrd for MlPredictNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (&self.model.name, &self.descriptor, &self.call_options).partial_cmp(&(
            &other.model.name,
            &other.descriptor,
            &other.call_options,
        ))
    }
}

impl MlPredictNode {
    /// Predicts with `model` over `input`, reading the columns `descriptor` names, with the
    /// call's `options` (`ML_PREDICT`'s MAP) over the model's.
    pub fn try_new(
        input: LogicalPlan,
        model: ModelDefinition,
        descriptor: Vec<String>,
        call_options: BTreeMap<String, String>,
    ) -> riffle_common::Result<Self> {
        Self::with_call(input, model, descriptor, call_options, None)
    }

    /// As [`MlPredictNode::try_new`], keeping `planned` when it reads the same columns.
    fn with_call(
        input: LogicalPlan,
        model: ModelDefinition,
        descriptor: Vec<String>,
        call_options: BTreeMap<String, String>,
        planned: Option<&Arc<ModelCall>>,
    ) -> riffle_common::Result<Self> {
        let call = call_for(
            planned,
            &model,
            &descriptor,
            &call_options,
            input.schema().as_arrow(),
        )?;
        let schema = call.schema();
        let fields: Vec<_> = match call.batch_rows_column() {
            // The rows the user code gave, in place of the input's (see `batch_rows`).
            Some(column) => crate::batch_rows::rows_schema(&schema, column)?
                .fields()
                .iter()
                .map(|f| (None, Arc::clone(f)))
                .collect(),
            // The input's columns (with their qualifiers), then the call's.
            None => input
                .schema()
                .iter()
                .map(|(qualifier, field)| (qualifier.cloned(), Arc::clone(field)))
                .chain(
                    schema
                        .fields()
                        .iter()
                        .skip(input.schema().fields().len())
                        .map(|f| (None, Arc::clone(f))),
                )
                .collect(),
        };
        let schema = DFSchema::new_with_metadata(fields, input.schema().metadata().clone())?;
        Ok(Self {
            input,
            model,
            descriptor,
            call_options,
            schema: Arc::new(schema),
            call,
        })
    }

    /// The node as a logical plan.
    pub fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(self),
        })
    }
}

/// The call for rows of `input`: `planned` when it was planned for the same columns (the
/// optimizer and the physical planner rebuild nodes many times; the backend, its HTTP
/// client or its loaded model, stays), else a new one.
fn call_for(
    planned: Option<&Arc<ModelCall>>,
    model: &ModelDefinition,
    descriptor: &[String],
    call_options: &BTreeMap<String, String>,
    input: &Schema,
) -> riffle_common::Result<Arc<ModelCall>> {
    if let Some(call) = planned {
        let schema = call.schema();
        let inputs = schema.fields().len() - call.added_columns();
        if schema.fields()[..inputs] == input.fields()[..] {
            return Ok(Arc::clone(call));
        }
    }
    Ok(Arc::new(plan_call(model, descriptor, call_options, input)?))
}

/// Plans the call of `model` over rows of `input`.
fn plan_call(
    model: &ModelDefinition,
    descriptor: &[String],
    call_options: &BTreeMap<String, String>,
    input: &Schema,
) -> riffle_common::Result<ModelCall> {
    let merged = merge_options(&model.name, &model.options, call_options)?;
    let config = InferenceConfig::from_options(&model.name, &merged)?;
    if descriptor.len() != model.input.fields().len() && !model.input.fields().is_empty() {
        return Err(RiffleError::user(format!(
            "ML_PREDICT with model {}: DESCRIPTOR names {} columns, the model's INPUT declares {}",
            model.name,
            descriptor.len(),
            model.input.fields().len()
        )));
    }
    let call = ModelCall::new(config, Arc::clone(&model.output), input, descriptor)?;
    Ok(match &model.fallback {
        None => call,
        // The fallback reads the same columns; the call's MAP options are the model's.
        Some(fallback) => call.with_fallback(Arc::new(plan_call(
            fallback,
            descriptor,
            &BTreeMap::new(),
            input,
        )?)),
    })
}

fn describe_concurrency(config: &InferenceConfig) -> String {
    match config.concurrency {
        Concurrency::Adaptive { min, max } => format!("adaptive {min}..{max}"),
        Concurrency::Fixed(n) => format!("{n}"),
    }
}

impl UserDefinedLogicalNodeCore for MlPredictNode {
    fn name(&self) -> &str {
        "MlPredict"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let config = self.call.config();
        write!(
            f,
            "MlPredict: model={}, descriptor=[{}], concurrency={}, rows_per_request={}, {}",
            self.model.name,
            self.descriptor.join(", "),
            describe_concurrency(config),
            config.batch_rows,
            if config.ordered {
                "ordered"
            } else {
                "unordered"
            }
        )
    }

    fn with_exprs_and_inputs(
        &self,
        exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        if !exprs.is_empty() || inputs.len() != 1 {
            return Err(DataFusionError::Internal(
                "MlPredict takes one input and no expressions".into(),
            ));
        }
        Self::with_call(
            inputs.swap_remove(0),
            self.model.clone(),
            self.descriptor.clone(),
            self.call_options.clone(),
            Some(&self.call),
        )
        .map_err(|e| DataFusionError::Plan(e.to_string()))
    }
}

/// The inference operator over its input's rows, as DataFusion runs it in a fragment; a
/// chain runs it as `ChainStage::Inference` instead.
#[derive(Debug)]
pub struct MlPredictExec {
    input: Arc<dyn ExecutionPlan>,
    model: ModelDefinition,
    descriptor: Vec<String>,
    call_options: BTreeMap<String, String>,
    call: Arc<ModelCall>,
    properties: Arc<PlanProperties>,
}

impl MlPredictExec {
    /// Plans the call over `input`'s rows.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        model: ModelDefinition,
        descriptor: Vec<String>,
        call_options: BTreeMap<String, String>,
    ) -> Result<Self> {
        Self::with_call(input, model, descriptor, call_options, None)
    }

    /// As [`MlPredictExec::try_new`], keeping `planned` when it reads the same columns.
    fn with_call(
        input: Arc<dyn ExecutionPlan>,
        model: ModelDefinition,
        descriptor: Vec<String>,
        call_options: BTreeMap<String, String>,
        planned: Option<&Arc<ModelCall>>,
    ) -> Result<Self> {
        let call = call_for(
            planned,
            &model,
            &descriptor,
            &call_options,
            input.schema().as_ref(),
        )
        .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let properties = PlanProperties::new(
            EquivalenceProperties::new(call.schema()),
            input.properties().partitioning.clone(),
            input.properties().emission_type,
            input.properties().boundedness,
        );
        Ok(Self {
            input,
            model,
            descriptor,
            call_options,
            call,
            properties: Arc::new(properties),
        })
    }

    /// The model call.
    pub fn call(&self) -> &Arc<ModelCall> {
        &self.call
    }

    /// The model.
    pub fn model(&self) -> &ModelDefinition {
        &self.model
    }

    /// The input columns the model reads.
    pub fn descriptor(&self) -> &[String] {
        &self.descriptor
    }

    /// The call's own options.
    pub fn call_options(&self) -> &BTreeMap<String, String> {
        &self.call_options
    }
}

impl DisplayAs for MlPredictExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let config = self.call.config();
        write!(
            f,
            "MlPredictExec: model={}, descriptor=[{}], concurrency={}",
            self.model.name,
            self.descriptor.join(", "),
            describe_concurrency(config)
        )
    }
}

impl ExecutionPlan for MlPredictExec {
    fn name(&self) -> &str {
        "MlPredictExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    crate::plan_node_defaults!();

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "MlPredictExec takes one child".into(),
            ));
        }
        Ok(Arc::new(Self::with_call(
            children.swap_remove(0),
            self.model.clone(),
            self.descriptor.clone(),
            self.call_options.clone(),
            Some(&self.call),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let rows = self.call.config().batch_rows;
        let in_flight = self.call.config().requests_per_subtask();
        let call = Arc::clone(&self.call);
        // The backend's resources (a Python worker pool's processes) stay while this
        // partition's stream lives: without a lease, a pool shuts each worker down after
        // its batch and starts a new one for the next.
        let leases = self.call.attach();
        let answered = row_slices(input, rows)
            .map(move |slice| {
                let _held = &leases;
                let call = Arc::clone(&call);
                async move {
                    call.call(slice?)
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))
                }
            })
            .buffered(in_flight);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            answered,
        )))
    }
}

/// Plans [`MlPredictNode`]s into [`MlPredictExec`]s.
#[derive(Debug)]
struct MlPredictPlanner;

#[async_trait]
impl ExtensionPlanner for MlPredictPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn datafusion::logical_expr::UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session_state: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(predict) = node.as_any().downcast_ref::<MlPredictNode>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return Err(DataFusionError::Internal(
                "MlPredict takes one input".into(),
            ));
        };
        let exec = Arc::new(MlPredictExec::with_call(
            Arc::clone(input),
            predict.model.clone(),
            predict.descriptor.clone(),
            predict.call_options.clone(),
            Some(&predict.call),
        )?);
        let rows_column = exec.call().batch_rows_column();
        Ok(Some(match rows_column {
            Some(column) => Arc::new(crate::batch_rows::BatchRowsExec::try_new(exec, column)?),
            None => exec,
        }))
    }
}

/// DataFusion's physical planner with Riffle's logical nodes.
#[derive(Debug)]
pub(crate) struct RiffleQueryPlanner;

#[async_trait]
impl QueryPlanner for RiffleQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(MlPredictPlanner)])
            .create_physical_plan(logical_plan, session_state)
            .await
    }
}
