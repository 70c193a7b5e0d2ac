//! Listing a location into rows of `(file, size, last_modified)`, lazily and in parallel.
//!
//! A location is a folder (`s3://bucket/images/`), one object, or a glob
//! (`s3://bucket/images/**/*.jpg`: `*` stays within one folder, `**` crosses folders). The
//! part before the first glob character is listed; the glob filters what comes back.
//!
//! With one partition the listing is a single stream of store pages. With `n` partitions,
//! each lists the top folder one level deep, keeps every `n`-th object and every `n`-th
//! subfolder, and streams its subfolders' trees: the tree's folders are listed by `n`
//! requests in flight rather than one. Nothing is collected beyond one level of one folder.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryArray, RecordBatch, StringArray, StructArray, TimestampMicrosecondArray,
    UInt64Array,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use riffle_common::RiffleError;
use url::Url;

use super::{files_schema, store_for};
use crate::codec::ScanShape;
use crate::object_stores::parse_location;

/// A location to list, split into the store, the folder to list and the glob to match.
#[derive(Debug, Clone)]
pub(crate) struct FilesLocation {
    /// As the user wrote it.
    pub(crate) text: String,
    /// The store's root URL (`s3://bucket`, `file:///`).
    pub(crate) store: Url,
    /// The folder (or object) to list, inside the store.
    prefix: Path,
    /// The glob a listed path must match, over the whole path inside the store.
    pattern: Option<glob::Pattern>,
    /// Whether matches can be below the top folder (no glob, or a glob with `/` or `**`).
    descend: bool,
}

impl FilesLocation {
    pub(crate) fn parse(text: &str) -> riffle_common::Result<Self> {
        let invalid = |why: String| RiffleError::user(format!("files('{text}'): {why}"));
        let (folder, glob) = match text.find(['*', '?', '[']) {
            Some(start) => {
                // A glob without a folder (`*.jpg`) is in the working directory.
                match text[..start].rfind('/') {
                    Some(slash) => (&text[..=slash], Some(&text[slash + 1..])),
                    None => ("./", Some(text)),
                }
            }
            None => (text, None),
        };
        let url = parse_location(folder)?;
        let prefix =
            Path::from_url_path(url.path()).map_err(|e| invalid(format!("invalid path: {e}")))?;
        let mut store = url.clone();
        store.set_path("");
        store.set_query(None);
        store.set_fragment(None);
        let pattern = glob
            .map(|glob| {
                let full = match prefix.as_ref() {
                    "" => glob.to_string(),
                    prefix => format!("{prefix}/{glob}"),
                };
                glob::Pattern::new(&full).map_err(|e| invalid(format!("invalid glob: {e}")))
            })
            .transpose()?;
        let descend = glob.is_none_or(|glob| glob.contains('/') || glob.contains("**"));
        Ok(Self {
            text: text.to_string(),
            store,
            prefix,
            pattern,
            descend,
        })
    }

    fn matches(&self, path: &Path) -> bool {
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        self.pattern
            .as_ref()
            .is_none_or(|pattern| pattern.matches_with(path.as_ref(), options))
    }

    /// The URI of an object of this store.
    fn uri(&self, path: &Path) -> String {
        let root = self.store.as_str();
        let root = root.strip_suffix('/').unwrap_or(root);
        format!("{root}/{path}")
    }

    /// Fails if nothing at all is at the location (a mistyped bucket or folder).
    pub(crate) async fn check_exists(&self, store: &dyn ObjectStore) -> Result<()> {
        if self.pattern.is_none() && store.head(&self.prefix).await.is_ok() {
            return Ok(());
        }
        match store.list(Some(&self.prefix)).next().await {
            Some(Ok(_)) => Ok(()),
            Some(Err(error)) => Err(RiffleError::from(error)
                .context(format!("listing files('{}')", self.text))
                .into()),
            None => Err(RiffleError::user(format!(
                "files('{}'): nothing found at {}",
                self.text,
                self.uri(&self.prefix)
            ))
            .with_hint("check the bucket and folder; a glob such as '**/*.jpg' matches below it")
            .into()),
        }
    }

