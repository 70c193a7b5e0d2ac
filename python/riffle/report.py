"""What a finished (or running) job did: ``DataFrame.stats()``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VertexStats:
    """One stage of a job (a chain of operators, or a DataFusion fragment), as EXPLAIN's
    job graph names it: rows through it and how long its consumers held it back."""

    vertex: int
    name: str
    parallelism: int
    rows_in: int  # from other stages, or read from its source
    reads_source: bool
    rows_out: int
    waited_seconds: float  # summed over its subtasks: backpressure
    waiting_now: int  # subtasks waiting for their consumers now

    def __str__(self) -> str:
        return (
            f"vertex {self.vertex} [{self.parallelism}] {self.name}: {self.rows_in:,} rows "
            f"{'read' if self.reads_source else 'in'}, {self.rows_out:,} rows out; "
            f"waited for its consumers {self.waited_seconds:.1f} s"
        )


@dataclass(frozen=True)
class ModelStats:
    """One model call or Python worker pool of a job."""

    vertex: int
    model: str
    rows: int
    requests: int
    failed_rows: int
    in_flight: int
    limit: int
    breaker: str
    workers: int | None  # a Python worker pool's processes now; None for a model server
    workers_busy: int | None  # ... of them running a batch now
    workers_started: int | None  # ... and started in all
    retries: int
    text: str  # every figure, in a sentence

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class JobReport:
    """A job's figures: rows out, wall time, restarts, checkpoints, each vertex's rows and
    backpressure, and each model's or Python worker pool's requests, rows, retries,
    latency and workers."""

    rows: int
    seconds: float
    restarts: int = 0
    checkpoints_completed: int = 0
    checkpoints_aborted: int = 0
    rows_read_again: int = 0
    failures: list[str] = field(default_factory=list)
    vertices: list[VertexStats] = field(default_factory=list)
    models: list[ModelStats] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def operators(self) -> list[str]:
        """Each model's or worker pool's figures, in a sentence each."""
        return [m.text for m in self.models]

    def __str__(self) -> str:
        lines = [
            f"{self.rows} rows in {self.seconds:.3f} s ({self.rows_per_second:,.0f} rows/s); "
            f"{self.restarts} restarts; checkpoints {self.checkpoints_completed} completed, "
            f"{self.checkpoints_aborted} aborted"
        ]
        lines += [str(v) for v in self.vertices]
        lines += self.operators
        lines += [f"failure: {f}" for f in self.failures]
        return "\n".join(lines)


def from_native(fields: dict[str, Any], rows: int, seconds: float) -> JobReport:
    return JobReport(
        rows=rows,
        seconds=seconds,
        restarts=int(fields.get("restarts") or 0),
        checkpoints_completed=int(fields.get("checkpoints_completed") or 0),
        checkpoints_aborted=int(fields.get("checkpoints_aborted") or 0),
        rows_read_again=int(fields.get("rows_read_again") or 0),
        failures=list(fields.get("failures") or []),
        vertices=[VertexStats(**v) for v in fields.get("vertices") or []],
        models=[ModelStats(**m) for m in fields.get("models") or []],
    )
