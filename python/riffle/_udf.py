"""Python user code on DataFrames: ``map_batches``, ``map`` and the ``@riffle.udf`` /
``@riffle.cls`` decorators.

User code runs in worker processes the engine starts (never in this process), fed with
Arrow batches through shared memory; see :meth:`riffle.DataFrame.map_batches`. What goes
to a worker is a :class:`UserCode`, pickled with cloudpickle: the function or class, its
arguments, and how to call it. The engine never unpickles it.
"""

from __future__ import annotations

import base64
import inspect
import itertools
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import cloudpickle
import pyarrow as pa

from riffle._batches import ResultError

_ON_ERROR = ("raise", "null")
_names = itertools.count()


@dataclass
class UserCode:
    """The user's code and how a worker calls it (pickled into each worker)."""

    target: Any
    # "batches": fn(batch) -> batch; "rows": fn(row dict) -> row dict; "flat_rows": fn(row
    # dict) -> list of row dicts; "udf": fn(*values) -> value; "udf_batch": fn(*arrays) -> array
    kind: str
    name: str
    batch_format: str = "arrow"
    fn_args: tuple[Any, ...] = ()
    fn_kwargs: dict[str, Any] = field(default_factory=dict)
    constructor_args: tuple[Any, ...] = ()
    constructor_kwargs: dict[str, Any] = field(default_factory=dict)
    output_names: tuple[str, ...] = ()
    on_error: str = "raise"
    # Whether a batch may give any number of rows (map_batches, flat_map), or one per row.
    any_rows: bool = False

    def build(self) -> Callable[[Any], Any]:
        """The callable a worker runs per batch (a class is constructed here, once)."""
        target = self.target
        if inspect.isclass(target):
            target = target(*self.constructor_args, **self.constructor_kwargs)
        args, kwargs = self.fn_args, self.fn_kwargs
        if self.kind == "batches":
            return lambda batch: target(batch, *args, **kwargs)
        if self.kind == "rows":
            return lambda batch: [_row_of(target(row, *args, **kwargs), self.name) for row in batch.to_pylist()]
        if self.kind == "flat_rows":
            return lambda batch: [out for row in batch.to_pylist() for out in _rows_of(target(row, *args, **kwargs), self.name)]
        name = self.output_names[0]
        if self.kind == "udf":
            keep_going = self.on_error == "null"

            def one(values: tuple[Any, ...]) -> Any:
                try:
                    return target(*values, *args, **kwargs)
                except Exception:
                    if keep_going:
                        return None
                    raise

            def rows(batch: pa.RecordBatch) -> dict[str, list[Any]]:
                columns = [c.to_pylist() for c in batch.columns]
                if keep_going or args or kwargs:
                    return {name: [one(values) for values in zip(*columns)]}
                # The common case at full speed: one call per row, no wrapper.
                return {name: list(map(target, *columns))}

            return rows

        def arrays(batch: Any) -> dict[str, Any]:
            columns = list(batch.values()) if isinstance(batch, dict) else list(batch.columns)
            return {name: target(*columns, *args, **kwargs)}

        return arrays

    def payload(self) -> str:
        return base64.b64encode(cloudpickle.dumps(self)).decode()


def describe(target: Any, method: str) -> str:
    """``map_batches(Model)``: how errors and logs name the user code."""
    name = getattr(target, "__qualname__", None) or type(target).__name__
    return f"{method}({name})"


def check_concurrency(concurrency: Any, where: str) -> tuple[int, int]:
    """``concurrency``: None (the session's parallelism), n, or (min, max)."""
    if concurrency is None:
        n = os.cpu_count() or 1
        return n, n
    if isinstance(concurrency, bool):
        raise TypeError(f"{where}: concurrency must be an int or a (min, max) tuple, not a bool")
    if isinstance(concurrency, int):
        if concurrency < 1:
            raise ValueError(f"{where}: concurrency must be at least 1, not {concurrency}")
        return concurrency, concurrency
    if isinstance(concurrency, tuple) and len(concurrency) == 2 and all(isinstance(c, int) for c in concurrency):
        low, high = concurrency
        if not 1 <= low <= high:
            raise ValueError(f"{where}: concurrency (min, max) needs 1 <= min <= max, not {concurrency}")
        return low, high
    raise TypeError(f"{where}: concurrency must be an int or a (min, max) tuple, not {concurrency!r}")


