"""How DataFrames look: a text table for terminals and reprs."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

_WIDTH = 30


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict) and {"width", "height"} <= value.keys():
        return f"<image {value.get('width')}x{value.get('height')}>"
    if isinstance(value, list) and len(value) > 4:
        return "[" + ", ".join(_cell(v) for v in value[:4]) + f", ... ({len(value)})]"
    text = str(value)
    return text if len(text) <= _WIDTH else text[: _WIDTH - 1] + "…"


def text_table(table: pa.Table, more: int | None) -> str:
    """``table`` as a text table; ``more``: the rows not shown, when positive."""
    names = table.schema.names
    types = [str(f.type) for f in table.schema]
    rows = [[_cell(v) for v in row.values()] for row in table.to_pylist()]
    header = [names, [t if len(t) <= _WIDTH else t[: _WIDTH - 1] + "…" for t in types]]
    widths = [max(len(r[i]) for r in header + rows) for i in range(len(names))]

    def line(cells: list[str]) -> str:
        return "│ " + " │ ".join(c.ljust(w) for c, w in zip(cells, widths)) + " │"

    rule = "─" * (sum(widths) + 3 * len(widths) + 1)
    out = [rule, line(header[0]), line(header[1]), rule] + [line(r) for r in rows] + [rule]
    if more is not None and more > 0:
        out.append(f"({more} more rows)")
    return "\n".join(out)
