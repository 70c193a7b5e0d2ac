//! The session: where tables are declared and jobs are started.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl};
use datafusion::common::metadata::FieldMetadata;
use datafusion::datasource::MemTable;
use datafusion::execution::FunctionRegistry;
use datafusion::functions::core::expr_fn::{coalesce, get_field};
use datafusion::functions::string::expr_fn::concat;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{LogicalPlan, WriteOp};
use datafusion::prelude::{col, lit, when};
use riffle_common::{JobConfig, Options, Result, RiffleError};
use riffle_connectors::{ConnectorsCodec, FilesFunction};
use riffle_plan::{
    JobGraph, RiffleCodec, RiffleSession, Sink, SkippedFile, TableDefinition, WriteMode,
};
use riffle_runtime::{JobHandle, LocalExecutor, StartFrom};
use riffle_sql::{RiffleStatement, ScriptStatement, parse_statement, split_statements};

use crate::dataframe::DataFrame;

/// A Riffle session: the catalog of tables and the means to run jobs on this machine.
///
/// Cheap to clone; clones share the catalog.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    planner: RiffleSession,
    executor: LocalExecutor,
    /// Where the next job starts: a checkpoint given by [`Session::restore_from`].
    start: std::sync::Mutex<Option<StartFrom>>,
}

/// The result of one statement of a script.
#[derive(Debug)]
pub struct ScriptResult {
    /// The statement.
    pub statement: ScriptStatement,
    /// What it returned (rows of a query, the count of an insert, nothing for DDL).
    pub batches: Vec<RecordBatch>,
}

impl Session {
    /// A session with the default configuration (parallelism: the machine's cores).
    pub fn new() -> Result<Self> {
        Self::with_config(JobConfig::default())
    }

