//! Files as rows: listing any object store, and fetching bytes only when they are needed.
//!
//! ```sql
//! SELECT file, size, last_modified FROM files('s3://bucket/images/**/*.jpg');
//! SELECT image_decode(file_read(file)) FROM files('photos/*.png');
//! SELECT url_download(url, on_error => 'null') FROM links;
//!
//! -- a store that needs options (an endpoint, credentials) is declared once as a table:
//! CREATE TABLE photos WITH ('connector' = 'files', 'path' = 's3://bucket/images/**/*.jpg',
//!                           's3.endpoint' = 'http://127.0.0.1:9000', 's3.allow-http' = 'true');
//! ```
//!
//! `files(location)` and the `files` connector list the location into rows of `(file FILE,
//! size, last_modified)`, where `file` is a reference (the URI and size) and not the bytes:
//! large payloads stay in the store until an operator asks for them. The listing is lazy (a
//! stream of store pages, never the whole bucket in memory) and parallel (see [`listing`]).
//! `files()` reaches stores that an earlier table registered, or builds one from the
//! environment (`AWS_*` and so on).
//!
//! `file_read(file)` and `url_download(url)` ([`fetch`]) are asynchronous functions: DataFusion
//! plans them into their own operator, and each evaluates a batch with many requests in
//! flight at once. HTTP(S) requests reach public addresses only unless the options
//! `'url.allow-private'` or `'url.allowed-hosts'` allow more ([`UrlPolicy`]).

mod fetch;
mod http;
mod listing;
mod url_policy;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionState;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{Expr, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectStore;
use riffle_common::{Result, RiffleError};
use riffle_plan::{Sink, TableDefinition, TableFactory, WriteMode};
use url::Url;

pub use fetch::FetchFunction;
pub use listing::FilesListExec;
pub(crate) use listing::FilesListNode;
pub use url_policy::{UrlPolicy, non_public};

use crate::object_stores::{register_object_store, registered_store};
use listing::FilesLocation;

/// The columns `files()` yields: the reference, its size in bytes and when it last changed.
pub fn files_schema() -> SchemaRef {
    let file = riffle_types::media::media_field("file", riffle_types::media::FILE, false)
        .expect("FILE is a media type");
    Arc::new(Schema::new(vec![
        file,
        Field::new("size", DataType::UInt64, false),
        Field::new(
            "last_modified",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]))
}

/// The functions that read bytes, `file_read` and `url_download` and their `try_` twins,
/// reaching the stores `runtime` holds and the HTTP(S) servers `policy` allows.
pub fn functions(runtime: &Arc<RuntimeEnv>, policy: UrlPolicy) -> Vec<ScalarUDF> {
    FetchFunction::all(runtime, policy)
}

/// `files('location')`: the files under a location, as a table.
#[derive(Debug, Default)]
pub struct FilesFunction;

impl TableFunctionImpl for FilesFunction {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let location = match args.exprs() {
            [Expr::Literal(ScalarValue::Utf8(Some(location)), _)]
            | [Expr::Literal(ScalarValue::Utf8View(Some(location)), _)]
            | [Expr::Literal(ScalarValue::LargeUtf8(Some(location)), _)] => location,
            _ => {
                return Err(DataFusionError::Plan(
                    "files takes one argument, a location such as 's3://bucket/images/**/*.jpg'"
                        .into(),
                ));
            }
        };
        let location = FilesLocation::parse(location).map_err(DataFusionError::from)?;
        Ok(Arc::new(FilesTable { location }))
    }
}

/// Serves `'connector' = 'files'`: `files()` over a location whose store needs options.
#[derive(Debug, Default)]
pub struct FilesFactory;

#[async_trait]
impl TableFactory for FilesFactory {
    fn connector(&self) -> &str {
        "files"
    }

    async fn create_source(
        &self,
        definition: &TableDefinition,
        session: &SessionState,
    ) -> Result<Arc<dyn TableProvider>> {
        let location = FilesLocation::parse(definition.required("path")?)
            .map_err(|e| RiffleError::user(format!("table {}: {e}", definition.name)))?;
        register_object_store(session.runtime_env(), &location.store, &definition.options)?;
        let declared = &definition.schema;
        if !declared.fields().is_empty() && declared.fields() != files_schema().fields() {
            return Err(RiffleError::user(format!(
                "table {}: the files connector has fixed columns (file FILE, size BIGINT \
                 UNSIGNED, last_modified TIMESTAMP)",
                definition.name
            ))
            .with_hint("declare the table without columns: CREATE TABLE t WITH (...)"));
        }
        Ok(Arc::new(FilesTable { location }))
    }

    fn create_sink(
        &self,
        definition: &TableDefinition,
        _session: &SessionState,
        _mode: WriteMode,
    ) -> Result<Arc<dyn Sink>> {
        Err(RiffleError::user(format!(
            "cannot insert into {}: the files connector lists files, it does not write them",
            definition.name
        ))
        .with_hint("write through a 'filesystem' table"))
    }
}

/// The store `runtime` holds for `url`, or one built from the environment.
pub(crate) fn store_for(runtime: &RuntimeEnv, url: &Url) -> Result<Arc<dyn ObjectStore>> {
    if let Ok(store) = registered_store(runtime, url) {
        return Ok(store);
    }
    register_object_store(runtime, url, &Default::default())?;
    registered_store(runtime, url)
}

#[derive(Debug)]
struct FilesTable {
    location: FilesLocation,
}

#[async_trait]
impl TableProvider for FilesTable {
    fn schema(&self) -> SchemaRef {
        files_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let store = store_for(state.runtime_env(), &self.location.store)?;
        // A mistyped location should be an error, not an empty result.
        self.location.check_exists(store.as_ref()).await?;
        Ok(Arc::new(FilesListExec::new(
            self.location.clone(),
            projection.cloned(),
            limit,
            state.config().target_partitions().max(1),
            state.config().batch_size(),
        )?))
    }
}
