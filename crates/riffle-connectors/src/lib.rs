//! Riffle's connectors: where rows come from and where they go.
//!
//! Each connector is a [`TableFactory`] that `CREATE TABLE ...
//! WITH ('connector' = ...)` selects: [`FileSystemFactory`] (`filesystem`: Parquet, CSV and
//! JSON on local paths and object stores), [`DataGenFactory`] (`datagen`: generated rows,
//! bounded or not) and [`FilesFactory`] (`files`: the files under a location, as references,
//! the same as the `files()` table function). In-memory tables need no connector: the `riffle` crate registers Arrow
//! batches directly. [`default_factories`] lists them all.

#![warn(missing_docs)]

mod codec;
mod datagen;
pub mod faulty_store;
mod file_sink;
mod files;
mod filesystem;
mod format;
mod object_stores;
mod parquet_encoder;

use std::sync::Arc;

use datafusion::execution::context::SessionContext;

pub use codec::ConnectorsCodec;
pub use datagen::{DataGenExec, DataGenFactory};
pub use file_sink::FileSink;
pub use files::{
    FetchFunction, FilesFactory, FilesFunction, FilesListExec, UrlPolicy, files_schema, non_public,
};
pub use filesystem::FileSystemFactory;
pub use format::FileFormatKind;
pub use object_stores::{parse_location, register_object_store, registered_store};
use riffle_common::{Options, Result};
use riffle_plan::TableFactory;

/// Every connector this crate provides.
pub fn default_factories() -> Vec<Arc<dyn TableFactory>> {
    vec![
        Arc::new(FileSystemFactory),
        Arc::new(DataGenFactory),
        Arc::new(FilesFactory),
    ]
}

/// Registers the functions that reach object stores and the network: the table function
/// `files(location)` and the byte-fetching `file_read` and `url_download`, whose HTTP(S)
/// requests follow the `url.*` options of `options`. Called again when those options
/// change: the new functions replace the old ones.
pub fn register_functions(context: &SessionContext, options: &Options) -> Result<()> {
    let policy = UrlPolicy::from_options(options)?;
    context.register_udtf("files", Arc::new(FilesFunction));
    for function in files::functions(&context.runtime_env(), policy) {
        context.register_udf(function);
    }
    Ok(())
}
