//! Riffle against DataFusion on the same Parquet files, in the same process.
//!
//! ```text
//! cargo run --profile bench-fast -p riffle-benchmarks -- --rows 20000000
//! ```
//!
//! Generates a lineitem-like data set (once; reused while the row count matches), then runs
//! each workload with Riffle and with DataFusion at parallelism 1 and at all cores, and
//! prints the best time of `--repeat` runs, the peak memory allocated during the run, and
//! the ratio Riffle / DataFusion.

mod data;
mod memory;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use datafusion::config::TableParquetOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use riffle::{JobConfig, Session};

#[global_allocator]
static ALLOCATOR: memory::PeakAllocator = memory::PeakAllocator;

#[derive(Parser)]
#[command(about = "Benchmarks Riffle against DataFusion on the same Parquet files")]
struct Args {
    /// Rows of the generated lineitem table.
    #[arg(long, default_value_t = 20_000_000)]
    rows: usize,
    /// Where the data set and the written outputs go.
    #[arg(long, default_value = "benchmarks/data")]
    dir: PathBuf,
    /// Runs per measurement; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Only this workload (`aggregate` or `write`).
    #[arg(long)]
    only: Option<String>,
}

const AGGREGATE: &str = "SELECT l_returnflag, l_linestatus, \
    sum(l_quantity) AS sum_qty, sum(l_extendedprice) AS sum_base_price, \
    sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price, \
    sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge, \
    avg(l_quantity) AS avg_qty, avg(l_discount) AS avg_disc, count(*) AS count_order \
    FROM lineitem WHERE l_shipdate <= DATE '1998-09-02' \
    GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus";

const WRITE: &str = "SELECT l_orderkey, l_partkey, l_suppkey, l_shipdate, l_shipmode, \
    l_extendedprice * (1 - l_discount) AS revenue \
    FROM lineitem WHERE l_discount > 0.05 AND l_quantity < 24";

struct Measurement {
    seconds: f64,
    peak_bytes: usize,
    rows: u64,
}

async fn measure<F, Fut>(repeat: usize, mut run: F) -> Measurement
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let mut best = Duration::MAX;
    let mut peak = 0;
    let mut rows = 0;
    for _ in 0..repeat.max(1) {
        memory::reset_peak();
        let started = Instant::now();
        rows = run().await;
        best = best.min(started.elapsed());
        peak = peak.max(memory::peak_since_reset());
    }
    Measurement {
        seconds: best.as_secs_f64(),
        peak_bytes: peak,
        rows,
    }
}

fn datafusion_context(parallelism: usize) -> SessionContext {
    // The same settings Riffle plans with, so that both read and write the same way.
    let mut config = SessionConfig::new().with_target_partitions(parallelism);
    config.options_mut().execution.collect_statistics = false;
    config
        .options_mut()
        .execution
        .listing_table_ignore_subdirectory = false;
    SessionContext::new_with_config(config)
}

async fn riffle_session(parallelism: usize, table: &Path) -> Session {
    let session =
        Session::with_config(JobConfig::default().with_parallelism(parallelism)).expect("session");
    session
        .sql(&format!(
            "CREATE TABLE lineitem WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            table.display()
        ))
        .await
        .expect("create table");
    session
}

fn clean(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// A Riffle session and a DataFusion context, each with `lineitem` over the same files.
async fn engines(parallelism: usize, table: &Path) -> (Session, SessionContext) {
    let session = riffle_session(parallelism, table).await;
    let context = datafusion_context(parallelism);
    context
        .register_parquet(
            "lineitem",
            table.to_str().unwrap(),
            ParquetReadOptions::default(),
        )
        .await
        .expect("register");
    (session, context)
}

async fn run_aggregate(
    parallelism: usize,
    table: &Path,
    repeat: usize,
) -> (Measurement, Measurement) {
    let (session, context) = engines(parallelism, table).await;
    let riffle = measure(repeat, || async {
        let batches = session
            .sql(AGGREGATE)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        batches.iter().map(|b| b.num_rows() as u64).sum()
    })
    .await;
    let datafusion = measure(repeat, || async {
        let batches = context
            .sql(AGGREGATE)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        batches.iter().map(|b| b.num_rows() as u64).sum()
    })
    .await;
    assert_eq!(
        riffle.rows, datafusion.rows,
        "both engines must return the same rows"
    );
    (riffle, datafusion)
}

async fn run_write(
    parallelism: usize,
    table: &Path,
    out: &Path,
    repeat: usize,
) -> (Measurement, Measurement) {
    let (session, context) = engines(parallelism, table).await;
    let riffle_out = out.join("riffle");
    let datafusion_out = out.join("datafusion");
    let riffle = measure(repeat, || {
        clean(&riffle_out);
        let path = riffle_out.to_str().unwrap().to_string();
        let session = session.clone();
        async move {
            session
                .sql(WRITE)
                .await
                .unwrap()
                .write_parquet(&path)
                .await
                .unwrap()
        }
    })
    .await;
    let datafusion = measure(repeat, || {
        clean(&datafusion_out);
        std::fs::create_dir_all(&datafusion_out).unwrap();
        let path = format!("{}/", datafusion_out.display());
        let context = context.clone();
        async move {
            let mut options = TableParquetOptions::default();
            options.global.compression = Some("zstd(3)".to_string());
            let frame = context.sql(WRITE).await.unwrap();
            let batches = frame
                .write_parquet(&path, DataFrameWriteOptions::new(), Some(options))
                .await
                .unwrap();
            let counts = batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                .unwrap();
            counts.value(0)
        }
    })
    .await;
    assert_eq!(
        riffle.rows, datafusion.rows,
        "both engines must write the same rows"
    );
    (riffle, datafusion)
}

fn report(workload: &str, parallelism: usize, riffle: &Measurement, datafusion: &Measurement) {
    let mb = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "| {workload:<34} | {parallelism:>11} | {:>8.3} | {:>10.3} | {:>6.2} | {:>11.0} | {:>13.0} | {:>10} |",
        riffle.seconds,
        datafusion.seconds,
        riffle.seconds / datafusion.seconds,
        mb(riffle.peak_bytes),
        mb(datafusion.peak_bytes),
        riffle.rows,
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let table = args.dir.join(format!("lineitem-{}", args.rows));
    if !table.exists() {
        let started = Instant::now();
        data::generate(&table, args.rows).expect("generate the data set");
        println!(
            "generated {} rows in {:.1}s under {}",
            args.rows,
            started.elapsed().as_secs_f64(),
            table.display()
        );
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut levels = vec![1];
    if cores > 1 {
        levels.push(cores);
    }
    println!(
        "\nlineitem: {} rows; best of {} runs; peak = most bytes allocated at once during a run\n",
        args.rows, args.repeat
    );
    println!(
        "| workload                           | parallelism | riffle s | datafusion s | ratio | riffle peak MB | datafusion peak MB | rows |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let out = args.dir.join("out");
    for &parallelism in &levels {
        if args.only.as_deref().is_none_or(|o| o == "aggregate") {
            let (riffle, datafusion) = run_aggregate(parallelism, &table, args.repeat).await;
            report(
                "scan->filter->project->aggregate",
                parallelism,
                &riffle,
                &datafusion,
            );
        }
        if args.only.as_deref().is_none_or(|o| o == "write") {
            let (riffle, datafusion) = run_write(parallelism, &table, &out, args.repeat).await;
            report(
                "scan->filter->write parquet",
                parallelism,
                &riffle,
                &datafusion,
            );
        }
    }
    clean(&out);
}
