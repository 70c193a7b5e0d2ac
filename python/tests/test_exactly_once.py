"""map_batches on the fault-tolerance contract: failures injected at seeded random points
(`riffle.test.fail`), restarts from the latest checkpoint, and the published rows compared
one by one with the expected ones: each exactly once, each computed by the user's code."""

from __future__ import annotations

import os
import random

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import riffle

ROWS = 20_000


def square(batch: pa.RecordBatch) -> dict[str, pa.Array]:
    ids = batch.column("id")
    return {"id": ids, "square": pc.multiply(ids, ids), "pid": pa.array([os.getpid()] * batch.num_rows)}


def test_map_batches_is_exactly_once_through_injected_failures(tmp_path):
    seed = int(os.environ.get("RIFFLE_TEST_SEED", "20261203"))
    rng = random.Random(seed)
    session = riffle.Session(
        parallelism=1,
        checkpoint_dir=str(tmp_path / "checkpoints"),
        checkpoint_interval="100 ms",
        options={
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": "10",
            "restart-strategy.fixed-delay.delay": "10 ms",
        },
    )
    session.sql(
        f"CREATE TABLE ids (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '{ROWS}', "
        "'rows-per-second' = '10000')"
    )
    # Two failures, in the first two attempts, after a random number of batches each.
    plan = ";".join(f"attempt={a},vertex=0,after-batches={rng.randint(2, 12)},kind=error" for a in range(2))
    session.set_option("riffle.test.fail", plan)
    squares = session.table("ids").map_batches(
        square,
        batch_size=256,
        concurrency=2,
        return_schema={"id": pa.int64(), "square": pa.int64(), "pid": pa.int64()},
    )
    out = tmp_path / "out"
    written = squares.write_parquet(str(out))
    report = squares.stats()
    assert report.restarts == 2, f"seed {seed}, plan {plan}: {report}"
    assert written == ROWS, f"seed {seed}, plan {plan}"
    table = pq.read_table(out).sort_by("id")
    assert table.column("id").to_pylist() == list(range(ROWS)), f"seed {seed}, plan {plan}"
    assert table.column("square").to_pylist() == [i * i for i in range(ROWS)]
    assert os.getpid() not in set(table.column("pid").to_pylist())
