//! Statements through `Session::sql` and `Session::run_script`: trailing semicolons, `SET`
//! and `Session::set_option`, in-memory tables, `CREATE TABLE ... WITH (...) AS SELECT`.

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, UInt64Array};
use riffle::{ErrorKind, JobConfig, Session};

fn session() -> Session {
    Session::with_config(JobConfig::default().with_parallelism(2)).unwrap()
}

async fn run(session: &Session, sql: &str) -> Vec<RecordBatch> {
    session.sql(sql).await.unwrap().collect().await.unwrap()
}

async fn count(session: &Session, sql: &str) -> i64 {
    let batches = run(session, sql).await;
    let column = batches[0].column(0);
    if let Some(counts) = column.as_any().downcast_ref::<Int64Array>() {
        return counts.value(0);
    }
    let counts = column.as_any().downcast_ref::<UInt64Array>().unwrap();
    counts.value(0) as i64
}

async fn table_names(session: &Session) -> Vec<String> {
    session.planner().table_names().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_may_end_with_a_semicolon() {
    let session = session();
    run(&session, "CREATE TABLE t (a INT, b INT);").await;
    assert_eq!(
        count(&session, "INSERT INTO t VALUES (1, 2), (3, 4);").await,
        2
    );
    let described = run(&session, "DESCRIBE t;").await;
    assert_eq!(described[0].num_rows(), 2, "two columns described");
    run(&session, "DROP TABLE t;").await;
    assert!(table_names(&session).await.is_empty(), "the table is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_are_checked_when_set_and_kept_for_later_statements() {
    let session = session();
    session
        .set_option("execution.checkpointing.interval", "200 ms")
        .unwrap();
    run(&session, "SET 'url.allowed-hosts' = 'files.internal'").await;
    let options = session.options();
    assert_eq!(
        options.get("execution.checkpointing.interval"),
        Some("200 ms")
    );
    assert_eq!(options.get("url.allowed-hosts"), Some("files.internal"));
    assert_eq!(session.config().options, options);

    let error = session.set_option("url.allow-privat", "true").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::User);
    assert!(
        error
            .to_string()
            .contains("unknown option 'url.allow-privat'"),
        "{error}"
    );
    let error = session
        .set_option("execution.checkpointing.timeout", "forever")
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("option 'execution.checkpointing.timeout' takes a duration"),
        "{error}"
    );
    assert_eq!(
        session.options(),
        options,
        "a refused option changes nothing"
    );

    let error = session
        .run_script("SELECT 1;\nSET 'execution.checkpointing.num-retained' = '0';")
        .await
        .unwrap_err();
    assert!(
        error.to_string().starts_with("statement at line 2")
            && error.to_string().contains("must be at least 1"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_table_as_fills_a_parquet_table_or_leaves_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("squares");
    let session = session();
    run(
        &session,
        &format!(
            "CREATE TABLE squares WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet') \
             AS SELECT x, x * x AS square FROM (VALUES (1), (2), (3)) AS t(x)",
            path.display()
        ),
    )
    .await;
    assert_eq!(count(&session, "SELECT sum(square) FROM squares").await, 14);
    let parquet_files = std::fs::read_dir(&path)
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "parquet"))
        .count();
    assert!(parquet_files >= 1, "the rows are in Parquet files");
    // Another session reads the same files through a table declared over them.
    let reader = self::session();
    run(
        &reader,
        &format!(
            "CREATE TABLE squares WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            path.display()
        ),
    )
    .await;
    assert_eq!(
        count(&reader, "SELECT count(*) FROM squares WHERE square > 1").await,
        2
    );

    // A query that fails while it runs leaves no table behind, so the statement can be rerun.
    run(&session, "CREATE TABLE words (w VARCHAR)").await;
    run(&session, "INSERT INTO words VALUES ('one'), ('2')").await;
    let failing = format!(
        "CREATE TABLE numbers WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet') \
         AS SELECT CAST(w AS INT) AS n FROM words",
        dir.path().join("numbers").display()
    );
    let error = match session.sql(&failing).await {
        Ok(_) => panic!("the cast of 'one' should fail"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("'one'"), "{error}");
    assert!(!table_names(&session).await.contains(&"numbers".to_string()));
}
