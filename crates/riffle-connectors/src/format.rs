//! The file formats of the filesystem connector.

use std::sync::Arc;

use datafusion::catalog::Session;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use riffle_common::{Result, RiffleError};
use riffle_plan::TableDefinition;

/// A file format Riffle reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormatKind {
    /// Apache Parquet.
    Parquet,
    /// Comma-separated values (header and delimiter configurable).
    Csv,
    /// Newline-delimited JSON, one object per line.
    Json,
}

impl FileFormatKind {
    /// Parses the `'format'` option of a table.
    pub fn from_table(definition: &TableDefinition) -> Result<Self> {
        match definition.required("format")?.to_ascii_lowercase().as_str() {
            "parquet" => Ok(Self::Parquet),
            "csv" => Ok(Self::Csv),
            "json" | "ndjson" | "jsonl" => Ok(Self::Json),
            other => Err(RiffleError::user(format!(
                "table {}: unknown format '{other}'",
                definition.name
            ))
            .with_hint("use 'parquet', 'csv' or 'json'")),
        }
    }

    /// The file extension, with its dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Parquet => ".parquet",
            Self::Csv => ".csv",
            Self::Json => ".json",
        }
    }

    /// Whether the first line of a CSV file names the columns (`'csv.header'`, default true).
    pub fn csv_header(definition: &TableDefinition) -> Result<bool> {
        bool_option(definition, "csv.header", true)
    }

    /// The CSV field delimiter (`'csv.delimiter'`, default `,`).
    pub fn csv_delimiter(definition: &TableDefinition) -> Result<u8> {
        match definition.options.get("csv.delimiter") {
            None => Ok(b','),
            Some(value) if value.len() == 1 => Ok(value.as_bytes()[0]),
            Some(value) => Err(RiffleError::user(format!(
                "table {}: 'csv.delimiter' must be one character, not '{value}'",
                definition.name
            ))),
        }
    }

    /// DataFusion's reader for this format, with the session's and the table's options.
    pub fn reader(
        self,
        definition: &TableDefinition,
        session: &dyn Session,
    ) -> Result<Arc<dyn FileFormat>> {
        let options = session.table_options();
        Ok(match self {
            Self::Parquet => {
                Arc::new(ParquetFormat::default().with_options(options.parquet.clone()))
            }
            Self::Csv => Arc::new(
                CsvFormat::default()
                    .with_options(options.csv.clone())
                    .with_has_header(Self::csv_header(definition)?)
                    .with_delimiter(Self::csv_delimiter(definition)?),
            ),
            Self::Json => Arc::new(JsonFormat::default().with_options(options.json.clone())),
        })
    }
}

/// A boolean option, or an error naming the table, the option and the value.
pub(crate) fn bool_option(definition: &TableDefinition, key: &str, default: bool) -> Result<bool> {
    match definition.options.get(key).map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(value) if value == "true" => Ok(true),
        Some(value) if value == "false" => Ok(false),
        Some(value) => Err(RiffleError::user(format!(
            "table {}: option '{key}' must be 'true' or 'false', not '{value}'",
            definition.name
        ))),
    }
}
