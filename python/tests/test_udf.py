"""@riffle.udf, @riffle.udf.batch and @riffle.cls: Python functions used as expressions,
run in worker processes."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import riffle
from riffle import col


def frame() -> riffle.DataFrame:
    return riffle.from_pydict({"x": [1, 2, 3], "s": ["a", "b", "c"]})


@riffle.udf(return_dtype=pa.int64(), concurrency=1)
def double(x):
    return 2 * x


def test_row_udf_adds_and_replaces_columns():
    assert frame().with_column("y", double(col("x"))).to_pydict() == {"x": [1, 2, 3], "s": ["a", "b", "c"], "y": [2, 4, 6]}
    # Its argument may be any expression; replacing a column keeps its place.
    assert frame().with_column("x", double(col("x") + 1)).to_pydict() == {"x": [4, 6, 8], "s": ["a", "b", "c"]}


def test_batch_udf_takes_whole_columns():
    @riffle.udf.batch(return_dtype=pa.float64(), concurrency=1)
    def half(xs):
        assert isinstance(xs, pa.Array)
        return pc.divide(pc.cast(xs, pa.float64()), 2.0)

    assert frame().select("s", half(col("x")).alias("h")).to_pydict() == {"s": ["a", "b", "c"], "h": [0.5, 1.0, 1.5]}


def test_class_is_constructed_in_the_worker_with_its_arguments():
    @riffle.cls(return_dtype=pa.string(), concurrency=1)
    class Tag:
        def __init__(self, suffix):
            self.suffix = suffix

        def __call__(self, s):
            return s + self.suffix

    assert frame().select(Tag("!")(col("s")).alias("t")).to_pydict() == {"t": ["a!", "b!", "c!"]}


def test_annotations_give_the_type_and_on_error_null_keeps_going():
    @riffle.udf(on_error="null", concurrency=1)
    def length(s: str) -> int:
        if s == "b":
            raise ValueError("no b")
        return len(s)

    assert frame().with_column("n", length(col("s"))).to_pydict()["n"] == [1, None, 1]

    @riffle.udf(concurrency=1)
    def strict(s: str) -> int:
        raise ValueError(f"no {s}")

    with pytest.raises(riffle.UserCodeError, match=r"strict raised on batch 0 \(rows 0\.\.3\): ValueError: no a"):
        frame().with_column("n", strict(col("s"))).to_pylist()


def test_bad_declarations_name_what_is_wrong():
    with pytest.raises(TypeError, match="give return_dtype"):

        @riffle.udf
        def untyped(x):
            return x

    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['concurency'\]"):
        riffle.udf(return_dtype=pa.int64(), concurency=2)
    with pytest.raises(TypeError, match="a Python UDF's result is a whole column"):
        frame().select(double(col("x")) + 1)
