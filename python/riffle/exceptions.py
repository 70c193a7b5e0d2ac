"""Riffle's exceptions: one class per kind of error.

Every exception Riffle raises is a :class:`RiffleError`, carrying the engine's message
(``.message``), its hint (``.hint``, or None) and whether retrying can help
(``.retryable``)::

    RiffleError
    ├── UserError        what was asked for is wrong: bad SQL, an unknown column, a type
    │                    mismatch, a missing file
    ├── ExternalError    a system outside Riffle failed: an object store, a model server
    └── InternalError    a bug in Riffle
"""

from riffle._internal import ExternalError, InternalError, RiffleError, UserError

__all__ = ["RiffleError", "UserError", "ExternalError", "InternalError"]
