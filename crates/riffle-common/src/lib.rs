//! Riffle's shared vocabulary: the error type every crate returns ([`RiffleError`]) and the
//! job configuration ([`JobConfig`], with the [`Options`] a user sets by key).
//!
//! Every error carries a [`ErrorKind`] (whose fault it was) and whether retrying can help,
//! so that a CLI can print one clear message, the Python front can map it to one exception
//! class, and the runtime can decide whether a failed task is worth restarting.

#![warn(missing_docs)]

mod config;
mod error;
pub mod options;

pub use config::JobConfig;
pub use error::{ErrorKind, PrintedStoreFailure, Result, RiffleError, printed_store_failure};
pub use options::Options;
