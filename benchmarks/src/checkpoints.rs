//! What checkpoints cost a stateless bounded job, and how fast it recovers from a failure.
//!
//! ```text
//! cargo run --profile bench-fast -p riffle-benchmarks --bin riffle-bench-checkpoints -- --rows 5000000
//! ```
//!
//! The job: the lineitem Parquet files -> a projection with functions (`upper`, `md5`,
//! arithmetic) -> a Parquet sink, at all cores. It runs alternately without checkpoints and
//! with a checkpoint every second (`--interval`), `--repeat` times each, in one process,
//! and prints the best times and their ratio (the throughput lost to checkpoints), the
//! checkpoints' duration and size; then once more with a failure injected halfway
//! (`riffle.test.fail`, no restart delay) and prints the time from the failure until rows
//! flowed again, and the rows read again.

mod data;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use riffle::{JobConfig, JobReport, Session};

#[derive(Parser)]
#[command(about = "Checkpoints against none on a stateless job, and recovery from a failure")]
struct Args {
    /// Rows of the generated lineitem table.
    #[arg(long, default_value_t = 5_000_000)]
    rows: usize,
    /// Where the data set, the outputs and the checkpoints go.
    #[arg(long, default_value = "benchmarks/data")]
    dir: PathBuf,
    /// Runs of each mode; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Time between checkpoints.
    #[arg(long, default_value = "1 s")]
    interval: String,
}

const JOB: &str = "INSERT INTO out SELECT l_orderkey, l_partkey, l_shipdate, \
    upper(l_comment) AS comment, md5(l_shipmode) AS mode_hash, \
    l_extendedprice * (1 - l_discount) * (1 + l_tax) AS charge FROM lineitem";

async fn session(table: &Path, out: &Path, options: &[(&str, &str)]) -> Session {
    let session = Session::new().expect("session");
    for (key, value) in options {
        session.set_option(key, value).expect("option");
    }
    session
        .sql(&format!(
            "CREATE TABLE lineitem WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            table.display()
        ))
        .await
        .expect("lineitem");
    session
        .sql(&format!(
            "CREATE TABLE out (l_orderkey BIGINT, l_partkey BIGINT, l_shipdate DATE, comment VARCHAR, \
             mode_hash VARCHAR, charge DOUBLE) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            out.display()
        ))
        .await
        .expect("out");
    session
}

/// Runs the job once; returns its time, the rows it wrote and its report.
async fn run(table: &Path, out: &Path, options: &[(&str, &str)]) -> (Duration, u64, JobReport) {
    let _ = std::fs::remove_dir_all(out);
    let session = session(table, out, options).await;
    let started = Instant::now();
    let mut job = session
        .sql(JOB)
        .await
        .expect("plan")
        .execute()
        .await
        .expect("start");
    let mut rows = 0;
    while let Some(batch) = job.next_batch().await.expect("the job") {
        let counts = batch
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::UInt64Array>()
            .expect("counts");
        rows += counts.iter().flatten().sum::<u64>();
    }
    (started.elapsed(), rows, job.report())
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let table = args.dir.join(format!("lineitem-{}", args.rows));
    if !table.exists() {
        eprintln!("generating {} rows under {}", args.rows, table.display());
        data::generate(&table, args.rows).expect("generate");
    }
    let out = args.dir.join("checkpoints-out");
    let checkpoint_dir = args.dir.join("checkpoints-state");
    let _ = std::fs::remove_dir_all(&checkpoint_dir);
    let dir = checkpoint_dir.to_str().expect("a UTF-8 path").to_string();
    let checkpointed = [
        ("execution.checkpointing.interval", args.interval.as_str()),
        ("execution.checkpointing.dir", dir.as_str()),
    ];
    let parallelism = JobConfig::default().parallelism;

    let mut none = Duration::MAX;
    let mut with = Duration::MAX;
    let mut durations = Vec::new();
    let mut bytes = 0;
    let mut completed = 0;
    for _ in 0..args.repeat.max(1) {
        let (time, rows, _) = run(&table, &out, &[]).await;
        assert_eq!(rows as usize, args.rows, "rows written without checkpoints");
        none = none.min(time);
        let (time, rows, report) = run(&table, &out, &checkpointed).await;
        assert_eq!(rows as usize, args.rows, "rows written with checkpoints");
        with = with.min(time);
        completed = completed.max(report.checkpoints.completed);
        bytes = bytes.max(report.checkpoints.latest_bytes);
        durations.extend(report.checkpoints.durations);
    }
    durations.sort();
    let mean = durations.iter().sum::<Duration>() / durations.len().max(1) as u32;
    let max = durations.last().copied().unwrap_or_default();
    println!(
        "stateless job, {} rows, parallelism {parallelism}, best of {}:",
        args.rows, args.repeat
    );
    println!("| mode | seconds | rows/s | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| no checkpoints | {:.3} | {:.0} | 1.00 |",
        none.as_secs_f64(),
        args.rows as f64 / none.as_secs_f64()
    );
    println!(
        "| checkpoint every {} | {:.3} | {:.0} | {:.3} |",
        args.interval,
        with.as_secs_f64(),
        args.rows as f64 / with.as_secs_f64(),
        with.as_secs_f64() / none.as_secs_f64()
    );
    println!(
        "throughput lost to checkpoints: {:.1}% (target: at most 5%)",
        (1.0 - none.as_secs_f64() / with.as_secs_f64()) * 100.0
    );
    println!(
        "checkpoints per run: up to {completed} (the last is the final one); duration mean {:.1} ms, \
         max {:.1} ms; size {bytes} bytes",
        millis(mean),
        millis(max)
    );

    // Recovery: a failure halfway through the first attempt, no restart delay.
    let batches_per_subtask = args.rows / 8192 / parallelism;
    let fault = format!(
        "vertex=0,subtask=0,after-batches={},kind=error",
        (batches_per_subtask / 2).max(1)
    );
    let mut failing = checkpointed.to_vec();
    failing.extend([
        ("restart-strategy.type", "fixed-delay"),
        ("restart-strategy.fixed-delay.attempts", "3"),
        ("restart-strategy.fixed-delay.delay", "0 ms"),
        ("riffle.test.fail", fault.as_str()),
    ]);
    let (time, rows, report) = run(&table, &out, &failing).await;
    assert_eq!(rows as usize, args.rows, "rows written through a failure");
    let recovery = report.recoveries.first().copied().unwrap_or_default();
    println!(
        "with a failure halfway ({fault}): {:.3} s in all, {} restart(s); rows flowed again {:.1} ms \
         after the failure (target: under 1 s; restart delay {:?}, not counted); {} rows read again",
        time.as_secs_f64(),
        report.restarts,
        millis(recovery),
        report.restart_delay,
        report.rows_read_again
    );
}
