//! What the sentence-encoder tests share: the installed models' folders, and the cosine a
//! backend gives the sentence-transformers reference pair.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema};
use riffle_inference::backend::{Backend, Request};
use riffle_inference::options::SentenceOptions;
use riffle_inference::sentence::SentenceBackend;

/// The folder of an installed Python package.
pub fn package_dir(package: &str) -> String {
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

/// A 384-dimension sentence encoder with these files.
pub fn encoder(
    path: String,
    tokenizer: String,
    config: Option<String>,
) -> Result<SentenceBackend, String> {
    let options = SentenceOptions {
        path,
        tokenizer,
        config,
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
    SentenceBackend::new("minilm", &options, 1, outputs)
}

/// The cosine of "A man is eating food." and "A man is eating a piece of bread.", whose
/// embeddings must come back normalised.
pub async fn reference_cosine(backend: &SentenceBackend) -> f32 {
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
    assert_eq!(vectors.len(), 2);
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
    a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>() / (norm(&a) * norm(&b))
}
