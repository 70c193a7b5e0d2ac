//! The `riffle` command: run SQL and job scripts, and explain them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use riffle::datafusion::arrow::array::RecordBatch;
use riffle::datafusion::arrow::util::pretty::pretty_format_batches;
use riffle::{JobConfig, RiffleError, Session};

#[derive(Parser)]
#[command(
    name = "riffle",
    version,
    about = "Riffle: a dataflow engine for AI data processing"
)]
struct Cli {
    /// Parallel subtasks per vertex (default: the machine's cores).
    #[arg(long, short, global = true, env = "RIFFLE_PARALLELISM")]
    parallelism: Option<usize>,

    /// Sets a job option, as SQL's SET 'key' = 'value' does (repeatable, before the
    /// command): riffle -D execution.checkpointing.interval=10s -D url.allow-private=true run job.sql
    // Not global: clap would let the options after the command replace those before it.
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    define: Vec<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs SQL statements (separated by ';') and prints each result as a table.
    Sql {
        /// The statements.
        sql: String,
    },
    /// Runs a script of SQL statements from a file.
    Run {
        /// The script.
        file: std::path::PathBuf,
    },
    /// Prints the logical plan and the job graph of a query or INSERT.
    Explain {
        /// The statement.
        sql: String,
    },
}

fn main() -> ExitCode {
    // A bug must not greet the user with a backtrace; it gets one line and a request to report.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("internal error: {info} (this is a bug in Riffle; please report it)");
    }));
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), RiffleError> {
    let mut config = JobConfig::default();
    if let Some(parallelism) = cli.parallelism {
        config = config.with_parallelism(parallelism);
    }
    for pair in &cli.define {
        config.options.set_pair(pair)?;
    }
    let session = Session::with_config(config)?;
    match cli.command {
        Command::Sql { sql } => run_script(&session, &sql).await,
        Command::Run { file } => {
            let script = std::fs::read_to_string(&file)
                .map_err(|e| RiffleError::user(format!("cannot read {}: {e}", file.display())))?;
            run_script(&session, &script).await
        }
        Command::Explain { sql } => {
            println!("{}", session.explain(&sql).await?);
            Ok(())
        }
    }
}

async fn run_script(session: &Session, script: &str) -> Result<(), RiffleError> {
    let statements = Session::split_script(script)?;
    let single = statements.len() == 1;
    for statement in statements {
        let started = std::time::Instant::now();
        let outcome = run_statement(session, &statement.sql).await;
        for skipped in session.take_skipped_files() {
            eprintln!("warning: skipped {}: {}", skipped.file, skipped.reason);
        }
        let batches = match outcome {
            Ok(batches) => batches,
            Err(error) if single => return Err(error),
            Err(error) => return Err(error.context(statement.location())),
        };
        print_result(&batches, started.elapsed())?;
    }
    Ok(())
}

/// Runs one statement; prints the rows of an unbounded job as they come, and stops the job
/// on Ctrl-C.
async fn run_statement(session: &Session, sql: &str) -> Result<Vec<RecordBatch>, RiffleError> {
    let frame = session.sql(sql).await?;
    let is_insert = matches!(
        frame.logical_plan(),
        riffle::datafusion::logical_expr::LogicalPlan::Dml(_)
    );
    if is_insert {
        return frame.collect().await;
    }
    let mut job = frame.execute().await?;
    let canceller = job.canceller();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("cancelling the job");
            canceller.cancel();
        }
    });
    let streaming = !job.is_bounded();
    let mut batches = Vec::new();
    let outcome = loop {
        match job.next_batch().await {
            Ok(Some(batch)) if streaming => {
                if let Ok(table) = pretty_format_batches(std::slice::from_ref(&batch)) {
                    println!("{table}");
                }
            }
            Ok(Some(batch)) => batches.push(batch),
            Ok(None) => break Ok(batches),
            Err(error) => break Err(error),
        }
    };
    interrupt.abort();
    outcome
}

fn print_result(batches: &[RecordBatch], elapsed: std::time::Duration) -> Result<(), RiffleError> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let has_columns = batches.first().is_some_and(|b| b.num_columns() > 0);
    if has_columns {
        println!("{}", pretty_format_batches(batches)?);
        println!("{rows} row(s) in {:.3}s\n", elapsed.as_secs_f64());
    } else {
        println!("OK ({:.3}s)\n", elapsed.as_secs_f64());
    }
    Ok(())
}
