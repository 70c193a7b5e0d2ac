//! Checkpoints on a real object store (the local file system): published last, checked on
//! the way back, corrupt or partial ones detected and passed over, old ones deleted.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use riffle_state::{CheckpointStore, Metadata, OperatorEntry, RestoreChoice, TaskEntry, Validity};

fn rows(values: &[i64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
}

fn store(dir: &tempfile::TempDir) -> CheckpointStore {
    let local = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    CheckpointStore::new(Arc::new(local), Path::from("job"))
}

/// Writes checkpoint `id` with one subtask holding `values` and an inline position.
async fn checkpoint(store: &CheckpointStore, id: u64, values: &[i64]) -> Metadata {
    let file = store
        .write_batches(id, "v0-s0-o0", &[rows(values)])
        .await
        .unwrap();
    let metadata = Metadata {
        format_version: riffle_state::store::FORMAT_VERSION,
        graph_fingerprint: "graph-1".into(),
        parallelism: vec![1],
        id,
        kind: "checkpoint".into(),
        attempt: 1,
        completed_at_ms: 0,
        tasks: vec![TaskEntry {
            vertex: 0,
            subtask: 0,
            operators: vec![OperatorEntry {
                name: "source".into(),
                inline: id.to_le_bytes().to_vec(),
                file: Some(file),
            }],
        }],
        regions: vec![vec![(0, 0)]],
    };
    store.commit(&metadata).await.unwrap();
    metadata
}

fn state_file(dir: &tempfile::TempDir, id: u64) -> std::path::PathBuf {
    dir.path()
        .join("job")
        .join(format!("chk-{id:07}"))
        .join("v0-s0-o0.arrow")
}

#[tokio::test]
async fn a_checkpoint_round_trips_with_its_rows_and_inline_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let written = checkpoint(&store, 1, &[1, 2, 3]).await;
    let RestoreChoice::Restore { id, skipped } = store.latest().await.unwrap() else {
        panic!("expected a checkpoint")
    };
    assert_eq!((id, skipped.len()), (1, 0));
    let read = store.metadata(1).await.unwrap().unwrap();
    assert_eq!(read, written);
    // Its state is viewable by pipeline region.
    let region = read.region_states(0).unwrap();
    assert_eq!(region.len(), 1);
    assert_eq!((region[0].vertex, region[0].subtask), (0, 0));
    assert!(read.region_states(1).is_none());
    let file = read.tasks[0].operators[0].file.as_ref().unwrap();
    let batches = store.read_batches(1, file).await.unwrap();
    assert_eq!(batches, vec![rows(&[1, 2, 3])]);
}

#[tokio::test]
async fn a_second_attempt_cannot_publish_the_same_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let metadata = checkpoint(&store, 4, &[1]).await;
    let error = store.commit(&metadata).await.unwrap_err();
    assert!(error.message.contains("another attempt"), "{error}");
}

#[tokio::test]
async fn corrupt_and_partial_checkpoints_are_detected_and_an_older_one_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    checkpoint(&store, 1, &[1]).await;
    checkpoint(&store, 2, &[1, 2]).await;
    checkpoint(&store, 3, &[1, 2, 3]).await;
    // Checkpoint 3: one flipped byte in its state file. Checkpoint 4: never published.
    let path = state_file(&dir, 3);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    store
        .write_batches(4, "v0-s0-o0", &[rows(&[9])])
        .await
        .unwrap();

    assert!(matches!(
        store.validate(3).await.unwrap(),
        Validity::Corrupt(reason) if reason.contains("checksum mismatch")
    ));
    assert_eq!(store.validate(4).await.unwrap(), Validity::Incomplete);
    match store.latest().await.unwrap() {
        RestoreChoice::Restore { id, skipped } => {
            assert_eq!(id, 2);
            let skipped: Vec<u64> = skipped.iter().map(|(id, _)| *id).collect();
            assert_eq!(skipped, vec![4, 3]);
        }
        other => panic!("unexpected {other:?}"),
    }

    // A truncated metadata file and a missing state file are corrupt too.
    let metadata = dir.path().join("job").join("chk-0000002").join("_metadata");
    let text = std::fs::read_to_string(&metadata).unwrap();
    std::fs::write(&metadata, &text[..text.len() / 2]).unwrap();
    assert!(matches!(
        store.validate(2).await.unwrap(),
        Validity::Corrupt(_)
    ));
    std::fs::remove_file(state_file(&dir, 1)).unwrap();
    assert!(matches!(
        store.validate(1).await.unwrap(),
        Validity::Corrupt(_)
    ));
    assert!(matches!(
        store.latest().await.unwrap(),
        RestoreChoice::NoneUsable { skipped } if skipped.len() == 4
    ));
}

