//! Unbounded sources: an INSERT is refused, since a sink publishes only when the job ends
//! (bounded by a LIMIT, it runs); a query that needs the whole input is refused in a
//! sentence naming what needs it.

use std::time::Duration;

use riffle::ErrorKind;

use super::{int_column, scalar, session, visible_files};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_from_an_unbounded_source_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let session = session(2);
    session
        .sql("CREATE TABLE endless (id BIGINT) WITH ('connector' = 'datagen')")
        .await
        .unwrap();
    session
        .sql(&format!(
            "CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet')",
            path.display()
        ))
        .await
        .unwrap();

    let insert = session
        .sql("INSERT INTO out SELECT id FROM endless WHERE id % 2 = 0")
        .await
        .unwrap();
    let graph = session.job_graph(insert.logical_plan()).await.unwrap();
    assert!(
        !graph.is_bounded(),
        "the job of an unbounded insert is unbounded"
    );
    let error = tokio::time::timeout(Duration::from_secs(30), insert.collect())
        .await
        .expect("the insert must be refused, not run forever")
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::User, "{error}");
    assert!(
        error.message().starts_with(
            "INSERT INTO out reads an unbounded source; its files would be published only when \
             the job ends, which it never does"
        ),
        "{error}"
    );
    assert!(
        error
            .hint()
            .is_some_and(|hint| hint.contains("execution.checkpointing.interval")),
        "{error}"
    );
    assert!(
        visible_files(&path).is_empty(),
        "{:?}",
        visible_files(&path)
    );

    // A LIMIT ends the source: the insert runs and publishes.
    let batches = tokio::time::timeout(Duration::from_secs(30), async {
        session
            .sql("INSERT INTO out SELECT id FROM endless LIMIT 10")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(int_column(&batches, 0), vec![10]);
    assert_eq!(scalar(&session, "SELECT count(*) FROM out").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_needs_the_whole_of_an_unbounded_source_says_which_part() {
    let session = session(2);
    session
        .sql("CREATE TABLE endless (k INT, v INT) WITH ('connector' = 'datagen')")
        .await
        .unwrap();
    let cases = [
        (
            "SELECT k, count(*) FROM endless GROUP BY k",
            "unbounded source: the query's GROUP BY k needs the whole input",
        ),
        ("SELECT count(*) FROM endless", "the query's aggregate"),
        ("SELECT * FROM endless ORDER BY v", "ORDER BY"),
    ];
    for (query, names) in cases {
        let error = match session.sql(query).await {
            Ok(frame) => frame.collect().await.unwrap_err(),
            Err(error) => error,
        };
        let message = error.to_string();
        assert_eq!(error.kind(), ErrorKind::User, "{message}");
        assert!(message.contains(names), "{query}: {message}");
        assert!(
            error.hint().unwrap().contains("'number-of-rows'"),
            "{message}"
        );
        assert!(!message.contains("Exec {"), "no plan dump: {message}");
    }
}