    /// The objects partition `partition` of `partitions` lists, in store order.
    fn list(
        &self,
        store: Arc<dyn ObjectStore>,
        partition: usize,
        partitions: usize,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let prefix = self.prefix.clone();
        if self.pattern.is_none() {
            // One object named exactly: partition 0 yields it.
            let head_store = Arc::clone(&store);
            let single = async move { head_store.head(&prefix).await.ok() };
            let this = self.clone();
            return stream::once(single)
                .flat_map(move |single| match single {
                    Some(meta) if partition == 0 => stream::iter([Ok(meta)]).boxed(),
                    Some(_) => stream::empty().boxed(),
                    None => this.list_tree(Arc::clone(&store), partition, partitions),
                })
                .boxed();
        }
        self.list_tree(store, partition, partitions)
    }

    fn list_tree(
        &self,
        store: Arc<dyn ObjectStore>,
        partition: usize,
        partitions: usize,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let prefix = self.prefix.clone();
        if partitions == 1 {
            return if self.descend {
                store.list(Some(&prefix))
            } else {
                top_level(store, prefix, 0, 1, false)
            };
        }
        top_level(store, prefix, partition, partitions, self.descend)
    }
}

/// This partition's share of the top folder's objects, then of its subfolders' trees.
fn top_level(
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    partition: usize,
    partitions: usize,
    descend: bool,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    let mine = move |index: &usize| *index % partitions == partition;
    stream::once(async move {
        let listed = match store.list_with_delimiter(Some(&prefix)).await {
            Ok(listed) => listed,
            Err(error) => return stream::iter([Err(error)]).boxed(),
        };
        let objects = listed
            .objects
            .into_iter()
            .enumerate()
            .filter(move |(index, _)| mine(index))
            .map(|(_, meta)| Ok(meta));
        let folders: Vec<Path> = if descend {
            listed
                .common_prefixes
                .into_iter()
                .enumerate()
                .filter(|(index, _)| mine(index))
                .map(|(_, folder)| folder)
                .collect()
        } else {
            Vec::new()
        };
        stream::iter(objects)
            .chain(stream::iter(folders).flat_map(move |folder| store.list(Some(&folder))))
            .boxed()
    })
    .flatten()
    .boxed()
}

/// Lists a location on `partitions` partitions (see the module docs).
#[derive(Debug)]
pub struct FilesListExec {
    location: FilesLocation,
    projection: Option<Vec<usize>>,
    limit: Option<usize>,
    batch_size: usize,
    properties: Arc<PlanProperties>,
}

impl FilesListExec {
    pub(crate) fn new(
        location: FilesLocation,
        projection: Option<Vec<usize>>,
        limit: Option<usize>,
        partitions: usize,
        batch_size: usize,
    ) -> Result<Self> {
        let schema = match &projection {
            Some(columns) => Arc::new(files_schema().project(columns)?),
            None => files_schema(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            location,
            projection,
            limit,
            batch_size: batch_size.max(1),
            properties: Arc::new(properties),
        })
    }

    pub(crate) fn to_node(&self) -> FilesListNode {
        FilesListNode {
            location: self.location.text.clone(),
            shape: Some(ScanShape::new(
                self.projection.as_deref(),
                self.limit,
                self.properties.partitioning.partition_count(),
                self.batch_size,
            )),
        }
    }

    pub(crate) fn from_node(node: FilesListNode) -> Result<Self> {
        let location = FilesLocation::parse(&node.location)?;
        let shape = node.shape.unwrap_or_default();
        Self::new(
            location,
            shape.projection(),
            shape.row_limit(),
            shape.partitions(),
            shape.batch_size(),
        )
    }
}

