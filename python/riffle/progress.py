"""A live progress display while a job runs: the job's rows out and rows/s, then one line
per stage (vertex) with its rows in and out, rows/s and backpressure, and one per model or
Python worker pool with its rows, requests in flight and busy workers. Redrawn in place on
a terminal and in a notebook, four times a second, by a thread of its own (so that a job
that returns few rows, such as a write, shows progress too).

It shows only where someone watches (stderr is a terminal, or IPython is running a
notebook), only for jobs that take longer than a second, and never when
``RIFFLE_PROGRESS=0`` or ``riffle.progress.enabled = False``.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from typing import Any

from riffle.report import ModelStats, VertexStats

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


def _rate(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "-"


class Lines:
    """The display's text from successive job reports: rates and backpressure are taken
    over the time since the previous report, totals since the start."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._previous: tuple[float, dict[int, VertexStats]] | None = None

    def text(self, rows: int, report: dict[str, Any]) -> str:
        now = time.monotonic()
        elapsed = now - self._started
        vertices = [VertexStats(**v) for v in report.get("vertices") or []]
        models = [ModelStats(**m) for m in report.get("models") or []]
        lines = [f"riffle: {rows:,} rows out, {_rate(rows, elapsed)}, {elapsed:.1f} s"]
        before, since = ({}, elapsed) if self._previous is None else (self._previous[1], now - self._previous[0])
        for v in sorted(vertices, key=lambda v: -v.vertex):  # sources first
            old = before.get(v.vertex)
            # A restart counts from zero again: no negative rates.
            moved = max(0, v.rows_out - (old.rows_out if old else 0))
            waited = max(0.0, v.waited_seconds - (old.waited_seconds if old else 0.0))
            # Backpressure: the share of the interval its subtasks waited for consumers.
            held = min(1.0, waited / (since * v.parallelism)) if since > 0 else 0.0
            lines.append(
                f"  [{v.vertex}] {v.name} x{v.parallelism}: {'read' if v.reads_source else 'in'} "
                f"{v.rows_in:,}, out {v.rows_out:,} ({_rate(moved, since)}), backpressure {held:.0%}"
            )
        for m in models:
            workers = "" if m.workers is None else f", workers {m.workers_busy} busy of {m.workers} ({m.workers_started} started)"
            lines.append(
                f"  [{m.vertex}] {m.model}: {m.rows:,} rows, {m.in_flight} requests in flight "
                f"(limit {m.limit}){workers}, breaker {m.breaker}"
                + (f", {m.failed_rows:,} rows failed" if m.failed_rows else "")
            )
        self._previous = (now, {v.vertex: v for v in vertices})
        return "\n".join(lines)


class Progress:
    """Call :meth:`update` as rows arrive and :meth:`done` at the end; the display is
    drawn by a thread while the job runs."""

    def __init__(self, job: Any) -> None:
        self._job = job
        self._rows = 0
        self._lines = Lines()
        self._terminal = sys.stderr.isatty()
        self._notebook = _notebook()
        self._handle: Any = None
        self._drawn_lines = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if enabled and (self._terminal or self._notebook):
            self._thread = threading.Thread(target=self._run, name="riffle-progress", daemon=True)
            self._thread.start()

    def update(self, rows: int) -> None:
        self._rows += rows

    def _run(self) -> None:
        if self._stop.wait(_DELAY):
            return
        while True:
            self._draw()
            if self._stop.wait(_EVERY):
                return

    def _draw(self) -> None:
        try:
            text = self._lines.text(self._rows, self._job.report())
        except Exception:  # noqa: BLE001  (a display never fails the job)
            return
        if self._notebook:
            import importlib

            shown: Any = importlib.import_module("IPython.display")
            if self._handle is None:
                self._handle = shown.display(shown.Pretty(text), display_id=True)
            else:
                self._handle.update(shown.Pretty(text))
            return
        # Back to the first line drawn last time, then each line anew, cut to the terminal's
        # width so that none wraps (which would break the count of lines to go back).
        up = f"\x1b[{self._drawn_lines - 1}F" if self._drawn_lines > 1 else "\r"
        width = shutil.get_terminal_size().columns - 1
        lines = [line if len(line) <= width else line[: max(width - 1, 1)] + "…" for line in text.split("\n")]
        sys.stderr.write(up + "\n".join("\x1b[2K" + line for line in lines))
        sys.stderr.flush()
        self._drawn_lines = len(lines)

    def done(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        if self._handle is not None or self._drawn_lines:
            self._draw()
            if not self._notebook:
                sys.stderr.write("\n")
                sys.stderr.flush()
