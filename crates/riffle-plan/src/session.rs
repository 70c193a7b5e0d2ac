//! The session: DataFusion configured for Riffle, and the catalog of tables.
//!
//! Tables are declared by connector (`CREATE TABLE ... WITH ('connector' = ...)`); the
//! session keeps each [`TableDefinition`] and asks the [`TableFactory`] registered for its
//! connector for a source (a DataFusion `TableProvider`, planned like any other) and a
//! [`Sink`] (for `INSERT INTO`). Factories live in `riffle-connectors`; the `riffle` crate
//! registers them, so this crate stays free of I/O. A table created without a connector
//! (`CREATE TABLE t (a INT)`) is DataFusion's in-memory table, and `INSERT INTO` appends to
//! it as DataFusion does.
//!
//! The session also keeps the job options (`SET 'key' = 'value'`), checked as they are set.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::SessionState;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, ScalarUDF};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};
use datafusion::prelude::{SessionConfig, SessionContext};
use riffle_common::{JobConfig, Options, Result, RiffleError};
use riffle_types::RiffleTypePlanner;

use crate::ai_functions::{AI_FUNCTIONS, AiFunction, AiFunctionsRule, ModelCatalog};
use crate::async_batches::AsyncBatchesRule;
use crate::ml_predict::{ModelDefinition, RiffleQueryPlanner};
use crate::skip_corrupt::{SkippedFile, SkippedFiles};
use crate::tensor_cast::TensorCastRule;
use crate::unbounded;

use crate::builder::{ChainOptions, build_job_graph_with};
use crate::job_graph::JobGraph;
use crate::scan_context::name_scanned_files;
use crate::sink::{Sink, SinkExec};

/// A table declared with a connector and its options.
#[derive(Debug, Clone)]
pub struct TableDefinition {
    /// The table's name.
    pub name: String,
    /// Declared columns.
    pub schema: SchemaRef,
    /// The `WITH (...)` options, keys as written (`connector`, `path`, `format`, ...).
    pub options: BTreeMap<String, String>,
}

impl TableDefinition {
    /// The value of a required option, or an error naming the table and the option.
    pub fn required(&self, key: &str) -> Result<&str> {
        self.options.get(key).map(String::as_str).ok_or_else(|| {
            RiffleError::user(format!("table {}: missing option '{key}'", self.name))
                .with_hint(format!("add '{key}' = '...' to the WITH clause"))
        })
    }

    /// The connector name.
    pub fn connector(&self) -> Result<&str> {
        self.required("connector")
    }

    /// A numeric option, if given; an error names the table, the option and the value.
    pub fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>> {
        match self.options.get(key) {
            None => Ok(None),
            Some(value) => value.trim().parse().map(Some).map_err(|_| {
                RiffleError::user(format!(
                    "table {}: option '{key}' must be a number, not '{value}'",
                    self.name
                ))
            }),
        }
    }

    /// A parallelism option (`scan.parallelism`, `sink.parallelism`): a positive number.
    pub fn parallelism(&self, key: &str) -> Result<Option<usize>> {
        match self.number::<usize>(key) {
            Ok(Some(0)) | Err(_) => Err(RiffleError::user(format!(
                "table {}: '{key}' must be a positive whole number, not '{}'",
                self.name,
                self.options
                    .get(key)
                    .map(String::as_str)
                    .unwrap_or_default()
            ))),
            other => other,
        }
    }
}

/// Makes sources and sinks for one connector.
#[async_trait]
pub trait TableFactory: Send + Sync {
    /// The value of `'connector'` this factory serves.
    fn connector(&self) -> &str;

    /// Checks the definition and returns the table to scan.
    async fn create_source(
        &self,
        definition: &TableDefinition,
        session: &SessionState,
    ) -> Result<Arc<dyn TableProvider>>;

    /// Returns a sink that writes rows of the table, for `INSERT INTO` (append) or
    /// `INSERT OVERWRITE` (replace what the table held when the job commits).
    fn create_sink(
        &self,
        definition: &TableDefinition,
        session: &SessionState,
        mode: WriteMode,
    ) -> Result<Arc<dyn Sink>>;
}

/// Whether a sink adds to a table or replaces its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Keep what is there and add the new rows.
    Append,
    /// Replace what is there with the new rows, when the job commits.
    Overwrite,
}

/// DataFusion configured for Riffle, plus the catalog of connector tables.
pub struct RiffleSession {
    context: SessionContext,
    /// The configuration; its options change with `SET`.
    config: RwLock<JobConfig>,
    factories: HashMap<String, Arc<dyn TableFactory>>,
    definitions: RwLock<BTreeMap<String, TableDefinition>>,
    models: ModelCatalog,
}

