"""Calls of Riffle's built-in functions, for the generated ``riffle.functions`` and
expression namespaces."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from riffle.expr import Expr


class _Default:
    """A parameter left at its SQL default (shown as the SQL literal)."""

    __slots__ = ("sql",)

    def __init__(self, sql: str) -> None:
        self.sql = sql

    def __repr__(self) -> str:
        return self.sql


def _call_builtin(name: str, args: list[Any]) -> Expr:
    """A call of Riffle's built-in ``name``; a ``_Default`` takes the parameter's SQL
    default."""
    from riffle._session import default_session
    from riffle.expr import Expr, _expr

    native = [None if isinstance(a, _Default) else _expr(a) for a in args]
    return Expr(default_session()._native.call_builtin(name, native))
