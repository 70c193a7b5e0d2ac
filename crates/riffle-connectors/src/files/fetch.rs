//! `file_read(file [, on_error])` and `url_download(url [, on_error])`: bytes from object
//! stores and HTTP(S) servers.
//!
//! Both are asynchronous UDFs, which DataFusion plans into their own operator
//! (`AsyncFuncExec`), so that waiting for the network never blocks a thread that computes.
//! Each evaluates a batch with up to [`CONCURRENCY`] requests in flight and keeps the rows
//! in order.
//!
//! Transient failures are retried with exponential backoff: object stores through their
//! own retry settings (`'s3.max-retries'`, `'s3.retry-timeout'`, see
//! [`crate::object_stores`]), HTTP requests in [`super::http`] (connection errors,
//! timeouts, 429 and 5xx, up to [`HTTP_ATTEMPTS`](super::http::HTTP_ATTEMPTS) attempts). A row that still fails stops
//! the job with an error naming the function, the URI and the cause, or becomes NULL with
//! `on_error => 'null'`.
//!
//! HTTP requests reach public addresses only, unless the session's [`UrlPolicy`] (from the
//! options `'url.allow-private'` and `'url.allowed-hosts'`) opens more. The policy travels
//! inside the function value: the session registers the functions built with the policy of
//! its options and registers them again when a `url.*` option changes. That keeps the
//! policy in Rust values that nothing in a query can reach (a row, a function argument or
//! DataFusion's own `SET datafusion.*` cannot loosen it), fixes it for the whole of a job
//! once planned, and a job graph decoded in another process looks the functions up by
//! name there, so it runs under the receiving session's policy.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, StringArray, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, Fields, UInt64Type};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use riffle_common::RiffleError;
use riffle_functions::row_errors::{OnError, on_error, settle};

use super::http::HttpFetcher;
use super::store_for;
use super::url_policy::UrlPolicy;
use crate::object_stores::parse_location;

/// Requests one task keeps in flight.
pub const CONCURRENCY: usize = 32;

/// What to fetch for one row: a URI and an optional byte range.
struct Request {
    uri: String,
    range: Option<(u64, Option<u64>)>,
}

/// `file_read(file)` (the bytes a `FILE` reference or a URI string points at),
/// `url_download(url)` (the bytes at an `http(s)://` URL, or any URI `file_read` takes), and
/// their `try_` twins, which return `{value, error}` instead of failing.
#[derive(Debug)]
pub struct FetchFunction {
    name: &'static str,
    /// Whether the first argument may be a `FILE` (`file_read`) or only a string.
    files: bool,
    /// Whether failures go into an `error` field (the `try_` twins).
    capture: bool,
    runtime: Arc<RuntimeEnv>,
    /// HTTP(S) requests, under the session's address policy.
    http: Arc<HttpFetcher>,
    signature: Signature,
}

impl FetchFunction {
    /// `file_read`, `url_download`, `try_file_read` and `try_url_download`, reading from
    /// the stores `runtime` holds (or builds from the environment) and from the HTTP(S)
    /// servers `policy` lets them reach.
    pub fn all(runtime: &Arc<RuntimeEnv>, policy: UrlPolicy) -> Vec<ScalarUDF> {
        let http = Arc::new(HttpFetcher::new(policy));
        [
            ("file_read", true, false),
            ("url_download", false, false),
            ("try_file_read", true, true),
            ("try_url_download", false, true),
        ]
        .into_iter()
        .map(|(name, files, capture)| {
            AsyncScalarUDF::new(Arc::new(Self {
                name,
                files,
                capture,
                runtime: Arc::clone(runtime),
                http: Arc::clone(&http),
                signature: Signature::one_of(
                    vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                    Volatility::Volatile,
                ),
            }))
            .into_scalar_udf()
        })
        .collect()
    }

    fn requests(
        &self,
        data_type: &DataType,
        input: Option<&ArrayRef>,
    ) -> Result<Vec<Option<Request>>> {
        if self.files {
            file_requests(data_type, input)
        } else {
            url_requests(self.name, data_type, input)
        }
    }
}

impl PartialEq for FetchFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && Arc::ptr_eq(&self.runtime, &other.runtime)
            && Arc::ptr_eq(&self.http, &other.http)
    }
}

impl Eq for FetchFunction {}

impl std::hash::Hash for FetchFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for FetchFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.requests(&arg_types[0], None)?;
        Ok(if self.capture {
            DataType::Struct(try_fields())
        } else {
            DataType::Binary
        })
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Err(DataFusionError::Internal(format!(
            "{} is asynchronous and runs in its own operator",
            self.name
        )))
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for FetchFunction {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let policy = if self.capture {
            OnError::Null
        } else {
            on_error(self.name, args.args.get(1))?
        };
        let input = args.args[0].clone().into_array(args.number_rows)?;
        let requests = self.requests(input.data_type(), Some(&input))?;
        let results = fetch_all(&self.runtime, &self.http, requests).await;
        let reasons: Vec<Option<String>> =
            results.iter().map(|r| r.as_ref().err().cloned()).collect();
        let values = binary_array(&settle(self.name, policy, results)?);
        if !self.capture {
            return Ok(ColumnarValue::Array(values));
        }
        Ok(ColumnarValue::Array(Arc::new(StructArray::try_new(
            try_fields(),
            vec![values, Arc::new(StringArray::from(reasons))],
            None,
        )?)))
    }
}

