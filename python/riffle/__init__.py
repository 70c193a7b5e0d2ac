"""Riffle: a dataflow engine for AI data processing, from Python.

A lazy DataFrame over Arrow batches, planned and run by Riffle's Rust engine::

    >>> import riffle
    >>> df = riffle.from_pydict({"text": ["a cat", "a dog", "two cats"]})
    >>> df.filter(riffle.col("text").is_not_null()).count()
    3
"""

from riffle._session import Session, default_session
from riffle.dataframe import BatchIterator, DataFrame, GroupBy
from riffle.exceptions import (
    ExternalError,
    InternalError,
    RiffleError,
    UserCodeError,
    UserError,
    WorkerCrashedError,
    WorkerTimeoutError,
)
from riffle.expr import Expr, col, lit, when
from riffle._udf import cls, udf
from riffle import ai, functions, models  # noqa: E402  (namespaces)
from riffle.io import (
    from_arrow,
    from_pandas,
    from_pydict,
    from_pylist,
    read_csv,
    read_files,
    read_images,
    read_json,
    read_parquet,
    sql,
)

__all__ = [
    "BatchIterator",
    "DataFrame",
    "Expr",
    "ExternalError",
    "GroupBy",
    "InternalError",
    "RiffleError",
    "Session",
    "UserCodeError",
    "UserError",
    "WorkerCrashedError",
    "WorkerTimeoutError",
    "cls",
    "col",
    "when",
    "default_session",
    "from_arrow",
    "functions",
    "ai",
    "models",
    "from_pandas",
    "from_pydict",
    "from_pylist",
    "lit",
    "read_csv",
    "read_files",
    "read_images",
    "read_json",
    "read_parquet",
    "sql",
    "udf",
]
