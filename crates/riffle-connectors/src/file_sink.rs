//! Writes a job's rows as files, published only when the job succeeds.
//!
//! Each subtask writes one part file, `part-<job>-<partition>.<ext>`, as an object-store
//! multipart upload that it leaves open. Until the upload is completed the object does not
//! exist for readers (S3 shows nothing; the local store writes a staging file that listings
//! skip). [`Sink::commit`] completes every upload once the whole job has finished;
//! [`Sink::abort`] aborts them, so a failed job leaves no part visible.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use riffle_common::RiffleError;
use riffle_plan::{PartWriter, Sink, StagedPart, WriteMode};
use url::Url;

use crate::format::FileFormatKind;
use crate::parquet_encoder::{ParquetEncoder, ROW_GROUP_ROWS};

/// Bytes gathered before they are handed to the upload as one part.
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Uploads in flight per writer.
const UPLOAD_CONCURRENCY: usize = 4;

/// Writes files of one format under one directory.
pub struct FileSink {
    table: String,
    url: Url,
    store: Arc<dyn ObjectStore>,
    directory: Path,
    format: FileFormatKind,
    csv_header: bool,
    csv_delimiter: u8,
    /// Distinguishes this job's files from earlier and concurrent jobs' files.
    job_tag: String,
    /// Written but not yet published.
    pending: Mutex<Vec<(Path, WriteMultipart)>>,
    mode: WriteMode,
    /// The table's declared columns, whose metadata (extension types) the files keep.
    schema: Option<SchemaRef>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileSink({})", self.describe())
    }
}

impl FileSink {
    /// A sink writing `format` files into the directory `url` of `store`.
    pub fn new(
        table: String,
        store: Arc<dyn ObjectStore>,
        url: &Url,
        format: FileFormatKind,
        csv_header: bool,
        csv_delimiter: u8,
    ) -> riffle_common::Result<Self> {
        let directory = match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|_| RiffleError::user(format!("invalid local path {url}")))?;
                std::fs::create_dir_all(&path).map_err(|e| {
                    RiffleError::user(format!("cannot create directory {}: {e}", path.display()))
                })?;
                Path::from_filesystem_path(&path)
                    .map_err(|e| RiffleError::user(format!("invalid local path {url}: {e}")))?
            }
            _ => Path::from_url_path(url.path())
                .map_err(|e| RiffleError::user(format!("invalid path in {url}: {e}")))?,
        };
        Ok(Self {
            table,
            url: url.clone(),
            store,
            directory,
            format,
            csv_header,
            csv_delimiter,
            job_tag: uuid::Uuid::new_v4().simple().to_string(),
            pending: Mutex::new(Vec::new()),
            mode: WriteMode::Append,
            schema: None,
        })
    }

    /// Writes files with the table's declared columns (names, nullability, and the metadata
    /// of extension types such as tensors) rather than those of the query's output.
    pub fn with_schema(mut self, schema: SchemaRef) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Appends (the default) or, with [`WriteMode::Overwrite`], deletes the files that were
    /// in the directory before publishing this job's.
    pub fn with_mode(mut self, mode: WriteMode) -> Self {
        self.mode = mode;
        self
    }

    /// Deletes the files under the directory that this job did not write.
    async fn delete_previous_files(&self) -> Result<()> {
        let mut listing = self.store.list(Some(&self.directory));
        let mut previous = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(to_df)?;
            let name = meta.location.filename().unwrap_or_default();
            if !name.contains(&self.job_tag) {
                previous.push(meta.location);
            }
        }
        for location in previous {
            self.store.delete(&location).await.map_err(to_df)?;
        }
        Ok(())
    }

    fn take_pending(&self) -> Vec<(Path, WriteMultipart)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *pending)
    }
}

/// The wire form of a [`FileSink`].
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct FileSinkNode {
    #[prost(string, tag = "1")]
    table: String,
    #[prost(string, tag = "2")]
    url: String,
    /// `parquet`, `csv` or `json`.
    #[prost(string, tag = "3")]
    format: String,
    #[prost(bool, tag = "4")]
    csv_header: bool,
    #[prost(uint32, tag = "5")]
    csv_delimiter: u32,
    #[prost(bool, tag = "6")]
    overwrite: bool,
    #[prost(string, tag = "7")]
    job_tag: String,
    /// The declared schema, as a DataFusion protobuf schema; empty when there is none.
    #[prost(bytes = "vec", tag = "8")]
    schema: Vec<u8>,
}

