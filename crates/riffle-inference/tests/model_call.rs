//! One model call against the tests' own fault-injecting server on 127.0.0.1: answers row
//! by row, retries of 429, 500, resets and stalls, bisection of refused requests, row
//! errors, structured chat output, and clear errors for unreachable servers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Int64Type, Schema};
use riffle_inference::call::ModelCall;
use riffle_inference::fault_server::{Fault, FaultServer, ServerConfig, embedding_of};
use riffle_inference::options::{InferenceConfig, merge_options};

const DIM: usize = 4;

fn texts(values: &[&str]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, true)]));
    RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(values.to_vec()))]).unwrap()
}

fn embedding_model(url: &str, extra: &[(&str, &str)]) -> ModelCall {
    let mut options: BTreeMap<String, String> = [
        ("provider", "openai"),
        ("endpoint", url),
        ("model", "test-embed"),
        ("retry-backoff-base-interval", "5 ms"),
        ("request-timeout", "2 s"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        options.insert(k.to_string(), v.to_string());
    }
    let options = merge_options("embed", &options, &BTreeMap::new()).unwrap();
    let config = InferenceConfig::from_options("embed", &options).unwrap();
    let outputs = Arc::new(Schema::new(vec![Field::new(
        "embedding",
        DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, true)),
            DIM as i32,
        ),
        true,
    )]));
    let input = texts(&[]).schema();
    ModelCall::new(config, outputs, &input, &["text".to_string()]).unwrap()
}

fn check_embeddings(batch: &RecordBatch, values: &[&str]) {
    let column = batch
        .column_by_name("embedding")
        .unwrap()
        .as_fixed_size_list();
    for (row, text) in values.iter().enumerate() {
        let got: Vec<f32> = column
            .value(row)
            .as_primitive::<Float32Type>()
            .values()
            .to_vec();
        assert_eq!(got, embedding_of(text, DIM), "row {row} ({text})");
    }
}

#[tokio::test]
async fn every_row_gets_its_own_embedding() {
    let server = FaultServer::start(ServerConfig::default()).await.unwrap();
    let call = embedding_model(&server.embeddings_url(), &[]);
    let values = [
        "a man eats",
        "bread",
        "",
        "a much longer sentence than the rest",
    ];
    let out = call.call(texts(&values)).await.unwrap();
    assert_eq!(out.num_columns(), 2);
    check_embeddings(&out, &values);
    assert_eq!(server.log(), values.map(str::to_string).to_vec());
    // The same rows carry the same key.
    call.call(texts(&values)).await.unwrap();
    let keys = server.keys();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);
    assert!(keys[0].starts_with("riffle-embed-"));
}

#[tokio::test]
async fn transient_failures_are_retried_until_the_answer() {
    let server = FaultServer::start(ServerConfig::default()).await.unwrap();
    server.script([
        Fault::RateLimited(Some(0)),
        Fault::RateLimited(None),
        Fault::ServerError,
        Fault::Reset,
        Fault::Stall(3_000),
        Fault::Trickle(1),
    ]);
    let call = embedding_model(
        &server.embeddings_url(),
        &[("request-timeout", "300 ms"), ("max-retries", "6")],
    );
    let values = ["x", "y"];
    let out = call.call(texts(&values)).await.unwrap();
    check_embeddings(&out, &values);
    let metrics = call.metrics().snapshot();
    assert_eq!(metrics.http_429, 2);
    assert_eq!(metrics.retries, [2, 1, 1, 1], "{metrics:?}");
    assert_eq!(metrics.requests, 6);
}