    /// A session with `config`.
    pub fn with_config(config: JobConfig) -> Result<Self> {
        let executor = LocalExecutor::new(&config);
        let options = config.options.clone();
        let mut planner = RiffleSession::new(config)?;
        for factory in riffle_connectors::default_factories() {
            planner.register_factory(factory);
        }
        riffle_connectors::register_functions(planner.context(), &options)?;
        Ok(Self {
            inner: Arc::new(Inner {
                planner,
                executor,
                start: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The job configuration, with the options set so far.
    pub fn config(&self) -> JobConfig {
        self.inner.planner.config()
    }

    /// The options set so far (`SET 'key' = 'value'`, `-D key=value`, [`JobConfig::options`]).
    pub fn options(&self) -> Options {
        self.inner.planner.options()
    }

    /// Sets a job option (the same as SQL's `SET 'key' = 'value'`) for the statements and
    /// jobs that follow. An unknown key or a value of the wrong shape is an error that names
    /// the key, and changes nothing.
    ///
    /// `url.*` options take effect by registering `url_download` and `file_read` again,
    /// built with the new address policy: queries planned before keep the policy they were
    /// planned with.
    pub fn set_option(&self, key: &str, value: &str) -> Result<()> {
        let planner = &self.inner.planner;
        let mut options = planner.options();
        options.set(key, value)?;
        if key.trim().starts_with("url.") {
            riffle_connectors::register_functions(planner.context(), &options)?;
        }
        planner.set_option(key, value)
    }

    /// The planning session underneath (DataFusion's context and the catalog).
    pub fn planner(&self) -> &RiffleSession {
        &self.inner.planner
    }

    /// Registers Arrow batches as an in-memory table, spread over the job's parallelism.
    pub fn register_batches(&self, name: &str, batches: Vec<RecordBatch>) -> Result<()> {
        let Some(first) = batches.first() else {
            return Err(RiffleError::user(format!(
                "cannot register table {name} from no batches: its columns are unknown"
            )));
        };
        let table = self.spread(first.schema(), batches)?;
        self.inner
            .planner
            .context()
            .register_table(name, Arc::new(table))?;
        Ok(())
    }

    /// `batches` as an in-memory table, dealt round-robin over the job's parallelism.
    fn spread(&self, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<MemTable> {
        let width = self.config().parallelism.max(1).min(batches.len().max(1));
        let mut partitions = vec![Vec::new(); width];
        for (index, batch) in batches.into_iter().enumerate() {
            partitions[index % width].push(batch);
        }
        Ok(MemTable::try_new(schema, partitions)?)
    }

    /// A DataFrame over Arrow batches held in memory (spread over the job's parallelism),
    /// without declaring a table: what the Python front's `from_arrow` reads.
    pub fn read_batches(&self, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<DataFrame> {
        let table = self.spread(schema, batches)?;
        let frame = self.inner.planner.context().read_table(Arc::new(table))?;
        Ok(DataFrame::new(self.clone(), frame))
    }

    /// The files at `location` (a file, a folder or a glob; local or an object store URL)
    /// in `format` (`parquet`, `csv`, `json`), columns inferred: the same scan as a
    /// `filesystem` table, without declaring one. `options` are the table's other `WITH`
    /// options: object store settings (`s3.endpoint`, ...), `csv.delimiter`,
    /// `ignore-corrupt`, and so on.
    pub async fn read_files(
        &self,
        location: &str,
        format: &str,
        options: BTreeMap<String, String>,
    ) -> Result<DataFrame> {
        let mut all = options;
        all.insert("connector".into(), "filesystem".into());
        all.insert("path".into(), location.into());
        all.insert("format".into(), format.into());
        let definition = TableDefinition {
            name: format!("read_{format}('{location}')"),
            schema: Arc::new(Schema::empty()),
            options: all,
        };
        let provider = self.inner.planner.source(&definition).await?;
        let frame = self.inner.planner.context().read_table(provider)?;
        Ok(DataFrame::new(self.clone(), frame))
    }

    /// The Arrow field a SQL type name declares (`DOUBLE`, `ARRAY<INT>`,
    /// `TENSOR(FLOAT, [3, 224, 224])`, ...), as `CAST(... AS type)` would produce it.
    pub async fn sql_type(&self, type_name: &str) -> Result<Field> {
        let frame = self
            .sql(&format!("SELECT CAST(NULL AS {type_name}) AS value"))
            .await
            .map_err(|error| error.context(format!("type '{type_name}'")))?;
        Ok(frame.schema().field(0).as_ref().clone())
    }

    /// Declares `frame` as the view `name`, for SQL to read by name (planned into the query
    /// that reads it). Replaces a view of that name.
    pub fn register_view(&self, name: &str, frame: &DataFrame) -> Result<()> {
        let context = self.inner.planner.context();
        context.deregister_table(name)?;
        context.register_table(name, frame.clone().into_view())?;
        Ok(())
    }

    /// Removes the view `name`, if there is one.
    pub fn deregister_view(&self, name: &str) -> Result<()> {
        self.inner.planner.context().deregister_table(name)?;
        Ok(())
    }

    /// A call of the function `name` (scalar or aggregate, a built-in or a registered one)
    /// with `args` in parameter order: what SQL's `name(args...)` plans to.
    pub fn call_function(&self, name: &str, args: Vec<Expr>) -> Result<Expr> {
        let context = self.inner.planner.context();
        if let Ok(function) = context.udf(name) {
            return Ok(function.call(args));
        }
        if let Ok(function) = context.udaf(name) {
            return Ok(function.call(args));
        }
        Err(RiffleError::user(format!("unknown function '{name}'"))
            .with_hint("check the name; riffle.functions lists Riffle's built-ins"))
    }

    /// A call of Riffle's built-in function `name` with `args` in parameter order, where a
    /// `None` takes the parameter's default (as SQL's named arguments fill skipped ones;
    /// trailing defaults are left out). The Python front's generated functions call this.
    pub fn call_builtin(&self, name: &str, args: Vec<Option<Expr>>) -> Result<Expr> {
        // A `try_` twin takes its function's parameters but `on_error`.
        let twin = name
            .strip_prefix("try_")
            .filter(|base| riffle_functions::parameters::takes_on_error(base));
        let parameters: Vec<riffle_functions::parameters::Parameter> =
            match (riffle_functions::parameters::parameters(name), twin) {
                (Some(parameters), _) => parameters.to_vec(),
                (None, Some(base)) => riffle_functions::parameters::parameters(base)
                    .unwrap_or_default()
                    .iter()
                    .filter(|p| p.name != "on_error")
                    .copied()
                    .collect(),
                (None, None) => {
                    return Err(RiffleError::user(format!(
                        "'{name}' is not a Riffle built-in function"
                    )));
                }
            };
        if args.len() > parameters.len() {
            return Err(RiffleError::user(format!(
                "{name}: takes at most {} arguments, not {}",
                parameters.len(),
                args.len()
            )));
        }
        let given = args
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |last| last + 1);
        let empty = datafusion::common::DFSchema::empty();
        let context = self.inner.planner.context();
        let mut placed = Vec::with_capacity(given);
        for (arg, parameter) in args.into_iter().zip(&parameters).take(given) {
            placed.push(match (arg, parameter.default) {
                (Some(arg), _) => arg,
                (None, Some(default)) => context.parse_sql_expr(default, &empty)?,
                (None, None) => {
                    return Err(RiffleError::user(format!(
                        "{name}: '{}' is required",
                        parameter.name
                    )));
                }
            });
        }
        self.call_function(name, placed)
    }

    /// Declares model `name` (what `CREATE MODEL name INPUT (...) OUTPUT (...) WITH
    /// (options)` declares), replacing one of that name: how the Python front declares its
    /// user code and its models.
    pub fn register_model(
        &self,
        name: &str,
        input: SchemaRef,
        output: SchemaRef,
        options: BTreeMap<String, String>,
    ) -> Result<()> {
        let planner = &self.inner.planner;
        planner.drop_model(name, true)?;
        planner.create_model(
            riffle_plan::ModelDefinition {
                name: name.to_string(),
                input,
                output,
                options,
                fallback: None,
            },
            false,
        )
    }

    /// A DataFrame over a table of the catalog.
    pub async fn table(&self, name: &str) -> Result<DataFrame> {
        let frame = self.inner.planner.context().table(name).await?;
        Ok(DataFrame::new(self.clone(), frame))
    }

    /// The files that scans of `'ignore-corrupt'` tables skipped since the last call, each
    /// with the reason.
    pub fn take_skipped_files(&self) -> Vec<SkippedFile> {
        self.inner.planner.take_skipped_files()
    }

    /// The files under `location` (a folder, one object or a glob such as
    /// `s3://bucket/images/**/*.jpg`) as rows of `(file, size, last_modified)`: the same as
    /// SQL's `files(location)`. `file` is a reference; the bytes stay in the store.
    pub fn files(&self, location: &str) -> Result<DataFrame> {
        let context = self.inner.planner.context();
        let state = context.state();
        let provider =
            FilesFunction.call_with_args(TableFunctionArgs::new(&[lit(location)], &state))?;
        let frame = context.read_table(provider)?;
        Ok(DataFrame::new(self.clone(), frame))
    }

    /// The images under `location`, listed, read and decoded: rows of `(file, image)`.
    ///
    /// A file that cannot be read or decoded stops the job with an error naming it, unless
    /// `ignore_corrupt`: then the job goes on, and the rows get a third column, `error`,
    /// NULL for the images that decoded and the reason for the files skipped (whose `image`
    /// is NULL). Nothing is dropped silently: filter on `error IS NULL` to keep the good
    /// images, on `error IS NOT NULL` for the report of the skipped files.
    pub fn read_images(&self, location: &str, ignore_corrupt: bool) -> Result<DataFrame> {
        self.read_images_sized(location, ignore_corrupt, None)
    }

    /// As [`Session::read_images`], each image resized to `size` (width, height) as it is
    /// decoded (`image_resize` of the file's bytes: a JPEG decodes at a reduced size when
    /// that still covers `size`, and the full-size pixels never become a column).
    pub fn read_images_sized(
        &self,
        location: &str,
        ignore_corrupt: bool,
        size: Option<(u32, u32)>,
    ) -> Result<DataFrame> {
        let context = self.inner.planner.context();
        let call =
            |name: &str, args: Vec<Expr>| -> Result<Expr> { Ok(context.udf(name)?.call(args)) };
        let read = call("try_file_read", vec![col("file")])?;
        let frame = self
            .files(location)?
            .select(vec![col("file"), read.alias("read")])?;
        let bytes = get_field(col("read"), "value");
        let decoded = match size {
            None => call("try_image_decode", vec![bytes])?,
            Some((width, height)) => call(
                "try_image_resize",
                vec![bytes, lit(i64::from(width)), lit(i64::from(height))],
            )?,
        };
        let error = coalesce(vec![
            get_field(col("read"), "error"),
            get_field(col("decoded"), "error"),
        ]);
        // The decoded value keeps its type but not the field's IMAGE tag through the
        // try_ struct: tag the column again, so that consumers (numpy batches, displays)
        // see an image.
        let tag = FieldMetadata::from(std::collections::HashMap::from([(
            riffle_types::EXTENSION_NAME_KEY.to_string(),
            riffle_types::media::IMAGE.to_string(),
        )]));
        let image = get_field(col("decoded"), "value");
        let frame = frame.select(vec![col("file"), col("read"), decoded.alias("decoded")])?;
        if ignore_corrupt {
            return frame.select(vec![
                col("file"),
                image.alias_with_metadata("image", Some(tag)),
                error.alias("error"),
            ]);
        }
        // Stop at the first bad file, naming it.
        let message = concat(vec![
            lit("read_images: "),
            get_field(col("file"), "uri"),
            lit(": "),
            error.clone(),
        ]);
        let checked =
            when(error.is_not_null(), call("raise_error", vec![message])?).otherwise(image)?;
        frame.select(vec![
            col("file"),
            checked.alias_with_metadata("image", Some(tag)),
        ])
    }

    /// Runs one SQL statement. Queries and inserts come back as a lazy [`DataFrame`] (run
    /// by [`DataFrame::collect`]); DDL (with `CREATE TABLE ... AS`), `SET`, `SHOW TABLES`,
    /// `DESCRIBE` and `EXPLAIN` run at once and come back as a DataFrame over their result.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let statement = parse_statement(&self.inner.planner, sql).await?;
        self.statement(statement).await
    }

    async fn statement(&self, statement: RiffleStatement) -> Result<DataFrame> {
        let planner = &self.inner.planner;
        match statement {
            RiffleStatement::CreateTable {
                definition,
                if_not_exists,
            } => {
                planner.create_table(definition, if_not_exists).await?;
                self.empty()
            }
            RiffleStatement::CreateTableAs {
                definition,
                if_not_exists,
                query,
            } => {
                self.create_table_as(definition, if_not_exists, query)
                    .await?;
                self.empty()
            }
            RiffleStatement::SetOption { key, value } => {
                self.set_option(&key, &value)?;
                self.empty()
            }
            RiffleStatement::ShowOptions => {
                let (keys, values): (Vec<String>, Vec<String>) = self
                    .options()
                    .iter()
                    .map(|(key, value)| (key.to_string(), value.to_string()))
                    .unzip();
                self.strings(&[("key", keys), ("value", values)])
            }
            RiffleStatement::DropTable { name, if_exists } => {
                planner.drop_table(&name, if_exists)?;
                self.empty()
            }
            RiffleStatement::ShowTables => {
                let names = planner.table_names()?;
                let connectors: Vec<String> = names
                    .iter()
                    .map(|name| match planner.definition(name) {
                        Some(definition) => definition
                            .options
                            .get("connector")
                            .cloned()
                            .unwrap_or_default(),
                        None => "memory".to_string(),
                    })
                    .collect();
                self.strings(&[("table_name", names), ("connector", connectors)])
            }
            RiffleStatement::Describe(name) => {
                let provider = planner
                    .context()
                    .table_provider(name.as_str())
                    .await
                    .map_err(|_| {
                        RiffleError::user(format!("table {name} does not exist"))
                            .with_hint("SHOW TABLES lists the tables")
                    })?;
                let schema = provider.schema();
                let mut names = Vec::new();
                let mut types = Vec::new();
                let mut nullable = Vec::new();
                for field in schema.fields() {
                    names.push(field.name().clone());
                    types.push(riffle_types::display_type(field));
                    nullable.push(if field.is_nullable() { "YES" } else { "NO" }.to_string());
                }
                self.strings(&[
                    ("column_name", names),
                    ("data_type", types),
                    ("is_nullable", nullable),
                ])
            }
            RiffleStatement::CreateModel {
                definition,
                if_not_exists,
            } => {
                planner.create_model(definition, if_not_exists)?;
                self.empty()
            }
            RiffleStatement::DropModel { name, if_exists } => {
                planner.drop_model(&name, if_exists)?;
                self.empty()
            }
            RiffleStatement::ShowModels => {
                let models = planner.models();
                let names: Vec<String> = models.keys().cloned().collect();
                let providers: Vec<String> = models
                    .values()
                    .map(|m| m.options.get("provider").cloned().unwrap_or_default())
                    .collect();
                self.strings(&[("model_name", names), ("provider", providers)])
            }
            RiffleStatement::DescribeModel(name) => {
                let model = planner.model(&name)?;
                let mut kinds = Vec::new();
                let mut names = Vec::new();
                let mut values = Vec::new();
                for (kind, schema) in [("input", &model.input), ("output", &model.output)] {
                    for field in schema.fields() {
                        kinds.push(kind.to_string());
                        names.push(field.name().clone());
                        values.push(riffle_types::display_type(field));
                    }
                }
                for (key, value) in model.printable_options() {
                    kinds.push("option".to_string());
                    names.push(key);
                    values.push(value);
                }
                self.strings(&[("kind", kinds), ("name", names), ("value", values)])
            }
            RiffleStatement::Explain(inner) => {
                let text = self.explain_statement(*inner).await?;
                let lines: Vec<String> = text.lines().map(str::to_string).collect();
                self.strings(&[("plan", lines)])
            }
            RiffleStatement::ExplainAnalyze(inner) => {
                let RiffleStatement::Plan(plan) = *inner else {
                    return Err(not_explainable());
                };
                let text = self.explain_analyze(&plan).await?;
                let lines: Vec<String> = text.lines().map(str::to_string).collect();
                self.strings(&[("plan", lines)])
            }
            RiffleStatement::Plan(plan) => match plan {
                LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) | LogicalPlan::Copy(_) => {
                    // Views, memory tables and session settings: DataFusion's own business.
                    let frame = planner.context().execute_logical_plan(plan).await?;
                    Ok(DataFrame::new(self.clone(), frame))
                }
                LogicalPlan::DescribeTable(_)
                | LogicalPlan::Explain(_)
                | LogicalPlan::Analyze(_) => Err(RiffleError::internal(
                    "statement reached the planner unrewritten",
                )),
                plan => {
                    let frame =
                        datafusion::dataframe::DataFrame::new(planner.context().state(), plan);
                    Ok(DataFrame::new(self.clone(), frame))
                }
            },
        }
    }

    /// Flink's `CREATE TABLE t WITH (...) AS query`: creates the connector table with the
    /// query's columns, then runs the insert of its rows. If the insert fails, the table is
    /// dropped again (its sink published nothing), so that the statement can be rerun.
    async fn create_table_as(
        &self,
        definition: TableDefinition,
        if_not_exists: bool,
        query: LogicalPlan,
    ) -> Result<()> {
        let planner = &self.inner.planner;
        let name = definition.name.clone();
        if if_not_exists && planner.context().table_exist(name.as_str())? {
            return Ok(());
        }
        planner.create_table(definition, false).await?;
        let inserted = async {
            self.start_job(JobPlan::Insert {
                table: &name,
                input: &query,
            })
            .await?
            .collect()
            .await
        }
        .await;
        if let Err(error) = inserted {
            planner.drop_table(&name, true)?;
            return Err(error);
        }
        Ok(())
    }

    /// Cuts a script into its statements, with their line numbers.
    pub fn split_script(script: &str) -> Result<Vec<ScriptStatement>> {
        split_statements(script)
    }

    /// Runs every statement of a script in order, stopping at the first error, which names
    /// the statement's line.
    pub async fn run_script(&self, script: &str) -> Result<Vec<ScriptResult>> {
        let mut results = Vec::new();
        for statement in split_statements(script)? {
            let outcome = async { self.sql(&statement.sql).await?.collect().await }.await;
            match outcome {
                Ok(batches) => results.push(ScriptResult { statement, batches }),
                Err(error) => return Err(error.context(statement.location())),
            }
        }
        Ok(results)
    }

    /// The optimized logical plan and the job graph of one statement, as text.
    pub async fn explain(&self, sql: &str) -> Result<String> {
        let statement = parse_statement(&self.inner.planner, sql).await?;
        self.explain_statement(statement).await
    }

    /// Explains a query or an INSERT (written with or without the EXPLAIN keyword).
    async fn explain_statement(&self, statement: RiffleStatement) -> Result<String> {
        match statement {
            RiffleStatement::Plan(plan) => self.explain_plan(&plan).await,
            RiffleStatement::Explain(inner) => Box::pin(self.explain_statement(*inner)).await,
            _ => Err(not_explainable()),
        }
    }

    /// Runs `plan` to its end (its rows are counted, not kept), then explains it with what
    /// the job did: rows out, time, restarts, checkpoints, and each model call's counters.
    pub async fn explain_analyze(&self, plan: &LogicalPlan) -> Result<String> {
        let explained = self.explain_plan(plan).await?;
        let started = std::time::Instant::now();
        let mut job = self.execute(plan).await?;
        let mut rows = 0usize;
        while let Some(batch) = job.next_batch().await? {
            rows += batch.num_rows();
        }
        let elapsed = started.elapsed();
        let report = job.report();
        let mut text = format!(
            "{explained}\n== Run ==\n{rows} rows out in {:.3} s; {} restarts; checkpoints {} \
             completed, {} aborted\n",
            elapsed.as_secs_f64(),
            report.restarts,
            report.checkpoints.completed,
            report.checkpoints.aborted
        );
        for model in &report.models {
            text.push_str(&format!("{model}\n"));
        }
        Ok(text)
    }

    pub(crate) async fn explain_plan(&self, plan: &LogicalPlan) -> Result<String> {
        if matches!(
            plan,
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) | LogicalPlan::Copy(_)
        ) {
            return Err(not_explainable());
        }
        let optimized = self.inner.planner.optimize(plan)?;
        let graph = self.job_graph(plan).await?;
        let checkpoints = riffle_runtime::describe_checkpointing(&graph, &self.options())?;
        Ok(format!(
            "== Logical plan ==\n{}\n\n== Job graph ==\n{}\n{checkpoints}\n",
            optimized.display_indent(),
            graph.to_string().trim_end()
        ))
    }

    /// The job graph that runs `plan`: a query, or an `INSERT` into a connector table or an
    /// in-memory table.
    pub async fn job_graph(&self, plan: &LogicalPlan) -> Result<JobGraph> {
        plan_job(&self.inner.planner, plan).await
    }

    /// The codec that turns this session's job graphs into bytes and back
    /// ([`JobGraph::encode`], [`JobGraph::decode`]).
    pub fn codec(&self) -> RiffleCodec {
        RiffleCodec::new(Arc::new(ConnectorsCodec))
    }

    /// Decodes a job graph in this session (its functions, object stores and sinks).
    pub fn decode_job_graph(&self, bytes: &[u8]) -> Result<JobGraph> {
        let context = self.inner.planner.context().task_ctx();
        Ok(JobGraph::decode(bytes, &context, &self.codec())?)
    }

    /// Starts the job that runs `plan` and returns its handle.
    pub async fn execute(&self, plan: &LogicalPlan) -> Result<JobHandle> {
        if matches!(plan, LogicalPlan::EmptyRelation(empty) if !empty.produce_one_row) {
            // What DDL statements return: nothing to checkpoint or restore.
            let graph = self.job_graph(plan).await?;
            let context = self.inner.planner.context().task_ctx();
            return self.inner.executor.execute(graph, &context);
        }
        self.start_job(JobPlan::Statement(plan)).await
    }

    /// Plans the job `plan` and starts it (see [`Session::execute_graph`]). When the
    /// job will restore a checkpoint taken at another parallelism (on a machine with another
    /// number of cores, or with another `-p`), it is planned again at the checkpoint's
    /// parallelism, so that every subtask finds its state.
    pub(crate) async fn start_job(&self, plan: JobPlan<'_>) -> Result<JobHandle> {
        let planner = &self.inner.planner;
        let mut graph = plan.graph(planner).await?;
        let start = self
            .inner
            .start
            .lock()
            .map_err(|_| RiffleError::internal("session state poisoned"))?
            .clone()
            .unwrap_or_default();
        let context = planner.context().task_ctx();
        let recorded =
            riffle_runtime::recorded_parallelism(&graph, &context, &self.options(), &start).await?;
        let planned: Vec<usize> = graph.vertices.iter().map(|v| v.parallelism).collect();
        let mut note = None;
        if let Some(recorded) = recorded.filter(|recorded| *recorded != planned) {
            // The session's parallelism that reproduces the recorded one: the widest vertex
            // first (single-partition vertices are the same at any parallelism).
            let mut candidates = recorded.clone();
            candidates.sort_unstable_by(|a, b| b.cmp(a));
            candidates.dedup();
            for parallelism in candidates {
                let replanned = plan.graph(&planner.at_parallelism(parallelism)).await?;
                if replanned
                    .vertices
                    .iter()
                    .map(|v| v.parallelism)
                    .eq(recorded.iter().copied())
                {
                    note = Some(format!(
                        "planned at the checkpoint's parallelism {parallelism} instead of {}",
                        self.config().parallelism
                    ));
                    graph = replanned;
                    break;
                }
            }
            // Otherwise the job refuses the checkpoint, saying what differs.
        }
        let job = self.execute_graph(graph)?;
        if let Some(note) = note {
            tracing::info!("{note}");
            job.add_note(note);
        }
        Ok(job)
    }

    /// Starts a planned job graph, under the options set so far (checkpointing, restarts,
    /// sink commits). A checkpointed job resumes from its own latest complete checkpoint
    /// when its checkpoint folder has one, or from the checkpoint given to
    /// [`Session::restore_from`].
    pub fn execute_graph(&self, graph: JobGraph) -> Result<JobHandle> {
        let context = self.inner.planner.context().task_ctx();
        let start = self
            .inner
            .start
            .lock()
            .map_err(|_| RiffleError::internal("session state poisoned"))?
            .take()
            .unwrap_or_default();
        self.inner
            .executor
            .execute_with(graph, &context, &self.options(), start)
    }

    /// Makes the next job start from the checkpoint at `path` (`riffle run
    /// --from-checkpoint`): one checkpoint (`.../chk-0000042`) or a job's checkpoint folder
    /// (its latest complete checkpoint). A checkpoint of another job is refused, saying
    /// what differs.
    pub fn restore_from(&self, path: impl Into<String>) -> Result<()> {
        *self
            .inner
            .start
            .lock()
            .map_err(|_| RiffleError::internal("session state poisoned"))? =
            Some(StartFrom::Checkpoint(path.into()));
        Ok(())
    }

    /// Describes the checkpoint at `path` (`riffle checkpoint PATH`): one checkpoint or a
    /// job's checkpoint folder (its latest complete checkpoint), checked as a restore would
    /// check it, with what each subtask holds, by pipeline region.
    pub async fn describe_checkpoint(&self, path: &str) -> Result<String> {
        let context = self.inner.planner.context().task_ctx();
        riffle_runtime::describe_checkpoint(path, &context).await
    }

    /// What a DDL statement returns: no rows, and no job to checkpoint or restore.
    fn empty(&self) -> Result<DataFrame> {
        let frame = datafusion::dataframe::DataFrame::new(
            self.inner.planner.context().state(),
            datafusion::logical_expr::LogicalPlanBuilder::empty(false).build()?,
        );
        Ok(DataFrame::new(self.clone(), frame))
    }

    /// A DataFrame over string columns (for SHOW TABLES, DESCRIBE, EXPLAIN).
    fn strings(&self, columns: &[(&str, Vec<String>)]) -> Result<DataFrame> {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(name, _)| Field::new(*name, DataType::Utf8, false))
                .collect::<Vec<_>>(),
        ));
        let arrays = columns
            .iter()
            .map(|(_, values)| Arc::new(StringArray::from(values.clone())) as _)
            .collect();
        let batch = RecordBatch::try_new(schema, arrays)?;
        let frame = self.inner.planner.context().read_batch(batch)?;
        Ok(DataFrame::new(self.clone(), frame))
    }
}

