//! Riffle's errors as Python exceptions: one class per kind of error, each carrying the
//! message and the hint (`.message`, `.hint`, `.retryable` attributes).
//!
//! ```text
//! RiffleError(Exception)
//! ├── UserError            bad SQL, an unknown column, a type mismatch, a missing file
//! │   └── UserCodeError    the user's Python code raised (the message has its traceback)
//! ├── ExternalError        an object store, a network, a model server
//! ├── WorkerCrashedError   a Python worker died (an exit, a signal, a segfault)
//! ├── WorkerTimeoutError   a batch ran past its timeout (also a TimeoutError)
//! └── InternalError        a bug in Riffle
//! ```

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use riffle::{ErrorKind, RiffleError};

create_exception!(
    riffle._internal,
    PyRiffleError,
    PyException,
    "Any error Riffle raises."
);
create_exception!(
    riffle._internal,
    UserError,
    PyRiffleError,
    "What was asked for is wrong."
);
create_exception!(
    riffle._internal,
    ExternalError,
    PyRiffleError,
    "A system outside Riffle failed."
);
create_exception!(
    riffle._internal,
    InternalError,
    PyRiffleError,
    "A bug in Riffle."
);

create_exception!(
    riffle._internal,
    UserCodeError,
    UserError,
    "The user's Python code raised."
);
create_exception!(
    riffle._internal,
    WorkerCrashedError,
    PyRiffleError,
    "A Python worker died."
);
create_exception!(
    riffle._internal,
    WorkerTimeoutError,
    PyRiffleError,
    "A batch ran past its timeout."
);

pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("RiffleError", py.get_type::<PyRiffleError>())?;
    module.add("UserError", py.get_type::<UserError>())?;
    module.add("ExternalError", py.get_type::<ExternalError>())?;
    module.add("InternalError", py.get_type::<InternalError>())?;
    module.add("UserCodeError", py.get_type::<UserCodeError>())?;
    module.add("WorkerCrashedError", py.get_type::<WorkerCrashedError>())?;
    module.add("WorkerTimeoutError", py.get_type::<WorkerTimeoutError>())?;
    Ok(())
}

/// The exception for `error`, with its message, hint and retryability as attributes.
pub(crate) fn to_python(error: RiffleError) -> PyErr {
    let text = error.to_string();
    let exception = match (error.code(), error.kind()) {
        (Some("user_code_error"), _) => UserCodeError::new_err(text),
        (Some("worker_crashed"), _) => WorkerCrashedError::new_err(text),
        (Some("worker_timeout"), _) => WorkerTimeoutError::new_err(text),
        (_, ErrorKind::User) => UserError::new_err(text),
        (_, ErrorKind::External) => ExternalError::new_err(text),
        (_, ErrorKind::Internal) => InternalError::new_err(text),
    };
    Python::attach(|py| {
        let value = exception.value(py);
        // Attributes on a fresh exception object cannot fail in practice; if one did, the
        // exception still carries the whole text.
        let _ = value.setattr("message", error.message());
        let _ = value.setattr("hint", error.hint());
        let _ = value.setattr("retryable", error.is_retryable());
        let _ = value.setattr("code", error.code());
    });
    exception
}

/// Converts any Rust error Riffle's crates return.
pub(crate) trait IntoPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T, E: Into<RiffleError>> IntoPy<T> for Result<T, E> {
    fn py(self) -> PyResult<T> {
        self.map_err(|error| to_python(error.into()))
    }
}