def model_options(
    code: UserCode,
    *,
    where: str,
    batch_size: int | None = None,
    concurrency: Any = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    on_error: str = "raise",
    timeout: float | None = None,
    max_retries: int = 0,
) -> dict[str, str]:
    """The options of the model that runs ``code``: the same keys as SQL's models."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"{where}: batch_size must be a positive int, not {batch_size!r}")
    low, high = check_concurrency(concurrency, where)
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus), ("timeout", timeout)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{where}: {name} must be a number at least 0, not {value!r}")
    if num_gpus is not None and num_gpus > 1 and float(num_gpus) != int(num_gpus):
        raise ValueError(f"{where}: num_gpus must be a fraction up to 1 or a whole number, not {num_gpus}")
    if on_error not in _ON_ERROR:
        raise ValueError(f"{where}: on_error must be one of {list(_ON_ERROR)}, not {on_error!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"{where}: max_retries must be an int at least 0, not {max_retries!r}")
    options = {
        "provider": "python",
        "python.function": code.name,
        "python.executable": sys.executable,
        "python.path": os.pathsep.join(p for p in sys.path if p),
        "python.num-cpus": str(num_cpus if num_cpus is not None else 1),
        "python.num-gpus": str(num_gpus if num_gpus is not None else 0),
        # Row-wise functions get larger batches: their per-batch cost is paid per 16k rows.
        "batch-rows": str(batch_size or (16384 if code.kind in ("rows", "udf") else 1024)),
        "batch-bytes": "64 MiB",
        "max-retries": str(max_retries),
        "on-error": "fail" if on_error == "raise" else "null",
        # The operator's own limits stay out of the way of user code's: a batch's time
        # limit is python.timeout, and a row waits as long as its batch needs.
        "request-timeout": "168 h",
        "deadline": "168 h",
    }
    if timeout is not None:
        options["python.timeout"] = f"{int(timeout * 1000)} ms"
    # Workers started with the job: those asked for; without a concurrency, one (the rest,
    # up to the cores, start as batches wait), so that a preview starts no more than it needs.
    options["python.prestart"] = str(low if concurrency is not None else 1)
    if low == high:
        options["concurrency"] = str(high)
    else:
        options["concurrency.min"] = str(low)
        options["concurrency.max"] = str(high)
    return options


def _row_of(value: Any, name: str) -> dict[str, Any]:
    """What a map function returned for one row: a row."""
    if not isinstance(value, dict):
        raise ResultError(f"{name} returned a {type(value).__name__}; map's function returns a dict (a row)")
    return value


def _rows_of(value: Any, name: str) -> list[dict[str, Any]]:
    """What a flat_map function returned for one row: its rows."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ResultError(f"{name} returned a {type(value).__name__}; flat_map's function returns a list (or any iterable) of dicts (rows)")
    rows = list(value)
    for row in rows:
        if not isinstance(row, dict):
            raise ResultError(f"{name} gave a {type(row).__name__} among its rows; each row is a dict")
    return rows


def infer_schema(code: UserCode, input_schema: pa.Schema, sample: Callable[[], pa.Table]) -> pa.Schema:
    """The columns a function returns, found by calling it here: on no rows, or when that
    says too little (a column of no type), on ``sample()``'s first rows. A class is not
    constructed in this process: it needs ``return_schema``."""
    from riffle._batches import to_batch, to_user

    if inspect.isclass(code.target):
        raise ValueError(
            f"{code.name}: give return_schema= (a pyarrow schema or a dict of column types): "
            "Riffle does not construct the class in this process to find what it returns"
        )

    def run(batch: pa.RecordBatch) -> pa.Schema:
        try:
            result = code.build()(to_user(batch, code.batch_format))
            return to_batch(result, None, code.name).schema
        except Exception as error:
            raise ValueError(
                f"{code.name}: could not find the columns it returns by calling it on "
                f"{batch.num_rows} rows ({type(error).__name__}: {error}); give return_schema="
            ) from error

    schema = run(pa.RecordBatch.from_pylist([], schema=input_schema))
    if all(not pa.types.is_null(f.type) for f in schema):
        return schema
    rows = sample()
    if rows.num_rows == 0:
        raise ValueError(f"{code.name}: give return_schema=: there are no rows to find its columns from")
    return run(rows.combine_chunks().to_batches()[0])


