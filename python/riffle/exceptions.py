"""Riffle's exceptions: one class per kind of error.

Every exception Riffle raises is a :class:`RiffleError`, carrying the engine's message
(``.message``), its hint (``.hint``, or None), whether retrying can help (``.retryable``)
and, where there is one, a finer code (``.code``)::

    RiffleError
    ├── UserError            what was asked for is wrong: bad SQL, an unknown column, a
    │   │                    type mismatch, a missing file
    │   └── UserCodeError    the user's Python code raised; the message has its
    │                        traceback and the batch's rows
    ├── ExternalError        a system outside Riffle failed: an object store, a model server
    ├── WorkerCrashedError   a Python worker died: an exit, a signal, a segfault (the
    │                        message has its last stderr lines)
    ├── WorkerTimeoutError   a batch ran past map_batches' timeout (the worker is killed)
    └── InternalError        a bug in Riffle
"""

from riffle._internal import (
    ExternalError,
    InternalError,
    RiffleError,
    UserCodeError,
    UserError,
    WorkerCrashedError,
    WorkerTimeoutError,
)

__all__ = [
    "RiffleError",
    "UserError",
    "UserCodeError",
    "ExternalError",
    "WorkerCrashedError",
    "WorkerTimeoutError",
    "InternalError",
]
