//! Checkpoints on an object store: the I/O edge of the protocol.
//!
//! Layout under a job's checkpoint folder (paths inside are relative, so a checkpoint can be
//! moved):
//!
//! ```text
//! <job folder>/chk-0000042/v3-s1-o0.arrow   rows an operator holds, as an Arrow IPC file
//! <job folder>/chk-0000042/_metadata        written last, with create-if-absent
//! ```
//!
//! The metadata names every state file with its size and CRC-32, and holds small state
//! inline. It is JSON followed by a line with its own CRC-32, so a truncated or edited
//! metadata file is detected. It is written with `PutMode::Create`: two attempts (a zombie
//! and its replacement) cannot both publish checkpoint N, and a checkpoint without metadata
//! is incomplete, never restored. [`CheckpointStore::latest`] walks the checkpoints newest
//! first and returns the first that checks out, reporting those it skipped.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::retention::{RestoreChoice, Validity, choose_restore, to_delete};
use crate::tracker::CheckpointId;

/// `batches` such that their dictionary columns carry one dictionary each: an Arrow IPC
/// file cannot replace a dictionary, and batches held by an operator (a scan's partition
/// column, for example) may carry different ones. Such batches become slices of their
/// concatenation, whose dictionaries are merged; others stay as they are.
fn share_dictionaries(
    batches: &[RecordBatch],
) -> Result<std::borrow::Cow<'_, [RecordBatch]>, arrow::error::ArrowError> {
    fn has_dictionary(data_type: &arrow::datatypes::DataType) -> bool {
        use arrow::datatypes::DataType;
        match data_type {
            DataType::Dictionary(..) => true,
            DataType::Struct(fields) => fields.iter().any(|f| has_dictionary(f.data_type())),
            DataType::List(field)
            | DataType::LargeList(field)
            | DataType::FixedSizeList(field, _)
            | DataType::Map(field, _) => has_dictionary(field.data_type()),
            _ => false,
        }
    }
    let Some(first) = batches.first() else {
        return Ok(std::borrow::Cow::Borrowed(batches));
    };
    let schema = first.schema();
    if batches.len() < 2
        || !schema
            .fields()
            .iter()
            .any(|f| has_dictionary(f.data_type()))
    {
        return Ok(std::borrow::Cow::Borrowed(batches));
    }
    let whole = arrow::compute::concat_batches(&schema, batches)?;
    let mut start = 0;
    let slices = batches
        .iter()
        .map(|batch| {
            let slice = whole.slice(start, batch.num_rows());
            start += batch.num_rows();
            slice
        })
        .collect();
    Ok(std::borrow::Cow::Owned(slices))
}

/// The metadata format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const METADATA: &str = "_metadata";

/// What went wrong with checkpoint storage: where, and what.
#[derive(Debug)]
pub struct StoreError {
    /// The message, naming the object.
    pub message: String,
    /// Whether the store itself failed (retrying may help) rather than the data.
    pub store_failed: bool,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

fn data_error(message: String) -> StoreError {
    StoreError {
        message,
        store_failed: false,
    }
}

/// An error of the store; a missing object is the data's fault (a checkpoint that lost a
/// file is corrupt), anything else the store's.
fn store_error(what: &str, path: &Path, error: object_store::Error) -> StoreError {
    StoreError {
        store_failed: !matches!(error, object_store::Error::NotFound { .. }),
        message: format!("{what} {path}: {error}"),
    }
}

/// One state file, as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Path relative to the checkpoint's folder.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32 of the contents.
    pub crc32: u32,
}

/// One operator's part of a subtask's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorEntry {
    /// The operator's stable name.
    pub name: String,
    /// Small state, kept in the metadata itself.
    pub inline: Vec<u8>,
    /// Rows the operator held, if any.
    pub file: Option<FileRef>,
}

/// One subtask's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEntry {
    /// The vertex.
    pub vertex: usize,
    /// The subtask.
    pub subtask: usize,
    /// Its operators' states, in chain order.
    pub operators: Vec<OperatorEntry>,
}

