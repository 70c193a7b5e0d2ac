//! The golden SQL suite: every `.slt` file under `tests/slt/` runs on Riffle and, unchanged,
//! on plain DataFusion, so that Riffle's results are checked against the expected output and
//! against DataFusion's own execution of the same queries over the same data.
//!
//! ```text
//! cargo test -p riffle --test sqllogictests                 # run the suite
//! cargo test -p riffle --test sqllogictests -- --complete   # rewrite expected output (Riffle)
//! cargo test -p riffle --test sqllogictests -- joins        # only files whose name contains "joins"
//! ```
//!
//! Records guarded by `onlyif riffle` run on Riffle alone (connector DDL, Riffle's errors);
//! `onlyif datafusion` and `skipif riffle` work the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::{SessionConfig, SessionContext};
use riffle::{JobConfig, Session};
use sqllogictest::{DBOutput, DefaultColumnType};

/// Parallelism of both engines: more than one partition, so that exchanges are exercised.
const PARALLELISM: usize = 4;

#[derive(Debug)]
struct SqlError(String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

enum Engine {
    Riffle(Session),
    DataFusion(SessionContext),
}

struct Database {
    engine: Engine,
    /// A scratch folder for the files a test writes; `${TMP}` in the .slt files.
    _scratch: Arc<tempfile::TempDir>,
}

#[async_trait]
impl sqllogictest::AsyncDB for Database {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let (batches, is_query) = match &self.engine {
            Engine::Riffle(session) => {
                let frame = session
                    .sql(sql)
                    .await
                    .map_err(|e| SqlError(e.to_string()))?;
                let is_query = !frame.schema().fields().is_empty();
                let batches = frame.collect().await.map_err(|e| SqlError(e.to_string()))?;
                if is_query && let Ok(explained) = session.explain(sql).await {
                    check_chains(sql, &explained).map_err(SqlError)?;
                }
                (batches, is_query)
            }
            Engine::DataFusion(context) => {
                let frame = context
                    .sql(sql)
                    .await
                    .map_err(|e| SqlError(e.strip_backtrace()))?;
                let is_query = !frame.schema().fields().is_empty();
                let batches = frame
                    .collect()
                    .await
                    .map_err(|e| SqlError(e.strip_backtrace()))?;
                (batches, is_query)
            }
        };
        if !is_query {
            return Ok(DBOutput::StatementComplete(0));
        }
        format_rows(&batches).map_err(SqlError)
    }

    fn engine_name(&self) -> &str {
        match self.engine {
            Engine::Riffle(_) => "riffle",
            Engine::DataFusion(_) => "datafusion",
        }
    }

    async fn shutdown(&mut self) {}
}

/// DataFusion operators that need their whole input, more than one batch at a time, or more
/// than one input: only a vertex holding one of these may run as a DataFusion fragment.
/// This list is the suite's own, apart from the planner's (which lists what a chain can
/// run), so that a stateless vertex planned as a fragment fails the suite.
const NEEDS_A_FRAGMENT: &[&str] = &[
    "AggregateExec",
    "SortExec",
    "SortPreservingMergeExec",
    "HashJoinExec",
    "NestedLoopJoinExec",
    "SortMergeJoinExec",
    "CrossJoinExec",
    "SymmetricHashJoinExec",
    "WindowAggExec",
    "BoundedWindowAggExec",
    "UnionExec",
    "InterleaveExec",
    "ScalarSubqueryExec",
    "RecursiveQueryExec",
    // In-memory tables are written by DataFusion's own insert.
    "DataSinkExec",
];

