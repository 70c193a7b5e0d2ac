"""What a finished (or running) job did: ``DataFrame.stats()``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class JobReport:
    """A job's figures: rows out, wall time, restarts, checkpoints, and one line per model
    or Python worker pool it called (requests, rows, retries, latency, in flight)."""

    rows: int
    seconds: float
    restarts: int = 0
    checkpoints_completed: int = 0
    checkpoints_aborted: int = 0
    rows_read_again: int = 0
    failures: list[str] = field(default_factory=list)
    operators: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        lines = [
            f"{self.rows} rows in {self.seconds:.3f} s ({self.rows_per_second:,.0f} rows/s); "
            f"{self.restarts} restarts; checkpoints {self.checkpoints_completed} completed, "
            f"{self.checkpoints_aborted} aborted"
        ]
        lines += self.operators
        lines += [f"failure: {f}" for f in self.failures]
        return "\n".join(lines)


def from_native(fields: dict[str, str], rows: int, seconds: float) -> JobReport:
    def number(key: str) -> int:
        return int(fields.get(key) or 0)

    return JobReport(
        rows=rows,
        seconds=seconds,
        restarts=number("restarts"),
        checkpoints_completed=number("checkpoints_completed"),
        checkpoints_aborted=number("checkpoints_aborted"),
        rows_read_again=number("rows_read_again"),
        failures=[f for f in (fields.get("failures") or "").split("\n") if f],
        operators=[m for m in (fields.get("models") or "").split("\n") if m],
    )