/// The fields of a `try_` twin's result: the bytes and the reason they are missing.
fn try_fields() -> Fields {
    Fields::from(vec![
        Field::new("value", DataType::Binary, true),
        Field::new("error", DataType::Utf8, true),
    ])
}

/// Requests from a `FILE` column (or URI strings); with no array, only checks the type.
fn file_requests(data_type: &DataType, input: Option<&ArrayRef>) -> Result<Vec<Option<Request>>> {
    match data_type {
        DataType::Struct(fields) if fields.find("uri").is_some() => {}
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            return url_requests("file_read", data_type, input);
        }
        other => {
            return Err(DataFusionError::Plan(format!(
                "file_read takes a FILE (as files() lists) or a URI string, not {other}"
            )));
        }
    }
    let Some(input) = input else {
        return Ok(Vec::new());
    };
    let files = input.as_struct();
    let uris = files.column_by_name("uri").map(strings).transpose()?;
    let offsets = files
        .column_by_name("offset")
        .and_then(|c| c.as_primitive_opt::<UInt64Type>().cloned());
    let sizes = files
        .column_by_name("size")
        .and_then(|c| c.as_primitive_opt::<UInt64Type>().cloned());
    let Some(uris) = uris else {
        return Err(DataFusionError::Plan(
            "file_read: the FILE has no uri".into(),
        ));
    };
    Ok((0..files.len())
        .map(|row| {
            if files.is_null(row) || uris[row].is_none() {
                return None;
            }
            let value = |column: &Option<datafusion::arrow::array::UInt64Array>| {
                column
                    .as_ref()
                    .filter(|c| c.is_valid(row))
                    .map(|c| c.value(row))
            };
            // A size alone is the object's size, as files() reports it: read it all.
            let range = value(&offsets).map(|offset| (offset, value(&sizes)));
            Some(Request {
                uri: uris[row].clone().unwrap_or_default(),
                range,
            })
        })
        .collect())
}

/// Requests from a column of URI strings; with no array, only checks the type.
fn url_requests(
    function: &str,
    data_type: &DataType,
    input: Option<&ArrayRef>,
) -> Result<Vec<Option<Request>>> {
    if !matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    ) {
        return Err(DataFusionError::Plan(format!(
            "{function} takes a URL string, not {data_type}"
        )));
    }
    let Some(input) = input else {
        return Ok(Vec::new());
    };
    Ok(strings(input)?
        .into_iter()
        .map(|uri| uri.map(|uri| Request { uri, range: None }))
        .collect())
}

/// A column of any string type, as strings.
fn strings(array: &ArrayRef) -> Result<Vec<Option<String>>> {
    let strings = datafusion::arrow::compute::cast(array, &DataType::Utf8)?;
    Ok(strings
        .as_string::<i32>()
        .iter()
        .map(|s| s.map(String::from))
        .collect())
}

/// Fetches every row, [`CONCURRENCY`] at a time, in order.
async fn fetch_all(
    runtime: &Arc<RuntimeEnv>,
    http: &HttpFetcher,
    requests: Vec<Option<Request>>,
) -> Vec<std::result::Result<Option<Bytes>, String>> {
    futures::stream::iter(requests)
        .map(|request| async move {
            match request {
                None => Ok(None),
                Some(request) => fetch(runtime, http, &request)
                    .await
                    .map(Some)
                    .map_err(|e| format!("{}: {e}", request.uri)),
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await
}

fn binary_array(values: &[Option<Bytes>]) -> ArrayRef {
    let capacity = values.iter().flatten().map(Bytes::len).sum();
    let mut builder = BinaryBuilder::with_capacity(values.len(), capacity);
    for value in values {
        builder.append_option(value.as_deref());
    }
    Arc::new(builder.finish())
}

/// The bytes of one request, from an HTTP server or an object store.
async fn fetch(
    runtime: &RuntimeEnv,
    http: &HttpFetcher,
    request: &Request,
) -> std::result::Result<Bytes, String> {
    let lower = request.uri.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return http.get(&request.uri, request.range).await;
    }
    let url = parse_location(&request.uri).map_err(|e| e.to_string())?;
    let store: Arc<dyn ObjectStore> = store_for(runtime, &url).map_err(|e| e.to_string())?;
    let path = Path::from_url_path(url.path()).map_err(|e| format!("invalid path: {e}"))?;
    let options = GetOptions {
        range: request.range.map(|(offset, size)| match size {
            Some(size) => GetRange::Bounded(offset..offset + size),
            None => GetRange::Offset(offset),
        }),
        ..GetOptions::default()
    };
    let result = store.get_opts(&path, options).await;
    let bytes = match result {
        Ok(result) => result.bytes().await,
        Err(error) => Err(error),
    };
    bytes.map_err(|e| RiffleError::from(e).to_string())
}