impl FileSink {
    pub(crate) fn to_node(&self) -> Result<FileSinkNode> {
        let schema = match &self.schema {
            Some(schema) => {
                let proto: datafusion_proto::protobuf::Schema =
                    schema.as_ref().try_into().map_err(|e| {
                        DataFusionError::Internal(format!("cannot encode a schema: {e}"))
                    })?;
                prost::Message::encode_to_vec(&proto)
            }
            None => Vec::new(),
        };
        Ok(FileSinkNode {
            schema,
            table: self.table.clone(),
            url: self.url.to_string(),
            format: format!("{:?}", self.format).to_lowercase(),
            csv_header: self.csv_header,
            csv_delimiter: u32::from(self.csv_delimiter),
            overwrite: self.mode == WriteMode::Overwrite,
            job_tag: self.job_tag.clone(),
        })
    }

    /// Rebuilds a sink; its object store must be registered in `ctx`'s runtime.
    pub(crate) fn from_node(node: FileSinkNode, ctx: &TaskContext) -> Result<Self> {
        let url = Url::parse(&node.url).map_err(|e| {
            DataFusionError::Internal(format!("malformed sink url {}: {e}", node.url))
        })?;
        let format = match node.format.as_str() {
            "parquet" => FileFormatKind::Parquet,
            "csv" => FileFormatKind::Csv,
            "json" => FileFormatKind::Json,
            other => {
                return Err(DataFusionError::Internal(format!(
                    "unknown sink format {other}"
                )));
            }
        };
        let store = crate::object_stores::registered_store(&ctx.runtime_env(), &url)?;
        let delimiter = u8::try_from(node.csv_delimiter)
            .map_err(|_| DataFusionError::Internal("malformed CSV delimiter".into()))?;
        let mut sink = FileSink::new(node.table, store, &url, format, node.csv_header, delimiter)?
            .with_mode(if node.overwrite {
                WriteMode::Overwrite
            } else {
                WriteMode::Append
            });
        sink.job_tag = node.job_tag;
        if !node.schema.is_empty() {
            let proto = <datafusion_proto::protobuf::Schema as prost::Message>::decode(
                node.schema.as_slice(),
            )
            .map_err(|e| DataFusionError::Internal(format!("malformed sink schema: {e}")))?;
            let schema = datafusion::arrow::datatypes::Schema::try_from(&proto)
                .map_err(|e| DataFusionError::Internal(format!("cannot decode a schema: {e}")))?;
            sink.schema = Some(Arc::new(schema));
        }
        Ok(sink)
    }
}

/// Encodes batches of one format into bytes.
enum Encoder {
    Parquet(Box<ParquetEncoder>),
    Csv {
        header: bool,
        delimiter: u8,
        wrote_header: bool,
        buffer: Vec<u8>,
    },
    Json(Vec<u8>),
}

impl Encoder {
    fn new(format: FileFormatKind, schema: SchemaRef, header: bool, delimiter: u8) -> Result<Self> {
        Ok(match format {
            FileFormatKind::Parquet => {
                Encoder::Parquet(Box::new(ParquetEncoder::new(schema, ROW_GROUP_ROWS)?))
            }
            FileFormatKind::Csv => Encoder::Csv {
                header,
                delimiter,
                wrote_header: false,
                buffer: Vec::new(),
            },
            FileFormatKind::Json => Encoder::Json(Vec::new()),
        })
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self {
            Encoder::Parquet(encoder) => encoder.write(batch).await?,
            Encoder::Csv {
                header,
                delimiter,
                wrote_header,
                buffer,
            } => {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(*header && !*wrote_header)
                    .with_delimiter(*delimiter)
                    .build(&mut *buffer);
                writer.write(batch)?;
                *wrote_header = true;
            }
            Encoder::Json(buffer) => {
                let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut *buffer);
                writer.write(batch)?;
                writer.finish()?;
            }
        }
        Ok(())
    }

    /// The bytes encoded so far, removed from the encoder.
    fn take_bytes(&mut self) -> Vec<u8> {
        match self {
            Encoder::Parquet(encoder) => encoder.take_bytes(),
            Encoder::Csv { buffer, .. } | Encoder::Json(buffer) => std::mem::take(buffer),
        }
    }

    fn buffered(&self) -> usize {
        match self {
            Encoder::Parquet(encoder) => encoder.buffered(),
            Encoder::Csv { buffer, .. } | Encoder::Json(buffer) => buffer.len(),
        }
    }

    /// Finishes the file (the Parquet footer) and returns the remaining bytes.
    async fn finish(mut self) -> Result<Vec<u8>> {
        match self {
            Encoder::Parquet(encoder) => encoder.finish().await,
            _ => Ok(self.take_bytes()),
        }
    }
}

#[async_trait]
impl Sink for FileSink {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn describe(&self) -> String {
        let format = format!("{:?}", self.format).to_lowercase();
        let mode = match self.mode {
            WriteMode::Append => "append",
            WriteMode::Overwrite => "overwrite",
        };
        format!("{} ({mode} {format} files under {})", self.table, self.url)
    }