impl RiffleSession {
    /// A session whose jobs run with `config`.
    pub fn new(config: JobConfig) -> Result<Self> {
        let mut session_config = SessionConfig::new()
            .with_target_partitions(config.parallelism)
            .with_batch_size(config.batch_size)
            .with_information_schema(true)
            // Where 'ignore-corrupt' scans report the files they skip.
            .with_extension(Arc::new(SkippedFiles::default()));
        let options = session_config.options_mut();
        // A table's path is a folder tree, as in Flink's filesystem connector.
        options.execution.listing_table_ignore_subdirectory = false;
        // Reading every Parquet footer at planning time is slow on object stores with many
        // files, and its errors cannot name the file; footers are read by the scan instead.
        options.execution.collect_statistics = false;
        // Field metadata carries Riffle's types (tensors, images) through Parquet files.
        options.execution.parquet.skip_metadata = false;
        // Dynamic filters share state between a join (or top-k) and a scan in another
        // vertex; that only works inside one process, so Riffle plans without them.
        options.optimizer.enable_dynamic_filter_pushdown = false;
        options.optimizer.enable_join_dynamic_filter_pushdown = false;
        options.optimizer.enable_topk_dynamic_filter_pushdown = false;
        options.optimizer.enable_aggregate_dynamic_filter_pushdown = false;
        // A file scan's partitions must read a fixed set of files: a source's checkpointed
        // position counts the rows of its own files, and a vertex's subtasks may run on
        // different machines. DataFusion's work stealing moves files between partitions at
        // run time, so it is off.
        options.execution.enable_file_stream_work_stealing = false;
        // Jobs add and replace files under a table's path: a cached listing would hide them.
        let caches = CacheManagerConfig::default().with_list_files_cache_limit(0);
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .build_arc()
            .map_err(RiffleError::from)?;
        let models: ModelCatalog = Arc::default();
        let state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_runtime_env(runtime)
            .with_default_features()
            // VECTOR, TENSOR, IMAGE, FILE and AUDIO in CREATE TABLE and CAST.
            .with_type_planner(Arc::new(RiffleTypePlanner))
            // A sentence, not a plan dump, for a query an unbounded source cannot feed.
            .with_physical_optimizer_rules(unbounded::with_rule_before_sanity_check())
            // Multimodal rows through async functions in small slices, fetched ahead.
            .with_physical_optimizer_rule(Arc::new(AsyncBatchesRule::new(config.async_batch_rows)))
            // ML_PREDICT's logical node into the inference operator.
            .with_query_planner(Arc::new(RiffleQueryPlanner))
            .build();
        let mut state = state;
        // ai_embed(model, text) and ai_complete(model, prompt) onto the inference operator.
        state.add_analyzer_rule(Arc::new(AiFunctionsRule::new(Arc::clone(&models))));
        // CAST to a fixed-shape TENSOR, which Arrow's cast cannot do from a variable shape.
        state.add_analyzer_rule(Arc::new(TensorCastRule::default()));
        let context = SessionContext::new_with_state(state);
        // These rules move struct field access (`image_decode(bytes)['width']`) below filters,
        // which runs expensive and fallible multimodal functions on rows the filter drops.
        for rule in ["extract_leaf_expressions", "push_down_leaf_projections"] {
            context.remove_optimizer_rule(rule);
        }
        for function in riffle_functions::all_functions() {
            context.register_udf(function.as_ref().clone());
        }
        for name in AI_FUNCTIONS {
            context.register_udf(ScalarUDF::new_from_impl(AiFunction::new(
                name,
                Arc::clone(&models),
            )));
        }
        Ok(Self {
            context,
            config: RwLock::new(config),
            factories: HashMap::new(),
            definitions: RwLock::new(BTreeMap::new()),
            models,
        })
    }

