"""A live line of progress while a job runs: rows out, rows/s, and each model's or worker
pool's requests in flight and rows, redrawn in place on a terminal and in a notebook.

It shows only where someone watches (stderr is a terminal, or IPython is running a
notebook), only for jobs that take longer than a second, and never when
``RIFFLE_PROGRESS=0`` or ``riffle.progress.enabled = False``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

enabled = os.environ.get("RIFFLE_PROGRESS", "1") != "0"
_DELAY = 1.0
_EVERY = 0.25


def _notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class Progress:
    """Call :meth:`update` as batches arrive and :meth:`done` at the end."""

    def __init__(self, job: Any) -> None:
        self._job = job
        self._started = time.monotonic()
        self._last = 0.0
        self._rows = 0
        self._terminal = sys.stderr.isatty()
        self._notebook = _notebook()
        self._handle: Any = None
        self._shown = False

    def _active(self) -> bool:
        return enabled and (self._terminal or self._notebook)

    def _text(self) -> str:
        elapsed = time.monotonic() - self._started
        lines = [f"riffle: {self._rows:,} rows out, {self._rows / max(elapsed, 1e-9):,.0f} rows/s, {elapsed:.1f} s"]
        models = (self._job.report().get("models") or "").split("\n")
        lines += [f"  {m}" for m in models if m]
        return "\n".join(lines)

    def update(self, rows: int) -> None:
        self._rows += rows
        now = time.monotonic()
        if not self._active() or now - self._started < _DELAY or now - self._last < _EVERY:
            return
        self._last = now
        self._draw(self._text())

    def _draw(self, text: str) -> None:
        if self._notebook:
            import importlib

            shown: Any = importlib.import_module("IPython.display")
            if self._handle is None:
                self._handle = shown.display(shown.Pretty(text), display_id=True)
            else:
                self._handle.update(shown.Pretty(text))
        else:
            # The first line only, redrawn in place.
            sys.stderr.write("\r\x1b[2K" + text.split("\n")[0])
            sys.stderr.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self._draw(self._text())
            if not self._notebook:
                sys.stderr.write("\n")
                sys.stderr.flush()