    fn target(&self) -> String {
        self.table.clone()
    }

    /// Parts are multipart uploads completed at commit: nothing shows before.
    fn publishes_at_commit(&self) -> bool {
        true
    }

    async fn write(
        &self,
        partition: usize,
        mut input: SendableRecordBatchStream,
        _context: Arc<TaskContext>,
    ) -> Result<u64> {
        let file_name = format!(
            "part-{}-{partition:05}{}",
            self.job_tag,
            self.format.extension()
        );
        let location = self.directory.clone().join(file_name.as_str());
        let schema = self.schema.clone().unwrap_or_else(|| input.schema());
        let mut encoder = Encoder::new(
            self.format,
            Arc::clone(&schema),
            self.csv_header,
            self.csv_delimiter,
        )?;
        let upload = self.store.put_multipart(&location).await.map_err(|e| {
            DataFusionError::from(RiffleError::from(e).context(format!("writing {location}")))
        })?;
        let mut upload = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut rows = 0u64;
        let written: Result<()> = async {
            while let Some(batch) = input.next().await {
                rows +=
                    encode_into(&self.table, &schema, &mut encoder, &mut upload, &batch?).await?;
            }
            Ok(())
        }
        .await;
        if let Err(error) = written {
            let _ = upload.abort().await;
            return Err(error);
        }
        if rows == 0 && partition != 0 {
            // An empty part adds nothing; partition 0 always writes, so that an empty result
            // still leaves a readable file with the table's columns.
            upload.abort().await.map_err(to_df)?;
            return Ok(0);
        }
        let tail = encoder.finish().await?;
        upload.write(&tail);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((location, upload));
        Ok(rows)
    }

    async fn commit(&self) -> Result<()> {
        if self.mode == WriteMode::Overwrite {
            // Not atomic: a reader between the delete and the publish sees an empty table.
            self.delete_previous_files().await?;
        }
        let pending = self.take_pending();
        let results =
            futures::future::join_all(pending.into_iter().map(|(path, upload)| async move {
                upload.finish().await.map_err(|e| {
                    DataFusionError::from(
                        RiffleError::from(e).context(format!("publishing {path}")),
                    )
                })
            }))
            .await;
        for result in results {
            result?;
        }
        Ok(())
    }

    async fn abort(&self) -> Result<()> {
        let pending = self.take_pending();
        for (_, upload) in pending {
            upload.abort().await.map_err(to_df)?;
        }
        Ok(())
    }

    fn writes_staged_parts(&self) -> bool {
        true
    }

    fn overwrites(&self) -> bool {
        self.mode == WriteMode::Overwrite
    }

    async fn open_part(&self, name: &str, schema: SchemaRef) -> Result<Box<dyn PartWriter>> {
        let file = format!("part-{}-{name}{}", self.job_tag, self.format.extension());
        let target = self.directory.clone().join(file.as_str());
        let staged = self.staging().join(format!("{file}{IN_PROGRESS}"));
        let schema = self.schema.clone().unwrap_or(schema);
        let encoder = Encoder::new(
            self.format,
            Arc::clone(&schema),
            self.csv_header,
            self.csv_delimiter,
        )?;
        let upload = self.store.put_multipart(&staged).await.map_err(|e| {
            DataFusionError::from(RiffleError::from(e).context(format!("writing {staged}")))
        })?;
        Ok(Box::new(FilePartWriter {
            table: self.table.clone(),
            schema,
            encoder: Some(encoder),
            upload: Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
            staged,
            target,
            rows: 0,
        }))
    }

    async fn publish(&self, parts: &[StagedPart], last: bool) -> Result<()> {
        if last && self.mode == WriteMode::Overwrite {
            // Not atomic: a reader between the delete and the publish sees an empty table.
            let keep: HashSet<&str> = parts.iter().map(|part| part.target.as_str()).collect();
            self.delete_top_level_except(&keep).await?;
        }
        // Sequential: a rename is one metadata operation locally and one server-side copy on
        // a cloud store, and Send-ness of a buffered stream of borrowing futures trips
        // async_trait's bounds.
        for part in parts {
            self.publish_part(part).await?;
        }
        Ok(())
    }

    async fn discard_staged(&self, prefix: &str, keep: &[StagedPart]) -> Result<()> {
        let keep: HashSet<&str> = keep.iter().map(|part| part.staged.as_str()).collect();
        let name_prefix = format!("part-{}-{prefix}", self.job_tag);
        let staging = self.staging();
        let mut listing = self.store.list(Some(&staging));
        let mut garbage = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(to_df)?;
            let name = meta.location.filename().unwrap_or_default();
            if name.starts_with(&name_prefix) && !keep.contains(meta.location.as_ref()) {
                garbage.push(meta.location);
            }
        }
        for location in garbage {
            match self.store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(to_df(error)),
            }
        }
        Ok(())
    }
}

