//! The `filesystem` connector: Parquet, CSV and JSON files on any object store.
//!
//! ```sql
//! CREATE TABLE events (id BIGINT, name VARCHAR)
//! WITH ('connector' = 'filesystem', 'path' = 's3://bucket/events/', 'format' = 'parquet')
//! ```
//!
//! `path` is a directory (every file with the format's extension under it), one file (a path
//! ending in the format's extension), or a glob (`data/**/*.csv`). Reading goes through
//! DataFusion's file scans, so large inputs are split across parallel readers (Parquet by
//! byte ranges aligned to row groups) and projections and predicates are pushed into the
//! Parquet reader (row-group pruning by statistics). Writing goes through [`FileSink`].
//!
//! `'ignore-corrupt' = 'true'` skips files that cannot be read (a truncated Parquet file, a
//! CSV that does not parse) instead of failing the job, and reports each one with its
//! reason ([`riffle_plan::SkippedFiles`]; the CLI prints them as warnings). Declare the
//! columns of such a table: inferring them reads the files, corrupt ones included.
//!
//! `'scan.parallelism'` sets how many readers scan the table (at most; small inputs may get
//! fewer), independently of the job's parallelism; `'sink.parallelism'` sets how many
//! writers an `INSERT` uses (one file each).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use riffle_common::{Result, RiffleError};
use riffle_plan::{
    FixedParallelismExec, Sink, SkipCorruptFilesExec, TableDefinition, TableFactory, WriteMode,
};

use crate::file_sink::FileSink;
use crate::format::FileFormatKind;
use crate::object_stores::{parse_location, register_object_store, registered_store};

/// Serves `'connector' = 'filesystem'`.
#[derive(Debug, Default)]
pub struct FileSystemFactory;

/// Where a table's files are, as DataFusion lists them.
struct Location {
    url: ListingTableUrl,
    /// The extension files must have; empty for a single file or a glob.
    extension: String,
}

fn locate(definition: &TableDefinition, format: FileFormatKind) -> Result<Location> {
    let path = definition.required("path")?;
    let has_glob = path.contains(['*', '?', '[']);
    let is_file = !has_glob && path.ends_with(format.extension());
    let (listed, extension) = if has_glob || is_file {
        (path.to_string(), String::new())
    } else if path.ends_with('/') {
        (path.to_string(), format.extension().to_string())
    } else {
        (format!("{path}/"), format.extension().to_string())
    };
    let invalid = |e: datafusion::error::DataFusionError| {
        RiffleError::user(format!(
            "table {}: invalid path '{path}': {e}",
            definition.name
        ))
    };
    let url = match split_url_glob(&listed) {
        // DataFusion expands globs in local paths itself, but not in URLs.
        Some((prefix, glob)) => ListingTableUrl::parse(prefix)
            .and_then(|url| url.with_glob(glob))
            .map_err(invalid)?,
        None => ListingTableUrl::parse(&listed).map_err(invalid)?,
    };
    Ok(Location { url, extension })
}

/// Splits `scheme://bucket/dir/*.csv` into the folder to list (`scheme://bucket/dir/`) and
/// the pattern its entries must match (`*.csv`); `None` for local paths and plain URLs.
fn split_url_glob(path: &str) -> Option<(&str, &str)> {
    let scheme_end = path.find("://")? + 3;
    let glob_start = path[scheme_end..].find(['*', '?', '['])? + scheme_end;
    let folder_end = path[..glob_start].rfind('/')? + 1;
    (folder_end > scheme_end).then(|| path.split_at(folder_end))
}

#[async_trait]
impl TableFactory for FileSystemFactory {
    fn connector(&self) -> &str {
        "filesystem"
    }