fn not_explainable() -> RiffleError {
    RiffleError::user("EXPLAIN shows queries and INSERT statements only")
}

/// The job graph that runs `plan`, planned by `planner`.
async fn plan_job(planner: &RiffleSession, plan: &LogicalPlan) -> Result<JobGraph> {
    match plan {
        LogicalPlan::Dml(dml) => {
            let mode = match &dml.op {
                WriteOp::Insert(InsertOp::Append) => WriteMode::Append,
                WriteOp::Insert(InsertOp::Overwrite) => WriteMode::Overwrite,
                other => {
                    return Err(RiffleError::user(format!("{other} is not supported"))
                        .with_hint("Riffle supports INSERT INTO and INSERT OVERWRITE"));
                }
            };
            planner
                .insert_job(dml.table_name.table(), &dml.input, mode)
                .await
        }
        plan => planner.query_job(plan).await,
    }
}

/// A job to plan, as [`Session::start_job`] plans it (again, at another parallelism, when
/// it restores a checkpoint).
pub(crate) enum JobPlan<'a> {
    /// A query or an INSERT statement.
    Statement(&'a LogicalPlan),
    /// The rows of `input` appended to table `table`.
    Insert {
        table: &'a str,
        input: &'a LogicalPlan,
    },
    /// The rows of `input` written by `sink`.
    Sink {
        sink: Arc<dyn Sink>,
        input: &'a LogicalPlan,
    },
}

impl JobPlan<'_> {
    async fn graph(&self, planner: &RiffleSession) -> Result<JobGraph> {
        match self {
            Self::Statement(plan) => plan_job(planner, plan).await,
            Self::Insert { table, input } => {
                planner.insert_job(table, input, WriteMode::Append).await
            }
            Self::Sink { sink, input } => planner.sink_job(Arc::clone(sink), input, None).await,
        }
    }
}
