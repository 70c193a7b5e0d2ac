//! The `riffle` binary as a user runs it.

use std::process::{Command, Output};

fn riffle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_riffle"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the riffle binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[test]
fn sql_prints_a_table() {
    let output = riffle(&["sql", "SELECT 40 + 2 AS answer"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("| answer |"), "{stdout}");
    assert!(stdout.contains("| 42     |"), "{stdout}");
}

#[test]
fn errors_are_one_clear_message_and_a_failing_exit_code() {
    for (args, expected) in [
        (vec!["sql", "SELEC 1"], "SQL error"),
        (vec!["sql", "SELECT * FROM missing_table"], "missing_table"),
        (vec!["sql", "SELECT 1 / 0"], "Divide by zero"),
        (
            vec!["run", "/no/such/script.sql"],
            "cannot read /no/such/script.sql",
        ),
        (
            vec!["explain", "CREATE TABLE t (a INT)"],
            "EXPLAIN shows queries",
        ),
    ] {
        let output = riffle(&args);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{args:?} should fail");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
}

#[test]
fn a_script_runs_in_order_and_names_the_failing_statement() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.sql");
    let data = dir.path().join("data");
    std::fs::write(
        &script,
        format!(
            "CREATE TABLE gen (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '100');\n\
             CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');\n\
             INSERT INTO out SELECT id FROM gen;\n\
             SELECT count(*) AS n FROM out;\n\
             SELECT nope FROM out;\n",
            data.display()
        ),
    )
    .unwrap();
    let output = riffle(&["--parallelism", "2", "run", script.to_str().unwrap()]);
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stdout.contains("| 100 |"), "{stdout}");
    assert!(stderr.contains("statement at line 5"), "{stderr}");
    assert!(stderr.contains("nope"), "{stderr}");
}

#[test]
fn explain_shows_the_job_graph() {
    let output = riffle(&[
        "--parallelism",
        "3",
        "explain",
        "SELECT x % 2, count(*) FROM (VALUES (1), (2), (3)) AS t(x) GROUP BY x % 2",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("== Logical plan =="), "{stdout}");
    assert!(stdout.contains("== Job graph =="), "{stdout}");
    assert!(stdout.contains("parallelism=3]"), "{stdout}");
    assert!(stdout.contains("(HASH("), "{stdout}");
}

#[test]
fn the_quickstart_example_runs() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/quickstart.sql");
    let output = riffle(&["run", script]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(stdout.contains("| 1000000 |"), "{stdout}");
    assert!(stdout.contains("5 row(s)"), "{stdout}");
}

#[test]
fn skipped_corrupt_files_are_printed_as_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    let script = format!(
        "CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
         CREATE TABLE t (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{0}', 'format' = 'parquet');
         INSERT INTO t SELECT * FROM g;",
        table.display()
    );
    let output = riffle(&["sql", &script]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    std::fs::write(table.join("junk.parquet"), b"not parquet").unwrap();
    let script = format!(
        "CREATE TABLE t (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{0}', 'format' = 'parquet', 'ignore-corrupt' = 'true');
         SELECT count(*) AS n FROM t;",
        table.display()
    );
    let output = riffle(&["sql", &script]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("| 10 |"),
        "{}",
        text(&output.stdout)
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("warning: skipped file://") && stderr.contains("junk.parquet: "),
        "{stderr}"
    );
}

#[test]
fn dash_d_sets_options_and_refuses_bad_ones() {
    let output = riffle(&[
        "-D",
        "execution.checkpointing.interval=10 s",
        "-D",
        "url.allow-private=true",
        "sql",
        "SET",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("| execution.checkpointing.interval | 10 s  |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| url.allow-private                | true  |"),
        "{stdout}"
    );

    for (pair, expected) in [
        ("url.allow-privat=true", "unknown option 'url.allow-privat'"),
        (
            "execution.checkpointing.interval=soon",
            "option 'execution.checkpointing.interval' takes a duration",
        ),
        ("no-equals-sign", "is not of the form key=value"),
    ] {
        let output = riffle(&["-D", pair, "sql", "SELECT 1"]);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{pair} should fail");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{pair}: {stderr}"
        );
    }
}

#[test]
fn set_in_a_script_names_the_line_of_a_bad_option() {
    let script = "SET 'url.allow-private' = 'true';\nSELECT 1;\nSET 'execution.checkpointing.intervall' = '1 s';";
    let output = riffle(&["sql", script]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("statement at line 3")
            && stderr.contains("unknown option 'execution.checkpointing.intervall'"),
        "{stderr}"
    );
}