impl DisplayAs for FilesListExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FilesListExec: location={}", self.location.text)?;
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for FilesListExec {
    riffle_plan::leaf_plan_node!("FilesListExec");

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let store = store_for(context.runtime_env().as_ref(), &self.location.store)?;
        let partitions = self.properties.partitioning.partition_count();
        let location = self.location.clone();
        let text = location.text.clone();
        let schema = self.schema();
        let projection = self.projection.clone();
        let matching = location
            .list(store, partition, partitions)
            .map_err(move |error| {
                DataFusionError::from(
                    RiffleError::from(error).context(format!("listing files('{text}')")),
                )
            })
            .try_filter({
                let location = location.clone();
                move |meta| std::future::ready(location.matches(&meta.location))
            });
        let limited = match self.limit {
            Some(limit) => matching.take(limit).boxed(),
            None => matching.boxed(),
        };
        let batches = limited
            .try_chunks(self.batch_size)
            .map_err(|error| error.1)
            .and_then(move |metas| {
                std::future::ready(to_batch(&location, &metas, projection.as_deref()))
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

/// One batch of listed objects.
fn to_batch(
    location: &FilesLocation,
    metas: &[ObjectMeta],
    projection: Option<&[usize]>,
) -> Result<RecordBatch> {
    let schema = files_schema();
    let DataType::Struct(file_fields) = schema.field(0).data_type() else {
        unreachable!("FILE is a struct");
    };
    let sizes = UInt64Array::from_iter_values(metas.iter().map(|m| m.size));
    let files = StructArray::try_new(
        file_fields.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                metas.iter().map(|m| location.uri(&m.location)),
            )) as ArrayRef,
            Arc::new(UInt64Array::new_null(metas.len())),
            Arc::new(sizes.clone()),
            Arc::new(BinaryArray::new_null(metas.len())),
        ],
        None,
    )?;
    let modified = TimestampMicrosecondArray::from_iter_values(
        metas.iter().map(|m| m.last_modified.timestamp_micros()),
    )
    .with_timezone("UTC");
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(files), Arc::new(sizes), Arc::new(modified)],
    )?;
    match projection {
        Some(columns) => Ok(batch.project(columns)?),
        None => Ok(batch),
    }
}

/// The wire form of a [`FilesListExec`].
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct FilesListNode {
    #[prost(string, tag = "1")]
    location: String,
    #[prost(message, optional, tag = "2")]
    shape: Option<ScanShape>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_split_into_folder_and_pattern() {
        let location = FilesLocation::parse("s3://bucket/images/**/*.jpg").unwrap();
        assert_eq!(location.store.as_str(), "s3://bucket");
        assert_eq!(location.prefix.as_ref(), "images");
        assert!(location.descend);
        assert!(location.matches(&Path::from("images/a/b/c.jpg")));
        assert!(location.matches(&Path::from("images/c.jpg")));
        assert!(!location.matches(&Path::from("images/c.png")));
        assert_eq!(
            location.uri(&Path::from("images/c.jpg")),
            "s3://bucket/images/c.jpg"
        );

        let flat = FilesLocation::parse("s3://bucket/images/*.jpg").unwrap();
        assert!(!flat.descend);
        assert!(flat.matches(&Path::from("images/c.jpg")));
        assert!(!flat.matches(&Path::from("images/a/c.jpg")));

        let local = FilesLocation::parse("/tmp/pictures/").unwrap();
        assert_eq!(local.store.as_str(), "file:///");
        assert_eq!(local.prefix.as_ref(), "tmp/pictures");
        assert_eq!(
            local.uri(&Path::from("tmp/pictures/a.png")),
            "file:///tmp/pictures/a.png"
        );
        let here = FilesLocation::parse("*.jpg").unwrap();
        assert!(here.matches(&Path::from(format!("{}/a.jpg", here.prefix))));
    }
}