#[tokio::test]
async fn retention_keeps_the_newest_and_never_one_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    for id in 1..=5 {
        checkpoint(&store, id, &[id as i64]).await;
    }
    let deleted = store
        .apply_retention(&BTreeSet::from([1]), 3)
        .await
        .unwrap();
    assert_eq!(deleted, vec![2]);
    assert_eq!(store.list().await.unwrap(), vec![1, 3, 4, 5]);
    let folder = dir.path().join("job").join("chk-0000002");
    let left = std::fs::read_dir(&folder).map_or(0, |entries| entries.count());
    assert_eq!(left, 0, "checkpoint 2's files are gone");
}

#[tokio::test]
async fn a_copied_checkpoint_outlives_the_original_and_a_corrupt_original_is_not_copied() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = store(&dir);
    let local = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    let savepoints = CheckpointStore::new(Arc::new(local), Path::from("savepoints/job"));
    let written = checkpoint(&jobs, 4, &[7, 8]).await;
    jobs.copy_checkpoint(&written, &savepoints).await.unwrap();
    jobs.delete(4).await.unwrap();
    assert_eq!(savepoints.validate(4).await.unwrap(), Validity::Complete);
    let read = savepoints.metadata(4).await.unwrap().unwrap();
    assert_eq!(read, written);
    let file = read.tasks[0].operators[0].file.as_ref().unwrap();
    assert_eq!(
        savepoints.read_batches(4, file).await.unwrap(),
        vec![rows(&[7, 8])]
    );

    // A state file damaged before the copy: the copy fails and publishes no metadata.
    let damaged = checkpoint(&jobs, 5, &[9]).await;
    std::fs::write(state_file(&dir, 5), b"garbage").unwrap();
    let error = jobs
        .copy_checkpoint(&damaged, &savepoints)
        .await
        .unwrap_err();
    assert!(error.message.contains("bytes"), "{}", error.message);
    assert_eq!(savepoints.metadata(5).await.unwrap(), None);
}

#[tokio::test]
async fn held_batches_with_different_dictionaries_are_written_and_read_back() {
    use arrow::array::{Array, DictionaryArray, StringArray};
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let schema = Arc::new(Schema::new(vec![Field::new(
        "part",
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        false,
    )]));
    let batch = |values: Vec<&str>| {
        let column: DictionaryArray<Int32Type> = values.into_iter().collect();
        arrow::array::RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(column)]).unwrap()
    };
    // Two batches of a scan's partition column, each with a dictionary of its own.
    let held = [batch(vec!["a=1", "a=1"]), batch(vec!["a=2", "a=3", "a=2"])];
    let file = store.write_batches(1, "held", &held).await.unwrap();
    let read = store.read_batches(1, &file).await.unwrap();
    let values = |batches: &[arrow::array::RecordBatch]| -> Vec<Vec<String>> {
        batches
            .iter()
            .map(|b| {
                let plain = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
                let strings = plain.as_any().downcast_ref::<StringArray>().unwrap();
                (0..strings.len())
                    .map(|i| strings.value(i).to_string())
                    .collect()
            })
            .collect()
    };
    assert_eq!(values(&read), values(&held));
}

#[tokio::test]
async fn deleting_on_a_local_disk_leaves_no_empty_folders() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job");
    // As the runtime opens a local checkpoint directory: the root store, absolute paths.
    let store = CheckpointStore::new(
        Arc::new(LocalFileSystem::new()),
        Path::from_filesystem_path(dir.path()).unwrap().join("job"),
    );
    checkpoint(&store, 1, &[1]).await;
    checkpoint(&store, 2, &[2]).await;
    store.delete(1).await.unwrap();
    assert!(
        !job.join("chk-0000001").exists(),
        "the checkpoint's folder is gone"
    );
    assert!(job.join("chk-0000002").exists());
    store.delete(2).await.unwrap();
    assert!(
        !job.exists(),
        "the job's folder is gone with its last checkpoint"
    );
}
