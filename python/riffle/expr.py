"""Expressions: ``riffle.col``, ``riffle.lit``, operators, casts and aliases.

    >>> import riffle
    >>> e = (riffle.col("price") * 2 > 10) & riffle.col("name").is_not_null()
    >>> e
    price * Int64(2) > Int64(10) AND name IS NOT NULL
"""

from __future__ import annotations

import datetime
import decimal
from typing import Any, Iterable

from riffle import _internal
from riffle.expr_namespaces import Namespaces

_SIMPLE = (type(None), bool, int, float, str, bytes)


class Expr(Namespaces):
    """An expression over the columns of a DataFrame. Build with :func:`col` and
    :func:`lit`, combine with ``+ - * / %``, ``== != < <= > >=`` and ``& | ~``."""

    __slots__ = ("_native",)

    def __init__(self, native: _internal.Expr) -> None:
        self._native = native

    # Arithmetic
    def __add__(self, other: Any) -> Expr:
        return Expr(self._native.add(_expr(other)))

    def __radd__(self, other: Any) -> Expr:
        return Expr(_expr(other).add(self._native))

    def __sub__(self, other: Any) -> Expr:
        return Expr(self._native.sub(_expr(other)))

    def __rsub__(self, other: Any) -> Expr:
        return Expr(_expr(other).sub(self._native))

    def __mul__(self, other: Any) -> Expr:
        return Expr(self._native.mul(_expr(other)))

    def __rmul__(self, other: Any) -> Expr:
        return Expr(_expr(other).mul(self._native))

    def __truediv__(self, other: Any) -> Expr:
        return Expr(self._native.div(_expr(other)))

    def __rtruediv__(self, other: Any) -> Expr:
        return Expr(_expr(other).div(self._native))

    def __mod__(self, other: Any) -> Expr:
        return Expr(self._native.modulo(_expr(other)))

    def __neg__(self) -> Expr:
        return Expr(self._native.neg())

    # Comparison
    def __eq__(self, other: Any) -> Expr:  # type: ignore[override]
        return Expr(self._native.eq(_expr(other)))

    def __ne__(self, other: Any) -> Expr:  # type: ignore[override]
        return Expr(self._native.ne(_expr(other)))

    def __lt__(self, other: Any) -> Expr:
        return Expr(self._native.lt(_expr(other)))

    def __le__(self, other: Any) -> Expr:
        return Expr(self._native.le(_expr(other)))

    def __gt__(self, other: Any) -> Expr:
        return Expr(self._native.gt(_expr(other)))

    def __ge__(self, other: Any) -> Expr:
        return Expr(self._native.ge(_expr(other)))

    __hash__ = None  # type: ignore[assignment]

    # Boolean logic
    def __and__(self, other: Any) -> Expr:
        return Expr(self._native.and_(_expr(other)))

    def __rand__(self, other: Any) -> Expr:
        return Expr(_expr(other).and_(self._native))

    def __or__(self, other: Any) -> Expr:
        return Expr(self._native.or_(_expr(other)))

    def __ror__(self, other: Any) -> Expr:
        return Expr(_expr(other).or_(self._native))

    def __invert__(self) -> Expr:
        return Expr(self._native.not_())

    def __bool__(self) -> bool:
        raise TypeError(
            "an Expr has no truth value: use & | ~ instead of and/or/not, "
            "and parentheses around comparisons"
        )

    # Null handling, membership
    def is_null(self) -> Expr:
        """True where the value is NULL."""
        return Expr(self._native.is_null())

    def is_not_null(self) -> Expr:
        """True where the value is not NULL."""
        return Expr(self._native.is_not_null())

    def is_in(self, values: Iterable[Any]) -> Expr:
        """True where the value equals one of ``values``."""
        return Expr(self._native.is_in([_expr(v) for v in values]))

    def between(self, low: Any, high: Any) -> Expr:
        """True where ``low <= value <= high``."""
        return Expr(self._native.between(_expr(low), _expr(high)))

    def fill_null(self, value: Any) -> Expr:
        """The value, or ``value`` where it is NULL (SQL's ``coalesce``)."""
        return _call("coalesce", [self, value])

    # Names and types
    def alias(self, name: str) -> Expr:
        """The same expression, named ``name`` in the result."""
        if not isinstance(name, str):
            raise TypeError(f"alias: name must be a str, not {type(name).__name__}")
        return Expr(self._native.alias(name))

    def cast(self, dtype: str, *, try_: bool = False) -> Expr:
        """The value cast to the SQL type ``dtype`` (``"DOUBLE"``, ``"ARRAY<INT>"``,
        ``"TENSOR(FLOAT, [3, 224, 224])"``); with ``try_=True`` a value that does not
        convert becomes NULL instead of failing the job."""
        if not isinstance(dtype, str):
            raise TypeError(f"cast: dtype must be a SQL type name (a str), not {type(dtype).__name__}")
        from riffle._session import default_session

        return Expr(default_session()._native.cast(self._native, dtype, try_))

    @property
    def name(self) -> str:
        """The column name this expression gets in a result."""
        return self._native.name()

    def field(self, name: str) -> Expr:
        """The field ``name`` of a struct value (``col("file").field("uri")``)."""
        if not isinstance(name, str):
            raise TypeError(f"field: name must be a str, not {type(name).__name__}")
        return _call("get_field", [self, name])

    # Aggregates
    def sum(self) -> Expr:
        """The sum over each group."""
        return _call("sum", [self])

    def mean(self) -> Expr:
        """The average over each group."""
        return _call("avg", [self])

    def min(self) -> Expr:
        """The smallest value of each group."""
        return _call("min", [self])

    def max(self) -> Expr:
        """The largest value of each group."""
        return _call("max", [self])

    def count(self) -> Expr:
        """The number of non-NULL values of each group."""
        return _call("count", [self])

    def __repr__(self) -> str:
        return repr(self._native)


