//! Exactly-once under failures, the way Flink shows it: faults injected at seeded random
//! points (`riffle.test.fail`), restarts from the latest checkpoint, and the published
//! output compared with the expected rows one by one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use riffle::{JobConfig, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{int_column, visible_files};

/// A loopback HTTP server that answers every path with its own text and logs the paths it
/// was asked for, in order.
async fn echo_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::clone(&log);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let requests = Arc::clone(&requests);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                requests.lock().unwrap().push(path.clone());
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    path.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(path.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (port, log)
}

/// A small seeded generator (xorshift), so that a failing run can be replayed.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

const KINDS: [&str; 5] = ["error", "panic", "snapshot", "commit", "stall-snapshot"];

/// `count` faults, one per attempt, at seeded random points of the given vertices (each
/// with its parallelism and the batches a subtask sees in a whole run).
pub(super) fn faults(seed: u64, count: u64, vertices: &[(usize, usize, u64)]) -> String {
    let mut random = Seeded(seed.max(1));
    (0..count)
        .map(|attempt| {
            let (vertex, parallelism, batches) =
                vertices[random.next(vertices.len() as u64) as usize];
            let subtask = random.next(parallelism as u64);
            // Early enough that the attempt reaches it (each attempt restarts from a
            // checkpoint, not from the start, so later attempts see fewer batches).
            let after = 1 + random.next((batches / (count + 1)).max(1));
            let kind = KINDS[(attempt % KINDS.len() as u64) as usize];
            format!(
                "attempt={attempt},vertex={vertex},subtask={subtask},after-batches={after},kind={kind}"
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Plans `FAILURES` seeded faults into the job of `statement` (over `rows` input rows, in
/// batches of 1,024) and sets them on `session`: the seed (`RIFFLE_TEST_SEED`, else
/// `default_seed`) and the plan, for the failure messages.
pub(super) async fn inject_faults(
    session: &Session,
    statement: &str,
    rows: u64,
    failures: u64,
    default_seed: u64,
) -> (u64, String) {
    let graph = session
        .job_graph(session.sql(statement).await.unwrap().logical_plan())
        .await
        .unwrap();
    // Batches a subtask of each vertex sees in a run, roughly: rows over the batch size.
    let vertices: Vec<(usize, usize, u64)> = graph
        .vertices
        .iter()
        .map(|v| (v.id, v.parallelism, rows / 1024 / v.parallelism as u64))
        .collect();
    let seed = std::env::var("RIFFLE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seed);
    let plan = faults(seed, failures, &vertices);
    session.set_option("riffle.test.fail", &plan).unwrap();
    (seed, plan)
}

/// Writes `rows` ids (0..rows) as Parquet under `path`, in `files` files of consecutive
/// ascending ids, in row groups of `group_rows` rows: the scan splits the files by byte
/// range, each subtask reading about as many row groups as the other, and a restored scan
/// passes over the row groups before its position.
pub(super) fn parquet_input(path: &std::path::Path, rows: u64, files: u64, group_rows: usize) {
    use riffle::datafusion::arrow::array::{Int64Array, RecordBatch};
    use riffle::datafusion::arrow::datatypes::{DataType, Field, Schema};
    use riffle::datafusion::parquet::arrow::ArrowWriter;
    use riffle::datafusion::parquet::file::properties::WriterProperties;
    std::fs::create_dir_all(path).unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    let per_file = rows.div_ceil(files);
    for file in 0..files {
        let (from, to) = (file * per_file, ((file + 1) * per_file).min(rows));
        let out = std::fs::File::create(path.join(format!("part-{file}.parquet"))).unwrap();
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(group_rows))
            .build();
        let mut writer = ArrowWriter::try_new(out, Arc::clone(&schema), Some(properties)).unwrap();
        let ids = Int64Array::from_iter_values(from as i64..to as i64);
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(ids)]).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
}

pub(super) fn checkpointed_session(dir: &std::path::Path) -> Session {
    // Small batches, so that a barrier queued behind full channels still passes within the
    // timeout in a debug build (a barrier waits for the batches before it: aligned
    // checkpoints).
    let config = JobConfig {
        batch_size: 1024,
        ..JobConfig::default().with_parallelism(2)
    };
    let session = Session::with_config(config).unwrap();
    for (key, value) in [
        ("execution.checkpointing.interval", "200 ms"),
        ("execution.checkpointing.timeout", "5 s"),
        ("execution.checkpointing.dir", dir.to_str().unwrap()),
        ("restart-strategy.type", "fixed-delay"),
        ("restart-strategy.fixed-delay.attempts", "40"),
        ("restart-strategy.fixed-delay.delay", "0 ms"),
        ("url.allow-private", "true"),
    ] {
        session.set_option(key, value).unwrap();
    }
    session
}

async fn declare(session: &Session, input: &std::path::Path, output: &std::path::Path) {
    session
        .sql(&format!(
            "CREATE TABLE src (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            input.display()
        ))
        .await
        .unwrap();
    session
        .sql(&format!(
            "CREATE TABLE out (id BIGINT, twice BIGINT, body VARCHAR) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            output.display()
        ))
        .await
        .unwrap();
}

async fn published_ids(output: &std::path::Path) -> Vec<i64> {
    let reader = Session::with_config(JobConfig::default().with_parallelism(2)).unwrap();
    reader
        .sql(&format!(
            "CREATE TABLE out (id BIGINT, twice BIGINT, body VARCHAR) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            output.display()
        ))
        .await
        .unwrap();
    let batches = reader
        .sql("SELECT id FROM out WHERE twice = 2 * id AND (id % 10 <> 0 OR body = concat('/', CAST(id AS VARCHAR))) ORDER BY id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    int_column(&batches, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_job_publishes_every_row_once_through_injected_failures() {
    const ROWS: u64 = 1_000_000;
    const FAILURES: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    let output = dir.path().join("output");
    let checkpoints = dir.path().join("checkpoints");
    // Four files of ten row groups: each reader has about half, and a restore passes over
    // the files and row groups before its position.
    parquet_input(&input, ROWS, 4, 25_000);
    let (port, requests) = echo_server().await;

    let session = checkpointed_session(&checkpoints);
    declare(&session, &input, &output).await;
    let insert = format!(
        // The CASE is inside: DataFusion evaluates an async function's arguments for every
        // row before the expression around it, so a CASE around the call would not spare
        // the other rows a request (a NULL URL makes none).
        "INSERT INTO out SELECT id, id * 2, \
         CAST(url_download(CASE WHEN id % 10 = 0 THEN concat('http://127.0.0.1:{port}/', CAST(id AS VARCHAR)) END) AS VARCHAR) \
         FROM src"
    );
    let plan = session.explain(&insert).await.unwrap();
    assert!(plan.contains("[chain"), "{plan}");
    assert!(
        !plan.contains("[fragment"),
        "every vertex is a chain: {plan}"
    );
    assert!(
        plan.contains("checkpoints: every 200 ms, aligned, exactly-once"),
        "{plan}"
    );
    let (seed, plan) = inject_faults(&session, &insert, ROWS, FAILURES, 0x5eed_2026).await;

    let job = session.sql(&insert).await.unwrap().execute().await.unwrap();
    let mut job = job;
    let mut counts = Vec::new();
    while let Some(batch) = job.next_batch().await.unwrap() {
        counts.push(batch);
    }
    let report = job.report();
    assert_eq!(
        report.restarts, FAILURES,
        "seed {seed}, faults {plan}: {report:?}"
    );
    assert!(report.checkpoints.completed > 0, "{report:?}");
    let written: i64 = int_column(&counts, 0).iter().sum();
    let ids = published_ids(&output).await;
    assert_eq!(
        written as u64,
        ROWS,
        "the count the insert reports: {:?}",
        int_column(&counts, 0)
    );

    assert_eq!(ids.len() as u64, ROWS, "seed {seed}: rows published");
    for (expected, id) in ids.iter().enumerate() {
        assert_eq!(*id, expected as i64, "seed {seed}: each id exactly once");
    }
    assert!(
        visible_files(&output)
            .iter()
            .all(|f| f.ends_with(".parquet")),
        "{:?}",
        visible_files(&output)
    );

    // Every 10th row was downloaded. Witnessed by the server's log, the rows asked for again
    // are at most those the sources read again and those whose requests were in flight at
    // the restored checkpoint (the async operator keeps their inputs, and the results that
    // had arrived): each restart resumes the sources at the restored checkpoint's positions
    // just after the requests it holds, and a run of n consecutive ids holds at most
    // n / 10 + 1 multiples of 10 (+ 1 more where a reader's row groups are not adjacent).
    let log = requests.lock().unwrap().clone();
    let mut asked: HashMap<&str, usize> = HashMap::new();
    for path in &log {
        *asked.entry(path.as_str()).or_default() += 1;
    }
    assert_eq!(
        asked.len() as u64,
        ROWS / 10,
        "every 10th row, once at least"
    );
    let again = (log.len() - asked.len()) as u64;
    let bound = (report.rows_read_again + report.rows_resent) / 10 + FAILURES * 2 * 2;
    assert!(
        again <= bound,
        "{again} requests repeated, more than the {} rows read again and {} sent again allow \
         ({bound}): {report:?}",
        report.rows_read_again,
        report.rows_resent
    );
    assert!(
        report.rows_read_again < ROWS,
        "restores resume near the failure, not at the start: {report:?}"
    );
    assert!(
        report.rows_passed_over > 0,
        "restored scans pass over the row groups before their positions: {report:?}"
    );
    assert!(
        asked.values().all(|&n| n as u64 <= FAILURES + 1),
        "no row asked for more often than there were attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_insert_publishes_at_checkpoints_exactly_once_through_injected_failures() {
    const FAILURES: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("output");
    let (port, _requests) = echo_server().await;
    let session = checkpointed_session(&dir.path().join("checkpoints"));
    session
        .sql("CREATE TABLE endless (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '20000')")
        .await
        .unwrap();
    session
        .sql(&format!(
            "CREATE TABLE out (id BIGINT, body VARCHAR) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            output.display()
        ))
        .await
        .unwrap();
    let insert = format!(
        "INSERT INTO out SELECT id, \
         CAST(url_download(CASE WHEN id % 10 = 0 THEN concat('http://127.0.0.1:{port}/', CAST(id AS VARCHAR)) END) AS VARCHAR) \
         FROM endless"
    );
    let graph = session
        .job_graph(session.sql(&insert).await.unwrap().logical_plan())
        .await
        .unwrap();
    let vertices: Vec<(usize, usize, u64)> = graph
        .vertices
        .iter()
        .map(|v| (v.id, v.parallelism, 60))
        .collect();
    let plan = faults(0xb0b, FAILURES, &vertices);
    session.set_option("riffle.test.fail", &plan).unwrap();
    let job = session.sql(&insert).await.unwrap().execute().await.unwrap();
    // Files appear while the job runs, per checkpoint; wait for every failure and a prefix.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let report = job.report();
        if report.restarts >= FAILURES && published_ids_of(&output).await.len() > 30_000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "faults {plan}: too slow: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let report = job.report();
    job.cancel();
    assert_eq!(report.restarts, FAILURES, "faults {plan}: {report:?}");
    assert!(
        report.rows_passed_over > 0,
        "datagen restarts at its positions without generating the rows before: {report:?}"
    );
    // What is published is a prefix of each subtask's sequence, each id once (datagen
    // subtask s of 2 emits s, s + 2, s + 4, ...), and every 10th row has its download.
    let ids = published_ids_of(&output).await;
    let mut seen = std::collections::BTreeSet::new();
    for id in &ids {
        assert!(seen.insert(*id), "faults {plan}: id {id} published twice");
    }
    for subtask in 0..2i64 {
        let mine: Vec<i64> = seen
            .iter()
            .copied()
            .filter(|id| id % 2 == subtask)
            .collect();
        let expected: Vec<i64> = (0..mine.len() as i64).map(|i| i * 2 + subtask).collect();
        assert!(
            mine == expected,
            "faults {plan}: subtask {subtask}: not a gapless prefix"
        );
    }
    let reader = Session::with_config(JobConfig::default().with_parallelism(1)).unwrap();
    reader
        .sql(&format!(
            "CREATE TABLE out (id BIGINT, body VARCHAR) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            output.display()
        ))
        .await
        .unwrap();
    let wrong = reader
        .sql("SELECT count(*) FROM out WHERE (id % 10 = 0) <> (body IS NOT NULL) OR body <> concat('/', CAST(id AS VARCHAR))")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        int_column(&wrong, 0),
        vec![0],
        "every 10th row downloaded, the rest not"
    );
}

async fn published_ids_of(output: &std::path::Path) -> Vec<i64> {
    if !output.exists() {
        return Vec::new();
    }
    let reader = Session::with_config(JobConfig::default().with_parallelism(1)).unwrap();
    reader
        .sql(&format!(
            "CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            output.display()
        ))
        .await
        .unwrap();
    match reader.sql("SELECT id FROM out").await {
        Ok(frame) => int_column(&frame.collect().await.unwrap_or_default(), 0),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_fragment_vertices_says_it_takes_no_checkpoints_and_restarts_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let session = checkpointed_session(&dir.path().join("checkpoints"));
    session
        .sql("CREATE TABLE gen (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '50000')")
        .await
        .unwrap();
    let query = "SELECT id % 7 AS k, count(*) AS n FROM gen GROUP BY id % 7 ORDER BY k";
    let plan = session.explain(query).await.unwrap();
    assert!(
        plan.contains("checkpoints: none, vertex") && plan.contains("cannot be checkpointed"),
        "{plan}"
    );
    // A failure restarts it from the beginning; its result is whole and not repeated.
    let graph = session
        .job_graph(session.sql(query).await.unwrap().logical_plan())
        .await
        .unwrap();
    let scan = graph
        .vertices
        .iter()
        .find(|v| v.name.contains("DataGen"))
        .map(|v| v.id)
        .expect("a vertex scans");
    session
        .set_option(
            "riffle.test.fail",
            &format!("vertex={scan},after-batches=1,kind=error"),
        )
        .unwrap();
    let mut job = session.sql(query).await.unwrap().execute().await.unwrap();
    let mut batches = Vec::new();
    while let Some(batch) = job.next_batch().await.unwrap() {
        batches.push(batch);
    }
    let report = job.report();
    assert_eq!(report.restarts, 1, "{report:?}");
    assert!(report.checkpointing_off.is_some(), "{report:?}");
    assert_eq!(int_column(&batches, 0), (0..7).collect::<Vec<i64>>());
    let total: i64 = int_column(&batches, 1).iter().sum();
    assert_eq!(total, 50_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_result_reaches_the_client_once_through_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let session = checkpointed_session(&dir.path().join("checkpoints"));
    session
        .sql("CREATE TABLE gen (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '200000', 'rows-per-second' = '200000')")
        .await
        .unwrap();
    session
        .set_option(
            "riffle.test.fail",
            "attempt=0,vertex=0,subtask=0,after-batches=40;attempt=1,vertex=0,subtask=1,after-batches=5,kind=panic",
        )
        .unwrap();
    let mut job = session
        .sql("SELECT id FROM gen WHERE id % 3 <> 1")
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    let mut ids = Vec::new();
    while let Some(batch) = job.next_batch().await.unwrap() {
        ids.extend(int_column(&[batch], 0));
    }
    let report = job.report();
    assert_eq!(report.restarts, 2, "{report:?}");
    assert!(report.checkpoints.completed > 0, "{report:?}");
    ids.sort_unstable();
    let expected: Vec<i64> = (0..200_000).filter(|id| id % 3 != 1).collect();
    assert_eq!(ids.len(), expected.len(), "{report:?}");
    assert!(ids == expected, "each row once, none missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_commit_on_a_real_s3_server_through_failing_uploads_and_copies() {
    const ROWS: i64 = 100_000;
    let server = super::MotoServer::start();
    server.create_bucket("lake");
    server.create_bucket("state");
    let options = super::s3_options(server.port);
    let dir = tempfile::tempdir().unwrap();
    let session = checkpointed_session(&dir.path().join("unused"));
    // Checkpoints on S3 too: the bucket's store is registered by a table declared on it.
    session
        .sql(&format!(
            "CREATE TABLE state_bucket (x BIGINT) WITH ('connector' = 'filesystem', \
             'path' = 's3://state/tables/', 'format' = 'csv', {options})"
        ))
        .await
        .unwrap();
    session
        .set_option("execution.checkpointing.dir", "s3://state/checkpoints")
        .unwrap();
    session
        .sql(&format!(
            "CREATE TABLE gen (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '{ROWS}', \
             'rows-per-second' = '100000')"
        ))
        .await
        .unwrap();
    // Every 9th completed upload and every 7th copy (publishing a part) fails.
    session
        .sql(&format!(
            "CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = 's3://lake/out/', \
             'format' = 'parquet', 'test.store-faults' = 'complete-every=9,copy-every=7', {options})"
        ))
        .await
        .unwrap();
    let mut job = session
        .sql("INSERT INTO out SELECT id FROM gen")
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    while job.next_batch().await.unwrap().is_some() {}
    let report = job.report();
    assert!(report.restarts >= 1, "{report:?}");
    assert!(report.checkpoints.completed >= 2, "{report:?}");
    assert!(
        report
            .failures
            .iter()
            .all(|f| f.contains("injected failure")),
        "{report:?}"
    );

    // A reader without faults sees every id once.
    let reader = Session::with_config(JobConfig::default().with_parallelism(2)).unwrap();
    reader
        .sql(&format!(
            "CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = 's3://lake/out/', \
             'format' = 'parquet', {options})"
        ))
        .await
        .unwrap();
    let batches = reader
        .sql("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM out")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let row: Vec<i64> = (0..4).map(|c| int_column(&batches, c)[0]).collect();
    assert_eq!(row, vec![ROWS, ROWS, 0, ROWS - 1], "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointed_query_with_a_limit_ends() {
    let dir = tempfile::tempdir().unwrap();
    let session = checkpointed_session(&dir.path().join("checkpoints"));
    session
        .sql("CREATE TABLE endless (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '20000')")
        .await
        .unwrap();
    let batches = tokio::time::timeout(
        Duration::from_secs(60),
        session
            .sql("SELECT id FROM endless WHERE id % 2 = 0 LIMIT 5000")
            .await
            .unwrap()
            .collect(),
    )
    .await
    .expect("the job ends once the limit is reached")
    .unwrap();
    assert_eq!(int_column(&batches, 0).len(), 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_taken_while_the_job_runs_on_restores_exactly_once_after_a_cancel() {
    const ROWS: i64 = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("output");
    let checkpoints = dir.path().join("checkpoints");
    let savepoints = dir.path().join("savepoints");
    let start = |restore: Option<String>| {
        let session = checkpointed_session(&checkpoints);
        // Only the savepoint publishes: no periodic checkpoint after it, before the cancel.
        session
            .set_option("execution.checkpointing.interval", "1 h")
            .unwrap();
        session
            .set_option(
                "execution.checkpointing.savepoint-dir",
                savepoints.to_str().unwrap(),
            )
            .unwrap();
        if let Some(path) = restore {
            session.restore_from(path).unwrap();
        }
        session
    };
    let declare = async |session: &Session| {
        session
            .sql(&format!("CREATE TABLE gen (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '{ROWS}', 'rows-per-second' = '20000')"))
            .await
            .unwrap();
        session
            .sql(&format!(
                "CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
                output.display()
            ))
            .await
            .unwrap();
    };
    let insert = "INSERT INTO out SELECT id FROM gen";

    let session = start(None);
    declare(&session).await;
    let mut job = session.sql(insert).await.unwrap().execute().await.unwrap();
    job.started().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let savepoint = job.savepoint();
    // The savepoint's barrier passes the sink, whose count row is the result: read on.
    let (path, _) = tokio::join!(savepoint, async {
        tokio::time::timeout(Duration::from_secs(2), job.next_batch())
            .await
            .ok()
    });
    let path = path.unwrap();
    assert!(path.starts_with(savepoints.to_str().unwrap()), "{path}");
    assert!(std::path::Path::new(&path).join("_metadata").exists());
    let at_savepoint = published_ids_of(&output).await.len();
    assert!(
        at_savepoint > 0 && (at_savepoint as i64) < ROWS,
        "the savepoint published a prefix ({at_savepoint} rows)"
    );
    drop(job);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A job without checkpointing cannot take one, and says why; nor can a job that ended.
    let plain = Session::new().unwrap();
    plain
        .sql("CREATE TABLE slow (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '10')")
        .await
        .unwrap();
    let unchecked = plain
        .sql("SELECT id FROM slow")
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    let refused = unchecked.savepoint().await.unwrap_err().to_string();
    assert!(refused.contains("needs checkpointing"), "{refused}");
    let ended = plain
        .sql("SELECT 1")
        .await
        .unwrap()
        .execute()
        .await
        .unwrap();
    let savepoint = ended.savepoint();
    ended.collect().await.unwrap();
    let refused = savepoint.await.unwrap_err().to_string();
    assert!(
        refused.contains("needs checkpointing") || refused.contains("has ended"),
        "{refused}"
    );

    // Restored from the savepoint, the job publishes the rest, each id once.
    let session = start(Some(path.clone()));
    declare(&session).await;
    let job = session.sql(insert).await.unwrap().execute().await.unwrap();
    job.started().await;
    assert!(job.report().restored_from.is_some(), "{:?}", job.report());
    job.collect().await.unwrap();
    let mut ids = published_ids_of(&output).await;
    ids.sort_unstable();
    assert_eq!(ids, (0..ROWS).collect::<Vec<i64>>());
    assert!(
        std::path::Path::new(&path).join("_metadata").exists(),
        "the savepoint stays after the job's end"
    );
}