    async fn create_source(
        &self,
        definition: &TableDefinition,
        session: &SessionState,
    ) -> Result<Arc<dyn TableProvider>> {
        let format = FileFormatKind::from_table(definition)?;
        let location = locate(definition, format)?;
        let path = definition.required("path")?.to_string();
        // Checked here so that a bad value fails at CREATE TABLE, not at the first INSERT.
        definition.parallelism("sink.parallelism")?;
        let ignore_corrupt = match definition.options.get("ignore-corrupt").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(RiffleError::user(format!(
                    "table {}: 'ignore-corrupt' must be 'true' or 'false', not '{other}'",
                    definition.name
                )));
            }
        };

        register_object_store(
            session.runtime_env(),
            location.url.as_ref(),
            &definition.options,
        )?;
        let options = ListingOptions::new(format.reader(definition, session)?)
            .with_file_extension(location.extension.clone());
        let schema = if definition.schema.fields().is_empty() {
            options
                .infer_schema(session, &location.url)
                .await
                .map_err(|e| {
                    RiffleError::from(e).context(format!(
                        "table {}: cannot infer the columns of '{path}'",
                        definition.name
                    ))
                })?
        } else {
            Arc::clone(&definition.schema)
        };
        let config = ListingTableConfig::new(location.url.clone())
            .with_listing_options(options)
            .with_schema(Arc::clone(&schema));
        let inner = ListingTable::try_new(config)?;
        Ok(Arc::new(FileTable {
            scan_parallelism: definition.parallelism("scan.parallelism")?,
            ignore_corrupt,
            name: definition.name.clone(),
            path,
            location,
            schema,
            inner,
        }))
    }

    fn create_sink(
        &self,
        definition: &TableDefinition,
        session: &SessionState,
        mode: WriteMode,
    ) -> Result<Arc<dyn Sink>> {
        let format = FileFormatKind::from_table(definition)?;
        let path = definition.required("path")?;
        if path.contains(['*', '?', '[']) {
            return Err(RiffleError::user(format!(
                "cannot insert into {}: its path '{path}' is a glob",
                definition.name
            ))
            .with_hint("insert into a table whose path is a directory"));
        }
        let url = parse_location(path)?;
        register_object_store(session.runtime_env(), &url, &definition.options)?;
        let store = registered_store(session.runtime_env(), &url)?;
        let sink = FileSink::new(
            definition.name.clone(),
            store,
            &url,
            format,
            FileFormatKind::csv_header(definition)?,
            FileFormatKind::csv_delimiter(definition)?,
        )?
        .with_mode(mode);
        // A table whose columns were inferred writes the query's columns.
        Ok(Arc::new(if definition.schema.fields().is_empty() {
            sink
        } else {
            sink.with_schema(Arc::clone(&definition.schema))
        }))
    }
}

/// A listing table that fails clearly when its path matches no file.
#[derive(Debug)]
struct FileTable {
    name: String,
    scan_parallelism: Option<usize>,
    /// Skip (and report) files that cannot be read, rather than fail.
    ignore_corrupt: bool,
    path: String,
    location: Location,
    schema: SchemaRef,
    inner: ListingTable,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.url)
    }
}

#[async_trait]
impl TableProvider for FileTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let scan = self
            .inner
            .scan(state, projection, filters, limit)
            .await
            .map_err(|e| {
                RiffleError::from(e)
                    .context(format!("table {}: listing '{}'", self.name, self.path))
            })?;
        // The listing table plans an empty scan when the path matches no file; a table with no
        // files is almost always a wrong path, so say so instead of returning no rows.
        if scan.is::<EmptyExec>() {
            return Err(RiffleError::user(format!(
                "table {}: no files found at '{}'",
                self.name, self.path
            ))
            .with_hint(format!(
                "check the path; a directory is read for files ending in '{}'",
                if self.location.extension.is_empty() {
                    "(any)"
                } else {
                    &self.location.extension
                }
            ))
            .into());
        }
        let scan: Arc<dyn ExecutionPlan> = match self.scan_parallelism {
            Some(readers) => Arc::new(FixedParallelismExec::new(
                scan,
                readers,
                state.config_options(),
            )?),
            None => scan,
        };
        Ok(if self.ignore_corrupt {
            Arc::new(SkipCorruptFilesExec::new(scan))
        } else {
            scan
        })
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }
}