def schema_of(value: Any, where: str) -> pa.Schema:
    """A return schema from a pyarrow schema or a dict of column types."""
    if isinstance(value, pa.Schema):
        return value
    if isinstance(value, Mapping):
        fields = []
        for name, dtype in value.items():
            if not isinstance(dtype, pa.DataType):
                raise TypeError(f"{where}: return_schema['{name}'] must be a pyarrow DataType, not {dtype!r}")
            fields.append(pa.field(name, dtype))
        return pa.schema(fields)
    raise TypeError(f"{where}: return_schema must be a pyarrow Schema or a dict of column types, not {type(value).__name__}")


def next_model_name(code: UserCode) -> str:
    return f"{code.name}#{next(_names)}"


def internal_names(count: int) -> list[str]:
    return [f"__riffle_out_{i}" for i in range(count)]


def check_sequence(value: Any, where: str, name: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{where}: {name} must be a list or tuple, not {type(value).__name__}")
    return tuple(value)


def check_mapping(value: Any, where: str, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: {name} must be a dict, not {type(value).__name__}")
    return dict(value)




# --------------------------------------------------------------------------- decorators

_PYTHON_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_(), bytes: pa.binary()}


def _return_type(fn: Any, return_dtype: Any, where: str) -> pa.DataType:
    if return_dtype is not None:
        if not isinstance(return_dtype, pa.DataType):
            raise TypeError(f"{where}: return_dtype must be a pyarrow DataType, not {return_dtype!r}")
        return return_dtype
    annotation = inspect.signature(fn).return_annotation
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "str": str, "bool": bool, "bytes": bytes}.get(annotation, annotation)
    if annotation in _PYTHON_TYPES:
        return _PYTHON_TYPES[annotation]
    raise TypeError(
        f"{where}: give return_dtype= (a pyarrow DataType); the return annotation "
        f"{annotation!r} does not say one"
    )


_RUN_OPTIONS = ("concurrency", "num_cpus", "num_gpus", "batch_size", "on_error", "timeout", "max_retries")


@dataclass
class Udf:
    """A Python function (or class) used as an expression: ``f(col("x"))`` in
    ``with_column`` or ``select``. Runs in worker processes, like ``map_batches``."""

    target: Any
    kind: str  # "udf" (row-wise) or "udf_batch"
    return_dtype: pa.DataType
    run: dict[str, Any]
    constructor_args: tuple[Any, ...] = ()
    constructor_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return getattr(self.target, "__qualname__", type(self.target).__name__)

    def __call__(self, *args: Any) -> UdfCall:
        if not args:
            raise TypeError(f"{self.name}: call it with at least one column")
        return UdfCall(self, args, None)


@dataclass
class UdfCall:
    """A call of a :class:`Udf` on columns; it becomes a column of ``with_column`` or
    ``select`` (a whole column: it cannot be part of a larger expression)."""

    udf: Udf
    args: tuple[Any, ...]
    output_name: str | None

    def alias(self, name: str) -> UdfCall:
        return UdfCall(self.udf, self.args, name)

    def __repr__(self) -> str:
        return f"{self.udf.name}({', '.join(map(repr, self.args))})"

    def _whole_column(self, *_: Any) -> Any:
        raise TypeError(
            f"{self!r}: a Python UDF's result is a whole column: give it to with_column(name, ...) "
            "or select(...), then use the column in other expressions"
        )

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _whole_column
    __truediv__ = __rtruediv__ = __mod__ = __neg__ = __invert__ = _whole_column
    __and__ = __rand__ = __or__ = __ror__ = __lt__ = __le__ = __gt__ = __ge__ = _whole_column

    def user_code(self) -> UserCode:
        return UserCode(
            target=self.udf.target,
            kind=self.udf.kind,
            name=self.udf.name,
            batch_format="arrow",
            constructor_args=self.udf.constructor_args,
            constructor_kwargs=self.udf.constructor_kwargs,
            on_error=self.udf.run.get("on_error", "raise"),
        )


