"""The lazy DataFrame.

Every method returns a new DataFrame and runs nothing; actions (``collect``, ``to_arrow``,
``iter_batches``, ``take``, ``show``, ``count``, ``write_*``) run a job.

    >>> import riffle
    >>> df = riffle.from_pydict({"x": [1, 2, 3, 4], "g": ["a", "b", "a", "b"]})
    >>> out = df.filter(riffle.col("x") > 1).group_by("g").agg(riffle.col("x").sum().alias("s"))
    >>> out.sort("g").to_pylist()
    [{'g': 'a', 's': 3}, {'g': 'b', 's': 6}]
"""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Any, Iterator, Literal, Mapping, Sequence

from riffle import _internal
from riffle._session import Session
from riffle.expr import Expr, _expr, col, lit

if TYPE_CHECKING:
    import pandas
    import pyarrow

    from riffle.report import JobReport

JoinHow = Literal["inner", "left", "right", "full", "semi", "anti", "cross"]
BatchFormat = Literal["arrow", "pandas", "numpy"]
_BATCH_FORMATS = ("arrow", "pandas", "numpy")


class DataFrame:
    """A lazy, immutable query over rows with named, typed columns."""

    __slots__ = ("_native", "_session", "_table", "_last")

    def __init__(
        self,
        native: _internal.DataFrame,
        session: Session,
        table: pyarrow.Table | None = None,
    ) -> None:
        self._native = native
        self._session = session
        self._table = table  # the rows, once collect() ran
        self._last: _Run | None = None  # the last job run from this frame, for stats()

    # ---------------------------------------------------------------- schema
    @property
    def schema(self) -> pyarrow.Schema:
        """The result's columns and types (no job runs)."""
        return self._native.schema()

    @property
    def columns(self) -> list[str]:
        """The result's column names (no job runs)."""
        return list(self.schema.names)

    def __getitem__(self, name: str) -> Expr:
        """``df["x"]`` is ``riffle.col("x")``, checked against the columns."""
        if name not in self.columns:
            raise KeyError(f"no column '{name}'; the columns are {self.columns}")
        return col(name)

    # --------------------------------------------------------- transformations
    def _wrap(self, native: _internal.DataFrame) -> DataFrame:
        return DataFrame(native, self._session)

    def select(self, *columns: str | Expr, **named: Any) -> DataFrame:
        """Computes these columns: names, expressions, and ``name=expr`` pairs."""
        from riffle._udf import UdfCall

        if any(isinstance(c, UdfCall) for c in (*columns, *named.values())):
            return self._select_with_udfs(columns, named)
        exprs = [_column(c, "select") for c in columns]
        exprs += [lit(e).alias(n)._native for n, e in named.items()]
        if not exprs:
            raise ValueError("select: give at least one column")
        return self._wrap(self._native.select(exprs))

    def with_column(self, name: str, expr: Any) -> DataFrame:
        """Adds the column ``name`` (or replaces it) with ``expr``: an expression, or a call
        of a ``@riffle.udf`` function (run in worker processes)."""
        from riffle._udf import UdfCall

        if not isinstance(name, str):
            raise TypeError(f"with_column: name must be a str, not {type(name).__name__}")
        if isinstance(expr, UdfCall):
            return self._with_udf_column(name, expr)
        return self._wrap(self._native.with_column(name, _expr(expr)))

    def _with_udf_column(self, name: str, call: Any) -> DataFrame:
        """``call``'s result as column ``name``: its arguments become columns, a model of
        the python provider reads them, and the result takes the column's place."""
        import pyarrow as pa

        from riffle import _udf as udf

        where = call.udf.name
        arguments = [f"__riffle_arg_{i}" for i in range(len(call.args))]
        frame = self
        for argument, value in zip(arguments, call.args):
            frame = frame.with_column(argument, value)
        code = call.user_code()
        options = udf.model_options(code, where=where, **call.udf.run)
        schema = pa.schema([pa.field(name, call.udf.return_dtype)])
        keep = [c for c in self.columns if c != name]
        out = frame._run_user_code(code, schema, options, arguments, keep=keep)
        columns = self.columns
        order = columns + ([name] if name not in columns else [])
        return out.select(*order)

    def _select_with_udfs(self, columns: tuple[Any, ...], named: dict[str, Any]) -> DataFrame:
        from riffle._udf import UdfCall

        frame = self
        picked: list[Any] = []
        for index, column in enumerate([*columns, *[(n, e) for n, e in named.items()]]):
            name, value = column if isinstance(column, tuple) else (None, column)
            if isinstance(value, UdfCall):
                out = name or value.output_name or f"{value.udf.name.split('.')[-1]}_{index}"
                frame = frame.with_column(out, value)
                picked.append(col(out))
            elif name is not None:
                picked.append(lit(value).alias(name))
            else:
                picked.append(value)
        return frame.select(*picked)

    def with_columns(self, columns: Mapping[str, Any] | None = None, **named: Any) -> DataFrame:
        """Adds or replaces several columns: a dict of ``name: expr`` and/or ``name=expr``."""
        frame = self
        for name, expr in {**dict(columns or {}), **named}.items():
            frame = frame.with_column(name, expr)
        return frame

    def filter(self, predicate: Expr) -> DataFrame:
        """Keeps the rows where ``predicate`` is true."""
        if not isinstance(predicate, Expr):
            raise TypeError(f"filter: predicate must be an Expr, not {type(predicate).__name__}")
        return self._wrap(self._native.filter(predicate._native))

    def group_by(self, *keys: str | Expr) -> GroupBy:
        """Groups the rows by ``keys``; ``.agg(...)`` computes each group's aggregates."""
        return GroupBy(self, [_column(k, "group_by") for k in keys])

    def agg(self, *aggregates: Expr, **named: Expr) -> DataFrame:
        """Aggregates over all rows (one row out)."""
        return GroupBy(self, []).agg(*aggregates, **named)

    def join(
        self,
        other: DataFrame,
        on: str | Sequence[str] | None = None,
        *,
        left_on: str | Sequence[str] | None = None,
        right_on: str | Sequence[str] | None = None,
        how: JoinHow = "inner",
    ) -> DataFrame:
        """Joins with ``other`` on equal columns: ``on`` (the same names on both sides) or
        ``left_on``/``right_on``. ``how``: inner, left, right, full, semi, anti or cross."""
        if not isinstance(other, DataFrame):
            raise TypeError(f"join: other must be a DataFrame, not {type(other).__name__}")
        if how == "cross":
            if on is not None or left_on is not None or right_on is not None:
                raise ValueError("join: how='cross' takes no on, left_on or right_on")
            return self._wrap(self._native.join(other._native, "cross", [], []))
        if on is not None:
            if left_on is not None or right_on is not None:
                raise ValueError("join: give on, or left_on and right_on, not both")
            left_on = right_on = on
        if left_on is None or right_on is None:
            raise ValueError("join: give on, or left_on and right_on")
        left, right = _names(left_on, "left_on"), _names(right_on, "right_on")
        if len(left) != len(right):
            raise ValueError(f"join: left_on has {len(left)} columns, right_on {len(right)}")
        return self._wrap(self._native.join(other._native, how, left, right))

    def sort(
        self,
        by: str | Expr | Sequence[str | Expr],
        *,
        descending: bool | Sequence[bool] = False,
        nulls_first: bool | None = None,
    ) -> DataFrame:
        """Sorts by ``by``; ``descending`` is one flag or one per key. NULLs go last when
        ascending and first when descending unless ``nulls_first`` says otherwise."""
        keys = list(by) if isinstance(by, (list, tuple)) else [by]
        flags = list(descending) if isinstance(descending, (list, tuple)) else [descending] * len(keys)
        if len(flags) != len(keys):
            raise ValueError(f"sort: {len(keys)} keys but {len(flags)} descending flags")
        order = [(Expr(_column(k, "sort")), bool(d), nulls_first) for k, d in zip(keys, flags)]
        return self._wrap(self._native.sort([(e._native, d, n) for e, d, n in order]))

    def limit(self, n: int, *, offset: int = 0) -> DataFrame:
        """At most ``n`` rows (after skipping ``offset``)."""
        _check_count(n, "limit", "n")
        _check_count(offset, "limit", "offset")
        return self._wrap(self._native.limit(n, offset))

    def distinct(self) -> DataFrame:
        """The rows with duplicates removed."""
        return self._wrap(self._native.distinct())

    def union(self, other: DataFrame) -> DataFrame:
        """The rows of both, duplicates removed (SQL's UNION; Ray Data's ``union`` keeps
        duplicates: that is :meth:`union_all` here)."""
        return self._wrap(self._native.union(_frame(other, "union"), True))

    def union_all(self, other: DataFrame) -> DataFrame:
        """The rows of both, duplicates kept (SQL's UNION ALL)."""
        return self._wrap(self._native.union(_frame(other, "union_all"), False))

    def drop(self, *columns: str) -> DataFrame:
        """All columns but ``columns``.

        >>> import riffle
        >>> riffle.from_pydict({"a": [1], "b": [2], "c": [3]}).drop("b").columns
        ['a', 'c']
        """
        unknown = [c for c in columns if c not in self.columns]
        if unknown:
            raise ValueError(f"drop: no column(s) {unknown}; the columns are {self.columns}")
        kept = [c for c in self.columns if c not in columns]
        if not kept:
            raise ValueError("drop: that would drop every column")
        return self.select(*(col(c) for c in kept))

    def rename(self, mapping: Mapping[str, str] | None = None, **names: str) -> DataFrame:
        """The same columns, in the same order, some with new names: ``{"old": "new"}``
        or ``old="new"``.

        >>> import riffle
        >>> riffle.from_pydict({"a": [1], "b": [2]}).rename({"a": "x"}).columns
        ['x', 'b']
        """
        renames = {**(dict(mapping) if mapping is not None else {}), **names}
        unknown = [c for c in renames if c not in self.columns]
        if unknown:
            raise ValueError(f"rename: no column(s) {unknown}; the columns are {self.columns}")
        bad = [n for n in renames.values() if not isinstance(n, str) or not n]
        if bad:
            raise TypeError(f"rename: new names must be non-empty strings, not {bad}")
        out = [renames.get(c, c) for c in self.columns]
        clashes = sorted({n for n in out if out.count(n) > 1})
        if clashes:
            raise ValueError(f"rename: the result would have two columns named {clashes}")
        return self.select(*(col(c).alias(renames[c]) if c in renames else col(c) for c in self.columns))

    def with_column_renamed(self, existing: str, new: str) -> DataFrame:
        """Renames one column (Daft's and Spark's name for :meth:`rename`)."""
        return self.rename({existing: new})

    def explode(self, *columns: str) -> DataFrame:
        """One row per element of each list column in ``columns``, the other columns
        repeated. A NULL list gives one row with NULL, an empty list none (SQL's UNNEST;
        Polars and Daft give a NULL row for an empty list too)."""
        if not columns:
            raise ValueError("explode: name at least one list column")
        return self._wrap(self._native.explode(_names(list(columns), "columns")))

    def drop_null(self, *columns: str) -> DataFrame:
        """Drops the rows with a NULL in any of ``columns`` (any column when none given)."""
        return self._wrap(self._native.drop_null(_names(list(columns), "columns")))

    def fill_null(self, value: Any, *columns: str) -> DataFrame:
        """Replaces NULLs with ``value`` in ``columns`` (all columns of a fitting type when
        none given)."""
        return self._wrap(self._native.fill_null(_expr(value), _names(list(columns), "columns")))

    def repartition(self, n: int) -> DataFrame:
        """Spreads the rows round-robin over ``n`` parallel subtasks from here on."""
        _check_count(n, "repartition", "n", minimum=1)
        return self._wrap(self._native.repartition(n))

    def describe(self) -> DataFrame:
        """Runs the query once and returns a summary, one row per column: its type, count
        of values, NULLs, mean and standard deviation (numbers), min and max (numbers,
        strings, dates and times, as text).

        >>> import riffle
        >>> riffle.from_pydict({"x": [1, 2, None]}).describe().to_pylist()[0]["mean"]
        1.5
        """
        import pyarrow as pa

        def numeric(t: pa.DataType) -> bool:
            return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))

        def orderable(t: pa.DataType) -> bool:
            return bool(
                numeric(t)
                or pa.types.is_string(t)
                or pa.types.is_large_string(t)
                or pa.types.is_string_view(t)
                or pa.types.is_boolean(t)
                or pa.types.is_temporal(t)
            )

        fields = list(self.schema)
        parts = ['count(*) AS "rows"']
        for i, f in enumerate(fields):
            name = '"' + f.name.replace('"', '""') + '"'
            parts.append(f"count({name}) AS c{i}")
            if orderable(f.type):
                parts += [f"CAST(min({name}) AS VARCHAR) AS lo{i}", f"CAST(max({name}) AS VARCHAR) AS hi{i}"]
            if numeric(f.type):
                parts += [f"avg(CAST({name} AS DOUBLE)) AS m{i}", f"stddev(CAST({name} AS DOUBLE)) AS s{i}"]
        [totals] = self._session.sql(f"SELECT {', '.join(parts)} FROM described", described=self).to_pylist()
        rows = [
            {
                "column": f.name,
                "type": str(f.type),
                "count": totals[f"c{i}"],
                "nulls": totals["rows"] - totals[f"c{i}"],
                "mean": totals.get(f"m{i}"),
                "std": totals.get(f"s{i}"),
                "min": totals.get(f"lo{i}"),
                "max": totals.get(f"hi{i}"),
            }
            for i, f in enumerate(fields)
        ]
        schema = pa.schema(
            [("column", pa.string()), ("type", pa.string()), ("count", pa.int64()), ("nulls", pa.int64())]
            + [("mean", pa.float64()), ("std", pa.float64()), ("min", pa.string()), ("max", pa.string())]
        )
        from riffle.io import from_arrow

        return from_arrow(pa.Table.from_pylist(rows, schema=schema), session=self._session)

    # ------------------------------------------------------------- user code
    def map_batches(
        self,
        fn: Any,
        *,
        batch_size: int | None = None,
        batch_format: BatchFormat = "arrow",
        concurrency: int | tuple[int, int] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        fn_args: Sequence[Any] | None = None,
        fn_kwargs: Mapping[str, Any] | None = None,
        fn_constructor_args: Sequence[Any] | None = None,
        fn_constructor_kwargs: Mapping[str, Any] | None = None,
        return_schema: Any = None,
        on_error: Literal["raise", "null"] = "raise",
        timeout: float | None = None,
        max_retries: int = 0,
    ) -> DataFrame:
        """Runs ``fn`` on batches of rows in Python worker processes; its results are the
        new rows, any number per batch (fewer to filter, more to split a document into
        chunks), in the order of the batches.

        ``fn`` is a function, or a class: constructed once per worker with
        ``fn_constructor_args`` (load the model in ``__init__``), then called per batch.
        A batch (at most ``batch_size`` rows) comes in ``batch_format``: ``"arrow"`` (a
        read-only pyarrow RecordBatch), ``"pandas"`` or ``"numpy"`` (a dict of arrays; tensor
        and same-size image columns as N-d arrays). ``fn`` returns the same kinds, or a dict
        of columns. ``return_schema`` (a pyarrow schema or a dict of types) declares the
        columns; without it, a function is called once here on an empty batch to find them.

        ``concurrency`` workers (an int, or ``(min, max)`` to start more as batches wait;
        default: the machine's cores) run at once, each with ``num_cpus`` BLAS threads and
        ``num_gpus`` GPUs (a fraction shares one) in its ``CUDA_VISIBLE_DEVICES``. A batch
        that raises, crashes its worker or runs past ``timeout`` seconds is tried again
        ``max_retries`` times, then fails the job with :class:`riffle.UserCodeError`,
        :class:`riffle.WorkerCrashedError` or :class:`riffle.WorkerTimeoutError`;
        ``on_error="null"`` gives a row of NULLs per input row of the failed batch instead.

            >>> import riffle
            >>> df = riffle.from_pydict({"x": [1, 2, 3]})
            >>> df.map_batches(lambda b: {"y": [v * 10 for v in b["x"].to_pylist()]},
            ...                concurrency=1).to_pydict()
            {'y': [10, 20, 30]}
        """
        from riffle import _udf as udf

        where = udf.describe(fn, "map_batches")
        if not callable(fn):
            raise TypeError(f"map_batches: fn must be a function or a class, not {type(fn).__name__}")
        _check_batch_format(batch_format, where)
        code = udf.UserCode(
            target=fn,
            kind="batches",
            name=where,
            batch_format=batch_format,
            fn_args=udf.check_sequence(fn_args, where, "fn_args"),
            fn_kwargs=udf.check_mapping(fn_kwargs, where, "fn_kwargs"),
            constructor_args=udf.check_sequence(fn_constructor_args, where, "fn_constructor_args"),
            constructor_kwargs=udf.check_mapping(fn_constructor_kwargs, where, "fn_constructor_kwargs"),
            any_rows=True,
        )
        if not inspect.isclass(fn) and (fn_constructor_args or fn_constructor_kwargs):
            raise ValueError(f"{where}: fn_constructor_args are for a class, and fn is a function")
        schema = udf.schema_of(return_schema, where) if return_schema is not None else udf.infer_schema(code, self.schema, lambda: self.limit(8).to_arrow())
        return self._plan_user_code(code, schema, where, on_error, timeout, max_retries, batch_size, concurrency, num_cpus, num_gpus)

    def map(
        self,
        fn: Any,
        *,
        return_schema: Any = None,
        concurrency: int | tuple[int, int] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        batch_size: int | None = None,
        on_error: Literal["raise", "null"] = "raise",
        timeout: float | None = None,
        max_retries: int = 0,
    ) -> DataFrame:
        """Runs ``fn`` on each row (a dict) in Python worker processes; it returns the new
        row (a dict). ``return_schema`` declares its columns; without it, ``fn`` is run
        here on the first row to find them. The other arguments are
        :meth:`map_batches`'."""
        from riffle import _udf as udf

        where = udf.describe(fn, "map")
        if not callable(fn) or inspect.isclass(fn):
            raise TypeError(f"map: fn must be a function, not {type(fn).__name__}")
        code = udf.UserCode(target=fn, kind="rows", name=where)
        if return_schema is not None:
            schema = udf.schema_of(return_schema, where)
        else:
            first = self.take(1)
            if not first:
                raise ValueError(f"{where}: give return_schema=: there is no row to find the columns from")
            result = fn(first[0])
            if not isinstance(result, dict):
                raise TypeError(f"{where}: fn returned a {type(result).__name__}; map's function returns a dict (a row)")
            import pyarrow as pa

            schema = pa.Table.from_pylist([result]).schema
        return self._plan_user_code(code, schema, where, on_error, timeout, max_retries, batch_size, concurrency, num_cpus, num_gpus)

    def flat_map(
        self,
        fn: Any,
        *,
        return_schema: Any = None,
        concurrency: int | tuple[int, int] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        batch_size: int | None = None,
        on_error: Literal["raise", "null"] = "raise",
        timeout: float | None = None,
        max_retries: int = 0,
    ) -> DataFrame:
        """Runs ``fn`` on each row (a dict) in Python worker processes; it returns a list
        of rows (dicts), any number, which replace it. ``return_schema`` declares their
        columns; without it, ``fn`` is run here on the first rows until one gives a row.
        The other arguments are :meth:`map_batches`'.

            >>> import riffle
            >>> docs = riffle.from_pydict({"doc": ["a b", "c"]})
            >>> docs.flat_map(lambda r: [{"word": w} for w in r["doc"].split()], concurrency=1).to_pydict()
            {'word': ['a', 'b', 'c']}
        """
        from riffle import _udf as udf

        where = udf.describe(fn, "flat_map")
        if not callable(fn) or inspect.isclass(fn):
            raise TypeError(f"flat_map: fn must be a function, not {type(fn).__name__}")
        code = udf.UserCode(target=fn, kind="flat_rows", name=where, any_rows=True)
        if return_schema is not None:
            schema = udf.schema_of(return_schema, where)
        else:
            import pyarrow as pa

            produced = [out for row in self.take(8) for out in udf._rows_of(fn(row), where)]
            if not produced:
                raise ValueError(f"{where}: give return_schema=: the first rows gave no row to find the columns from")
            schema = pa.Table.from_pylist(produced).schema
        return self._plan_user_code(code, schema, where, on_error, timeout, max_retries, batch_size, concurrency, num_cpus, num_gpus)

    def _plan_user_code(
        self,
        code: Any,
        schema: pyarrow.Schema,
        where: str,
        on_error: str,
        timeout: float | None,
        max_retries: int,
        batch_size: int | None,
        concurrency: int | tuple[int, int] | None,
        num_cpus: float | None,
        num_gpus: float | None,
    ) -> DataFrame:
        """The model options of ``code`` from the run arguments, then the plan over all
        the columns (for map_batches, map and flat_map)."""
        from riffle import _udf as udf

        options = udf.model_options(
            code,
            where=where,
            on_error=on_error,
            timeout=timeout,
            max_retries=max_retries,
            batch_size=batch_size,
            concurrency=concurrency,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
        )
        return self._run_user_code(code, schema, options, self.columns, keep=[])

    def _run_user_code(
        self,
        code: Any,
        schema: pyarrow.Schema,
        options: dict[str, str],
        inputs: list[str],
        keep: list[str],
    ) -> DataFrame:
        """Declares ``code`` as a model reading ``inputs`` and giving ``schema``'s columns,
        and plans it onto the inference operator; the result has the ``keep`` columns and
        then ``schema``'s. Code giving any number of rows per batch (``code.any_rows``)
        answers each batch on its first row, as a list of structs (see riffle-inference's
        ``python.output-rows``), which the engine turns back into rows in order."""
        import pyarrow as pa

        from riffle import _udf as udf

        code.output_names = tuple(schema.names)
        internal = udf.internal_names(len(schema))
        if code.any_rows:
            if keep:
                raise ValueError(f"{code.name}: a function giving any number of rows keeps no input column")
            struct = pa.struct([pa.field(n, f.type, True, f.metadata) for n, f in zip(schema.names, schema)])
            output = pa.schema([pa.field("__riffle_rows", pa.list_(pa.field("item", struct, True)), True)])
            options["python.output-rows"] = "any"
        else:
            output = pa.schema([pa.field(n, f.type, True, f.metadata) for n, f in zip(internal, schema)])
        options["python.payload"] = code.payload()
        known = self.schema
        input_schema = pa.schema([known.field(c) for c in inputs])
        name = udf.next_model_name(code)
        self._session._native.register_model(name, input_schema, output, options)
        predicted = self._wrap(self._native.ml_predict(name, inputs, {}))
        if code.any_rows:
            # The engine plans the rows out of the structs right above the call.
            return predicted
        columns = [col(c) for c in keep] + [col(i).alias(n) for i, n in zip(internal, schema.names)]
        return predicted.select(*columns)

    # ---------------------------------------------------------------- actions
    def explain(self) -> str:
        """The optimized plan and the job graph that would run it, as text."""
        return self._native.explain()

    def _job(self) -> _internal.Job:
        return self._started(self._native.execute()).job

    def _started(self, job: _internal.Job) -> _Run:
        self._last = _Run(job)
        return self._last

    def collect(self) -> DataFrame:
        """Runs the query and returns a DataFrame over its rows, held in memory: further
        queries on it start from those rows, and its repr shows them."""
        table = self.to_arrow()
        return DataFrame(self._session._native.read_arrow(table), self._session, table)

    def to_arrow(self) -> pyarrow.Table:
        """Runs the query; its rows as a pyarrow Table."""
        import pyarrow as pa

        if self._table is not None:
            return self._table
        from riffle.progress import Progress

        run = self._started(self._native.execute())
        job = run.job
        progress = Progress(job)
        batches = []
        try:
            while (batch := job.next_batch()) is not None:
                batches.append(batch)
                run.rows += batch.num_rows
                progress.update(batch.num_rows)
        finally:
            run.end()
            progress.done()
        # A batch may say NOT NULL where the plan's schema says nullable (a literal): the
        # plan's schema (with its IMAGE and tensor tags) is the table's.
        schema = self.schema
        batches = [b if b.schema.equals(schema) else pa.RecordBatch.from_arrays(b.columns, schema=schema) for b in batches]
        return pa.Table.from_batches(batches, schema=schema)

    def stats(self) -> JobReport:
        """What the last job run from this DataFrame did (live while it runs): rows,
        time, restarts, checkpoints, each stage's rows and backpressure, and each model's
        or worker pool's figures."""
        from riffle.report import JobReport, from_native

        if self._last is None:
            return JobReport(rows=0, seconds=0.0)
        return from_native(self._last.job.report(), self._last.rows, self._last.seconds)

    def _repr_html_(self) -> str:
        """A notebook's view: the rows of a collected DataFrame (images as thumbnails), or
        the columns of a lazy one (no job runs)."""
        import html

        from riffle.display import html_table

        if self._table is not None:
            return html_table(self._table.slice(0, 8), self._table.num_rows - 8)
        return f"<pre>{html.escape(repr(self))}</pre>"

    def to_pandas(self) -> pandas.DataFrame:
        """Runs the query; its rows as a pandas DataFrame."""
        return self.to_arrow().to_pandas()

    def to_pylist(self) -> list[dict[str, Any]]:
        """Runs the query; its rows as a list of dicts."""
        return self.to_arrow().to_pylist()

    def to_pydict(self) -> dict[str, list[Any]]:
        """Runs the query; its columns as a dict of lists."""
        return self.to_arrow().to_pydict()

    def iter_batches(self, *, batch_size: int | None = None, batch_format: BatchFormat = "arrow") -> BatchIterator:
        """Runs the query and yields its batches as they come: pyarrow RecordBatches,
        pandas DataFrames or dicts of numpy arrays; of ``batch_size`` rows each (the last
        may have fewer) when given, else as the engine made them. Closing the iterator (or
        leaving a ``for`` loop over it early) cancels the job."""
        _check_batch_format(batch_format, "iter_batches")
        if batch_size is not None:
            _check_count(batch_size, "iter_batches", "batch_size", minimum=1)
        return BatchIterator(self._started(self._native.execute()), batch_format, batch_size)

    def take_batch(self, batch_size: int = 20, *, batch_format: BatchFormat = "arrow") -> Any:
        """The first ``batch_size`` rows as one batch in ``batch_format`` (Ray Data's
        ``take_batch``).

        >>> import riffle
        >>> riffle.from_pydict({"x": [1, 2, 3]}).take_batch(2, batch_format="numpy")["x"].tolist()
        [1, 2]
        """
        _check_count(batch_size, "take_batch", "batch_size", minimum=1)
        _check_batch_format(batch_format, "take_batch")
        table = self.limit(batch_size).to_arrow()
        batch = table.combine_chunks().to_batches()
        import pyarrow as pa

        one = batch[0] if batch else pa.RecordBatch.from_pylist([], schema=table.schema)
        return _format_batch(one, batch_format)

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """Runs the query and yields its rows as dicts as batches arrive; leaving the loop
        early cancels the job.

        >>> import riffle
        >>> [r["x"] for r in riffle.from_pydict({"x": [1, 2, 3]}).iter_rows()]
        [1, 2, 3]
        """
        with self.iter_batches() as batches:
            for batch in batches:
                yield from batch.to_pylist()

    def take(self, n: int = 20, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """Up to ``n`` rows as dicts: the first ``n``, or those that arrived within
        ``timeout`` seconds (then the job is cancelled). Works on unbounded sources too."""
        _check_count(n, "take", "n")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ValueError(f"take: timeout must be a positive number of seconds, not {timeout!r}")
        if self._table is not None:
            return self._table.slice(0, n).to_pylist()
        rows: list[dict[str, Any]] = []
        run = self._started(self.limit(n)._native.execute())
        job = run.job
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while len(rows) < n:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                batch = job.next_batch(left)
                if batch is None:
                    break
                rows.extend(batch.to_pylist()[: n - len(rows)])
        except TimeoutError:
            pass
        finally:
            job.cancel()
            run.rows = len(rows)
            run.end()
        return rows

    def show(self, n: int = 8) -> None:
        """Prints the first ``n`` rows as a table."""
        from riffle.display import text_table

        print(text_table(self.limit(n).to_arrow(), more=None))

    def count(self) -> int:
        """Runs the query; the number of rows."""
        if self._table is not None:
            return self._table.num_rows
        return self._native.count()

    def write_parquet(self, path: str, *, storage_options: Mapping[str, str] | None = None) -> int:
        """Writes the rows as Parquet files into the folder ``path`` (local or an object
        store URL; ``storage_options`` as SQL's ``'s3.endpoint'`` and kin), published when
        the job succeeds. Returns the number of rows written."""
        return self._write(path, "parquet", storage_options)

    def write_csv(self, path: str, *, storage_options: Mapping[str, str] | None = None) -> int:
        """Writes the rows as CSV files (with a header line) into the folder ``path``."""
        return self._write(path, "csv", storage_options)

    def write_json(self, path: str, *, storage_options: Mapping[str, str] | None = None) -> int:
        """Writes the rows as newline-delimited JSON files into the folder ``path``."""
        return self._write(path, "json", storage_options)

    def _write(self, path: str, format: str, storage_options: Mapping[str, str] | None) -> int:
        if not isinstance(path, str):
            raise TypeError(f"write_{format}: path must be a str, not {type(path).__name__}")
        from riffle.io import location
        from riffle.progress import Progress

        run = self._started(self._native.write(location(path), format, _storage_options(storage_options, f"write_{format}")))
        job = run.job
        progress = Progress(job)
        try:
            while (batch := job.next_batch()) is not None:
                # Rows written: the sink's counts.
                run.rows += sum(v for v in batch.column(0).to_pylist() if v is not None)
        finally:
            run.end()
            progress.done()
        return run.rows

    # ---------------------------------------------------------------- interop
    def __arrow_c_schema__(self) -> object:
        return self._native.__arrow_c_schema__()

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """Runs the query and streams its rows to any Arrow consumer (``pa.table(df)``,
        ``pl.from_arrow(df)``) without copies."""
        if self._table is not None:
            return self._table.__arrow_c_stream__(requested_schema)
        return self._native.__arrow_c_stream__(requested_schema)

    def __repr__(self) -> str:
        if self._table is not None:
            from riffle.display import text_table

            return text_table(self._table.slice(0, 8), more=self._table.num_rows - 8)
        fields = ", ".join(f"{f.name}: {f.type}" for f in self.schema)
        return f"riffle.DataFrame[{fields}] (lazy: collect() or show() runs it)"


class GroupBy:
    """Rows grouped by keys; :meth:`agg` computes each group's aggregates."""

    def __init__(self, frame: DataFrame, keys: list[_internal.Expr]) -> None:
        self._frame = frame
        self._keys = keys

    def agg(self, *aggregates: Expr, **named: Expr) -> DataFrame:
        """One row per group: the keys and ``aggregates`` (``name=expr`` names one)."""
        exprs = []
        for a in aggregates:
            if not isinstance(a, Expr):
                raise TypeError(f"agg: expected aggregate expressions, got {type(a).__name__}")
            exprs.append(a._native)
        exprs += [lit(e).alias(n)._native for n, e in named.items()]
        return self._frame._wrap(self._frame._native.aggregate(self._keys, exprs))


class _Run:
    """A job run from a DataFrame, for :meth:`DataFrame.stats`: its handle, the rows it
    gave (or wrote) and its time, until it ended."""

    __slots__ = ("job", "rows", "_started", "_ended")

    def __init__(self, job: _internal.Job) -> None:
        self.job = job
        self.rows = 0
        self._started = time.monotonic()
        self._ended: float | None = None

    def end(self) -> None:
        if self._ended is None:
            self._ended = time.monotonic()

    @property
    def seconds(self) -> float:
        return (self._ended if self._ended is not None else time.monotonic()) - self._started


class BatchIterator:
    """The batches of a running job. ``close()`` (or leaving a ``for`` loop early, or
    dropping it) cancels the job."""

    def __init__(self, run: _Run, batch_format: BatchFormat, batch_size: int | None = None) -> None:
        self._run = run
        self._job: _internal.Job | None = run.job
        self._format = batch_format
        self._size = batch_size
        # Rows received and not yet given out (with batch_size).
        self._pending: list[pyarrow.RecordBatch] = []
        self._pending_rows = 0

    def __iter__(self) -> BatchIterator:
        return self

    def _next_batch(self) -> pyarrow.RecordBatch | None:
        """The job's next batch, or None (and the run ended) at its end."""
        batch = self._job.next_batch() if self._job is not None else None
        if batch is None:
            self._job = None
            self._run.end()
        else:
            self._run.rows += batch.num_rows
        return batch

    def __next__(self) -> Any:
        if self._size is None:
            batch = self._next_batch()
            if batch is None:
                raise StopIteration
            return _format_batch(batch, self._format)
        while self._pending_rows < self._size and self._job is not None:
            batch = self._next_batch()
            if batch is not None and batch.num_rows:
                self._pending.append(batch)
                self._pending_rows += batch.num_rows
        if not self._pending_rows:
            raise StopIteration
        return _format_batch(self._take(min(self._size, self._pending_rows)), self._format)

    def _take(self, rows: int) -> pyarrow.RecordBatch:
        """The next ``rows`` pending rows as one batch."""
        import pyarrow as pa

        parts, left = [], rows
        while left:
            first = self._pending[0]
            if first.num_rows <= left:
                parts.append(self._pending.pop(0))
                left -= first.num_rows
            else:
                parts.append(first.slice(0, left))
                self._pending[0] = first.slice(left)
                left = 0
        self._pending_rows -= rows
        if len(parts) == 1:
            return parts[0]
        return pa.Table.from_batches(parts).combine_chunks().to_batches()[0]

    def close(self) -> None:
        """Cancels the job, if it still runs."""
        if self._job is not None:
            self._job.cancel()
            self._job = None
            self._run.end()

    def __enter__(self) -> BatchIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _format_batch(batch: pyarrow.RecordBatch, batch_format: str) -> Any:
    """``batch`` as map_batches' user code gets it (tensors and same-size images as N-d
    arrays in numpy batches)."""
    from riffle._batches import to_user

    return to_user(batch, batch_format)


def _check_batch_format(batch_format: str, where: str) -> None:
    if batch_format not in _BATCH_FORMATS:
        hint = " (write 'arrow')" if batch_format in ("pyarrow", "default") else ""
        raise ValueError(f"{where}: batch_format={batch_format!r} is not one of {list(_BATCH_FORMATS)}{hint}")


def _check_count(value: Any, where: str, name: str, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: {name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be at least {minimum}, not {value}")


def _column(value: Any, where: str) -> _internal.Expr:
    if isinstance(value, str):
        return col(value)._native
    if isinstance(value, Expr):
        return value._native
    raise TypeError(f"{where}: expected a column name or an Expr, not {type(value).__name__}")


def _names(value: str | Sequence[str], where: str) -> list[str]:
    names = [value] if isinstance(value, str) else list(value)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{where}: expected column names, got {type(name).__name__}")
    return names


def _frame(value: Any, where: str) -> _internal.DataFrame:
    if not isinstance(value, DataFrame):
        raise TypeError(f"{where}: expected a DataFrame, not {type(value).__name__}")
    return value._native


def _storage_options(options: Mapping[str, str] | None, where: str) -> dict[str, str]:
    settings = dict(options or {})
    for key, value in settings.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"{where}: storage_options must map str to str, not {key!r}: {value!r}")
    return settings


def _as_frame(value: Any, session: Session, where: str) -> DataFrame:
    """A DataFrame from a DataFrame or any Arrow data (pyarrow, Polars, pandas)."""
    if isinstance(value, DataFrame):
        return value
    from riffle.io import from_arrow, from_pandas

    if hasattr(value, "__arrow_c_stream__") or hasattr(value, "__arrow_c_array__"):
        return from_arrow(value, session=session)
    if type(value).__module__.startswith("pandas"):
        return from_pandas(value, session=session)
    raise TypeError(f"{where}: expected a DataFrame or Arrow data, not {type(value).__name__}")

