//! Benchmark 6a of issue 8: the inference operator against a loopback model server that
//! answers each request after 20 ms and serves 8 at once, with concurrency left adaptive.
//!
//! Three runs, each a whole Riffle job (`ML_PREDICT` over generated texts, at all cores)
//! against the tests' fault server (`riffle_inference::fault_server`):
//!
//! 1. the server answers 429 above 8 requests in flight: rows/s as a fraction of the ideal
//!    (8 × rows per request / 20 ms; target ≥ 95%), and the share of requests answered 429
//!    (target < 2%);
//! 2. the server queues above 8: the same fraction, and the p95 latency the server measured
//!    (arrival to answer, queueing included) against the unloaded 20 ms (target ≤ 2×);
//! 3. the rejecting server's capacity changes during the run, 8 then 4 then 12: the limit is
//!    sampled every 100 ms, and for each phase the benchmark prints when the limit entered
//!    25% of the new capacity and the share of samples within it from 5 s after the change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use riffle::{JobConfig, Session};
use riffle_inference::fault_server::{FaultServer, Overload, ServerConfig};

#[derive(Parser)]
#[command(about = "Riffle's inference operator against a loopback server (issue 8, benchmark a)")]
struct Args {
    /// Seconds each steady run lasts (about).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of each capacity phase.
    #[arg(long, default_value_t = 8)]
    phase: u64,
    /// Rows per request.
    #[arg(long, default_value_t = 32)]
    batch_rows: usize,
    /// Service time of one request, ms.
    #[arg(long, default_value_t = 20)]
    service: u64,
    /// Requests the server serves at once.
    #[arg(long, default_value_t = 8)]
    capacity: usize,
}

fn texts(rows: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let ids = Int64Array::from_iter_values(0..rows as i64);
    let texts = StringArray::from_iter_values((0..rows).map(|i| format!("sentence number {i}")));
    RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(texts)]).unwrap()
}

