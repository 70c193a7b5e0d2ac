//! KServe v2 models (`'provider' = 'triton'`) against a real MLServer on 127.0.0.1, serving
//! a scikit-learn classifier trained by the test: over REST and over gRPC, every row's label
//! and probabilities compared with scikit-learn's own, readiness asked the way the circuit
//! breaker's probe asks it, and bad models named.
//!
//! MLServer lives in a virtual environment of its own (its dependencies pin versions the
//! other tests' packages do not want): `RIFFLE_MLSERVER_VENV`, by default
//! `~/.cache/riffle/mlserver-venv`, which `.ci/run` creates.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    AsArray, FixedSizeListArray, Float32Array, Int64Array, RecordBatch,
};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use riffle::{JobConfig, Session};
use riffle_inference::kserve::KserveBackend;
use riffle_inference::options::TritonOptions;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn venv() -> PathBuf {
    std::env::var_os("RIFFLE_MLSERVER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/riffle/mlserver-venv")
        })
}

/// An MLServer serving the digits classifier, stopped (with its process group) on drop.
struct MlServer {
    child: Child,
    http_port: u16,
    grpc_port: u16,
    reference: serde_json::Value,
}

impl MlServer {
    fn start(dir: &Path) -> MlServer {
        let venv = venv();
        let mlserver = venv.join("bin/mlserver");
        assert!(
            mlserver.is_file(),
            "MLServer is not installed at {} (.ci/run installs it: python3 -m venv DIR && \
             DIR/bin/pip install mlserver==1.7.1 mlserver-sklearn==1.7.1; or set \
             RIFFLE_MLSERVER_VENV)",
            mlserver.display()
        );
        let (http_port, grpc_port, metrics_port) = (free_port(), free_port(), free_port());
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/mlserver_digits.py"
        );
        let status = Command::new(venv.join("bin/python"))
            .arg(script)
            .arg(dir)
            .args([
                http_port.to_string(),
                grpc_port.to_string(),
                metrics_port.to_string(),
            ])
            .status()
            .expect("MLServer's python runs");
        assert!(status.success(), "{script} failed");
        let reference =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let log = std::fs::File::create(dir.join("mlserver.log")).unwrap();
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(&mlserver)
                .arg("start")
                .arg(dir)
                .process_group(0)
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("mlserver starts")
        };
        let server = MlServer {
            child,
            http_port,
            grpc_port,
            reference,
        };
        let started = Instant::now();
        while !(server.get("/v2/health/ready") && server.get("/v2/models/digits/ready")) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "MLServer was not ready within 120 s; its log: {}",
                std::fs::read_to_string(dir.join("mlserver.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        server
    }

    /// Whether GET `path` answers 200.
    fn get(&self, path: &str) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.http_port)) else {
            return false;
        };
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.starts_with("HTTP/1.1 200")
    }
}

impl Drop for MlServer {
    fn drop(&mut self) {
        // MLServer may start helpers of its own: stop the whole group.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// The digits test rows of `reference` (its "inputs", 64 floats each) as a table of `id` and
/// `pixels VECTOR(FLOAT, 64)`.
pub(super) fn digits_batch(reference: &serde_json::Value) -> RecordBatch {
    let values: Vec<f32> = flat(reference, "inputs")
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    pixels_batch(DataType::Float32, Arc::new(Float32Array::from(values)))
}

/// The same rows as raw pixel counts, `pixels VECTOR(UINT8, 64)`.
fn raw_digits_batch(reference: &serde_json::Value) -> RecordBatch {
    use datafusion::arrow::array::UInt8Array;
    let values: Vec<u8> = flat(reference, "raw_inputs")
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    pixels_batch(DataType::UInt8, Arc::new(UInt8Array::from(values)))
}

/// The values of `reference[key]`, a list of rows, in row-major order.
fn flat<'a>(
    reference: &'a serde_json::Value,
    key: &str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    reference[key]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter())
}