    /// The job configuration, with the options set so far.
    pub fn config(&self) -> JobConfig {
        match self.config.read() {
            Ok(config) => config.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// This session seen at another parallelism: the same tables, functions and options,
    /// planning `parallelism` partitions per scan and exchange. A restore re-plans its job
    /// with it, at the parallelism its checkpoint recorded. Tables created through the view
    /// are not seen by this session.
    pub fn at_parallelism(&self, parallelism: usize) -> Self {
        let mut state = self.context.state();
        state.config_mut().options_mut().execution.target_partitions = parallelism;
        let definitions = match self.definitions.read() {
            Ok(definitions) => definitions.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Self {
            context: SessionContext::new_with_state(state),
            config: RwLock::new(self.config().with_parallelism(parallelism)),
            factories: self.factories.clone(),
            definitions: RwLock::new(definitions),
            models: Arc::clone(&self.models),
        }
    }

    /// The options set so far (at creation and by [`RiffleSession::set_option`]).
    pub fn options(&self) -> Options {
        self.config().options
    }

    /// Sets a job option for the statements and jobs that follow; an unknown key or a value
    /// of the wrong shape is refused and changes nothing.
    pub fn set_option(&self, key: &str, value: &str) -> Result<()> {
        let mut config = self
            .config
            .write()
            .map_err(|_| RiffleError::internal("session configuration lock poisoned"))?;
        config.options.set(key, value)
    }

    /// The files that `'ignore-corrupt'` scans skipped since the last call.
    pub fn take_skipped_files(&self) -> Vec<SkippedFile> {
        self.context
            .state()
            .config()
            .get_extension::<SkippedFiles>()
            .map(|report| report.take())
            .unwrap_or_default()
    }

    /// Adds a model to the catalog after checking its options; an existing model of that
    /// name is an error unless `if_not_exists` (then the existing one stays).
    pub fn create_model(&self, model: ModelDefinition, if_not_exists: bool) -> Result<()> {
        model.check()?;
        let mut models = self
            .models
            .write()
            .map_err(|_| RiffleError::internal("model catalog lock poisoned"))?;
        if models.contains_key(&model.name) {
            if if_not_exists {
                return Ok(());
            }
            return Err(
                RiffleError::user(format!("model {} already exists", model.name))
                    .with_hint("DROP MODEL it first, or write CREATE MODEL IF NOT EXISTS"),
            );
        }
        models.insert(model.name.clone(), model);
        Ok(())
    }

    /// Removes a model from the catalog.
    pub fn drop_model(&self, name: &str, if_exists: bool) -> Result<()> {
        let mut models = self
            .models
            .write()
            .map_err(|_| RiffleError::internal("model catalog lock poisoned"))?;
        if models.remove(name).is_none() && !if_exists {
            return Err(RiffleError::user(format!("there is no model {name}"))
                .with_hint("SHOW MODELS lists the models of this session"));
        }
        Ok(())
    }

    /// A model of the catalog.
    pub fn model(&self, name: &str) -> Result<ModelDefinition> {
        crate::ml_predict::resolve_model(&self.models(), name)
    }

    /// The models of the catalog, by name.
    pub fn models(&self) -> BTreeMap<String, ModelDefinition> {
        match self.models.read() {
            Ok(models) => models.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The DataFusion context that plans this session's queries.
    pub fn context(&self) -> &SessionContext {
        &self.context
    }

    /// Registers a connector.
    pub fn register_factory(&mut self, factory: Arc<dyn TableFactory>) {
        self.factories
            .insert(factory.connector().to_string(), factory);
    }

    fn factory(&self, definition: &TableDefinition) -> Result<Arc<dyn TableFactory>> {
        let connector = definition.connector()?;
        self.factories.get(connector).cloned().ok_or_else(|| {
            let mut known: Vec<&str> = self.factories.keys().map(String::as_str).collect();
            known.sort();
            RiffleError::user(format!(
                "table {}: unknown connector '{connector}'",
                definition.name
            ))
            .with_hint(format!("known connectors: {}", known.join(", ")))
        })
    }

    /// The table `definition` describes, to scan without declaring it in the catalog (the
    /// Python front's `read_parquet` and its kin).
    pub async fn source(&self, definition: &TableDefinition) -> Result<Arc<dyn TableProvider>> {
        self.factory(definition)?
            .create_source(definition, &self.context.state())
            .await
    }

    /// Declares a table. Fails if one of that name exists, unless `if_not_exists`.
    pub async fn create_table(
        &self,
        definition: TableDefinition,
        if_not_exists: bool,
    ) -> Result<()> {
        if self.context.table_exist(definition.name.as_str())? {
            if if_not_exists {
                return Ok(());
            }
            return Err(
                RiffleError::user(format!("table {} already exists", definition.name))
                    .with_hint("use CREATE TABLE IF NOT EXISTS, or DROP TABLE first"),
            );
        }
        let factory = self.factory(&definition)?;
        let provider = factory
            .create_source(&definition, &self.context.state())
            .await?;
        self.context
            .register_table(definition.name.as_str(), provider)?;
        self.definitions
            .write()
            .map_err(|_| RiffleError::internal("catalog lock poisoned"))?
            .insert(definition.name.clone(), definition);
        Ok(())
    }

    /// Removes a table; fails if it does not exist, unless `if_exists`.
    pub fn drop_table(&self, name: &str, if_exists: bool) -> Result<()> {
        let removed = self.context.deregister_table(name)?;
        self.definitions
            .write()
            .map_err(|_| RiffleError::internal("catalog lock poisoned"))?
            .remove(name);
        if removed.is_none() && !if_exists {
            return Err(RiffleError::user(format!("table {name} does not exist")));
        }
        Ok(())
    }

    /// The connector definition of a table, if it was declared with one.
    pub fn definition(&self, name: &str) -> Option<TableDefinition> {
        self.definitions.read().ok()?.get(name).cloned()
    }

    /// Names of the tables in the default schema, sorted.
    pub fn table_names(&self) -> Result<Vec<String>> {
        let catalog = self
            .context
            .catalog("datafusion")
            .ok_or_else(|| RiffleError::internal("default catalog missing"))?;
        let schema = catalog
            .schema("public")
            .ok_or_else(|| RiffleError::internal("default schema missing"))?;
        let mut names = schema.table_names();
        names.sort();
        Ok(names)
    }

    /// Plans one SQL statement that DataFusion understands into a logical plan.
    pub async fn logical_plan(&self, sql: &str) -> Result<LogicalPlan> {
        Ok(self.context.state().create_logical_plan(sql).await?)
    }

    /// Optimizes a logical plan with DataFusion's rules.
    pub fn optimize(&self, plan: &LogicalPlan) -> Result<LogicalPlan> {
        Ok(self.context.state().optimize(plan)?)
    }

    /// DataFusion's physical plan for a query, its file scans wrapped so that their errors
    /// name the files.
    pub async fn physical_plan(&self, plan: &LogicalPlan) -> Result<Arc<dyn ExecutionPlan>> {
        let physical = self.context.state().create_physical_plan(plan).await?;
        Ok(name_scanned_files(physical)?)
    }

    /// The job graph that runs a query and returns its rows.
    pub async fn query_job(&self, plan: &LogicalPlan) -> Result<JobGraph> {
        let physical = self.physical_plan(plan).await?;
        Ok(build_job_graph_with(physical, self.chain_options()?)?)
    }

    /// How this session's jobs make chain vertices (`pipeline.operator-chaining.enabled`).
    fn chain_options(&self) -> Result<ChainOptions> {
        let config = self.config();
        Ok(ChainOptions {
            enabled: config
                .options
                .get_bool("pipeline.operator-chaining.enabled")?,
            batch_rows: config.batch_size,
        })
    }

    /// The job graph that writes the rows of `input` into table `table`: through the sink of
    /// its connector, or, for an in-memory table, through DataFusion's own insert.
    pub async fn insert_job(
        &self,
        table: &str,
        input: &LogicalPlan,
        mode: WriteMode,
    ) -> Result<JobGraph> {
        let Some(definition) = self.definition(table) else {
            return self.memory_insert_job(table, input, mode).await;
        };
        let sink =
            self.factory(&definition)?
                .create_sink(&definition, &self.context.state(), mode)?;
        let writers = definition.parallelism("sink.parallelism")?;
        self.sink_job(sink, input, writers).await
    }

    /// An insert into a table without a connector: DataFusion's `MemTable` accepts it (its
    /// writer appends once the input has ended), so the job is DataFusion's insert plan.
    async fn memory_insert_job(
        &self,
        table: &str,
        input: &LogicalPlan,
        mode: WriteMode,
    ) -> Result<JobGraph> {
        let provider =
            self.context.table_provider(table).await.map_err(|_| {
                RiffleError::user(format!("cannot insert into {table}: no such table"))
            })?;
        if !provider.is::<MemTable>() {
            return Err(RiffleError::user(format!(
                "cannot insert into {table}: it is neither a connector table nor an in-memory table"
            ))
            .with_hint(
                "declare it with CREATE TABLE ... WITH ('connector' = 'filesystem', ...), \
                 or CREATE TABLE name (columns) for an in-memory table",
            ));
        }
        let op = match mode {
            WriteMode::Append => InsertOp::Append,
            WriteMode::Overwrite => InsertOp::Overwrite,
        };
        let plan = LogicalPlanBuilder::insert_into(
            input.clone(),
            table,
            provider_as_source(provider),
            op,
        )?
        .build()?;
        self.query_job(&plan).await
    }

    /// The job graph that writes the rows of `input` into `sink`, one part per writer;
    /// `writers` sets how many (default: as many as the input has partitions).
    pub async fn sink_job(
        &self,
        sink: Arc<dyn Sink>,
        input: &LogicalPlan,
        writers: Option<usize>,
    ) -> Result<JobGraph> {
        let mut physical = self.physical_plan(input).await?;
        let partitions = physical.output_partitioning().partition_count();
        match writers {
            Some(1) if partitions != 1 => {
                physical = Arc::new(CoalescePartitionsExec::new(physical));
            }
            Some(writers) if writers != partitions => {
                physical = Arc::new(RepartitionExec::try_new(
                    physical,
                    Partitioning::RoundRobinBatch(writers),
                )?);
            }
            _ => {}
        }
        let sink = Arc::new(SinkExec::new(physical, sink));
        Ok(build_job_graph_with(sink, self.chain_options()?)?)
    }
}
