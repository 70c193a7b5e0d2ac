"""Models from Python: the same models as SQL's ``CREATE MODEL``, with the same options
(each SQL key written with ``_`` for ``-`` and ``.``: ``'spend.max-tokens'`` is
``spend_max_tokens``), used by :mod:`riffle.ai` and ``ML_PREDICT``.

    >>> import riffle
    >>> m = riffle.models.openai("text-embedding-3-small", name="embedder",
    ...     endpoint="http://127.0.0.1:9/v1/embeddings", dimensions=8, concurrency=4,
    ...     session=riffle.Session())
    >>> m
    riffle.Model(embedder: openai)
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from typing import Any, Mapping

from riffle import _internal
from riffle._session import Session, default_session

_names = itertools.count()
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@functools.cache
def option_keys() -> dict[str, str]:
    """Every model option: its keyword-argument name and its SQL key (the engine's one
    table, docs/inference-options.md)."""
    return {
        key.replace("-", "_").replace(".", "_"): key
        for key, _default, scope, _doc in _internal.model_option_keys()
        # The python provider's keys are the Python front's own (map_batches, @udf).
        if scope != "python" and key != "provider"
    }


class Model:
    """A model declared in a session's catalog."""

    def __init__(
        self,
        name: str,
        provider: str,
        session: Session,
        declared: tuple[Mapping[str, str], Mapping[str, str], Mapping[str, str]] | None = None,
    ) -> None:
        self.name = name
        self.provider = provider
        self.session = session
        # INPUT, OUTPUT and WITH options, as declared, for with_options.
        self._declared = declared
        # The models with_options made, by their options: a call's model is declared once.
        self._variants: dict[tuple[tuple[str, str], ...], Model] = {}

    def with_options(self, **options: Any) -> Model:
        """This model with some options changed (the keyword arguments of its
        ``riffle.models`` function: SQL's keys with '-' and '.' written '_'), declared as a
        model of its own: what ``ML_PREDICT``'s MAP does for one call. Every option is
        checked as ``CREATE MODEL`` checks it."""
        if not options:
            return self
        if self._declared is None:
            raise ValueError(f"{self.name}: only a model made by riffle.models can take options per call")
        input, output, settings = self._declared
        keys = option_keys()
        changed = dict(settings)
        for argument, value in options.items():
            key = keys.get(argument)
            if key is None:
                raise TypeError(f"{self.name}: unknown model option '{argument}'; valid: {sorted(keys)}")
            if value is None:
                changed.pop(key, None)
            else:
                changed[key] = _value(argument, value)
        variant = tuple(sorted(changed.items()))
        if variant not in self._variants:
            name = f"{self.name}_call_{next(_names)}"
            self._variants[variant] = _create(name, self.provider, input, output, changed, self.session)
        return self._variants[variant]

    def __repr__(self) -> str:
        return f"riffle.Model({self.name}: {self.provider})"


def _value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    raise TypeError(f"model option {key}: expected a str, number, bool, list or dict, not {type(value).__name__}")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _columns(columns: Mapping[str, str], what: str) -> str:
    parts = []
    for name, sql_type in columns.items():
        if not _IDENTIFIER.match(name):
            raise ValueError(f"{what} column name {name!r} must be an identifier (letters, digits, _)")
        if not isinstance(sql_type, str):
            raise TypeError(f"{what} column {name}: give its SQL type as a str, such as 'VECTOR(FLOAT, 384)'")
        parts.append(f"{name} {sql_type}")
    return ", ".join(parts)


def declare(
    provider: str,
    *,
    name: str | None,
    prefix: str,
    input: Mapping[str, str],
    output: Mapping[str, str],
    options: Mapping[str, Any],
    session: Session | None,
    where: str,
) -> Model:
    """Declares a model with ``CREATE MODEL`` (so that every option is checked as SQL
    checks it) and returns it."""
    keys = option_keys()
    settings = {"provider": provider}
    for argument, value in options.items():
        if value is None:
            continue
        key = keys.get(argument)
        if key is None:
            raise TypeError(f"{where}: unknown keyword argument '{argument}'; valid: {sorted(keys)}")
        settings[key] = _value(argument, value)
    if name is None:
        name = f"{prefix}_{next(_names)}"
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{where}: name {name!r} must be an identifier (letters, digits, _)")
    s = session if session is not None else default_session()
    return _create(name, provider, input, output, settings, s)


