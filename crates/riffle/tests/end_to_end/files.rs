//! files(), file_read and url_download against local folders, a real S3 server (moto) and
//! a real HTTP server on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use object_store::ObjectStoreExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{MotoServer, picture, query_error, rows, s3_options, scalar, session};

/// A folder tree of pictures: `n` PNGs spread over nested folders, one corrupt `.png`, and
/// one text file that globs for pictures must skip.
fn picture_tree(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let png = picture(image::ImageFormat::Png);
    for i in 0..n {
        let folder = dir.path().join(format!("set{}/part{}", i % 3, i % 2));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("img{i}.png")), &png).unwrap();
    }
    std::fs::write(dir.path().join("broken.png"), &png[..png.len() / 3]).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a picture").unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_lists_folders_globs_in_parallel_and_reads_lazily() {
    let dir = picture_tree(40);
    let root = dir.path().display();
    for parallelism in [1, 4] {
        let session = session(parallelism);
        // Every file once, whatever the parallelism.
        assert_eq!(
            scalar(
                &session,
                &format!("SELECT count(DISTINCT file['uri']) FROM files('{root}/')")
            )
            .await,
            42
        );
        assert_eq!(
            scalar(
                &session,
                &format!("SELECT count(*) FROM files('{root}/**/*.png')")
            )
            .await,
            41
        );
        // `*` stays in its folder.
        assert_eq!(
            scalar(
                &session,
                &format!("SELECT count(*) FROM files('{root}/*.png')")
            )
            .await,
            1
        );
        assert_eq!(
            scalar(
                &session,
                &format!("SELECT count(*) FROM files('{root}/set1/**/*.png')")
            )
            .await,
            13
        );
        // The listing reports sizes; the bytes are only read by file_read.
        let png_size = picture(image::ImageFormat::Png).len() as i64;
        assert_eq!(
            scalar(
                &session,
                &format!("SELECT min(size) FROM files('{root}/set*/**/*.png')")
            )
            .await,
            png_size
        );
        let table = rows(
            &session,
            &format!(
                "SELECT count(*) AS n, min(image_decode(file_read(file))['width']) AS w, \
                 count(DISTINCT md5(file_read(file))) AS contents \
                 FROM files('{root}/set*/**/*.png')"
            ),
        )
        .await;
        assert!(table.contains("| 40 | 64 | 1        |"), "{table}");
    }

    let session = session(2);
    // A corrupt file: 'raise' names it, 'null' skips it.
    let error = query_error(
        &session,
        &format!("SELECT image_decode(file_read(file)) FROM files('{root}/*.png')"),
    )
    .await;
    assert!(error.contains("image_decode"), "{error}");
    // A missing location is an error, not an empty table.
    let error = query_error(
        &session,
        &format!("SELECT * FROM files('{root}/nothing-here/')"),
    )
    .await;
    assert!(error.contains("nothing found"), "{error}");
    // file_read of a file that disappeared names it; 'null' yields NULL.
    let gone = format!("file://{root}/gone.png");
    let error = query_error(&session, &format!("SELECT file_read('{gone}')")).await;
    assert!(
        error.contains("file_read") && error.contains("gone.png"),
        "{error}"
    );
    let table = rows(
        &session,
        &format!("SELECT file_read('{gone}', 'null') IS NULL AS missing"),
    )
    .await;
    assert!(table.contains("| true "), "{table}");
    // A limit stops the listing.
    assert_eq!(
        scalar(
            &session,
            &format!("SELECT count(*) FROM (SELECT * FROM files('{root}/**/*.png') LIMIT 5)")
        )
        .await,
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_on_s3_are_listed_and_read() {
    let server = MotoServer::start();
    server.create_bucket("media");
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(format!("http://127.0.0.1:{}", server.port))
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_bucket_name("media")
        .build()
        .unwrap();
    let png = picture(image::ImageFormat::Png);
    for i in 0..25 {
        store
            .put(
                &format!("images/{}/pic{i}.png", i % 4).into(),
                png.clone().into(),
            )
            .await
            .unwrap();
    }
    store
        .put(&"images/readme.txt".into(), b"text".to_vec().into())
        .await
        .unwrap();

    let session = session(3);
    session
        .sql(&format!(
            "CREATE TABLE photos WITH ('connector' = 'files', 'path' = 's3://media/images/**/*.png', {})",
            s3_options(server.port)
        ))
        .await
        .unwrap();
    let table = rows(
        &session,
        "SELECT count(*) AS n, min(image_decode(file_read(file))['height']) AS h FROM photos",
    )
    .await;
    assert!(table.contains("| 25 | 48 |"), "{table}");
    // files() reaches the store the table registered.
    assert_eq!(
        scalar(&session, "SELECT count(*) FROM files('s3://media/images/')").await,
        26
    );
    let error = query_error(&session, "SELECT file_read('s3://media/images/none.png')").await;
    assert!(error.contains("s3://media/images/none.png"), "{error}");
    let error = query_error(&session, "INSERT INTO photos SELECT * FROM photos").await;
    assert!(error.contains("does not write"), "{error}");
}

/// An HTTP server on loopback: `/pic.png` serves a picture, `/flaky.png` fails with 503
/// `failures` times first, `/to-private` and `/to-localhost` redirect to a private address
/// and to `localhost`, anything else is 404.
async fn http_server(failures: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let png = Arc::new(picture(image::ImageFormat::Png));
    let flaky_hits = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let png = Arc::clone(&png);
            let hits = Arc::clone(&flaky_hits);
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
                let mut location = String::new();
                let (status, body): (&str, &[u8]) = match path.as_str() {
                    "/to-private" => {
                        location = "Location: http://10.0.0.1/latest/\r\n".to_string();
                        ("302 Found", b"")
                    }
                    "/to-localhost" => {
                        location = format!("Location: http://localhost:{port}/pic.png\r\n");
                        ("302 Found", b"")
                    }
                    "/pic.png" => ("200 OK", &png),
                    "/flaky.png" if hits.fetch_add(1, Ordering::SeqCst) < failures => {
                        ("503 Service Unavailable", b"busy")
                    }
                    "/flaky.png" => ("200 OK", &png),
                    _ => ("404 Not Found", b"no such thing"),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\n{location}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (port, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_download_retries_transient_failures_and_names_bad_urls() {
    let (port, hits) = http_server(2).await;
    let session = session(2);
    // The server is on loopback, which url_download refuses unless allowed.
    session.set_option("url.allow-private", "true").unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let table = rows(
        &session,
        &format!(
            "SELECT image_decode(url_download(url))['width'] AS w FROM \
             (VALUES ('{base}/pic.png'), ('{base}/flaky.png')) AS t(url)"
        ),
    )
    .await;
    assert_eq!(table.matches("| 64 |").count(), 2, "{table}");
    assert_eq!(hits.load(Ordering::SeqCst), 3, "two 503s, then success");

    let error = query_error(
        &session,
        &format!("SELECT url_download('{base}/missing.png')"),
    )
    .await;
    assert!(
        error.contains("url_download") && error.contains("/missing.png") && error.contains("404"),
        "{error}"
    );
    let table = rows(
        &session,
        &format!(
            "SELECT url, url_download(url, 'null') IS NULL AS failed FROM \
             (VALUES ('{base}/pic.png'), ('{base}/missing.png'), ('http://127.0.0.1:1/x')) AS t(url) ORDER BY url"
        ),
    )
    .await;
    assert!(table.contains("/pic.png     | false"), "{table}");
    assert!(table.contains("/missing.png | true"), "{table}");
    assert!(table.contains("127.0.0.1:1/x"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_download_refuses_non_public_addresses_unless_allowed() {
    let (port, _) = http_server(0).await;
    let session = session(2);
    let refused = |error: &str, address: &str| {
        error.contains(&format!("refused to connect to {address}"))
            && error.contains("'url.allow-private' = 'true'")
    };
    for (url, address) in [
        (format!("http://[::1]:{port}/pic.png"), "::1"),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/pic.png"),
            "::ffff:127.0.0.1",
        ),
        // 127.0.0.1 written as one decimal number.
        (format!("http://2130706433:{port}/pic.png"), "127.0.0.1"),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "169.254.169.254",
        ),
        ("http://10.1.2.3/x".to_string(), "10.1.2.3"),
        // A name is checked after it resolves.
        (format!("http://localhost:{port}/pic.png"), "localhost at "),
    ] {
        let error = query_error(&session, &format!("SELECT url_download('{url}')")).await;
        assert!(refused(&error, address), "{url}: {error}");
    }
    let error = query_error(
        &session,
        &format!("SELECT file_read('http://127.0.0.1:{port}/pic.png')"),
    )
    .await;
    assert!(refused(&error, "127.0.0.1"), "{error}");

    // An allowed host is reached; its redirects are checked like any other request.
    session
        .set_option("url.allowed-hosts", "127.0.0.1")
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let table = rows(
        &session,
        &format!("SELECT image_decode(url_download('{base}/pic.png'))['width'] AS w"),
    )
    .await;
    assert!(table.contains("| 64 |"), "{table}");
    let error = query_error(
        &session,
        &format!("SELECT url_download('{base}/to-private')"),
    )
    .await;
    assert!(refused(&error, "10.0.0.1"), "{error}");
    // An allowed address is reached whichever name leads there.
    let table = rows(
        &session,
        &format!("SELECT image_decode(url_download('{base}/to-localhost'))['width'] AS w"),
    )
    .await;
    assert!(table.contains("| 64 |"), "{table}");

    // SQL's SET opens every address.
    let open = super::session(2);
    open.sql("SET 'url.allow-private' = 'true'").await.unwrap();
    let table = rows(
        &open,
        &format!(
            "SELECT image_decode(url_download('http://localhost:{port}/pic.png'))['width'] AS w"
        ),
    )
    .await;
    assert!(table.contains("| 64 |"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_images_reports_the_files_it_skips_and_try_functions_keep_reasons() {
    use datafusion::arrow::array::{AsArray, StringArray};
    use datafusion::prelude::col;

    let dir = picture_tree(6);
    let root = dir.path().display().to_string();
    let session = session(2);

    let good = session
        .read_images(&format!("{root}/set*/**/*.png"), false)
        .unwrap();
    assert_eq!(good.count().await.unwrap(), 6);
    let error = session
        .read_images(&format!("{root}/*.png"), false)
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("read_images: file://") && error.contains("broken.png: "),
        "{error}"
    );

    // ignore_corrupt: every file comes back, the skipped ones with their reason.
    let all = session
        .read_images(&format!("{root}/**/*.png"), true)
        .unwrap()
        .filter(col("error").is_not_null())
        .unwrap()
        .collect()
        .await
        .unwrap();
    let skipped: Vec<(String, String)> = all
        .iter()
        .flat_map(|batch| {
            let files = batch.column(0).as_struct();
            let uris = files.column(0).as_string::<i32>().clone();
            let errors = batch
                .column(2)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            (0..batch.num_rows())
                .map(move |row| (uris.value(row).to_string(), errors.value(row).to_string()))
        })
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].0.ends_with("/broken.png"), "{skipped:?}");
    assert!(!skipped[0].1.is_empty());

    // try_ twins in SQL; named arguments skip the optional parameters in between.
    let table = rows(
        &session,
        &format!(
            "SELECT file['uri'] LIKE '%broken.png' AS broken, d['value']['width'] AS w, \
             d['error'] IS NOT NULL AS failed, \
             image_resize(image_decode(file_read(file), on_error => 'null'), 8, 8, on_error => 'null')['width'] AS small \
             FROM (SELECT file, try_image_decode(file_read(file)) AS d FROM files('{root}/**/*.png')) \
             ORDER BY broken, w LIMIT 2 OFFSET 5"
        ),
    )
    .await;
    assert!(
        table.contains("| false  | 64 | false  | 8     |"),
        "{table}"
    );
    assert!(
        table.contains("| true   |    | true   |       |"),
        "{table}"
    );
    let table = rows(
        &session,
        &format!(
            "SELECT r['value'] IS NULL AS missing, r['error'] LIKE '%gone.png%' AS named \
             FROM (SELECT try_file_read('file://{root}/gone.png') AS r)"
        ),
    )
    .await;
    assert!(table.contains("| true    | true  |"), "{table}");
    let error = session
        .sql("SELECT image_decode(x'00', on_eror => 'null')")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("no parameter is called 'on_eror'"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_fails_a_function_is_named_by_its_file_or_its_row_of_a_parquet_file() {
    // files(): the failing row's file, although the function saw only bytes.
    let dir = picture_tree(12);
    let root = dir.path().display().to_string();
    let session = session(2);
    let error = query_error(
        &session,
        &format!("SELECT image_decode(file_read(file))['width'] FROM files('{root}/**/*.png')"),
    )
    .await;
    assert!(
        error.contains("the row of file file://")
            && error.contains("broken.png: ")
            && error.contains("image_decode: "),
        "{error}"
    );

    // A Parquet table: the row's place in the file it was read from.
    let png = picture(image::ImageFormat::Png);
    let table = dir.path().join("table");
    let session = super::session(1);
    session
        .sql(&format!(
            "CREATE TABLE pictures (id BIGINT, bytes BYTEA) WITH ('connector' = 'filesystem', \
             'path' = '{}', 'format' = 'parquet')",
            table.display()
        ))
        .await
        .unwrap();
    let hex: String = png.iter().map(|b| format!("{b:02x}")).collect();
    let values: Vec<String> = (0..40)
        .map(|id| match id {
            27 => format!("({id}, X'3c68746d6c3e')"),
            _ => format!("({id}, X'{hex}')"),
        })
        .collect();
    session
        .sql(&format!(
            "INSERT INTO pictures VALUES {}",
            values.join(", ")
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    // Read by the scan (the function evaluated inside it, with parallelism 1): the batch's
    // place in its file, and the row in the batch.
    let error = query_error(
        &session,
        "SELECT id, image_decode(bytes)['width'] FROM pictures",
    )
    .await;
    assert!(
        error.contains("the batch from row 0 of file://")
            && error.contains(".parquet: ")
            && error.contains("image_decode: row 27 of the batch"),
        "{error}"
    );
    // Read after an exchange (parallelism 2 over one file): the row's leading values.
    let wide = super::session(2);
    wide.sql(&format!(
        "CREATE TABLE pictures (id BIGINT, bytes BYTEA) WITH ('connector' = 'filesystem', \
         'path' = '{}', 'format' = 'parquet')",
        table.display()
    ))
    .await
    .unwrap();
    let error = query_error(
        &wide,
        "SELECT id, image_decode(bytes)['width'] FROM pictures",
    )
    .await;
    assert!(
        error.contains("the row with id = 27: ") && error.contains("image_decode: "),
        "{error}"
    );
}
