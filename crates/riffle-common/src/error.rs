//! The error type shared by Riffle's crates.

use std::fmt;

use datafusion::error::DataFusionError;

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
#[derive(Debug)]
pub struct RiffleError {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
    retryable: bool,
}

impl RiffleError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: None,
            retryable: kind == ErrorKind::External,
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
        from_datafusion(error)
    }
}

impl From<datafusion::arrow::error::ArrowError> for RiffleError {
    fn from(error: datafusion::arrow::error::ArrowError) -> Self {
        from_datafusion(DataFusionError::ArrowError(Box::new(error), None))
    }
}

impl From<object_store::Error> for RiffleError {
    fn from(error: object_store::Error) -> Self {
        object_store_error(&error)
    }
}

impl From<std::io::Error> for RiffleError {
    fn from(error: std::io::Error) -> Self {
        RiffleError::external(error.to_string())
    }
}

/// Converts a Riffle error into a DataFusion error, so that it can cross DataFusion's
/// streams and come back out unchanged (see [`from_datafusion`]).
impl From<RiffleError> for DataFusionError {
    fn from(error: RiffleError) -> Self {
        DataFusionError::External(Box::new(error))
    }
}

fn object_store_error(error: &object_store::Error) -> RiffleError {
    use object_store::Error as E;
    match error {
        E::NotFound { path, .. } => RiffleError::user(format!("object not found: {path}"))
            .with_hint("check the path, the bucket and the glob pattern"),
        E::PermissionDenied { path, .. } | E::Unauthenticated { path, .. } => {
            RiffleError::user(format!("access denied to {path}: {error}"))
                .with_hint("check the object store credentials")
        }
        E::Generic { store, .. } => {
            let text = error.to_string();
            let detail = service_error(&text);
            let denied = [
                "403 Forbidden",
                "401 Unauthorized",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "AccessDenied",
            ];
            if denied.iter().any(|marker| text.contains(marker)) {
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
            } else {
                RiffleError::external(format!("object store: {error}"))
            }
        }
        _ => RiffleError::external(format!("object store: {error}")),
    }
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

/// Classifies a DataFusion error, unwrapping its context layers and keeping the message
/// DataFusion wrote (without a backtrace).
fn from_datafusion(error: DataFusionError) -> RiffleError {
    let mut context = Vec::new();
    let mut error = error;
    loop {
        match error {
            DataFusionError::Context(what, inner) => {
                context.push(what);
                error = *inner;
            }
            DataFusionError::Shared(shared) => match std::sync::Arc::try_unwrap(shared) {
                Ok(inner) => error = inner,
                Err(shared) => {
                    error = DataFusionError::Execution(shared.to_string());
                }
            },
            _ => break,
        }
    }
    let mut converted = match error {
        DataFusionError::External(boxed) => match boxed.downcast::<RiffleError>() {
            Ok(riffle) => *riffle,
            Err(other) => match other.downcast::<object_store::Error>() {
                Ok(store) => object_store_error(&store),
                Err(other) => RiffleError::external(other.to_string()),
            },
        },
        DataFusionError::ObjectStore(store) => object_store_error(&store),
        DataFusionError::IoError(io) => RiffleError::external(format!("I/O error: {io}")),
        DataFusionError::ParquetError(parquet) => {
            RiffleError::user(format!("cannot read Parquet data: {parquet}"))
                .with_hint("the file may be corrupt or not a Parquet file")
        }
        DataFusionError::Internal(message) => RiffleError::internal(message),
        DataFusionError::ResourcesExhausted(message) => {
            RiffleError::external(format!("resources exhausted: {message}"))
        }
        DataFusionError::Plan(message)
            if message.starts_with("table '") && message.ends_with("not found") =>
        {
            RiffleError::user(DataFusionError::Plan(message).strip_backtrace()).with_hint(
                "SHOW TABLES lists the tables; declare one with CREATE TABLE ... WITH (...)",
            )
        }
        other => RiffleError::user(other.strip_backtrace()),
    };
    for what in context.into_iter().rev() {
        converted = converted.context(what);
    }
    converted
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
}
