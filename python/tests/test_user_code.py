"""Python user code in worker processes: map_batches and map, their batch formats, and
each way user code can fail (an exception, an exit, SIGKILL, a segfault, a hang): each its
own exception, no process left behind, and the next job in the session runs."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import psutil
import pyarrow as pa
import pytest

import riffle


def children() -> list[psutil.Process]:
    """This process's live children (zombies being reaped do not count)."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


def no_children_within(seconds: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = children()
        if not left:
            return []
        time.sleep(0.1)
    return children()


def numbers(n: int = 100) -> riffle.DataFrame:
    return riffle.from_pydict({"x": list(range(n)), "f": [i / 2 for i in range(n)]})


class Scale:
    """A "model": constructed once per worker, called per batch."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"x": batch["x"], "y": batch["x"] * self.factor, "pid": np.full(len(batch["x"]), self.pid)}


def test_map_batches_class_with_concurrency_runs_in_workers():
    out = numbers(1000).map_batches(
        Scale,
        fn_constructor_args=(3,),
        batch_format="numpy",
        batch_size=50,
        concurrency=2,
        return_schema={"x": pa.int64(), "y": pa.int64(), "pid": pa.int64()},
    )
    rows = out.to_pydict()
    assert rows["x"] == list(range(1000))  # input order kept
    assert rows["y"] == [3 * x for x in range(1000)]
    pids = set(rows["pid"])
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2
    assert no_children_within() == []


def test_workers_are_reused_when_the_call_runs_after_an_exchange():
    # Under an aggregation of this many rows, the call runs after an exchange in a stage of
    # DataFusion operators (not in a chain); its workers still serve every batch, none is
    # started again per batch.
    @riffle.udf(concurrency=2, batch_size=1000)
    def worker_pid(x: int) -> int:
        return os.getpid()

    df = numbers(20_000).with_column("pid", worker_pid(riffle.col("x")))
    assert "Aggregate <- Projection <- MlPredict <- ExchangeRead" in riffle.sql(
        "SELECT count(DISTINCT pid) AS workers FROM t", t=df
    ).explain()
    per_worker = riffle.sql("SELECT pid, count(*) AS rows FROM t GROUP BY pid", t=df).to_pydict()
    assert sum(per_worker["rows"]) == 20_000
    assert 1 <= len(per_worker["pid"]) <= 2, per_worker
    assert no_children_within() == []


def test_map_batches_function_schema_is_inferred():
    out = numbers(10).map_batches(lambda b: {"double": [v * 2 for v in b["f"].to_pylist()]}, concurrency=1)
    assert out.schema.names == ["double"]
    assert out.to_pydict()["double"] == [float(i) for i in range(10)]


def test_pandas_and_numpy_batch_formats():
    pandas = pytest.importorskip("pandas")

    def with_pandas(frame):
        assert isinstance(frame, pandas.DataFrame)
        return frame.assign(z=frame["x"] + 1)[["z"]]

    out = numbers(20).map_batches(with_pandas, batch_format="pandas", concurrency=1, batch_size=7)
    assert out.to_pydict()["z"] == list(range(1, 21))

    def with_numpy(arrays):
        assert isinstance(arrays["f"], np.ndarray)
        return {"total": arrays["x"] + arrays["f"]}

    out = numbers(20).map_batches(with_numpy, batch_format="numpy", concurrency=1)
    assert out.to_pydict()["total"] == [i * 1.5 for i in range(20)]


def test_map_over_rows():
    out = numbers(30).map(lambda row: {"x": row["x"], "neg": -row["x"]}, concurrency=2, batch_size=4)
    assert out.sort("x").to_pydict()["neg"] == [-i for i in range(30)]


def test_wrong_results_name_the_function():
    df = numbers(10)
    with pytest.raises(riffle.UserCodeError, match=r"map\(.*<lambda>\) returned a str; map's function returns"):
        df.map(lambda r: "nope", return_schema={"y": pa.int64()}, concurrency=1).to_pylist()
    with pytest.raises(riffle.UserCodeError, match=r"flat_map\(.*<lambda>\) returned a dict; flat_map.s function"):
        df.flat_map(lambda r: {"y": 1}, return_schema={"y": pa.int64()}, concurrency=1).to_pylist()
    with pytest.raises(riffle.UserCodeError, match=r"returned a str; expected a pyarrow RecordBatch"):
        df.map_batches(lambda b: "nope", return_schema={"y": pa.int64()}, concurrency=1).to_pylist()
    with pytest.raises(riffle.UserCodeError, match=r"returned no column 'y'"):
        df.map_batches(lambda b: {"z": b["x"]}, return_schema={"y": pa.int64()}, concurrency=1).to_pylist()


def test_map_batches_may_give_any_number_of_rows():
    # Fewer (a filter), more (documents into chunks), none: the batches' rows in order.
    df = numbers(100)
    evens = df.map_batches(lambda b: {"x": [v for v in b["x"].to_pylist() if v % 2 == 0]}, batch_size=7, concurrency=2)
    assert evens.to_pydict() == {"x": list(range(0, 100, 2))}
    assert evens.count() == 50
    tripled = df.map_batches(
        lambda b: {"x": [v for v in b["x"].to_pylist() for _ in range(3)]}, batch_size=10, concurrency=2
    )
    assert tripled.to_pydict()["x"] == [v for v in range(100) for _ in range(3)]
    nothing = df.map_batches(lambda b: {"x": b["x"][:0]}, return_schema={"x": pa.int64()}, concurrency=1)
    assert nothing.to_pylist() == []
    # Many rows, under an aggregation: the call may run after an exchange, in a stage of
    # DataFusion operators; the rows are the same.
    big = numbers(20_000).map_batches(lambda b: {"x": [v for v in b["x"].to_pylist() if v % 2 == 0]}, batch_size=1000, concurrency=2)
    totals = riffle.sql("SELECT count(*) AS n, sum(x) AS s FROM t", t=big)
    assert "BatchRows <- MlPredict" in totals.explain()
    assert totals.to_pydict() == {"n": [10_000], "s": [sum(range(0, 20_000, 2))]}
    # flat_map: each row to its words; the rows go on through the plan (an aggregation).
    chunks = riffle.from_pydict({"doc": ["a b c", "", "d e"]}).flat_map(
        lambda r: [{"word": w, "n": len(w)} for w in r["doc"].split()], concurrency=1
    )
    assert chunks.to_pydict() == {"word": ["a", "b", "c", "d", "e"], "n": [1] * 5}
    assert chunks.agg(riffle.col("n").sum().alias("total")).to_pydict() == {"total": [5]}
    # Any iterable of rows will do (a generator here).
    lazily = riffle.from_pydict({"n": [2, 0, 3]}).flat_map(lambda r: ({"i": i} for i in range(r["n"])), concurrency=1)
    assert lazily.to_pydict() == {"i": [0, 1, 0, 1, 2]}
    # A failed batch with on_error="null": a row of NULLs per input row.
    def fail_on_big(b):
        if max(b["x"].to_pylist()) >= 10:
            raise ValueError("too big")
        return {"x": b["x"]}

    out = numbers(20).map_batches(fail_on_big, batch_size=10, concurrency=1, on_error="null", return_schema={"x": pa.int64()})
    assert out.to_pydict() == {"x": list(range(10)) + [None] * 10}
    assert no_children_within() == []


def test_bad_arguments_name_the_argument():
    df = numbers(3)
    with pytest.raises(ValueError, match="batch_format='pyarrow'.*write 'arrow'"):
        df.map_batches(lambda b: b, batch_format="pyarrow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        df.map_batches(lambda b: b, concurrency=0)
    with pytest.raises(ValueError, match="on_error must be one of"):
        df.map_batches(lambda b: b, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument 'batchsize'"):
        df.map_batches(lambda b: b, batchsize=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="give return_schema"):
        df.map_batches(Scale, fn_constructor_args=(1,))
    with pytest.raises(riffle.UserError, match="need 1 GPUs"):
        os.environ["RIFFLE_GPUS"] = ""
        try:
            df.map_batches(lambda b: b, num_gpus=1, concurrency=1)
        finally:
            del os.environ["RIFFLE_GPUS"]


def boom(batch):
    raise ZeroDivisionError("no way")


FAILURES = [
    ("an exception", boom, {}, riffle.UserCodeError, r"map_batches\(boom\) raised on batch 0 \(rows 0\.\.10\): ZeroDivisionError: no way"),
    ("os._exit", lambda b: os._exit(3), {}, riffle.WorkerCrashedError, r"exited with code 3"),
    ("SIGKILL", lambda b: os.kill(os.getpid(), signal.SIGKILL), {}, riffle.WorkerCrashedError, r"killed by signal 9 \(SIGKILL\)"),
    ("a segfault", lambda b: __import__("ctypes").string_at(0), {}, riffle.WorkerCrashedError, r"signal 11 \(SIGSEGV\)[\s\S]*Segmentation fault"),
    ("a hang", lambda b: time.sleep(300), {"timeout": 1}, riffle.WorkerTimeoutError, r"longer than the timeout of 1\.0 s on batch 0"),
]


@pytest.mark.parametrize("what, fn, extra, exception, message", FAILURES, ids=[f[0] for f in FAILURES])
def test_each_failure_has_its_exception_and_leaves_nothing_behind(what, fn, extra, exception, message):
    session = riffle.Session(parallelism=1)
    df = riffle.from_pydict({"x": list(range(10))}, session=session)
    started = time.monotonic()
    with pytest.raises(exception, match=message) as info:
        df.map_batches(fn, return_schema={"y": pa.int64()}, concurrency=1, **extra).to_pylist()
    assert isinstance(info.value, riffle.RiffleError)
    assert time.monotonic() - started < 60
    if exception is riffle.UserCodeError:
        assert "Traceback" in str(info.value)
    assert no_children_within() == []
    # The session goes on.
    again = df.map_batches(lambda b: {"y": b["x"]}, concurrency=1).to_pydict()
    assert again == {"y": list(range(10))}
    assert no_children_within() == []


def test_max_retries_sends_a_failed_batch_again(tmp_path):
    marker = tmp_path / "crashed-once"

    def crash_once(batch):
        if not marker.exists():
            marker.write_text("x")
            os._exit(1)
        return {"y": batch["x"]}

    out = numbers(10).map_batches(crash_once, return_schema={"y": pa.int64()}, concurrency=1, max_retries=2)
    assert out.to_pydict()["y"] == list(range(10))
    assert marker.exists()


def test_workers_get_gpu_ids_and_blas_threads_from_the_inventory(monkeypatch):
    monkeypatch.setenv("RIFFLE_GPUS", "0,1")

    def env(batch):
        n = batch.num_rows
        return {
            "gpus": [os.environ.get("CUDA_VISIBLE_DEVICES")] * n,
            "threads": [os.environ.get("OMP_NUM_THREADS")] * n,
            "worker": [os.environ.get("RIFFLE_WORKER_ID")] * n,
        }

    schema = {"gpus": pa.string(), "threads": pa.string(), "worker": pa.string()}
    out = numbers(400).map_batches(env, return_schema=schema, concurrency=4, num_gpus=0.5, num_cpus=2, batch_size=10)
    seen = {(r["worker"], r["gpus"], r["threads"]) for r in out.to_pylist()}
    for worker, gpus, threads in seen:
        assert threads == "2"
        assert gpus == ("0" if int(worker) < 2 else "1")
    whole = numbers(20).map_batches(env, return_schema=schema, concurrency=1, num_gpus=2)
    assert {r["gpus"] for r in whole.to_pylist()} == {"0,1"}
    with pytest.raises(riffle.UserError, match="need 3 GPUs"):
        numbers(5).map_batches(env, return_schema=schema, concurrency=3, num_gpus=1)


def test_iter_batches_closed_early_stops_the_workers():
    # An unbounded source: only cancelling the job ends it (and its workers).
    session = riffle.Session(parallelism=1)
    session.sql("CREATE TABLE ids (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '1000')")
    df = session.table("ids").map_batches(
        lambda b: {"y": b["id"]}, return_schema={"y": pa.int64()}, concurrency=2, batch_size=10
    )
    batches = df.iter_batches()
    next(batches)
    assert children(), "the workers run while the job does"
    batches.close()
    assert no_children_within() == []
    # Leaving a for loop early does the same, through the iterator's finalizer.
    for _ in df.iter_batches():
        break
    assert no_children_within() == []
