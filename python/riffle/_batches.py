"""Batches between Arrow and what user code takes and gives (``batch_format``).

In: ``"arrow"`` gives the ``pyarrow.RecordBatch`` as decoded (read-only, backed by shared
memory: do not keep its arrays after returning); ``"pandas"`` a pandas DataFrame;
``"numpy"`` a dict of numpy arrays, where a fixed-shape tensor or vector column is one N-d
array and an image column whose images share a size is ``uint8[N, H, W, C]``.

Out: a RecordBatch or Table, a pandas DataFrame, a dict of columns (lists, numpy arrays,
N-d arrays for tensor and vector columns, pyarrow arrays), or for row functions a list of
dicts; cast to the declared columns, with an error naming the function when it cannot be.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

_EXTENSION = b"ARROW:extension:name"


class ResultError(Exception):
    """What user code returned does not fit: the wrong kind, rows or columns. Reported
    without a traceback (the user's code did not fail; its result did)."""

_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def _extension(field: pa.Field) -> str | None:
    meta = field.metadata or {}
    name = meta.get(_EXTENSION)
    return name.decode() if name else None


def _images_to_numpy(column: pa.Array) -> np.ndarray:
    parts = dict(zip([f.name for f in column.type], column.flatten()))
    heights = parts["height"].to_numpy(zero_copy_only=False)
    widths = parts["width"].to_numpy(zero_copy_only=False)
    modes = parts["mode"].to_pylist()
    pixels = parts["pixels"]
    n = len(column)
    if n and column.null_count == 0 and len(set(zip(heights.tolist(), widths.tolist(), modes))) == 1:
        h, w, c = int(heights[0]), int(widths[0]), _CHANNELS.get(modes[0], 1)
        # The pixels of every image, back to back: one N-d view of the batch's memory.
        offsets = np.frombuffer(pixels.buffers()[1], dtype=np.int32)[pixels.offset : pixels.offset + n + 1]
        data = np.frombuffer(pixels.buffers()[2], dtype=np.uint8)
        return data[offsets[0] : offsets[-1]].reshape(n, h, w, c)
    out = np.empty(n, dtype=object)
    for i, (h, w, m, p) in enumerate(zip(heights, widths, modes, pixels.to_pylist())):
        out[i] = None if p is None else np.frombuffer(p, dtype=np.uint8).reshape(int(h), int(w), _CHANNELS.get(m, 1))
    return out


def _column_to_numpy(field: pa.Field, column: pa.Array) -> Any:
    kind = _extension(field)
    if kind == "riffle.image":
        return _images_to_numpy(column)
    if isinstance(column, pa.ExtensionArray) and isinstance(column.type, pa.FixedShapeTensorType):
        return column.to_numpy_ndarray()
    if pa.types.is_fixed_size_list(column.type) and column.null_count == 0:
        size = column.type.list_size
        values = column.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(column), size)
    return column.to_numpy(zero_copy_only=False)


def to_user(batch: pa.RecordBatch, batch_format: str) -> Any:
    """``batch`` in the format user code asked for."""
    if batch_format == "arrow":
        return batch
    if batch_format == "pandas":
        return batch.to_pandas()
    return {field.name: _column_to_numpy(field, column) for field, column in zip(batch.schema, batch.columns)}


def _numeric(value: Any) -> pa.Array | None:
    """A list or 1-d array of numbers as an Arrow array built on its numpy buffer, or None.
    pa.array() would import pandas on its first call (0.16 s of a worker's start)."""
    if isinstance(value, list) and not (value and isinstance(value[0], (int, float))):
        return None  # strings, rows, nested lists: not worth converting to find out
    array = np.asarray(value) if isinstance(value, (list, np.ndarray)) else None
    if array is None or array.ndim != 1 or array.dtype.kind not in "iuf" or not len(array):
        return None
    array = np.ascontiguousarray(array)
    if not array.dtype.isnative:
        return None
    return pa.Array.from_buffers(pa.from_numpy_dtype(array.dtype), len(array), [None, pa.py_buffer(array)])


def _array(value: Any, field: pa.Field | None) -> pa.Array:
    numeric = _numeric(value)
    if numeric is not None and (field is None or pa.types.is_integer(field.type) or pa.types.is_floating(field.type)):
        return numeric if field is None or numeric.type == field.type else numeric.cast(field.type)
    if isinstance(value, pa.ChunkedArray):
        return value.combine_chunks()
    if isinstance(value, pa.Array):
        return value
    if isinstance(value, np.ndarray) and value.ndim > 1:
        target = field.type if field is not None else None
        if target is not None and isinstance(target, pa.FixedShapeTensorType):
            return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(value))
        flat = np.ascontiguousarray(value).reshape(len(value), -1)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
    if field is not None:
        return pa.array(value, type=field.type if not isinstance(field.type, pa.ExtensionType) else None)
    return pa.array(value)


def to_batch(value: Any, schema: pa.Schema | None, function: str) -> pa.RecordBatch:
    """What user code returned as a RecordBatch (not yet cast to ``schema``)."""
    if isinstance(value, pa.RecordBatch):
        return value
    if isinstance(value, pa.Table):
        return value.combine_chunks().to_batches()[0] if value.num_rows else pa.RecordBatch.from_pylist([], schema=value.schema)
    if type(value).__module__.startswith("pandas"):
        return pa.RecordBatch.from_pandas(value, preserve_index=False)
    if isinstance(value, dict):
        names = list(value)
        fields = [schema.field(n) if schema is not None and n in schema.names else None for n in names]
        return pa.RecordBatch.from_arrays([_array(value[n], f) for n, f in zip(names, fields)], names=names)
    if isinstance(value, list) and all(isinstance(row, dict) for row in value):
        if schema is not None:
            return pa.RecordBatch.from_pylist(value, schema=_plain(schema))
        return pa.RecordBatch.from_pylist(value)
    raise ResultError(
        f"{function} returned a {type(value).__name__}; expected a pyarrow RecordBatch or Table, "
        "a pandas DataFrame, or a dict of columns"
    )


def _plain(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, f.type, f.nullable) for f in schema])


def from_user(value: Any, schema: pa.Schema, function: str, rows: int | None) -> pa.RecordBatch:
    """What user code returned, as a RecordBatch of exactly the declared columns; of
    ``rows`` rows, unless None (any number)."""
    batch = to_batch(value, schema, function)
    if rows is not None and batch.num_rows != rows:
        raise ResultError(f"{function} returned {batch.num_rows} rows for a batch of {rows}; it must return one row per input row")
    columns = []
    for field in schema:
        if field.name not in batch.schema.names:
            raise ResultError(f"{function} returned no column '{field.name}' (it returned {batch.schema.names})")
        column = batch.column(field.name)
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
                raise ResultError(
                    f"{function}: column '{field.name}' is {column.type}, not the declared {field.type}: {error}"
                ) from None
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)
