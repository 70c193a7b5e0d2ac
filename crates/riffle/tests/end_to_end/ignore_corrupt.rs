//! `'ignore-corrupt'` skips the files at fault, and only those: a file deleted after the
//! listing is skipped and reported, a store that stops answering fails the scan.

use std::time::Duration;

use object_store::ObjectStoreExt;
use riffle::ErrorKind;

use super::{GENERATED, MotoServer, s3_options, scalar, session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_stops_an_ignore_corrupt_scan_instead_of_skipping_files() {
    let server = MotoServer::start();
    server.create_bucket("lake");
    let table = format!(
        "CREATE TABLE tolerant (id BIGINT, grp INT, val DOUBLE) WITH ('connector' = 'filesystem', \
         'path' = 's3://lake/tolerant/', 'format' = 'parquet', 'ignore-corrupt' = 'true', {}, \
         's3.max-retries' = '1', 's3.retry-timeout' = '1s')",
        s3_options(server.port)
    );
    let session = session(2);
    session.sql(GENERATED).await.unwrap();
    session.sql(&table).await.unwrap();
    session
        .sql("INSERT INTO tolerant SELECT * FROM gen")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    // While the store answers, a file that is not Parquet is skipped.
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(format!("http://127.0.0.1:{}", server.port))
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_bucket_name("lake")
        .build()
        .unwrap();
    store
        .put(
            &object_store::path::Path::from("tolerant/junk.parquet"),
            b"not parquet".to_vec().into(),
        )
        .await
        .unwrap();
    assert_eq!(
        scalar(&session, "SELECT count(*) FROM tolerant").await,
        100_000
    );
    let skipped = session.take_skipped_files();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].file.ends_with("/junk.parquet"), "{skipped:?}");

    // Planned (its files listed) while the store is up, run once it is gone. A fresh
    // session, so that no footer is cached from the reads above.
    let fresh = super::session(2);
    fresh.sql(&table).await.unwrap();
    let query = fresh.sql("SELECT sum(id) FROM tolerant").await.unwrap();
    let graph = fresh.job_graph(query.logical_plan()).await.unwrap();
    drop(server);
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        fresh.execute_graph(graph).unwrap().collect().await
    })
    .await
    .unwrap();
    let error = match outcome {
        Ok(batches) => panic!(
            "the scan skipped the files of a store that failed: {batches:?}, skipped {:?}",
            fresh.take_skipped_files()
        ),
        Err(error) => error,
    };
    assert_eq!(error.kind(), ErrorKind::External, "{error}");
    assert!(error.is_retryable(), "{error}");
    let message = error.to_string();
    assert!(message.contains("reading s3://lake/tolerant/"), "{message}");
    assert!(message.contains("'ignore-corrupt'"), "{message}");
    assert!(fresh.take_skipped_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_after_the_listing_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shrinking");
    let session = session(2);
    session.sql(GENERATED).await.unwrap();
    session
        .sql(&format!(
            "CREATE TABLE shrinking (id BIGINT, grp INT, val DOUBLE) WITH ('connector' = 'filesystem', \
             'path' = '{}', 'format' = 'parquet', 'sink.parallelism' = '3', 'ignore-corrupt' = 'true')",
            path.display()
        ))
        .await
        .unwrap();
    session
        .sql("INSERT INTO shrinking SELECT * FROM gen")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let query = session.sql("SELECT count(*) FROM shrinking").await.unwrap();
    let graph = session.job_graph(query.logical_plan()).await.unwrap();

    let victim = std::fs::read_dir(&path)
        .unwrap()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .find(|file| file.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let victim_rows = parquet::file::reader::FileReader::metadata(
        &parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&victim).unwrap())
            .unwrap(),
    )
    .file_metadata()
    .num_rows();
    assert!(victim_rows > 0);
    std::fs::remove_file(&victim).unwrap();

    let batches = session
        .execute_graph(graph)
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(super::int_column(&batches, 0), vec![100_000 - victim_rows]);
    let skipped = session.take_skipped_files();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    assert!(skipped[0].file.ends_with(&name), "{skipped:?}");
    assert!(
        skipped[0]
            .reason
            .starts_with("deleted after the table was listed"),
        "{skipped:?}"
    );
}
