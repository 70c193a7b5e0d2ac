"""Riffle's built-in functions from Python: riffle.functions.<sql_name> and the expression
namespaces, both generated from the engine's one table of functions and parameters."""

from __future__ import annotations

import io
import pathlib
import sys

import pyarrow as pa
import pytest

import riffle
import riffle.functions as F
from riffle import _internal, col

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
import gen_functions  # noqa: E402


def test_generated_files_match_the_engines_table():
    for path, text in gen_functions.generate(_internal.function_parameters()).items():
        assert path.read_text() == text, f"{path.name} is stale: run python3 python/tools/gen_functions.py"


def test_every_function_and_namespace_method_exists():
    for name, params in _internal.function_parameters():
        assert callable(getattr(F, name)), name
        namespace, method = gen_functions.place(name)
        assert hasattr(getattr(col("x"), namespace), method), f"{name}: .{namespace}.{method}"


def png(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 30)).save(out, format="PNG")
    return out.getvalue()


def test_namespace_and_flat_calls_agree_and_take_defaults():
    df = riffle.from_pydict({"b": [png(40, 20), b"not an image"]})
    by_method = df.select(col("b").image.try_decode().alias("d"))
    rows = by_method.to_pylist()
    assert rows[0]["d"]["error"] is None and rows[1]["d"]["error"]
    resized = df.limit(1).select(
        F.image_resize(F.image_decode(col("b")), 10, 5, filter="nearest").alias("flat"),
        col("b").image.decode().image.resize(10, 5, filter="nearest").alias("method"),
    )
    out = resized.to_pylist()[0]
    assert out["flat"] == out["method"]
    assert (out["flat"]["width"], out["flat"]["height"]) == (10, 5)
    with pytest.raises(riffle.UserError, match="image_decode"):
        df.select(col("b").image.decode()).to_pylist()
    nulls = df.select(col("b").image.decode(on_error="null").alias("i")).to_pydict()["i"]
    assert nulls[1] is None


def test_vector_functions():
    df = riffle.from_pydict({"a": [[1.0, 0.0]], "b": [[0.0, 1.0]]})
    out = df.select(
        col("a").vector.cosine_similarity(col("b")).alias("cos"),
        F.l2_distance(col("a"), col("b")).alias("l2"),
    ).to_pylist()[0]
    assert out["cos"] == pytest.approx(0.0)
    assert out["l2"] == pytest.approx(2**0.5)


def test_text_chunk_with_named_defaults():
    df = riffle.from_pydict({"t": ["abcdefghij"]})
    chunks = df.select(col("t").text.chunk(4, overlap=1).alias("c")).to_pydict()["c"][0]
    assert chunks[0] == "abcd"
    assert len(chunks) > 2