/// Runs `ML_PREDICT` over `rows` texts against `server`; the job's wall time.
async fn run_job(server: &FaultServer, rows: usize, batch_rows: usize) -> Duration {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let session = Session::with_config(JobConfig::default().with_parallelism(cores)).unwrap();
    // Batches of the session's size, spread over the subtasks.
    let batches: Vec<RecordBatch> = {
        let all = texts(rows);
        (0..rows)
            .step_by(4096)
            .map(|start| all.slice(start, 4096.min(rows - start)))
            .collect()
    };
    session.register_batches("docs", batches).unwrap();
    session
        .sql(&format!(
            "CREATE MODEL embed INPUT (text STRING) OUTPUT (embedding VECTOR(FLOAT, 4)) WITH \
             ('provider' = 'openai', 'endpoint' = '{}', 'batch-rows' = '{batch_rows}', \
             'max-retries' = '50', 'retry-backoff-base-interval' = '20 ms')",
            server.embeddings_url()
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let batches = session
        .sql("SELECT count(*) FROM ML_PREDICT(TABLE docs, MODEL embed, DESCRIPTOR(text))")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let counted = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .map(|a| a.value(0));
    assert_eq!(counted, Some(rows as i64), "every row answered");
    elapsed
}

fn percentile(values: &mut [u64], share: f64) -> u64 {
    values.sort_unstable();
    let index = ((values.len() as f64 * share).ceil() as usize).clamp(1, values.len()) - 1;
    values[index]
}

/// The current limit of the one endpoint in use.
fn current_limit() -> Option<usize> {
    riffle_inference::endpoint::loads()
        .into_iter()
        .map(|(_, limit, _)| limit)
        .next()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let ideal = args.capacity as f64 * args.batch_rows as f64 / (args.service as f64 / 1000.0);
    let rows = (ideal * args.seconds as f64) as usize;
    println!(
        "ideal: {} in flight x {} rows / {} ms = {ideal:.0} rows/s; {rows} rows a run",
        args.capacity, args.batch_rows, args.service
    );

    for (label, overload) in [
        (
            "rejecting (429 above capacity)",
            Overload::Reject { retry_after: None },
        ),
        ("queueing above capacity", Overload::Queue),
    ] {
        let server = FaultServer::start(ServerConfig {
            capacity: args.capacity,
            overload,
            service: args.service,
            ..ServerConfig::default()
        })
        .await
        .unwrap();
        let elapsed = run_job(&server, rows, args.batch_rows).await;
        let rate = rows as f64 / elapsed.as_secs_f64();
        let stats = server.stats();
        let requests = stats.requests.load(Ordering::Relaxed);
        let rejected = stats.rejected.load(Ordering::Relaxed);
        let mut latencies = server.latencies();
        let p95 = percentile(&mut latencies, 0.95);
        let p50 = percentile(&mut latencies, 0.5);
        println!(
            "{label}: {rate:.0} rows/s = {:.1}% of ideal in {:.2} s; {requests} requests, \
             {rejected} answered 429 ({:.2}%); server latency p50 {p50} ms, p95 {p95} ms = \
             {:.2}x the unloaded {} ms; most served at once {}",
            100.0 * rate / ideal,
            elapsed.as_secs_f64(),
            100.0 * rejected as f64 / requests.max(1) as f64,
            p95 as f64 / args.service as f64,
            args.service,
            stats.max_serving.load(Ordering::Relaxed),
        );
    }

    // Capacity changes during one run.
    let server = Arc::new(
        FaultServer::start(ServerConfig {
            capacity: 8,
            overload: Overload::Reject { retry_after: None },
            service: args.service,
            ..ServerConfig::default()
        })
        .await
        .unwrap(),
    );
    let phases = [8usize, 4, 12];
    let phase = Duration::from_secs(args.phase);
    let expected_rows: f64 = phases
        .iter()
        .map(|c| *c as f64 * args.batch_rows as f64 / (args.service as f64 / 1000.0))
        .sum::<f64>()
        * args.phase as f64;
    let rows = (expected_rows * 0.97) as usize;
    let driver = Arc::clone(&server);
    let samples: Arc<Mutex<Vec<(f64, usize, usize)>>> = Arc::default();
    let recorded = Arc::clone(&samples);
    let done = Arc::new(AtomicBool::new(false));
    let finished = Arc::clone(&done);
    let sampler = tokio::spawn(async move {
        let started = Instant::now();
        let mut current = 0;
        while !finished.load(Ordering::Relaxed) {
            let at = started.elapsed();
            let wanted = ((at.as_secs_f64() / phase.as_secs_f64()) as usize).min(phases.len() - 1);
            if wanted != current {
                current = wanted;
                driver.configure(|c| c.capacity = phases[current]);
            }
            if let Some(limit) = current_limit() {
                recorded
                    .lock()
                    .unwrap()
                    .push((at.as_secs_f64(), phases[current], limit));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let elapsed = run_job(&server, rows, args.batch_rows).await;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    println!(
        "capacity 8 -> 4 -> 12 every {} s: {rows} rows in {:.2} s",
        args.phase,
        elapsed.as_secs_f64()
    );
    let samples = samples.lock().unwrap().clone();
    for (index, capacity) in phases.iter().enumerate() {
        let start = index as f64 * phase.as_secs_f64();
        let in_phase: Vec<&(f64, usize, usize)> = samples
            .iter()
            .filter(|(at, wanted, _)| *at >= start && wanted == capacity)
            .collect();
        let within =
            |limit: usize| (limit as f64 - *capacity as f64).abs() <= 0.25 * *capacity as f64;
        let entered = in_phase
            .iter()
            .find(|(_, _, limit)| within(*limit))
            .map(|(at, _, _)| at - start);
        let settled: Vec<&&(f64, usize, usize)> = in_phase
            .iter()
            .filter(|(at, _, _)| *at >= start + 5.0)
            .collect();
        let held = settled
            .iter()
            .filter(|(_, _, limit)| within(*limit))
            .count();
        let limits: Vec<usize> = in_phase.iter().map(|(_, _, limit)| *limit).collect();
        println!(
            "  capacity {capacity}: limit within 25% after {}; from 5 s on, {held} of {} \
             samples within 25%; limits seen {}..{}",
            entered.map_or("never".to_string(), |s| format!("{s:.1} s")),
            settled.len(),
            limits.iter().min().copied().unwrap_or(0),
            limits.iter().max().copied().unwrap_or(0),
        );
    }
}