class When:
    """``when(condition)`` waiting for its ``.then(value)``."""

    __slots__ = ("_branches", "_condition")

    def __init__(self, branches: list[tuple[Any, Any]], condition: Any) -> None:
        self._branches = branches
        self._condition = _expr(condition)

    def then(self, value: Any) -> Then:
        """The value where the condition holds (and no earlier one did)."""
        return Then([*self._branches, (self._condition, _expr(value))])


class Then(Expr):
    """A conditional expression (SQL's ``CASE``): NULL where no condition holds, until
    :meth:`otherwise` says what instead; :meth:`when` adds a condition."""

    __slots__ = ("_branches",)

    def __init__(self, branches: list[tuple[Any, Any]]) -> None:
        super().__init__(_internal.case_when(branches))
        self._branches = branches

    def when(self, condition: Any) -> When:
        """Another condition, tried when the earlier ones did not hold."""
        return When(self._branches, condition)

    def otherwise(self, value: Any) -> Expr:
        """The value where no condition holds."""
        return Expr(_internal.case_when(self._branches, _expr(value)))


def when(condition: Any) -> When:
    """A conditional expression, as Polars and Daft write it (SQL's ``CASE WHEN``).

    >>> import riffle
    >>> from riffle import col, when
    >>> df = riffle.from_pydict({"x": [1, 5, 12]})
    >>> df.select(when(col("x") > 10).then("big").when(col("x") > 3).then("mid").otherwise("small").alias("size")).to_pydict()
    {'size': ['small', 'mid', 'big']}
    """
    return When([], condition)


def col(name: str) -> Expr:
    """The column ``name``, as written (no case folding)."""
    if not isinstance(name, str):
        raise TypeError(f"col: name must be a str, not {type(name).__name__}")
    return Expr(_internal.col(name))


def lit(value: Any) -> Expr:
    """A literal: None, bool, int, float, str, bytes, or anything pyarrow makes a scalar of
    (lists, dates, decimals, ...)."""
    if isinstance(value, Expr):
        return value
    if type(value).__name__ == "UdfCall":
        raise TypeError(
            f"{value!r}: a Python UDF's result is a whole column: give it to with_column(name, ...) "
            "or select(...), then use the column in other expressions"
        )
    if isinstance(value, _SIMPLE):
        return Expr(_internal.lit(value))
    import pyarrow as pa

    if isinstance(value, (list, tuple, dict, datetime.date, datetime.datetime, decimal.Decimal)) or hasattr(
        value, "dtype"
    ):
        try:
            return Expr(_internal.lit_arrow(pa.array([value])))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise TypeError(f"lit: cannot make a literal of {value!r}: {error}") from None
    raise TypeError(f"lit: cannot make a literal of a {type(value).__name__}")


def _expr(value: Any) -> _internal.Expr:
    return lit(value)._native


def _call(name: str, args: list[Any]) -> Expr:
    from riffle._session import default_session

    return Expr(default_session()._native.call(name, [_expr(a) for a in args]))
