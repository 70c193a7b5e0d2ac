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
        /// Restores the script's job from this checkpoint (`.../chk-0000042`) or job
        /// checkpoint folder (its latest complete checkpoint). Without it, a checkpointed job
        /// resumes by itself from its own latest checkpoint, if it left one.
        #[arg(long, value_name = "PATH")]
        from_checkpoint: Option<String>,
    },
    /// Prints the logical plan and the job graph of a query or INSERT.
    Explain {
        /// The statement.
        sql: String,
    },
    /// Describes a checkpoint (`.../chk-0000042`) or a job's checkpoint folder (its latest
    /// complete checkpoint): what each subtask holds, by pipeline region.
    Checkpoint {
        /// The checkpoint or folder.
        path: String,
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
        Command::Run {
            file,
            from_checkpoint,
        } => {
            if let Some(path) = from_checkpoint {
                session.restore_from(path)?;
            }
            let script = std::fs::read_to_string(&file)
                .map_err(|e| RiffleError::user(format!("cannot read {}: {e}", file.display())))?;
            run_script(&session, &script).await
        }
        Command::Explain { sql } => {
            println!("{}", session.explain(&sql).await?);
            Ok(())
        }
        Command::Checkpoint { path } => {
            print!("{}", session.describe_checkpoint(&path).await?);
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

/// Runs one statement; prints the rows of an unbounded job as they come. Ctrl-C or SIGTERM
/// stops the job: with a savepoint when it is checkpointed (running the same command again
/// resumes from it), cancelled otherwise.
async fn run_statement(session: &Session, sql: &str) -> Result<Vec<RecordBatch>, RiffleError> {
    let frame = session.sql(sql).await?;
    let is_insert = matches!(
        frame.logical_plan(),
        riffle::datafusion::logical_expr::LogicalPlan::Dml(_)
    );
    let mut job = frame.execute().await?;
    job.started().await;
    let started = job.report();
    for skipped in &started.passed_over {
        eprintln!("warning: not restored from {skipped}");
    }
    if let Some(id) = started.restored_from {
        eprintln!("resumed from checkpoint {id}");
    }
    for note in &started.notes {
        eprintln!("note: {note}");
    }
    let stopper = job.stopper();
    let interrupt = tokio::spawn(async move {
        stop_signal().await;
        eprintln!("stopping the job (with a savepoint when it takes checkpoints)");
        stopper.stop_with_savepoint();
        // A second signal cancels at once.
        stop_signal().await;
        stopper.cancel();
    });
    let streaming = !job.is_bounded() && !is_insert;
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
    report(&job.report(), is_insert);
    let batches = outcome?;
    if is_insert {
        return insert_count(&batches);
    }
    Ok(batches)
}

/// Waits for Ctrl-C or SIGTERM (what a preempted machine's shutdown sends).
async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Prints what a job did besides its rows: restarts, checkpoints, a savepoint.
fn report(report: &riffle::JobReport, is_insert: bool) {
    if let Some(reason) = &report.checkpointing_off {
        eprintln!("warning: this job takes no checkpoints: {reason}");
    }
    if is_insert && (report.checkpoints.completed > 0 || report.checkpoints.aborted > 0) {
        eprintln!(
            "checkpoints: {} completed, {} aborted",
            report.checkpoints.completed, report.checkpoints.aborted
        );
    }
    if let Some(id) = report.savepoint {
        eprintln!("stopped with savepoint {id}; run the same command again to resume");
    }
    for (index, failure) in report.failures.iter().enumerate() {
        eprintln!("restart {}: after {failure}", index + 1);
    }
    for model in &report.models {
        eprintln!("{model}");
    }
}

/// One row with the total of an insert's `count` rows.
fn insert_count(batches: &[RecordBatch]) -> Result<Vec<RecordBatch>, RiffleError> {
    use riffle::datafusion::arrow::array::UInt64Array;
    let mut total = 0u64;
    for batch in batches {
        if let Some(counts) = batch
            .columns()
            .first()
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        {
            total += counts.iter().flatten().sum::<u64>();
        }
    }
    let schema = std::sync::Arc::new(riffle::datafusion::arrow::datatypes::Schema::new(vec![
        riffle::datafusion::arrow::datatypes::Field::new(
            "count",
            riffle::datafusion::arrow::datatypes::DataType::UInt64,
            false,
        ),
    ]));
    let count = UInt64Array::from(vec![total]);
    Ok(vec![RecordBatch::try_new(
        schema,
        vec![std::sync::Arc::new(count)],
    )?])
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