/// A checkpoint's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// Identifies the job graph (its shape and operators): a restore into another graph is
    /// refused.
    pub graph_fingerprint: String,
    /// Parallelism of each vertex when the checkpoint was taken: a restore keeps it.
    pub parallelism: Vec<usize>,
    /// The checkpoint.
    pub id: CheckpointId,
    /// "checkpoint", "savepoint" or "final".
    pub kind: String,
    /// The attempt that took it.
    pub attempt: u64,
    /// Milliseconds since the epoch when it completed.
    pub completed_at_ms: u64,
    /// Every subtask's state.
    pub tasks: Vec<TaskEntry>,
    /// The job's pipeline regions when the checkpoint was taken, each as its `(vertex,
    /// subtask)` pairs: the unit a region failover restores (empty in checkpoints written
    /// before regions were recorded).
    #[serde(default)]
    pub regions: Vec<Vec<(usize, usize)>>,
}

impl Metadata {
    /// The states of the subtasks of region `region`, in (vertex, subtask) order; `None` for
    /// a region the checkpoint does not list.
    pub fn region_states(&self, region: usize) -> Option<Vec<&TaskEntry>> {
        let members = self.regions.get(region)?;
        Some(
            self.tasks
                .iter()
                .filter(|task| members.contains(&(task.vertex, task.subtask)))
                .collect(),
        )
    }
}

/// The checkpoints of one job in one folder of an object store.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
}

/// The folder name of checkpoint `id`.
pub fn checkpoint_folder(id: CheckpointId) -> String {
    format!("chk-{id:07}")
}

fn parse_folder(name: &str) -> Option<CheckpointId> {
    name.strip_prefix("chk-")?.parse().ok()
}

