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


def _ai_call(function: str, model: Any, options: dict[str, Any], *args: Any) -> Expr:
    """SQL's ``function(model, args...)`` with ``model`` (its ``options`` changed for this
    call) as the first argument."""
    where = "ai." + function.removeprefix("ai_")
    if not isinstance(model, Model):
        raise TypeError(f"{where}: model must be a riffle.Model (from riffle.models), not {type(model).__name__}")
    m = model.with_options(**options)
    return Expr(m.session._native.call(function, [lit(m.name)._native, *(_expr(a) for a in args)]))


def embed(text: Any, model: Model, **options: Any) -> Expr:
    """The embedding ``model`` gives ``text``; ``options`` change the model's for this
    call (see :meth:`riffle.Model.with_options`)."""
    return _ai_call("ai_embed", model, options, text)


def complete(prompt: Any, model: Model, **options: Any) -> Expr:
    """The chat ``model``'s answer to ``prompt``; ``options`` change the model's for this
    call (``temperature=0.2``, ``max_tokens=64``)."""
    return _ai_call("ai_complete", model, options, prompt)


def classify(text: Any, labels: Sequence[str], model: Model, **options: Any) -> Expr:
    """One of ``labels`` for ``text``, as the chat ``model`` chooses it; ``options`` change
    the model's for this call."""
    if isinstance(labels, str) or not all(isinstance(label, str) for label in labels):
        raise TypeError("ai.classify: labels must be a list of str")
    return _ai_call("ai_classify", model, options, text, lit(list(labels)))