/// Fails when a vertex of the explained job graph runs as a fragment although it holds
/// none of [`NEEDS_A_FRAGMENT`].
fn check_chains(sql: &str, explained: &str) -> Result<(), String> {
    let Some((_, graph)) = explained.split_once("== Job graph ==") else {
        return Ok(());
    };
    // The graph ends where EXPLAIN says what the job does about checkpoints.
    let graph = graph.split("\ncheckpoints:").next().unwrap_or(graph);
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in graph.lines() {
        if line.starts_with("vertex ") {
            blocks.push(vec![line]);
        } else if let Some(block) = blocks.last_mut() {
            block.push(line);
        }
    }
    for block in blocks {
        let fragment = block[0].contains("[fragment,");
        let stateful = block
            .iter()
            .any(|line| NEEDS_A_FRAGMENT.iter().any(|name| line.contains(name)));
        if fragment && !stateful {
            return Err(format!(
                "a stateless vertex was planned as a fragment, not a chain:\n{sql}\n{}",
                block.join("\n")
            ));
        }
    }
    Ok(())
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    if data_type.is_integer() {
        DefaultColumnType::Integer
    } else if data_type.is_floating()
        || matches!(
            data_type,
            DataType::Decimal128(..) | DataType::Decimal256(..)
        )
    {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

fn format_rows(batches: &[RecordBatch]) -> Result<DBOutput<DefaultColumnType>, String> {
    let Some(first) = batches.first() else {
        return Ok(DBOutput::Rows {
            types: vec![],
            rows: vec![],
        });
    };
    let types = first
        .schema()
        .fields()
        .iter()
        .map(|field| column_type(field.data_type()))
        .collect();
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        for row in 0..batch.num_rows() {
            let mut values = Vec::with_capacity(formatters.len());
            for (column, formatter) in batch.columns().iter().zip(&formatters) {
                let text = formatter.value(row).to_string();
                let text = if !column.is_null(row) && text.is_empty() {
                    "(empty)".to_string()
                } else {
                    text
                };
                values.push(text);
            }
            rows.push(values);
        }
    }
    Ok(DBOutput::Rows { types, rows })
}

fn make_database(riffle: bool, scratch: Arc<tempfile::TempDir>) -> Result<Database, SqlError> {
    let engine = if riffle {
        let config = JobConfig::default().with_parallelism(PARALLELISM);
        Engine::Riffle(Session::with_config(config).map_err(|e| SqlError(e.to_string()))?)
    } else {
        let config = SessionConfig::new().with_target_partitions(PARALLELISM);
        Engine::DataFusion(SessionContext::new_with_config(config))
    };
    Ok(Database {
        engine,
        _scratch: scratch,
    })
}

fn slt_files(filter: Option<&str>) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "slt"))
        .filter(|path| filter.is_none_or(|f| path.to_string_lossy().contains(f)))
        .collect();
    files.sort();
    files
}

async fn run_file(path: &Path, riffle: bool, complete: bool) -> Result<(), String> {
    let scratch = Arc::new(tempfile::tempdir().map_err(|e| e.to_string())?);
    let scratch_path = scratch.path().to_string_lossy().to_string();
    let make = {
        let scratch = Arc::clone(&scratch);
        move || {
            let scratch = Arc::clone(&scratch);
            async move { make_database(riffle, scratch) }
        }
    };
    let mut runner = sqllogictest::Runner::new(make);
    runner.add_label(if riffle { "riffle" } else { "datafusion" });
    runner.set_var("TMP".to_string(), scratch_path);
    runner.with_column_validator(|_, _| true);
    if complete {
        runner
            .update_test_file(
                path,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await
            .map_err(|e| e.to_string())
    } else {
        runner
            .run_file_async(path)
            .await
            .map_err(|e| e.display(true).to_string())
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let complete = args.iter().any(|a| a == "--complete");
    let filter = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str);
    let files = slt_files(filter);
    let mut failures = Vec::new();
    let mut passed = 0;
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let engines: &[bool] = if complete { &[true] } else { &[true, false] };
        for &riffle in engines {
            let engine = if riffle { "riffle" } else { "datafusion" };
            match run_file(path, riffle, complete).await {
                Ok(()) => {
                    passed += 1;
                    println!("ok   {name} [{engine}]");
                }
                Err(error) => {
                    println!("FAIL {name} [{engine}]\n{error}");
                    failures.push(format!("{name} [{engine}]"));
                }
            }
        }
    }
    println!(
        "\nsqllogictest: {passed} passed, {} failed ({} files)",
        failures.len(),
        files.len()
    );
    if !failures.is_empty() {
        println!("failed: {}", failures.join(", "));
        std::process::exit(1);
    }
}
