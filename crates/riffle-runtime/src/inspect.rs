//! A checkpoint, described for a person (`riffle checkpoint PATH`): what it holds, by
//! pipeline region and subtask, so that a user can see what a restore would bring back
//! before running it.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::execution::TaskContext;
use riffle_common::{Result, RiffleError};
use riffle_state::{Metadata, OperatorEntry, TaskEntry};

use crate::executor::{checkpoint_at, restore_point};

/// Describes the checkpoint at `path` (one checkpoint, `.../chk-N`, or a job's folder: its
/// latest complete checkpoint), after checking it as a restore would.
pub async fn describe_checkpoint(path: &str, context: &TaskContext) -> Result<String> {
    let (store, id) = checkpoint_at(path, context)?;
    let mut passed_over = Vec::new();
    let metadata = restore_point(&store, id, path, &mut passed_over)
        .await?
        .ok_or_else(|| RiffleError::user(format!("{path} holds no complete checkpoint")))?;
    let mut text = describe(&metadata);
    for skipped in passed_over {
        let _ = writeln!(text, "passed over: {skipped}");
    }
    Ok(text)
}

/// The lines of [`describe_checkpoint`] for `metadata`.
fn describe(metadata: &Metadata) -> String {
    let mut text = String::new();
    let age = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.as_millis() as u64)
        .saturating_sub(metadata.completed_at_ms);
    let _ = writeln!(
        text,
        "{} {} (attempt {}), completed {} ago",
        metadata.kind,
        metadata.id,
        metadata.attempt,
        readable_age(age)
    );
    let widths: Vec<String> = metadata
        .parallelism
        .iter()
        .enumerate()
        .map(|(vertex, width)| format!("vertex {vertex}: {width}"))
        .collect();
    let _ = writeln!(text, "parallelism: {}", widths.join(", "));
    let total: u64 = metadata
        .tasks
        .iter()
        .flat_map(|task| &task.operators)
        .map(entry_bytes)
        .sum();
    let _ = writeln!(
        text,
        "state: {} subtasks, {}",
        metadata.tasks.len(),
        readable_bytes(total)
    );
    if metadata.regions.is_empty() {
        // Written before regions were recorded.
        for task in &metadata.tasks {
            describe_task(&mut text, task);
        }
        return text;
    }
    for index in 0..metadata.regions.len() {
        let tasks = metadata.region_states(index).unwrap_or_default();
        let _ = writeln!(
            text,
            "region {} ({} subtasks)",
            index + 1,
            metadata.regions[index].len()
        );
        for task in tasks {
            describe_task(&mut text, task);
        }
    }
    text
}

fn describe_task(text: &mut String, task: &TaskEntry) {
    let operators: Vec<String> = task
        .operators
        .iter()
        .map(|operator| match &operator.file {
            Some(file) => format!(
                "{} {} + {} of rows",
                operator.name,
                readable_bytes(operator.inline.len() as u64),
                readable_bytes(file.size)
            ),
            None if operator.inline.is_empty() => format!("{} -", operator.name),
            None => format!(
                "{} {}",
                operator.name,
                readable_bytes(operator.inline.len() as u64)
            ),
        })
        .collect();
    let _ = writeln!(
        text,
        "  vertex {} subtask {}: {}",
        task.vertex,
        task.subtask,
        operators.join("; ")
    );
}

fn entry_bytes(operator: &OperatorEntry) -> u64 {
    operator.inline.len() as u64 + operator.file.as_ref().map_or(0, |file| file.size)
}

fn readable_bytes(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MB", bytes as f64 / 1_048_576.0),
    }
}

fn readable_age(millis: u64) -> String {
    let seconds = millis / 1000;
    match seconds {
        0..120 => format!("{seconds} s"),
        120..7200 => format!("{} min", seconds / 60),
        7200..172_800 => format!("{} h", seconds / 3600),
        _ => format!("{} days", seconds / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use riffle_state::FileRef;

    use super::*;

    #[test]
    fn a_checkpoint_is_described_by_region_and_subtask() {
        let metadata = Metadata {
            format_version: riffle_state::store::FORMAT_VERSION,
            graph_fingerprint: "g".into(),
            parallelism: vec![2],
            id: 7,
            kind: "checkpoint".into(),
            attempt: 1,
            completed_at_ms: 0,
            tasks: vec![
                TaskEntry {
                    vertex: 0,
                    subtask: 0,
                    operators: vec![OperatorEntry {
                        name: "source".into(),
                        inline: vec![0; 8],
                        file: None,
                    }],
                },
                TaskEntry {
                    vertex: 0,
                    subtask: 1,
                    operators: vec![OperatorEntry {
                        name: "async-2".into(),
                        inline: vec![0; 20],
                        file: Some(FileRef {
                            path: "v0-s1-async-2.arrow".into(),
                            size: 4096,
                            crc32: 0,
                        }),
                    }],
                },
            ],
            regions: vec![vec![(0, 0)], vec![(0, 1)]],
        };
        let text = describe(&metadata);
        assert!(
            text.starts_with("checkpoint 7 (attempt 1), completed "),
            "{text}"
        );
        assert!(text.contains("parallelism: vertex 0: 2"), "{text}");
        assert!(text.contains("state: 2 subtasks, 4.0 KB"), "{text}");
        assert!(
            text.contains("region 1 (1 subtasks)\n  vertex 0 subtask 0: source 8 B\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "region 2 (1 subtasks)\n  vertex 0 subtask 1: async-2 20 B + 4.0 KB of rows\n"
            ),
            "{text}"
        );
    }
}
