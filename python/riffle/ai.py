"""Model calls as expressions, planned onto the batched inference operator (never one call
per row), as SQL's ``ai_embed``, ``ai_complete`` and ``ai_classify``.

    >>> import riffle
    >>> m = riffle.models.openai("e", endpoint="http://127.0.0.1:9/v1/embeddings", dimensions=4,
    ...                          name="embedder", session=riffle.Session())
    >>> riffle.ai.embed(riffle.col("text"), m)
    ai_embed(Utf8("embedder"), text)
"""

from __future__ import annotations

from typing import Any, Sequence

from riffle.expr import Expr, _expr, lit
from riffle.models import Model


def _check(model: Any, where: str) -> Model:
    if not isinstance(model, Model):
        raise TypeError(f"{where}: model must be a riffle.Model (from riffle.models), not {type(model).__name__}")
    return model


def embed(text: Any, model: Model, **options: Any) -> Expr:
    """The embedding ``model`` gives ``text``; ``options`` change the model's for this
    call (see :meth:`riffle.Model.with_options`)."""
    m = _check(model, "ai.embed").with_options(**options)
    return Expr(m.session._native.call("ai_embed", [lit(m.name)._native, _expr(text)]))


def complete(prompt: Any, model: Model, **options: Any) -> Expr:
    """The chat ``model``'s answer to ``prompt``; ``options`` change the model's for this
    call (``temperature=0.2``, ``max_tokens=64``)."""
    m = _check(model, "ai.complete").with_options(**options)
    return Expr(m.session._native.call("ai_complete", [lit(m.name)._native, _expr(prompt)]))


def classify(text: Any, labels: Sequence[str], model: Model, **options: Any) -> Expr:
    """One of ``labels`` for ``text``, as the chat ``model`` chooses it; ``options`` change
    the model's for this call."""
    m = _check(model, "ai.classify").with_options(**options)
    if isinstance(labels, str) or not all(isinstance(label, str) for label in labels):
        raise TypeError("ai.classify: labels must be a list of str")
    return Expr(m.session._native.call("ai_classify", [lit(m.name)._native, _expr(text), lit(list(labels))._native]))