#[tokio::test]
async fn a_refused_row_is_found_by_bisection_and_alone_gets_the_error() {
    let server = FaultServer::start(ServerConfig {
        poison: vec!["poison".into()],
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let call = embedding_model(&server.embeddings_url(), &[("on-error", "null")]);
    let values = ["a", "b", "poison", "d", "e"];
    let out = call.call(texts(&values)).await.unwrap();
    let errors = out.column_by_name("__error").unwrap().as_struct();
    let embedding = out.column_by_name("embedding").unwrap();
    for row in 0..values.len() {
        assert_eq!(errors.is_null(row), row != 2, "row {row}");
        assert_eq!(embedding.is_null(row), row == 2, "row {row}");
    }
    let code = errors.column_by_name("code").unwrap().as_string::<i32>();
    assert_eq!(code.value(2), "client_error");
    let status = errors.column_by_name("http_status").unwrap();
    assert_eq!(
        status
            .as_primitive::<datafusion::arrow::datatypes::Int32Type>()
            .value(2),
        400
    );
    assert!(call.metrics().snapshot().bisections >= 2);
}

#[tokio::test]
async fn a_malformed_answer_fails_the_row_or_the_job_as_asked() {
    let server = FaultServer::start(ServerConfig::default()).await.unwrap();
    server.script([Fault::Malformed]);
    let call = embedding_model(&server.embeddings_url(), &[]);
    let error = call.call(texts(&["a"])).await.unwrap_err();
    assert!(error.message().contains("model embed"), "{error}");
    assert!(error.message().contains("does not parse"), "{error}");
    assert!(error.hint().unwrap().contains("on-error"));

    server.script([Fault::Malformed]);
    let call = embedding_model(&server.embeddings_url(), &[("on-error", "default")]);
    let out = call.call(texts(&["a"])).await.unwrap();
    let embedding = out
        .column_by_name("embedding")
        .unwrap()
        .as_fixed_size_list();
    assert!(!embedding.is_null(0));
    assert_eq!(
        embedding
            .value(0)
            .as_primitive::<Float32Type>()
            .values()
            .to_vec(),
        vec![0.0; DIM]
    );
    assert!(!out.column_by_name("__error").unwrap().is_null(0));
}

#[tokio::test]
async fn an_unreachable_server_is_named_after_the_retries() {
    // A port nothing listens on: bind, take the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1/embeddings");
    let call = embedding_model(&url, &[("max-retries", "2")]);
    let error = call.call(texts(&["a"])).await.unwrap_err();
    let text = error.message();
    assert!(text.contains("model embed"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("connection"), "{text}");
    assert_eq!(call.metrics().snapshot().requests, 3);
}

#[tokio::test]
async fn the_error_share_guard_fails_a_job_whose_rows_all_fail() {
    let server = FaultServer::start(ServerConfig::default()).await.unwrap();
    server.configure(|c| {
        c.faults = vec![Fault::BadRequest];
        c.fault_rate = 1.0;
    });
    let call = embedding_model(
        &server.embeddings_url(),
        &[("on-error", "null"), ("batch-rows", "1")],
    );
    let mut failure = None;
    for i in 0..20 {
        if let Err(error) = call.call(texts(&[&format!("row {i}")])).await {
            failure = Some(error);
            break;
        }
    }
    let error = failure.expect("the guard stops the job");
    assert!(error.message().contains("max-error-fraction"), "{error}");
}

#[tokio::test]
async fn chat_fills_structured_outputs_from_a_template() {
    let server = FaultServer::start(ServerConfig::default()).await.unwrap();
    let options: BTreeMap<String, String> = [
        ("provider", "openai"),
        ("endpoint", server.chat_url().as_str()),
        ("prompt-template", "Describe {text} in {lang}"),
        ("response-format", r#"{"type":"object","properties":{"length":{"type":"integer"},"upper":{"type":"string"}}}"#),
        ("system-prompt", "be brief"),
        ("api-key", "sk-never-shown"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = InferenceConfig::from_options("chat", &options).unwrap();
    let outputs = Arc::new(Schema::new(vec![
        Field::new("length", DataType::Int64, true),
        Field::new("upper", DataType::Utf8, true),
    ]));
    let input = Arc::new(Schema::new(vec![
        Field::new("text", DataType::Utf8, true),
        Field::new("lang", DataType::Utf8, true),
    ]));
    let call = ModelCall::new(config, outputs, &input, &["text".into(), "lang".into()]).unwrap();
    let batch = RecordBatch::try_new(
        input,
        vec![
            Arc::new(StringArray::from(vec!["cats", "dogs"])),
            Arc::new(StringArray::from(vec!["French", "Dutch"])),
        ],
    )
    .unwrap();
    let out = call.call(batch).await.unwrap();
    let length = out
        .column_by_name("length")
        .unwrap()
        .as_primitive::<Int64Type>();
    let upper = out.column_by_name("upper").unwrap().as_string::<i32>();
    assert_eq!(upper.value(0), "DESCRIBE CATS IN FRENCH");
    assert_eq!(length.value(1), "Describe dogs in Dutch".len() as i64);
    assert_eq!(server.stats().answered.load(Ordering::Relaxed), 2);
    assert!(!format!("{call:?}").contains("sk-never-shown"));
}

#[tokio::test]
async fn rows_over_the_context_size_are_cut_skipped_or_refused_as_asked() {
    let server = FaultServer::start(ServerConfig::default()).await.unwrap();
    let long = "abcdefghijklmnopqrstuvwxyz";
    for (action, sent, error) in [
        ("truncated-tail", Some("abcdefgh"), None),
        ("truncated-head", Some("stuvwxyz"), None),
        ("skipped", None, None),
        ("error", None, Some("context_overflow")),
    ] {
        server.reset_counts();
        let call = embedding_model(
            &server.embeddings_url(),
            &[
                ("max-context-size", "2"),
                ("context-overflow-action", action),
                ("on-error", "null"),
            ],
        );
        let out = call.call(texts(&["ok", long])).await.unwrap();
        let mut expected = vec!["ok".to_string()];
        expected.extend(sent.map(str::to_string));
        assert_eq!(server.log(), expected, "{action}");
        let embedding = out.column_by_name("embedding").unwrap();
        assert_eq!(embedding.is_null(1), sent.is_none(), "{action}");
        let errors = out.column_by_name("__error").unwrap().as_struct();
        match error {
            Some(code) => {
                let codes = errors.column_by_name("code").unwrap().as_string::<i32>();
                assert_eq!(codes.value(1), code);
            }
            None => assert!(errors.is_null(1), "{action}"),
        }
    }
}
