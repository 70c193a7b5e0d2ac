//! The error type shared by Riffle's crates.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::parquet::errors::ParquetError;
use object_store::client::HttpError;

/// Whose fault an error is: this decides how it is reported and whether a retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's mistake: bad SQL, an unknown table, a missing file, a type mismatch.
    User,
    /// An external system failed: an object store, a network, a model server.
    External,
    /// A bug in Riffle: an invariant did not hold.
    Internal,
}

/// Result with [`RiffleError`].
pub type Result<T, E = RiffleError> = std::result::Result<T, E>;

/// An error a user can act on: what went wrong, the detail (file, row, column, value), and a
/// hint where there is one.
#[derive(Debug, Clone)]
pub struct RiffleError {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
    retryable: bool,
    code: Option<String>,
}

impl RiffleError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: None,
            retryable: kind == ErrorKind::External,
            code: None,
        }
    }

    /// An error caused by what the user asked for.
    pub fn user(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::User, message)
    }

    /// An error from a system outside Riffle; retryable unless said otherwise.
    pub fn external(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::External, message)
    }

    /// A broken invariant inside Riffle.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Adds a hint that tells the user what to do about the error.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Says whether retrying the failed work can help.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Prefixes the message with where the error happened (a statement, a file, a task).
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Tags the error with a short code that says finer than its kind what failed
    /// (`user_code_error`, `worker_crashed`, `worker_timeout`: the Python front raises a
    /// class of its own for each).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The error's code, if it has one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Whose fault the error is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the hint.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The hint, if any.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Whether retrying the failed work can help.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for RiffleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == ErrorKind::Internal {
            write!(f, "internal error: {}", self.message)?;
            write!(f, " (this is likely a bug in Riffle; please report it)")?;
        } else {
            write!(f, "{}", self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RiffleError {}

impl From<DataFusionError> for RiffleError {
    fn from(error: DataFusionError) -> Self {
        from_datafusion(&error)
    }
}

impl From<ArrowError> for RiffleError {
    fn from(error: ArrowError) -> Self {
        from_datafusion(&DataFusionError::ArrowError(Box::new(error), None))
    }
}

impl From<object_store::Error> for RiffleError {
    fn from(error: object_store::Error) -> Self {
        object_store_error(&error)
    }
}

impl From<io::Error> for RiffleError {
    fn from(error: io::Error) -> Self {
        io_error(&error)
    }
}

/// Converts a Riffle error into a DataFusion error, so that it can cross DataFusion's
/// streams and come back out unchanged (see [`from_datafusion`]).
impl From<RiffleError> for DataFusionError {
    fn from(error: RiffleError) -> Self {
        DataFusionError::External(Box::new(error))
    }
}

/// Classifies a DataFusion error, unwrapping its context layers and keeping the message
/// DataFusion wrote (without a backtrace).
///
/// - A `RiffleError` anywhere in a chain wins: it was classified where it was raised (a UDF,
///   a connector) and keeps its kind, hint and retry hint, whatever DataFusion or Arrow
///   wrapped around it (context, shared, `ArrowError::ExternalError`, `External(Arc<..>)`).
/// - Object stores and I/O are external systems: `External`, retryable where waiting can
///   help (timeouts, refused or reset connections, HTTP 429 and 5xx). A missing object and
///   a denied access are the user's to fix (the path, the credentials), and so are bad paths
///   and bad configuration keys.
/// - Planning, SQL, schema, configuration and execution errors (DataFusion raises
///   `Execution` for malformed input: a broken CSV row, a division by zero), and Arrow's and
///   Parquet's decode errors are the user's: the query or the data must change. So is
///   `NotImplemented`: DataFusion raises it for what it does not support (a SQL feature, a
///   type), which the user can only work around. Riffle's own unsupported cases are raised
///   as Riffle errors or `Internal`.
/// - `Internal` and a panicked task are Riffle's (or DataFusion's) bugs.
/// - An error of a type nobody recognises is `Internal`: it reached the user unclassified,
///   which is a gap in this mapping to report and fix. Blaming the user for it would hide
///   the gap and send the user looking for a mistake they did not make. The one exception
///   is the regex crate's parse error, which DataFusion passes through for a bad pattern in
///   the query.
fn from_datafusion(error: &DataFusionError) -> RiffleError {
    use DataFusionError as E;
    match error {
        E::Context(what, inner) => from_datafusion(inner).context(what),
        E::Shared(inner) => from_datafusion(inner),
        E::Diagnostic(_, inner) => from_datafusion(inner),
        E::Collection(errors) => match errors.first() {
            Some(first) => from_datafusion(first),
            None => RiffleError::internal("an empty collection of errors"),
        },
        E::External(inner) => {
            from_source(inner.as_ref()).unwrap_or_else(|| unclassified(inner.as_ref()))
        }
        E::ArrowError(arrow, _) => from_arrow(arrow, error.strip_backtrace()),
        E::ParquetError(parquet) => from_parquet(parquet),
        E::ObjectStore(store) => object_store_error(store),
        E::IoError(io) => io_error(io),
        E::Plan(message) if message.starts_with("table '") && message.ends_with("not found") => {
            RiffleError::user(error.strip_backtrace()).with_hint(
                "SHOW TABLES lists the tables; declare one with CREATE TABLE ... WITH (...)",
            )
        }
        E::Plan(_)
        | E::SQL(..)
        | E::SchemaError(..)
        | E::Configuration(_)
        | E::Substrait(_)
        | E::Execution(_)
        | E::NotImplemented(_) => RiffleError::user(error.strip_backtrace()),
        E::Internal(message) => RiffleError::internal(message.clone()),
        E::ExecutionJoin(join) => RiffleError::internal(format!("a task failed: {join}")),
        E::ResourcesExhausted(message) => {
            RiffleError::external(format!("resources exhausted: {message}"))
        }
        E::Ffi(message) => {
            RiffleError::external(format!("foreign function: {message}")).with_retryable(false)
        }
    }
}

/// Classifies a Parquet error: the data's fault, unless the reader's I/O failed (the object
/// store behind it).
fn from_parquet(error: &ParquetError) -> RiffleError {
    if let Some(cause) = error.source().and_then(from_source) {
        return cause;
    }
    let text = error.to_string();
    if let Some(cause) = printed_store_error(&text) {
        return cause;
    }
    RiffleError::user(format!("cannot read Parquet data: {text}"))
        .with_hint("the file may be corrupt or not a Parquet file")
}

/// How DataFusion prints an object store's error (`DataFusionError::ObjectStore`).
const PRINTED_STORE_ERROR: &str = "Object Store error: ";

/// An object store's failure as DataFusion printed it into the text of another error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrintedStoreFailure {
    /// The object is not there.
    NotFound,
    /// The store refused the credentials or the access.
    Denied,
    /// The store or the way to it failed; whether waiting can help.
    Failed {
        /// A timeout, a connection failure, a 429 or a 5xx.
        transient: bool,
    },
}

/// Finds an object store failure that DataFusion printed into the text of another error,
/// losing the error itself: it does so when the footer of a Parquet file cannot be fetched
/// (`Failed to fetch metadata for file f: Object Store error: ...`). `None` when `text`
/// holds no such failure. The one place that reads object_store's wording.
pub fn printed_store_failure(text: &str) -> Option<PrintedStoreFailure> {
    let at = text.find(PRINTED_STORE_ERROR)?;
    let store = &text[at + PRINTED_STORE_ERROR.len()..];
    // object_store's wording of NotFound, and of PermissionDenied and Unauthenticated.
    if store.starts_with("Object at location ") && store.contains(" not found: ") {
        return Some(PrintedStoreFailure::NotFound);
    }
    let denied = [
        "lacked the necessary privileges",
        "lacked valid authentication",
    ];
    if denied
        .iter()
        .chain(&ACCESS_DENIED)
        .any(|marker| store.contains(marker))
    {
        return Some(PrintedStoreFailure::Denied);
    }
    Some(PrintedStoreFailure::Failed {
        transient: transient_in_text(store),
    })
}

/// The error for a store failure printed into `text`, if there is one.
fn printed_store_error(text: &str) -> Option<RiffleError> {
    Some(match printed_store_failure(text)? {
        PrintedStoreFailure::NotFound => RiffleError::user(text.to_string())
            .with_hint("check the path, the bucket and the glob pattern"),
        PrintedStoreFailure::Denied => {
            RiffleError::user(text.to_string()).with_hint("check the object store credentials")
        }
        PrintedStoreFailure::Failed { transient } => {
            RiffleError::external(text.to_string()).with_retryable(transient)
        }
    })
}

/// Whether the text of a store's failure says that waiting can help: the request failed
/// on its way (object_store's `HTTP error`), or the store answered 429 or 5xx.
fn transient_in_text(text: &str) -> bool {
    let markers = [
        "HTTP error: ",
        "status code: 5",
        "status code: 429",
        "SlowDown",
    ];
    markers.iter().any(|marker| text.contains(marker))
}

/// Classifies an Arrow error; `message` is how it reads to the user.
fn from_arrow(error: &ArrowError, message: String) -> RiffleError {
    match error {
        ArrowError::ExternalError(inner) => {
            from_source(inner.as_ref()).unwrap_or_else(|| unclassified(inner.as_ref()))
        }
        ArrowError::IoError(_, io) => io_error(io),
        ArrowError::MemoryError(_) => RiffleError::external(message),
        // Casts, parsing, overflow, CSV and JSON decoding, schemas: the data or the query.
        _ => RiffleError::user(message),
    }
}

/// The classification of an error of a type Riffle knows, found in `error` or, for a type
/// it does not know, in the errors under it (keeping the outer error's message, which
/// usually says more). `None` when nothing in the chain is known.
fn from_source(error: &(dyn StdError + 'static)) -> Option<RiffleError> {
    if let Some(riffle) = error.downcast_ref::<RiffleError>() {
        return Some(riffle.clone());
    }
    if let Some(datafusion) = error.downcast_ref::<DataFusionError>() {
        return Some(from_datafusion(datafusion));
    }
    // `Arc<T>` is an error whose source is T's source: DataFusion shares errors so.
    if let Some(datafusion) = error.downcast_ref::<Arc<DataFusionError>>() {
        return Some(from_datafusion(datafusion));
    }
    if let Some(arrow) = error.downcast_ref::<ArrowError>() {
        return Some(from_arrow(arrow, format!("Arrow error: {arrow}")));
    }
    if let Some(parquet) = error.downcast_ref::<ParquetError>() {
        return Some(from_parquet(parquet));
    }
    if let Some(store) = error.downcast_ref::<object_store::Error>() {
        return Some(object_store_error(store));
    }
    if let Some(io) = error.downcast_ref::<io::Error>() {
        return Some(io_error(io));
    }
    if let Some(http) = error.downcast_ref::<HttpError>() {
        return Some(RiffleError::external(http.to_string()));
    }
    let inner = from_source(error.source()?)?;
    Some(RiffleError {
        message: error.to_string(),
        ..inner
    })
}

/// An error of a type that nothing recognised (see [`from_datafusion`]).
fn unclassified(error: &(dyn StdError + 'static)) -> RiffleError {
    let message = error.to_string();
    if message.starts_with("regex parse error") {
        return RiffleError::user(message).with_hint("check the regular expression");
    }
    RiffleError::internal(format!("unclassified error: {message}"))
}

/// Classifies an I/O error by its kind.
fn io_error(error: &io::Error) -> RiffleError {
    use io::ErrorKind as K;
    // `io::Error::other(e)` (DataFusion turns its errors into I/O errors so) carries `e`.
    if let Some(inner) = error.get_ref().and_then(|inner| from_source(inner)) {
        return inner;
    }
    let message = format!("I/O error: {error}");
    match error.kind() {
        K::NotFound => RiffleError::user(message).with_hint("check the path"),
        K::PermissionDenied => {
            RiffleError::user(message).with_hint("check the permissions on the path")
        }
        K::InvalidData | K::UnexpectedEof => RiffleError::user(message)
            .with_hint("the file may be corrupt, truncated or not in the expected format"),
        K::InvalidInput => RiffleError::user(message),
        kind if transient_io(kind) => RiffleError::external(message),
        _ => RiffleError::external(message).with_retryable(false),
    }
}

/// Whether an I/O error of this kind may go away if the work is tried again.
fn transient_io(kind: io::ErrorKind) -> bool {
    use io::ErrorKind as K;
    matches!(
        kind,
        K::TimedOut
            | K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::Interrupted
            | K::WouldBlock
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown
            | K::ResourceBusy
    )
}

/// Whether an object store's failure may go away if the work is tried again: the request
/// did not reach the store or got no answer (connection, timeout), or the store said so
/// (HTTP 429 "slow down" and 5xx).
fn transient_store_failure(error: &(dyn StdError + 'static)) -> bool {
    if transient_in_text(&error.to_string()) {
        return true;
    }
    let mut link = Some(error);
    while let Some(current) = link {
        if current.is::<HttpError>() {
            return true;
        }
        if let Some(io) = current.downcast_ref::<io::Error>() {
            return transient_io(io.kind());
        }
        link = current.source();
    }
    false
}

/// What the text of a store's answer holds when it refused the credentials.
const ACCESS_DENIED: [&str; 5] = [
    "403 Forbidden",
    "401 Unauthorized",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
];

fn object_store_error(error: &object_store::Error) -> RiffleError {
    use object_store::Error as E;
    match error {
        E::NotFound { path, .. } => RiffleError::user(format!("object not found: {path}"))
            .with_hint("check the path, the bucket and the glob pattern"),
        E::PermissionDenied { path, .. } | E::Unauthenticated { path, .. } => {
            RiffleError::user(format!("access denied to {path}: {error}"))
                .with_hint("check the object store credentials")
        }
        E::InvalidPath { .. } => RiffleError::user(format!("object store: {error}"))
            .with_hint("check the path for characters an object store does not allow"),
        E::UnknownConfigurationKey { .. } => RiffleError::user(format!("object store: {error}")),
        E::Generic { store, source } => {
            let text = error.to_string();
            let detail = service_error(&text);
            if ACCESS_DENIED.iter().any(|marker| text.contains(marker)) {
                RiffleError::user(format!(
                    "access denied by the {store} object store{}",
                    detail.map(|d| format!(" ({d})")).unwrap_or_default()
                ))
                .with_hint("check the credentials (access key, secret, token) and the permissions on the bucket")
            } else if text.contains("NoSuchBucket") {
                RiffleError::user(format!(
                    "no such bucket in the {store} object store{}",
                    detail.map(|d| format!(" ({d})")).unwrap_or_default()
                ))
                .with_hint("check the bucket name in the path")
            } else if let Some(io) = io_under(source.as_ref())
                .filter(|io| matches!(io.kind(), io::ErrorKind::PermissionDenied))
            {
                RiffleError::user(format!("object store: {error}"))
                    .with_hint(format!("check the permissions ({io})"))
            } else {
                RiffleError::external(format!("object store: {error}"))
                    .with_retryable(transient_store_failure(source.as_ref()))
            }
        }
        E::JoinError { .. } => RiffleError::internal(format!("object store: {error}")),
        // Another writer got there first (AlreadyExists, Precondition, NotModified), the
        // store cannot do what was asked (NotSupported, NotImplemented), or a kind of
        // failure newer than this code: the store's business, and trying again the same
        // way does not change it.
        _ => RiffleError::external(format!("object store: {error}")).with_retryable(false),
    }
}

/// The first I/O error in `error`'s chain.
fn io_under<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a io::Error> {
    let mut link = Some(error);
    while let Some(current) = link {
        if let Some(io) = current.downcast_ref::<io::Error>() {
            return Some(io);
        }
        link = current.source();
    }
    None
}

/// The `Code: Message` of an S3-style XML error body inside `text`, if there is one.
fn service_error(text: &str) -> Option<String> {
    let field = |tag: &str| {
        let open = format!("<{tag}>");
        let start = text.find(&open)? + open.len();
        let end = start + text[start..].find(&format!("</{tag}>"))?;
        Some(text[start..end].to_string())
    };
    match (field("Code"), field("Message")) {
        (Some(code), Some(message)) => Some(format!("{code}: {message}")),
        (Some(code), None) => Some(code),
        (None, Some(message)) => Some(message),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn riffle_errors_survive_a_trip_through_datafusion() {
        let original = RiffleError::user("bad row").with_hint("skip it");
        let wrapped: DataFusionError = original.into();
        let wrapped = wrapped.context("reading t.parquet");
        let back = RiffleError::from(wrapped);
        assert_eq!(back.kind(), ErrorKind::User);
        assert_eq!(back.message(), "reading t.parquet: bad row");
        assert_eq!(back.hint(), Some("skip it"));
    }

    #[test]
    fn planning_errors_are_the_users() {
        let error = RiffleError::from(DataFusionError::Plan("table 'x' not found".into()));
        assert_eq!(error.kind(), ErrorKind::User);
        assert!(error.to_string().contains("table 'x' not found"));
    }

    #[test]
    fn unknown_tables_get_a_hint() {
        let error = RiffleError::from(DataFusionError::Plan(
            "table 'datafusion.public.nope' not found".into(),
        ));
        assert!(error.hint().is_some_and(|h| h.contains("SHOW TABLES")));
    }

    #[test]
    fn internal_errors_say_they_are_bugs() {
        let error = RiffleError::internal("channel closed twice");
        assert!(error.to_string().contains("likely a bug"));
        assert!(!error.is_retryable());
        assert!(RiffleError::external("timeout").is_retryable());
    }
    fn store_failure(source: impl StdError + Send + Sync + 'static) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(source),
        }
    }

    #[test]
    fn riffle_errors_survive_arrow_and_shared_wrappers() {
        let original = RiffleError::external("model server overloaded")
            .with_hint("lower the request rate")
            .with_retryable(true);
        // What a UDF's error becomes on its way through an Arrow kernel, a repartition
        // that shares it with several consumers, and a context layer.
        let through_arrow = DataFusionError::ArrowError(
            Box::new(ArrowError::ExternalError(Box::new(DataFusionError::from(
                original,
            )))),
            None,
        );
        let shared = Arc::new(through_arrow);
        let _other_consumer = Arc::clone(&shared);
        let wrapped =
            DataFusionError::External(Box::new(Arc::clone(&shared))).context("vertex 1 subtask 0");
        let back = RiffleError::from(DataFusionError::Shared(Arc::new(wrapped)));
        assert_eq!(back.kind(), ErrorKind::External);
        assert!(back.is_retryable());
        assert_eq!(
            back.message(),
            "vertex 1 subtask 0: model server overloaded"
        );
        assert_eq!(back.hint(), Some("lower the request rate"));
    }

    #[test]
    fn query_and_data_errors_are_the_users() {
        for error in [
            DataFusionError::Plan("no field named x".into()),
            DataFusionError::Execution("Divide by zero error".into()),
            DataFusionError::Configuration("bad option".into()),
            DataFusionError::NotImplemented("Unsupported SQL type".into()),
            DataFusionError::ArrowError(
                Box::new(ArrowError::CsvError("incorrect number of fields".into())),
                None,
            ),
        ] {
            let text = error.strip_backtrace();
            let converted = RiffleError::from(error);
            assert_eq!(converted.kind(), ErrorKind::User, "{text}");
            assert!(!converted.is_retryable(), "{text}");
            assert_eq!(converted.message(), text);
        }
    }

    #[test]
    fn corrupt_parquet_is_the_users_and_a_failed_read_is_not() {
        let corrupt = RiffleError::from(DataFusionError::ParquetError(Box::new(
            ParquetError::General("Invalid Parquet file. Corrupt footer".into()),
        )));
        assert_eq!(corrupt.kind(), ErrorKind::User);
        assert!(corrupt.message().contains("Corrupt footer"));
        assert!(corrupt.hint().is_some_and(|h| h.contains("corrupt")));

        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        let read_failed = RiffleError::from(DataFusionError::ParquetError(Box::new(
            ParquetError::External(Box::new(store_failure(refused))),
        )));
        assert_eq!(read_failed.kind(), ErrorKind::External, "{read_failed}");
        assert!(read_failed.is_retryable());
        assert!(read_failed.message().contains("connection refused"));
    }

    #[test]
    fn a_store_failure_printed_into_a_parquet_error_is_the_stores() {
        // What DataFusion makes of a footer fetch that failed.
        let printed = |store: &str| {
            RiffleError::from(DataFusionError::ParquetError(Box::new(
                ParquetError::General(format!(
                    "Failed to fetch metadata for file lake/x.parquet: Object Store error: {store}"
                )),
            )))
        };
        let unreachable = printed(
            "Generic S3 error: Error performing GET http://127.0.0.1:9/lake/x.parquet in 100ms, \
             after 1 retries - HTTP error: error sending request",
        );
        assert_eq!(unreachable.kind(), ErrorKind::External, "{unreachable}");
        assert!(unreachable.is_retryable());
        let missing = printed("Object at location lake/x.parquet not found: No such file");
        assert_eq!(missing.kind(), ErrorKind::User, "{missing}");
        let bad_request = printed("Generic S3 error: Server returned non-2xx status code: 400");
        assert_eq!(bad_request.kind(), ErrorKind::External);
        assert!(!bad_request.is_retryable());
    }

    #[test]
    fn missing_objects_and_denied_access_are_the_users() {
        let missing = RiffleError::from(object_store::Error::NotFound {
            path: "lake/x.parquet".into(),
            source: "404".into(),
        });
        assert_eq!(missing.kind(), ErrorKind::User);
        assert!(missing.message().contains("lake/x.parquet"));
        let denied = RiffleError::from(object_store::Error::PermissionDenied {
            path: "lake/x.parquet".into(),
            source: "403".into(),
        });
        assert_eq!(denied.kind(), ErrorKind::User);
        assert!(denied.hint().is_some_and(|h| h.contains("credentials")));
        let forbidden = RiffleError::from(store_failure(io::Error::other(
            "Server returned non-2xx status code: 403 Forbidden: <Code>AccessDenied</Code>",
        )));
        assert_eq!(forbidden.kind(), ErrorKind::User);
        let local = RiffleError::from(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(io::Error::from(io::ErrorKind::PermissionDenied)),
        });
        assert_eq!(local.kind(), ErrorKind::User, "{local}");
        let bad_path = RiffleError::from(object_store::Error::InvalidPath {
            source: object_store::path::Path::parse("a//b").unwrap_err(),
        });
        assert_eq!(bad_path.kind(), ErrorKind::User);
    }

    #[test]
    fn store_failures_are_external_and_retryable_when_waiting_can_help() {
        let timeout = io::Error::new(io::ErrorKind::TimedOut, "operation timed out");
        let unavailable = io::Error::other(
            "Error performing GET in 1s - Server returned non-2xx status code: 503 Service Unavailable",
        );
        let connect = HttpError::new(
            object_store::client::HttpErrorKind::Connect,
            io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        for failure in [
            store_failure(timeout),
            store_failure(unavailable),
            store_failure(connect),
        ] {
            let converted = RiffleError::from(failure);
            assert_eq!(converted.kind(), ErrorKind::External, "{converted}");
            assert!(converted.is_retryable(), "{converted}");
        }
        // A disk that fails, a bad request, another writer first: retrying the same way
        // does not help.
        for failure in [
            store_failure(io::Error::other("Input/output error (os error 5)")),
            store_failure(io::Error::other(
                "Server returned non-2xx status code: 400 Bad Request",
            )),
            object_store::Error::AlreadyExists {
                path: "lake/part-0.parquet".into(),
                source: "409".into(),
            },
        ] {
            let converted = RiffleError::from(failure);
            assert_eq!(converted.kind(), ErrorKind::External, "{converted}");
            assert!(!converted.is_retryable(), "{converted}");
        }
    }

    #[test]
    fn io_errors_are_classified_by_kind() {
        let cases = [
            (io::ErrorKind::TimedOut, ErrorKind::External, true),
            (io::ErrorKind::ConnectionReset, ErrorKind::External, true),
            (io::ErrorKind::StorageFull, ErrorKind::External, false),
            (io::ErrorKind::NotFound, ErrorKind::User, false),
            (io::ErrorKind::PermissionDenied, ErrorKind::User, false),
            (io::ErrorKind::UnexpectedEof, ErrorKind::User, false),
        ];
        for (kind, expected, retryable) in cases {
            let converted = RiffleError::from(DataFusionError::IoError(io::Error::from(kind)));
            assert_eq!(converted.kind(), expected, "{kind:?}");
            assert_eq!(converted.is_retryable(), retryable, "{kind:?}");
            assert!(converted.message().starts_with("I/O error: "));
        }
        // DataFusion turns its errors into I/O errors with `io::Error::other`.
        let carried = io::Error::other(DataFusionError::from(RiffleError::user("bad row")));
        let converted = RiffleError::from(carried);
        assert_eq!(converted.kind(), ErrorKind::User);
        assert_eq!(converted.message(), "bad row");
    }

    #[test]
    fn arrow_errors_follow_what_they_carry() {
        let memory = RiffleError::from(ArrowError::MemoryError("allocation failed".into()));
        assert_eq!(memory.kind(), ErrorKind::External);
        let parse = RiffleError::from(ArrowError::ParseError("'abc' is not an int".into()));
        assert_eq!(parse.kind(), ErrorKind::User);
        assert!(parse.message().contains("'abc' is not an int"));
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let store = RiffleError::from(ArrowError::ExternalError(Box::new(store_failure(refused))));
        assert_eq!(store.kind(), ErrorKind::External);
        assert!(store.is_retryable());
    }

    #[test]
    fn bugs_and_unclassified_errors_are_internal() {
        let internal = RiffleError::from(DataFusionError::Internal("bad plan".into()));
        assert_eq!(internal.kind(), ErrorKind::Internal);
        assert!(!internal.is_retryable());

        #[derive(Debug)]
        struct Strange;
        impl fmt::Display for Strange {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "something strange")
            }
        }
        impl StdError for Strange {}
        let unknown = RiffleError::from(DataFusionError::External(Box::new(Strange)));
        assert_eq!(unknown.kind(), ErrorKind::Internal);
        assert!(unknown.to_string().contains("something strange"));
        assert!(unknown.to_string().contains("likely a bug"));

        let panicked = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async { tokio::spawn(async { panic!("boom") }).await.unwrap_err() });
        let joined = RiffleError::from(DataFusionError::ExecutionJoin(Box::new(panicked)));
        assert_eq!(joined.kind(), ErrorKind::Internal);
    }

    #[test]
    fn an_unknown_wrapper_keeps_the_classification_of_what_it_wraps() {
        #[derive(Debug)]
        struct Request(io::Error);
        impl fmt::Display for Request {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "error sending request: {}", self.0)
            }
        }
        impl StdError for Request {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let wrapped = Request(io::Error::from(io::ErrorKind::TimedOut));
        let converted = RiffleError::from(DataFusionError::External(Box::new(wrapped)));
        assert_eq!(converted.kind(), ErrorKind::External);
        assert!(converted.is_retryable());
        assert!(converted.message().starts_with("error sending request"));
    }

    #[test]
    fn bad_regular_expressions_are_the_users() {
        #[derive(Debug)]
        struct RegexError;
        impl fmt::Display for RegexError {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "regex parse error:\n    (\n    ^\nerror: unclosed group")
            }
        }
        impl StdError for RegexError {}
        let error = DataFusionError::Context(
            "Invalid regex".into(),
            Box::new(DataFusionError::External(Box::new(RegexError))),
        );
        let converted = RiffleError::from(error);
        assert_eq!(converted.kind(), ErrorKind::User);
        assert!(
            converted
                .message()
                .starts_with("Invalid regex: regex parse error")
        );
    }

    #[test]
    fn exhausted_resources_are_external() {
        let error = RiffleError::from(DataFusionError::ResourcesExhausted("memory".into()));
        assert_eq!(error.kind(), ErrorKind::External);
    }
}