/// The folder of a table's directory where parts wait to be published. Readers skip it:
/// DataFusion's listing ignores subdirectories, pyarrow, Spark and Hive skip names that
/// start with `_`, and a staged part's name does not end in the format's extension.
const STAGING: &str = "_riffle_staging";

/// The suffix of a staged part's name (Flink's in-progress files).
const IN_PROGRESS: &str = ".inprogress";

impl FileSink {
    fn staging(&self) -> Path {
        self.directory.clone().join(STAGING)
    }

    /// Moves a staged part to its published name; a part already moved is done.
    async fn publish_part(&self, part: &StagedPart) -> Result<()> {
        let staged = Path::from(part.staged.as_str());
        let target = Path::from(part.target.as_str());
        match self.store.rename(&staged, &target).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => match self.store.head(&target).await {
                Ok(_) => Ok(()),
                Err(error) => Err(DataFusionError::from(RiffleError::internal(format!(
                    "publishing {target} into {}: its staged file {staged} is gone and it was \
                     never published ({error})",
                    self.table
                )))),
            },
            Err(error) => Err(DataFusionError::from(
                RiffleError::from(error).context(format!("publishing {target}")),
            )),
        }
    }

    /// Deletes the files directly in the directory (not the staging folder) that are not in
    /// `keep`: what an INSERT OVERWRITE replaces.
    async fn delete_top_level_except(&self, keep: &HashSet<&str>) -> Result<()> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.directory))
            .await
            .map_err(to_df)?;
        for meta in listing.objects {
            if !keep.contains(meta.location.as_ref()) {
                match self.store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(error) => return Err(to_df(error)),
                }
            }
        }
        Ok(())
    }
}

/// One staged part being written: encoded batches go to a multipart upload of the staging
/// object, completed when the part is closed at a barrier.
struct FilePartWriter {
    table: String,
    schema: SchemaRef,
    encoder: Option<Encoder>,
    upload: Option<WriteMultipart>,
    staged: Path,
    target: Path,
    rows: u64,
}

#[async_trait]
impl PartWriter for FilePartWriter {
    fn staged_part(&self) -> StagedPart {
        StagedPart {
            staged: self.staged.to_string(),
            target: self.target.to_string(),
            rows: self.rows,
        }
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let (Some(encoder), Some(upload)) = (&mut self.encoder, &mut self.upload) else {
            return Err(DataFusionError::Internal(format!(
                "part {} written after it was closed",
                self.staged
            )));
        };
        self.rows += encode_into(&self.table, &self.schema, encoder, upload, batch).await?;
        Ok(())
    }

    async fn close(mut self: Box<Self>) -> Result<StagedPart> {
        let (Some(encoder), Some(mut upload)) = (self.encoder.take(), self.upload.take()) else {
            return Err(DataFusionError::Internal(format!(
                "part {} closed twice",
                self.staged
            )));
        };
        let tail = encoder.finish().await?;
        upload.write(&tail);
        upload.finish().await.map_err(|e| {
            DataFusionError::from(RiffleError::from(e).context(format!("staging {}", self.staged)))
        })?;
        Ok(self.staged_part())
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(upload) = self.upload.take() {
            let _ = upload.abort().await;
        }
    }
}

impl Drop for FilePartWriter {
    /// A part dropped unfinished (its task aborted by a failure or a cancel) aborts its
    /// upload, so that no half-written upload is left behind.
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = upload.abort().await;
            });
        }
    }
}

/// Encodes `batch` with the table's declared columns (`schema`), handing each full part's
/// bytes to `upload`; returns the batch's rows.
async fn encode_into(
    table: &str,
    schema: &SchemaRef,
    encoder: &mut Encoder,
    upload: &mut WriteMultipart,
    batch: &RecordBatch,
) -> Result<u64> {
    let batch =
        RecordBatch::try_new(Arc::clone(schema), batch.columns().to_vec()).map_err(|e| {
            DataFusionError::from(RiffleError::user(format!(
                "cannot write a row of {table} with its declared columns: {e}"
            )))
        })?;
    encoder.write(&batch).await?;
    if encoder.buffered() >= PART_SIZE {
        upload
            .wait_for_capacity(UPLOAD_CONCURRENCY)
            .await
            .map_err(to_df)?;
        upload.write(&encoder.take_bytes());
    }
    Ok(batch.num_rows() as u64)
}

fn to_df(error: object_store::Error) -> DataFusionError {
    DataFusionError::from(RiffleError::from(error))
}