def _check_run_options(run: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(run) - set(_RUN_OPTIONS))
    if unknown:
        raise TypeError(f"{where}: unknown keyword argument(s) {unknown}; valid: {list(_RUN_OPTIONS)}")
    return run


class _UdfDecorator:
    """``@riffle.udf`` (one row at a time) and ``@riffle.udf.batch`` (whole columns)."""

    def __call__(self, fn: Any = None, /, *, return_dtype: Any = None, **run: Any) -> Any:
        """Declares a row-wise Python function: called with one value per argument column,
        it returns one value. ``return_dtype`` (a pyarrow type) or a return annotation
        (int, float, str, bool, bytes) says its type.

            >>> import pyarrow as pa, riffle
            >>> @riffle.udf(return_dtype=pa.int64())
            ... def double(x):
            ...     return 2 * x
            >>> riffle.from_pydict({"x": [1, 2]}).with_column("y", double(riffle.col("x"))).to_pydict()
            {'x': [1, 2], 'y': [2, 4]}
        """
        _check_run_options(run, "udf")

        def wrap(function: Any) -> Udf:
            if not callable(function) or inspect.isclass(function):
                raise TypeError(f"udf: decorates a function, not {function!r} (use @riffle.cls for a class)")
            where = f"udf({function.__qualname__})"
            return Udf(function, "udf", _return_type(function, return_dtype, where), run)

        return wrap(fn) if fn is not None else wrap

    def batch(self, fn: Any = None, /, *, return_dtype: Any = None, **run: Any) -> Any:
        """Declares a Python function over whole columns: called with one pyarrow Array per
        argument column, it returns an array (pyarrow, numpy or a list) as long."""
        _check_run_options(run, "udf.batch")

        def wrap(function: Any) -> Udf:
            if not callable(function) or inspect.isclass(function):
                raise TypeError(f"udf.batch: decorates a function, not {function!r}")
            where = f"udf.batch({function.__qualname__})"
            return Udf(function, "udf_batch", _return_type(function, return_dtype, where), run)

        return wrap(fn) if fn is not None else wrap


udf = _UdfDecorator()


def cls(klass: Any = None, /, *, return_dtype: Any = None, batch: bool = False, **run: Any) -> Any:
    """Declares a class whose instances are called per row (per batch of columns with
    ``batch=True``). ``Model(args)`` does not construct it here: each worker constructs it
    once, with those arguments (load the model in ``__init__``).

        >>> import pyarrow as pa, riffle
        >>> @riffle.cls(return_dtype=pa.int64())
        ... class Add:
        ...     def __init__(self, n):
        ...         self.n = n
        ...     def __call__(self, x):
        ...         return x + self.n
        >>> add3 = Add(3)
        >>> riffle.from_pydict({"x": [1]}).select(add3(riffle.col("x")).alias("y")).to_pydict()
        {'y': [4]}
    """
    _check_run_options(run, "cls")

    def wrap(target: Any) -> Any:
        if not inspect.isclass(target):
            raise TypeError(f"cls: decorates a class, not {target!r}")
        kind = "udf_batch" if batch else "udf"
        dtype = _return_type(target.__call__, return_dtype, f"cls({target.__qualname__})")

        def construct(*args: Any, **kwargs: Any) -> Udf:
            return Udf(target, kind, dtype, run, tuple(args), dict(kwargs))

        construct.__name__ = target.__name__
        construct.__qualname__ = target.__qualname__
        construct.__doc__ = target.__doc__
        return construct

    return wrap(klass) if klass is not None else wrap

__all__: Sequence[str] = ["UserCode", "Udf", "UdfCall", "udf", "cls"]