def _create(
    name: str,
    provider: str,
    input: Mapping[str, str],
    output: Mapping[str, str],
    settings: Mapping[str, str],
    session: Session,
) -> Model:
    with_clause = ", ".join(f"{_quote(k)} = {_quote(v)}" for k, v in settings.items())
    session.sql(
        f"CREATE MODEL {name} INPUT ({_columns(input, 'INPUT')}) "
        f"OUTPUT ({_columns(output, 'OUTPUT')}) WITH ({with_clause})"
    )
    return Model(name, provider, session, (dict(input), dict(output), dict(settings)))


def openai(
    model: str,
    *,
    endpoint: str,
    dimensions: int | None = None,
    chat: bool = False,
    name: str | None = None,
    input: Mapping[str, str] | None = None,
    output: Mapping[str, str] | None = None,
    session: Session | None = None,
    **options: Any,
) -> Model:
    """A model behind an OpenAI-compatible server: embeddings (``endpoint`` ends in
    ``/v1/embeddings``; give ``dimensions``) or chat (``chat=True``, ``/v1/chat/completions``).
    Other options are SQL's: ``api_key``, ``concurrency``, ``batch_rows``, ``max_retries``,
    ``spend_max_tokens``, ``system_prompt``, ..."""
    if chat:
        input = input or {"prompt": "STRING"}
        output = output or {"response": "STRING"}
    else:
        if output is None and dimensions is None:
            raise ValueError("openai: give dimensions= (the embedding's length) or output=")
        input = input or {"text": "STRING"}
        output = output or {"embedding": f"VECTOR(FLOAT, {dimensions})"}
        if dimensions is not None:
            options = {**options, "dimension": dimensions}
    return declare(
        "openai",
        name=name,
        prefix="chat_model" if chat else "embedding_model",
        input=input,
        output=output,
        options={"endpoint": endpoint, "model": model, **options},
        session=session,
        where="openai",
    )


def kserve(
    model_name: str,
    *,
    endpoint: str,
    input: Mapping[str, str],
    output: Mapping[str, str],
    name: str | None = None,
    session: Session | None = None,
    **options: Any,
) -> Model:
    """A model on a KServe v2 server (Triton, MLServer, KServe): ``endpoint`` is
    ``http://host:port`` (REST) or ``grpc://host:port``; ``input`` and ``output`` name the
    tensors and their SQL types."""
    return declare(
        "triton",
        name=name,
        prefix="kserve_model",
        input=input,
        output=output,
        options={"endpoint": endpoint, "model_name": model_name, **options},
        session=session,
        where="kserve",
    )


def onnx(
    path: str,
    *,
    input: Mapping[str, str],
    output: Mapping[str, str],
    name: str | None = None,
    session: Session | None = None,
    **options: Any,
) -> Model:
    """An ONNX model run in this process by ONNX Runtime (``path``: a file, or
    ``python-package:<package>/<file>``)."""
    return declare(
        "onnx",
        name=name,
        prefix="onnx_model",
        input=input,
        output=output,
        options={"path": path, **options},
        session=session,
        where="onnx",
    )


def sentence_embedding(
    path: str,
    *,
    tokenizer: str,
    dimensions: int,
    name: str | None = None,
    session: Session | None = None,
    **options: Any,
) -> Model:
    """A sentence encoder run in this process (an ONNX export of a BERT-style model, or
    ``.safetensors`` with the ``candle`` build): texts in, ``dimensions``-long vectors out."""
    return declare(
        "sentence-embedding",
        name=name,
        prefix="sentence_model",
        input={"text": "STRING"},
        output={"embedding": f"VECTOR(FLOAT, {dimensions})"},
        options={"path": path, "tokenizer": tokenizer, **options},
        session=session,
        where="sentence_embedding",
    )