/// A table of `id` and `pixels`, 64 `values` of type `item` a row.
fn pixels_batch(item: DataType, values: datafusion::arrow::array::ArrayRef) -> RecordBatch {
    let rows = values.len() / 64;
    let item = Arc::new(Field::new("item", item, true));
    let pixels = FixedSizeListArray::try_new(Arc::clone(&item), 64, values, None).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("pixels", DataType::FixedSizeList(item, 64), false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows as i64)),
            Arc::new(pixels),
        ],
    )
    .unwrap()
}

/// Checks every row's label and probabilities against scikit-learn's.
fn check(
    labels: &[RecordBatch],
    probabilities: &[RecordBatch],
    reference: &serde_json::Value,
    transport: &str,
) {
    let expected_labels = reference["labels"].as_array().unwrap();
    let expected_probabilities = reference["probabilities"].as_array().unwrap();
    let mut seen = vec![0u8; expected_labels.len()];
    for batch in labels {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let got = batch.column(1).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            let id = ids.value(row) as usize;
            seen[id] += 1;
            assert_eq!(
                got.value(row),
                expected_labels[id].as_i64().unwrap(),
                "{transport}: row {id}"
            );
        }
    }
    for batch in probabilities {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let got = batch.column(1).as_fixed_size_list();
        for row in 0..batch.num_rows() {
            let id = ids.value(row) as usize;
            seen[id] += 1;
            let got = got.value(row);
            let got = got.as_primitive::<Float64Type>();
            for (class, expected) in expected_probabilities[id]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
            {
                let expected = expected.as_f64().unwrap();
                assert!(
                    (got.value(class) - expected).abs() <= 1e-6,
                    "{transport}: row {id} class {class}: {} against {expected}",
                    got.value(class)
                );
            }
        }
    }
    assert!(
        seen.iter().all(|n| *n == 2),
        "{transport}: every row once in each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_v2_models_on_mlserver_agree_with_scikit_learn_over_rest_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let server = MlServer::start(dir.path());
    let session = Session::with_config(JobConfig::default().with_parallelism(2)).unwrap();
    session
        .register_batches("digits", vec![digits_batch(&server.reference)])
        .unwrap();
    session
        .register_batches("raw_digits", vec![raw_digits_batch(&server.reference)])
        .unwrap();
    for (transport, endpoint) in [
        ("rest", format!("http://127.0.0.1:{}", server.http_port)),
        ("grpc", format!("grpc://127.0.0.1:{}", server.grpc_port)),
    ] {
        // Two models on one server model: scikit-learn's `predict` (the default output)
        // and `predict_proba` (asked for by name).
        session
            .sql(&format!(
                "CREATE MODEL label_{transport} INPUT (pixels VECTOR(FLOAT, 64)) \
                 OUTPUT (label BIGINT) \
                 WITH ('provider' = 'triton', 'endpoint' = '{endpoint}', \
                 'model-name' = 'digits', 'batch-rows' = '50')"
            ))
            .await
            .unwrap();
        session
            .sql(&format!(
                "CREATE MODEL proba_{transport} INPUT (pixels VECTOR(FLOAT, 64)) \
                 OUTPUT (probabilities VECTOR(DOUBLE, 10)) \
                 WITH ('provider' = 'triton', 'endpoint' = '{endpoint}', \
                 'model-name' = 'digits', 'model-version' = 'v1', \
                 'output-names' = 'predict_proba')"
            ))
            .await
            .unwrap();
        let run = |model: String, column: &'static str| {
            let session = &session;
            async move {
                let query = format!(
                    "SELECT id, {column} FROM ML_PREDICT(TABLE digits, MODEL {model}, \
                     DESCRIPTOR(pixels))"
                );
                session.sql(&query).await.unwrap().collect().await.unwrap()
            }
        };
        let labels = run(format!("label_{transport}"), "label").await;
        let probabilities = run(format!("proba_{transport}"), "probabilities").await;
        check(&labels, &probabilities, &server.reference, transport);

        // UINT8 pixels go as UINT8 tensors (not widened to INT32, which a typed server
        // would refuse).
        session
            .sql(&format!(
                "CREATE MODEL raw_{transport} INPUT (pixels VECTOR(UINT8, 64)) \
                 OUTPUT (label BIGINT) \
                 WITH ('provider' = 'triton', 'endpoint' = '{endpoint}', \
                 'model-name' = 'digits')"
            ))
            .await
            .unwrap();
        let batches = session
            .sql(&format!(
                "SELECT id, label FROM ML_PREDICT(TABLE raw_digits, MODEL raw_{transport}, \
                 DESCRIPTOR(pixels))"
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let expected = server.reference["raw_labels"].as_array().unwrap();
        let mut seen = 0;
        for batch in &batches {
            let ids = batch.column(0).as_primitive::<Int64Type>();
            let labels = batch.column(1).as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                let id = ids.value(row) as usize;
                assert_eq!(
                    labels.value(row),
                    expected[id].as_i64().unwrap(),
                    "{transport}: raw row {id}"
                );
                seen += 1;
            }
        }
        assert_eq!(seen, expected.len(), "{transport}: every raw row");
        // Readiness, as the circuit breaker's half-open probe asks it.
        let options = TritonOptions {
            endpoint: endpoint.clone(),
            model_name: "digits".into(),
            model_version: None,
            output_names: Vec::new(),
        };
        let outputs = Arc::new(Schema::new(vec![Field::new(
            "label",
            DataType::Int64,
            true,
        )]));
        let backend = KserveBackend::new(
            "probe",
            options.clone(),
            vec!["pixels".into()],
            Arc::clone(&outputs),
        )
        .unwrap();
        assert!(backend.is_ready().await.unwrap(), "{transport}: ready");
        let missing = TritonOptions {
            model_name: "nope".into(),
            ..options
        };
        let backend = KserveBackend::new("probe", missing, vec!["pixels".into()], outputs).unwrap();
        assert!(
            !backend.is_ready().await.unwrap_or(false),
            "{transport}: a model the server lacks is not ready"
        );
        // A model the server does not serve, and an output it does not have: each an error
        // naming the model and what the server said.
        for (name, output, options, said) in [
            ("missing", "label BIGINT", "'model-name' = 'nope'", "nope"),
            (
                "wrong_output",
                "score DOUBLE",
                "'model-name' = 'digits', 'output-names' = 'score'",
                "score",
            ),
        ] {
            let model = format!("{name}_{transport}");
            let error = model_error(
                &session,
                &model,
                output,
                &format!("'endpoint' = '{endpoint}', {options}, 'max-retries' = '0'"),
            )
            .await;
            assert!(
                error.contains(&model) && error.contains(said),
                "{transport}: {error}"
            );
        }
    }
    // A server that is not there (port 9, discard, which nothing serves here): a connection
    // error naming the model, after the retries. A free port picked here could be taken by
    // another process before the request, which would then wait for an answer instead.
    let error = model_error(
        &session,
        "unreachable",
        "label BIGINT",
        "'endpoint' = 'http://127.0.0.1:9', 'model-name' = 'digits', \
         'max-retries' = '1', 'retry-backoff-base-interval' = '5 ms', \
         'request-timeout' = '2 s'",
    )
    .await;
    assert!(error.contains("unreachable"), "{error}");
    drop(server);
}

/// Creates a KServe model with `options` and returns the error its call fails with.
async fn model_error(session: &Session, model: &str, output: &str, options: &str) -> String {
    session
        .sql(&format!(
            "CREATE MODEL {model} INPUT (pixels VECTOR(FLOAT, 64)) OUTPUT ({output}) \
             WITH ('provider' = 'triton', {options})"
        ))
        .await
        .unwrap();
    super::query_error(
        session,
        &format!("SELECT * FROM ML_PREDICT(TABLE digits, MODEL {model}, DESCRIPTOR(pixels))"),
    )
    .await
}
