"""Reading data into DataFrames: Python objects, Arrow data, files and images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from riffle._session import Session, default_session
from riffle.dataframe import DataFrame, _storage_options

if TYPE_CHECKING:
    import pandas


def _session(session: Session | None) -> Session:
    return session if session is not None else default_session()


def location(path: str) -> str:
    """``path`` as the engine takes it: URLs as they are, local paths made absolute (so that
    ``../photos`` works; globs are kept)."""
    import os

    return path if "://" in path else os.path.abspath(path)


def from_arrow(data: Any, *, session: Session | None = None) -> DataFrame:
    """A DataFrame over Arrow data: anything with ``__arrow_c_stream__`` or
    ``__arrow_c_array__`` (a pyarrow Table or RecordBatch, a Polars DataFrame, ...), read
    without copies.

        >>> import pyarrow as pa, riffle
        >>> riffle.from_arrow(pa.table({"x": [1, 2]})).count()
        2
    """
    if not (hasattr(data, "__arrow_c_stream__") or hasattr(data, "__arrow_c_array__")):
        raise TypeError(
            f"from_arrow: expected Arrow data (with __arrow_c_stream__ or __arrow_c_array__), "
            f"not {type(data).__name__}"
        )
    s = _session(session)
    return DataFrame(s._native.read_arrow(data), s)


def from_pydict(data: Mapping[str, Sequence[Any]], *, session: Session | None = None) -> DataFrame:
    """A DataFrame from a dict of columns.

        >>> import riffle
        >>> riffle.from_pydict({"x": [1, 2], "y": ["a", "b"]}).to_pylist()
        [{'x': 1, 'y': 'a'}, {'x': 2, 'y': 'b'}]
    """
    import pyarrow as pa

    if not isinstance(data, Mapping):
        raise TypeError(f"from_pydict: expected a dict of columns, not {type(data).__name__}")
    return from_arrow(pa.table({name: _column(values) for name, values in data.items()}), session=session)


def _column(values: Any) -> Any:
    """A list of Python numbers through numpy: pyarrow infers a list's type element by
    element (0.19 s for a million ints), numpy converts it in a sixth of that. Anything else
    (None, strings, mixed types) goes to pyarrow as it is."""
    import numpy as np
    import pyarrow as pa

    first = type(values[0]) if isinstance(values, list) and values else None
    if first in (int, float):
        array = np.ascontiguousarray(values)
        # Ints stay ints (numpy would turn [2**63, 1] into doubles: pyarrow decides those).
        if array.dtype.kind in ("iu" if first is int else "f") and array.dtype.isnative:
            # From the buffer itself: pa.array() would import pandas first (0.16 s).
            return pa.Array.from_buffers(pa.from_numpy_dtype(array.dtype), len(array), [None, pa.py_buffer(array)])
    return values


def from_pylist(rows: Sequence[Mapping[str, Any]], *, session: Session | None = None) -> DataFrame:
    """A DataFrame from a list of dicts, one per row (columns from their keys).

        >>> import riffle
        >>> riffle.from_pylist([{"x": 1}, {"x": 2}]).count()
        2
    """
    import pyarrow as pa

    if isinstance(rows, Mapping) or not all(isinstance(r, Mapping) for r in rows):
        raise TypeError("from_pylist: expected a list of dicts, one per row")
    return from_arrow(pa.Table.from_pylist(list(rows)), session=session)


def from_pandas(frame: pandas.DataFrame, *, session: Session | None = None) -> DataFrame:
    """A DataFrame from a pandas DataFrame (its index is not kept)."""
    import pyarrow as pa

    if not type(frame).__module__.startswith("pandas"):
        raise TypeError(f"from_pandas: expected a pandas DataFrame, not {type(frame).__name__}")
    return from_arrow(pa.Table.from_pandas(frame, preserve_index=False), session=session)


def _read(
    path: str,
    format: str,
    storage_options: Mapping[str, str] | None,
    options: dict[str, str],
    session: Session | None,
) -> DataFrame:
    if not isinstance(path, str):
        raise TypeError(f"read_{format}: path must be a str, not {type(path).__name__}")
    settings = _storage_options(storage_options, f"read_{format}")
    settings.update(options)
    s = _session(session)
    return DataFrame(s._native.read_files(location(path), format, settings), s)


def read_parquet(
    path: str,
    *,
    storage_options: Mapping[str, str] | None = None,
    session: Session | None = None,
) -> DataFrame:
    """The Parquet files at ``path`` (a file, a folder or a glob; local, ``s3://``,
    ``gs://``, ``az://``), columns read from the files. ``storage_options`` take SQL's keys
    (``{"s3.endpoint": "http://127.0.0.1:9000", "s3.allow-http": "true"}``)."""
    return _read(path, "parquet", storage_options, {}, session)


def read_csv(
    path: str,
    *,
    delimiter: str = ",",
    storage_options: Mapping[str, str] | None = None,
    session: Session | None = None,
) -> DataFrame:
    """The CSV files at ``path`` (with a header line), columns inferred."""
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"read_csv: delimiter must be one character, not {delimiter!r}")
    return _read(path, "csv", storage_options, {"csv.delimiter": delimiter}, session)


def read_json(
    path: str,
    *,
    storage_options: Mapping[str, str] | None = None,
    session: Session | None = None,
) -> DataFrame:
    """The newline-delimited JSON files at ``path``, columns inferred."""
    return _read(path, "json", storage_options, {}, session)


def read_files(path: str, *, session: Session | None = None) -> DataFrame:
    """The files under ``path`` (a folder, one object or a glob such as
    ``s3://bucket/images/**/*.jpg``) as rows of ``(file, size, last_modified)``; ``file`` is
    a reference, read with ``col("file").file.read()``. SQL's ``files(path)``."""
    if not isinstance(path, str):
        raise TypeError(f"read_files: path must be a str, not {type(path).__name__}")
    s = _session(session)
    return DataFrame(s._native.files(location(path)), s)


def read_images(
    path: str,
    *,
    size: tuple[int, int] | None = None,
    ignore_corrupt: bool = False,
    session: Session | None = None,
) -> DataFrame:
    """The images under ``path``, read and decoded: rows of ``(file, image)``.

    ``size=(height, width)`` (Ray Data's order) resizes each image as it is decoded: the
    full-size pixels are never kept, and a JPEG decodes at a reduced size where that still
    covers ``size`` (much faster than a full decode and then ``image.resize``).

    A file that is no image stops the job with an error naming it, unless
    ``ignore_corrupt``: then rows get a third column, ``error``, the reason for the files
    skipped (whose ``image`` is NULL)."""
    if not isinstance(path, str):
        raise TypeError(f"read_images: path must be a str, not {type(path).__name__}")
    if size is not None:
        if (
            not isinstance(size, tuple)
            or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            raise ValueError(f"read_images: size must be (height, width), two positive ints, not {size!r}")
        size = (size[1], size[0])  # the engine's order: width, height
    s = _session(session)
    return DataFrame(s._native.read_images(location(path), bool(ignore_corrupt), size), s)


def sql(query: str, **tables: Any) -> DataFrame:
    """Runs one SQL statement in the default session. ``tables`` name DataFrames (or Arrow
    data, or pandas DataFrames) for the query to read.

        >>> import riffle
        >>> people = riffle.from_pydict({"name": ["ada", "bob"], "age": [36, 17]})
        >>> riffle.sql("SELECT name FROM people WHERE age > 18", people=people).to_pylist()
        [{'name': 'ada'}]
    """
    if not isinstance(query, str):
        raise TypeError(f"sql: query must be a str, not {type(query).__name__}")
    return default_session().sql(query, **tables)
