//! Riffle's connectors: where rows come from and where they go.
//!
//! Each connector is a [`TableFactory`](riffle_plan::TableFactory) that `CREATE TABLE ...
//! WITH ('connector' = ...)` selects: [`FileSystemFactory`] (`filesystem`: Parquet, CSV and
//! JSON on local paths and object stores) and [`DataGenFactory`] (`datagen`: generated rows,
//! bounded or not). In-memory tables need no connector: the `riffle` crate registers Arrow
//! batches directly. [`default_factories`] lists them all.

#![warn(missing_docs)]

mod codec;
mod datagen;
mod file_sink;
mod filesystem;
mod format;
mod object_stores;
mod parquet_encoder;

use std::sync::Arc;

pub use codec::ConnectorsCodec;
pub use datagen::{DataGenExec, DataGenFactory};
pub use file_sink::FileSink;
pub use filesystem::FileSystemFactory;
pub use format::FileFormatKind;
pub use object_stores::{parse_location, register_object_store, registered_store};
use riffle_plan::TableFactory;

/// Every connector this crate provides.
pub fn default_factories() -> Vec<Arc<dyn TableFactory>> {
    vec![Arc::new(FileSystemFactory), Arc::new(DataGenFactory)]
}
