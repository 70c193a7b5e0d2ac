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

/// The parquet files a reader of `dir` sees, and the ids in them, counted by a second
/// riffle process.
fn published_ids(dir: &std::path::Path) -> (u64, u64, i64) {
    let script = format!(
        "CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet');
         SELECT count(*) AS n, count(DISTINCT id) AS d, max(id) AS m FROM out;",
        dir.display()
    );
    let output = riffle(&["sql", &script]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let row = stdout
        .lines()
        .rfind(|l| l.starts_with("| ") && l.chars().nth(2).is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no count row in {stdout}"))
        .to_string();
    let cells: Vec<&str> = row
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    (
        cells[0].parse().unwrap(),
        cells[1].parse().unwrap(),
        cells[2].parse().unwrap(),
    )
}

/// For each datagen subtask of two (ids `s`, `s + 2`, ...): the ids of its sequence
/// published in `dir`, and the largest.
fn published_prefixes(dir: &std::path::Path) -> Vec<(i64, u64, i64)> {
    let script = format!(
        "CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet');
         SELECT id % 2 AS s, count(*) AS n, max(id) AS m FROM out GROUP BY id % 2 ORDER BY 1;",
        dir.display()
    );
    let output = riffle(&["sql", &script]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
        .lines()
        .filter(|l| l.starts_with("| ") && l.chars().nth(2).is_some_and(|c| c.is_ascii_digit()))
        .map(|row| {
            let cells: Vec<&str> = row
                .split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            (
                cells[0].parse().unwrap(),
                cells[1].parse().unwrap(),
                cells[2].parse().unwrap(),
            )
        })
        .collect()
}

fn checkpoint_metadata(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(jobs) = std::fs::read_dir(dir) else {
        return found;
    };
    for job in jobs.flatten() {
        for checkpoint in std::fs::read_dir(job.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let metadata = checkpoint.path().join("_metadata");
            if metadata.exists() {
                found.push(metadata);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_job_killed_with_sigkill_finishes_exactly_once_from_its_checkpoint() {
    killed_then_resumed(Resume::FromCheckpoint);
}

#[test]
fn the_same_command_on_a_machine_with_more_cores_resumes_at_the_checkpoints_parallelism() {
    killed_then_resumed(Resume::SameCommandWithParallelism3);
}

/// How the second run of a killed job finds its checkpoint.
enum Resume {
    /// `riffle run --from-checkpoint JOB_FOLDER`, at the first run's parallelism.
    FromCheckpoint,
    /// The first run's command again, as on a replacement machine with three cores: the job
    /// finds its own checkpoint folder, and is planned at the checkpoint's parallelism.
    SameCommandWithParallelism3,
}

/// Runs a datagen-to-Parquet job at parallelism 2, kills it with SIGKILL once checkpoints
/// completed, resumes it as `resume` says, and checks that every id is published once.
fn killed_then_resumed(resume: Resume) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let checkpoints = dir.path().join("checkpoints");
    let script = dir.path().join("job.sql");
    const ROWS: i64 = 400_000;
    std::fs::write(
        &script,
        format!(
            "CREATE TABLE gen (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '{ROWS}', 'rows-per-second' = '100000');
             CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet');
             INSERT INTO out SELECT id FROM gen;",
            out.display()
        ),
    )
    .unwrap();
    let defines = [
        "-D".to_string(),
        "execution.checkpointing.interval=200ms".to_string(),
        "-D".to_string(),
        format!("execution.checkpointing.dir={}", checkpoints.display()),
        "-p".to_string(),
        "2".to_string(),
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_riffle"))
        .args(&defines)
        .arg("run")
        .arg(&script)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once a few checkpoints completed, well before its 4 s of input ended.
    let started = std::time::Instant::now();
    while checkpoint_metadata(&checkpoints).len() < 2 {
        assert!(started.elapsed().as_secs() < 60, "no checkpoint completed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (before, distinct, _) = published_ids(&out);
    assert_eq!(
        before, distinct,
        "what was published before the kill is exact"
    );
    assert!(
        before < ROWS as u64,
        "killed before the end ({before} rows)"
    );

    assert_eq!(
        std::fs::read_dir(&checkpoints).unwrap().count(),
        1,
        "one checkpoint folder: the CREATE TABLE statements take no checkpoints"
    );
    // The job's checkpoint folder, as `riffle run --from-checkpoint` takes it.
    let job_folder = std::fs::read_dir(&checkpoints)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.join("chk-0000001").exists()
                || checkpoint_metadata(&checkpoints)
                    .iter()
                    .any(|m| m.starts_with(p))
        })
        .unwrap();
    if let Resume::FromCheckpoint = resume {
        // What the restore will bring back, by region: a map-only job at parallelism 2 has
        // one region per subtask, each with its source position and its sink's parts.
        let shown = Command::new(env!("CARGO_BIN_EXE_riffle"))
            .arg("checkpoint")
            .arg(&job_folder)
            .output()
            .unwrap();
        let described = text(&shown.stdout);
        assert!(shown.status.success(), "{}", text(&shown.stderr));
        assert!(described.starts_with("checkpoint "), "{described}");
        assert!(described.contains("region 2 (1 subtasks)"), "{described}");
        assert!(
            described.contains("vertex 0 subtask 1: source "),
            "{described}"
        );
        assert!(described.contains("; sink-"), "{described}");
    }
    let mut second = Command::new(env!("CARGO_BIN_EXE_riffle"));
    match resume {
        Resume::FromCheckpoint => {
            second
                .args(&defines)
                .arg("run")
                .arg("--from-checkpoint")
                .arg(&job_folder);
        }
        Resume::SameCommandWithParallelism3 => {
            second.args(&defines[..4]).args(["-p", "3", "run"]);
        }
    }
    let output = second.arg(&script).output().unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("resumed from checkpoint"), "{stderr}");
    if let Resume::SameCommandWithParallelism3 = resume {
        assert!(
            stderr.contains("at the checkpoint's parallelism 2"),
            "{stderr}"
        );
    }
    assert_eq!(
        published_ids(&out),
        (ROWS as u64, ROWS as u64, ROWS - 1),
        "every id once after the resume"
    );
    assert!(
        checkpoint_metadata(&checkpoints).is_empty(),
        "a finished job deletes its checkpoints"
    );
}

#[test]
fn an_incomplete_checkpoint_is_passed_over_and_a_corrupt_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let checkpoints = dir.path().join("checkpoints");
    let script = dir.path().join("job.sql");
    std::fs::write(
        &script,
        format!(
            "CREATE TABLE gen (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '50000');
             CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet');
             INSERT INTO out SELECT id FROM gen;",
            out.display()
        ),
    )
    .unwrap();
    let defines = [
        "-D".to_string(),
        "execution.checkpointing.interval=100ms".to_string(),
        "-D".to_string(),
        format!("execution.checkpointing.dir={}", checkpoints.display()),
        "-p".to_string(),
        "2".to_string(),
    ];
    // Runs the job until `ready` says so, then kills it (SIGKILL); returns its stderr.
    let run_until = |ready: &dyn Fn() -> bool| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_riffle"))
            .args(&defines)
            .arg("run")
            .arg(&script)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while !ready() {
            assert!(started.elapsed().as_secs() < 60, "the job made no progress");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        let output = child.wait_with_output().unwrap();
        text(&output.stderr)
    };
    run_until(&|| checkpoint_metadata(&checkpoints).len() >= 2);
    let metadata = checkpoint_metadata(&checkpoints);
    let newest = metadata.last().unwrap().clone();
    let job = newest.parent().unwrap().parent().unwrap().to_path_buf();

    // A checkpoint that never completed (state written, no metadata): passed over.
    let incomplete = job.join("chk-9999999");
    std::fs::create_dir_all(&incomplete).unwrap();
    std::fs::write(incomplete.join("v0-s0-o1.arrow"), b"half").unwrap();
    // Ids go on past every id in the folder: wait for the second checkpoint after it.
    let stderr = run_until(&|| {
        checkpoint_metadata(&checkpoints)
            .iter()
            .any(|m| m.to_string_lossy().contains("chk-10000001"))
    });
    assert!(
        stderr.contains("warning: not restored from checkpoint 9999999"),
        "{stderr}"
    );
    assert!(stderr.contains("incomplete"), "{stderr}");
    assert!(stderr.contains("resumed from checkpoint"), "{stderr}");
    let (rows, distinct, _) = published_ids(&out);
    assert_eq!(rows, distinct, "no id twice");
    // Each datagen subtask (s of 2 emits s, s + 2, ...) resumes at its own position, so
    // each publishes a gapless prefix of its own sequence, not necessarily as long as the
    // other's.
    for (subtask, count, max) in published_prefixes(&out) {
        assert_eq!(
            count as i64,
            (max - subtask) / 2 + 1,
            "no id of subtask {subtask} missing"
        );
    }

    // A corrupt newest checkpoint may have published its rows: restoring an older one
    // would repeat them, so the job refuses, naming it, and says how to go on.
    let newest = checkpoint_metadata(&checkpoints).last().unwrap().clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes[10] ^= 0x20;
    std::fs::write(&newest, &bytes).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_riffle"))
        .args(&defines)
        .arg("run")
        .arg(&script)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("is corrupt"), "{stderr}");
    assert!(stderr.contains("would publish again"), "{stderr}");
    assert!(stderr.contains("--from-checkpoint"), "{stderr}");
    assert_eq!(
        published_ids(&out).0,
        rows,
        "nothing published by the refused run"
    );

    // With every checkpoint corrupt, the job refuses to start rather than start afresh.
    for metadata in checkpoint_metadata(&checkpoints) {
        std::fs::write(&metadata, b"not json").unwrap();
    }
    let output = Command::new(env!("CARGO_BIN_EXE_riffle"))
        .args(&defines)
        .arg("run")
        .arg(&script)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("no complete checkpoint"), "{stderr}");
    assert!(stderr.contains("hint: delete the folder"), "{stderr}");
}
