"""The session jobs run in: a default one per process, or one the user makes."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Mapping

from riffle import _internal

if TYPE_CHECKING:
    from riffle.dataframe import DataFrame

_default: Session | None = None
_lock = threading.Lock()


class Session:
    """Tables, models and job options, and the jobs started from them.

    Most programs use the default session (what ``riffle.sql`` and ``riffle.read_*`` use);
    make one to run jobs with other options::

        >>> import riffle
        >>> s = riffle.Session(parallelism=2)
        >>> s.sql("SELECT 1 + 1 AS two").to_pylist()
        [{'two': 2}]

    ``checkpoint_dir`` and ``checkpoint_interval`` (e.g. ``"10s"``) turn on checkpointing as
    SQL's ``SET 'execution.checkpointing.dir'`` and ``'execution.checkpointing.interval'``
    do; ``from_checkpoint`` makes the next job resume from a checkpoint (one ``chk-N``
    folder, or a job's checkpoint folder for its latest). ``options`` sets any other job
    option by its SQL key.
    """

    def __init__(
        self,
        *,
        parallelism: int | None = None,
        checkpoint_dir: str | None = None,
        checkpoint_interval: str | None = None,
        from_checkpoint: str | None = None,
        options: Mapping[str, str] | None = None,
    ) -> None:
        if parallelism is not None and (not isinstance(parallelism, int) or parallelism < 1):
            raise ValueError(f"Session: parallelism must be a positive int, not {parallelism!r}")
        settings = dict(options or {})
        for key, value in settings.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"Session: options must map str to str, not {key!r}: {value!r}")
        if checkpoint_dir is not None:
            settings["execution.checkpointing.dir"] = checkpoint_dir
        if checkpoint_interval is not None:
            settings["execution.checkpointing.interval"] = checkpoint_interval
        self._native = _internal.Session(parallelism, settings)
        if from_checkpoint is not None:
            self._native.restore_from(from_checkpoint)

    @property
    def parallelism(self) -> int:
        """How many parallel subtasks each operator runs."""
        return self._native.parallelism()

    def set_option(self, key: str, value: str) -> None:
        """Sets a job option for the jobs that follow (SQL's ``SET 'key' = 'value'``)."""
        self._native.set_option(key, value)

    def options(self) -> dict[str, str]:
        """The options set so far."""
        return self._native.options()

    def restore_from(self, path: str) -> None:
        """Makes the next job resume from the checkpoint at ``path``."""
        self._native.restore_from(path)

    def sql(self, query: str, **tables: object) -> DataFrame:
        """Runs one SQL statement; see :func:`riffle.sql`."""
        from riffle.dataframe import DataFrame, _as_frame

        names = []
        try:
            for name, table in tables.items():
                self._native.register_view(name, _as_frame(table, self, f"sql: table {name}")._native)
                names.append(name)
            return DataFrame(self._native.sql(query), self)
        finally:
            for name in names:
                self._native.register_view(name, None)

    def table(self, name: str) -> DataFrame:
        """A DataFrame over a table declared with ``CREATE TABLE``."""
        from riffle.dataframe import DataFrame

        return DataFrame(self._native.table(name), self)


def default_session() -> Session:
    """The process's default session, made on first use."""
    global _default
    with _lock:
        if _default is None:
            _default = Session()
        return _default