impl CheckpointStore {
    /// The checkpoints under `root` of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, root: Path) -> Self {
        Self { store, root }
    }

    fn path(&self, id: CheckpointId, file: &str) -> Path {
        self.root.clone().join(checkpoint_folder(id)).join(file)
    }

    /// Writes rows an operator holds as an Arrow IPC file in checkpoint `id`.
    pub async fn write_batches(
        &self,
        id: CheckpointId,
        name: &str,
        batches: &[RecordBatch],
    ) -> Result<FileRef, StoreError> {
        let Some(first) = batches.first() else {
            return Err(data_error(format!("no rows to write for {name}")));
        };
        let batches =
            share_dictionaries(batches).map_err(|e| data_error(format!("encoding {name}: {e}")))?;
        let mut bytes = Vec::new();
        {
            let mut writer = FileWriter::try_new(&mut bytes, &first.schema())
                .map_err(|e| data_error(format!("encoding {name}: {e}")))?;
            for batch in batches.iter() {
                writer
                    .write(batch)
                    .map_err(|e| data_error(format!("encoding {name}: {e}")))?;
            }
            writer
                .finish()
                .map_err(|e| data_error(format!("encoding {name}: {e}")))?;
        }
        let file = FileRef {
            path: format!("{name}.arrow"),
            size: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
        };
        let path = self.path(id, &file.path);
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| store_error("writing", &path, e))?;
        Ok(file)
    }

    /// Reads a state file of checkpoint `id`, checking its size and checksum.
    pub async fn read_batches(
        &self,
        id: CheckpointId,
        file: &FileRef,
    ) -> Result<Vec<RecordBatch>, StoreError> {
        let bytes = self.read_checked(id, file).await?;
        let reader = FileReader::try_new(Cursor::new(bytes), None)
            .map_err(|e| data_error(format!("{}: not an Arrow IPC file: {e}", file.path)))?;
        reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| data_error(format!("{}: {e}", file.path)))
    }

    async fn read_checked(&self, id: CheckpointId, file: &FileRef) -> Result<Vec<u8>, StoreError> {
        let path = self.path(id, &file.path);
        let bytes = self
            .store
            .get(&path)
            .await
            .map_err(|e| store_error("reading", &path, e))?
            .bytes()
            .await
            .map_err(|e| store_error("reading", &path, e))?;
        if bytes.len() as u64 != file.size {
            return Err(data_error(format!(
                "{path}: {} bytes, the metadata says {}",
                bytes.len(),
                file.size
            )));
        }
        if crc32fast::hash(&bytes) != file.crc32 {
            return Err(data_error(format!("{path}: checksum mismatch")));
        }
        Ok(bytes.to_vec())
    }

    /// Publishes checkpoint `metadata.id`: written last, and only if no other attempt
    /// published it first.
    pub async fn commit(&self, metadata: &Metadata) -> Result<(), StoreError> {
        let body = serde_json::to_string(metadata)
            .map_err(|e| data_error(format!("encoding checkpoint metadata: {e}")))?;
        let contents = format!("{body}\ncrc32 {:08x}\n", crc32fast::hash(body.as_bytes()));
        let path = self.path(metadata.id, METADATA);
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(contents.into_bytes()), options)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(data_error(format!(
                "{path} exists already: another attempt of the job published checkpoint {}",
                metadata.id
            ))),
            Err(error) => Err(store_error("writing", &path, error)),
        }
    }

    /// Copies checkpoint `metadata.id` into `target`: its state files (checked on the way)
    /// and, last, its metadata, so that the copy is complete or has no metadata. A copy is
    /// what a savepoint taken on demand keeps: retention and the job's end delete the
    /// original.
    pub async fn copy_checkpoint(
        &self,
        metadata: &Metadata,
        target: &CheckpointStore,
    ) -> Result<(), StoreError> {
        let files = metadata
            .tasks
            .iter()
            .flat_map(|task| &task.operators)
            .filter_map(|operator| operator.file.as_ref());
        for file in files {
            let bytes = self.read_checked(metadata.id, file).await?;
            let path = target.path(metadata.id, &file.path);
            target
                .store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(|e| store_error("writing", &path, e))?;
        }
        target.commit(metadata).await
    }

    /// Reads and checks the metadata of checkpoint `id`; `Ok(None)` when it has none.
    pub async fn metadata(&self, id: CheckpointId) -> Result<Option<Metadata>, StoreError> {
        let path = self.path(id, METADATA);
        let bytes = match self.store.get(&path).await {
            Ok(result) => result
                .bytes()
                .await
                .map_err(|e| store_error("reading", &path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(store_error("reading", &path, error)),
        };
        let text =
            std::str::from_utf8(&bytes).map_err(|_| data_error(format!("{path}: not text")))?;
        let (body, trailer) = text
            .trim_end()
            .rsplit_once('\n')
            .ok_or_else(|| data_error(format!("{path}: no checksum line (truncated?)")))?;
        let expected = trailer
            .strip_prefix("crc32 ")
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or_else(|| data_error(format!("{path}: no checksum line (truncated?)")))?;
        if crc32fast::hash(body.as_bytes()) != expected {
            return Err(data_error(format!("{path}: checksum mismatch")));
        }
        let metadata: Metadata = serde_json::from_str(body)
            .map_err(|e| data_error(format!("{path}: unreadable: {e}")))?;
        if metadata.format_version != FORMAT_VERSION {
            return Err(data_error(format!(
                "{path}: format version {}, this Riffle reads {FORMAT_VERSION}",
                metadata.format_version
            )));
        }
        if metadata.id != id {
            return Err(data_error(format!(
                "{path}: describes checkpoint {}",
                metadata.id
            )));
        }
        Ok(Some(metadata))
    }

    /// Checks checkpoint `id` whole: its metadata and every file it names.
    pub async fn validate(&self, id: CheckpointId) -> Result<Validity, StoreError> {
        let metadata = match self.metadata(id).await {
            Ok(Some(metadata)) => metadata,
            Ok(None) => return Ok(Validity::Incomplete),
            Err(error) if !error.store_failed => return Ok(Validity::Corrupt(error.message)),
            Err(error) => return Err(error),
        };
        for task in &metadata.tasks {
            for file in task.operators.iter().filter_map(|o| o.file.as_ref()) {
                match self.read_checked(id, file).await {
                    Ok(_) => {}
                    Err(error) if !error.store_failed => {
                        return Ok(Validity::Corrupt(error.message));
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(Validity::Complete)
    }

    /// The checkpoints in the folder, by id (whatever their state).
    pub async fn list(&self) -> Result<Vec<CheckpointId>, StoreError> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(|e| store_error("listing", &self.root, e))?;
        let mut ids = Vec::new();
        for prefix in &listing.common_prefixes {
            let Some(id) = prefix.filename().and_then(parse_folder) else {
                continue;
            };
            // A local file system keeps the empty folder of a deleted checkpoint.
            let mut objects = self.store.list(Some(prefix));
            match objects.try_next().await {
                Ok(Some(_)) => ids.push(id),
                Ok(None) => {}
                Err(error) => return Err(store_error("listing", prefix, error)),
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The newest checkpoint that checks out, with those newer that did not.
    pub async fn latest(&self) -> Result<RestoreChoice, StoreError> {
        let ids = self.list().await?;
        let mut found = Vec::new();
        // Newest first, stopping at the first complete one: older ones need no reading.
        for id in ids.into_iter().rev() {
            let validity = self.validate(id).await?;
            let complete = validity == Validity::Complete;
            found.push((id, validity));
            if complete {
                break;
            }
        }
        Ok(choose_restore(&found))
    }

    /// Deletes what retention says: all but the newest `num_retained` complete checkpoints
    /// (and older leftovers), never one `in_progress`. Returns the ids deleted.
    pub async fn apply_retention(
        &self,
        in_progress: &BTreeSet<CheckpointId>,
        num_retained: usize,
    ) -> Result<Vec<CheckpointId>, StoreError> {
        let mut found = Vec::new();
        for id in self.list().await? {
            let validity = match self.metadata(id).await {
                Ok(Some(_)) => Validity::Complete,
                Ok(None) => Validity::Incomplete,
                Err(error) if !error.store_failed => Validity::Corrupt(error.message),
                Err(error) => return Err(error),
            };
            found.push((id, validity));
        }
        let doomed = to_delete(&found, in_progress, num_retained);
        for &id in &doomed {
            self.delete(id).await?;
        }
        Ok(doomed)
    }

    /// Deletes checkpoint `id`: its metadata first, so a half-deleted one is incomplete.
    pub async fn delete(&self, id: CheckpointId) -> Result<(), StoreError> {
        let metadata = self.path(id, METADATA);
        match self.store.delete(&metadata).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(store_error("deleting", &metadata, error)),
        }
        let folder = self.root.clone().join(checkpoint_folder(id));
        let objects: Vec<_> = self
            .store
            .list(Some(&folder))
            .try_collect()
            .await
            .map_err(|e| store_error("listing", &folder, e))?;
        for object in objects {
            match self.store.delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(store_error("deleting", &object.location, error)),
            }
        }
        self.remove_empty_local_folders(&folder);
        Ok(())
    }

    /// Removes `folder` and then the job's folder, when they are empty folders on a local
    /// disk: deleting objects leaves their folders behind there (object stores have none).
    /// Best effort: a folder that is not empty, or not local, stays.
    fn remove_empty_local_folders(&self, folder: &Path) {
        // `LocalFileSystem::new()` maps a path to the same path under `/`; a store with a
        // prefix, or any other store, is left alone.
        if self.store.to_string() != "LocalFileSystem(file:///)" {
            return;
        }
        for path in [folder, &self.root] {
            let local = std::path::Path::new("/").join(path.as_ref());
            let _ = std::fs::remove_dir(local);
        }
    }
}
