//! Riffle's side of the image benchmark: list, read, decode, resize to 224x224 and turn
//! into float32 CHW tensors every JPEG of a folder, and print images per second.
//!
//! Run by `benchmarks/images/run.py`, which generates the pictures and runs Pillow and Daft
//! on the same folder in the same run; see `benchmarks/README.md`.

use std::time::Instant;

use clap::Parser;
use riffle::{JobConfig, Session};

#[derive(Parser)]
#[command(about = "Decode, resize and tensorize a folder of JPEGs with Riffle")]
struct Args {
    /// The folder of `.jpg` files.
    #[arg(long)]
    dir: String,
    /// Parallel tasks (default: all cores).
    #[arg(long)]
    parallelism: Option<usize>,
    /// Runs; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Rows per batch through file_read and the image functions (default: Riffle's).
    #[arg(long)]
    async_batch_rows: Option<usize>,
    /// The expression counted per file instead of the whole pipeline (`{bytes}` stands for
    /// the file's bytes), to time one stage: e.g. `image_decode({bytes})`.
    #[arg(long)]
    stage: Option<String>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut config = JobConfig::default();
    if let Some(parallelism) = args.parallelism {
        config = config.with_parallelism(parallelism);
    }
    if let Some(rows) = args.async_batch_rows {
        config = config.with_async_batch_rows(rows);
    }
    let parallelism = config.parallelism;
    let session = Session::with_config(config).expect("session");
    // count(t) evaluates every tensor without keeping them: the work is the pipeline.
    let pipeline = "image_to_tensor(image_resize(image_decode({bytes}), 224, 224, 'bilinear'))";
    let expression = args
        .stage
        .as_deref()
        .unwrap_or(pipeline)
        .replace("{bytes}", "file_read(file)");
    let query = format!(
        "SELECT count({expression}) FROM files('{}/*.jpg')",
        args.dir
    );
    let mut best = f64::MAX;
    let mut images = 0;
    for _ in 0..args.repeat.max(1) {
        let started = Instant::now();
        let frame = session.sql(&query).await.expect("plan");
        let batches = frame.collect().await.expect("run");
        best = best.min(started.elapsed().as_secs_f64());
        images = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .expect("count")
            .value(0);
    }
    println!(
        "riffle images={images} parallelism={parallelism} seconds={best:.3} images_per_s={:.1}",
        images as f64 / best
    );
}
