"""The lazy DataFrame: building, running and reading results, compared with pyarrow."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import riffle
from riffle import col, lit


def people(session: riffle.Session | None = None) -> riffle.DataFrame:
    return riffle.from_pydict(
        {
            "name": ["ada", "bob", "cy", "dee", None],
            "age": [36, 17, 52, None, 8],
            "team": ["x", "y", "x", "y", "x"],
        },
        session=session,
    )


def test_select_filter_with_column():
    df = people().filter(col("age") >= 18).with_column("next", col("age") + 1)
    rows = df.select("name", "next", double=col("age") * 2).sort("name").to_pylist()
    assert rows == [
        {"name": "ada", "next": 37, "double": 72},
        {"name": "cy", "next": 53, "double": 104},
    ]


def test_boolean_logic_and_membership():
    df = people()
    rows = df.filter((col("team") == "x") & ~col("name").is_null() | col("age").is_in([17])).sort("name")
    assert [r["name"] for r in rows.to_pylist()] == ["ada", "bob", "cy"]
    between = df.filter(col("age").between(10, 40)).sort("age").to_pydict()["name"]
    assert between == ["bob", "ada"]


def test_group_by_agg_matches_pyarrow():
    df = people()
    out = df.group_by("team").agg(
        col("age").sum().alias("total"),
        col("age").mean().alias("mean"),
        n=col("name").count(),
    )
    got = {r["team"]: r for r in out.to_pylist()}
    table = pa.table(people())
    expected = table.group_by("team").aggregate([("age", "sum"), ("age", "mean"), ("name", "count")])
    for row in expected.to_pylist():
        assert got[row["team"]]["total"] == row["age_sum"]
        assert got[row["team"]]["mean"] == pytest.approx(row["age_mean"])
        assert got[row["team"]]["n"] == row["name_count"]


def test_sort_descending_and_nulls():
    ages = people().sort("age", descending=True).to_pydict()["age"]
    assert ages == [None, 52, 36, 17, 8]
    ages = people().sort("age", descending=True, nulls_first=False).to_pydict()["age"]
    assert ages == [52, 36, 17, 8, None]
    by_two = people().sort(["team", "age"], descending=[False, True]).to_pydict()
    assert by_two["team"] == ["x", "x", "x", "y", "y"]
    assert by_two["age"] == [52, 36, 8, None, 17]


def test_joins():
    teams = riffle.from_pydict({"team": ["x", "z"], "lead": ["ada", "zed"]})
    inner = people().join(teams, on="team").select("name", "lead").sort("name").to_pylist()
    assert [r["name"] for r in inner] == ["ada", "cy", None]
    left = people().join(teams, on="team", how="left").count()
    assert left == 5
    anti = people().join(teams, on="team", how="anti").sort("name").to_pydict()["name"]
    assert anti == ["bob", "dee"]
    assert people().join(teams, how="cross").count() == 10
    with pytest.raises(ValueError, match="how='sideways'.*valid: 'inner'"):
        people().join(teams, on="team", how="sideways")  # type: ignore[arg-type]


def test_union_distinct_limit():
    a = riffle.from_pydict({"x": [1, 2, 2]})
    b = riffle.from_pydict({"x": [2, 3]})
    assert sorted(a.union_all(b).to_pydict()["x"]) == [1, 2, 2, 2, 3]
    assert sorted(a.union(b).to_pydict()["x"]) == [1, 2, 3]
    assert sorted(a.distinct().to_pydict()["x"]) == [1, 2]
    assert a.sort("x").limit(2, offset=1).to_pydict()["x"] == [2, 2]


def test_explode_drop_null_fill_null():
    df = riffle.from_pydict({"k": [1, 2, 3], "xs": [[1, 2], [], None]})
    assert df.explode("xs").sort("xs").to_pydict() == {"k": [1, 1, 3], "xs": [1, 2, None]}
    assert people().drop_null().count() == 3
    assert people().drop_null("age").count() == 4
    filled = people().fill_null(0, "age").sort("age").to_pydict()["age"]
    assert filled == [0, 8, 17, 36, 52]
    assert people().with_column("n", col("name").fill_null("?")).to_pydict()["n"][-1] == "?"


def test_cast_alias_and_literals():
    df = riffle.from_pydict({"x": [1, 2]})
    out = df.select(col("x").cast("DOUBLE").alias("d"), col("x").cast("VARCHAR").alias("s"))
    assert out.schema.field("d").type == pa.float64()
    assert out.to_pydict() == {"d": [1.0, 2.0], "s": ["1", "2"]}
    bad = riffle.from_pydict({"s": ["1", "x"]}).select(col("s").cast("INT", try_=True).alias("i"))
    assert bad.to_pydict()["i"] == [1, None]
    lists = df.select(lit([1, 2, 3]).alias("l")).to_pydict()["l"]
    assert lists == [[1, 2, 3], [1, 2, 3]]


def test_repartition_keeps_every_row():
    df = riffle.from_pydict({"x": list(range(1000))}).repartition(3)
    assert sorted(df.to_pydict()["x"]) == list(range(1000))


def test_arrow_interop_without_copies():
    table = pa.table({"x": pa.array(range(10_000), pa.int64())})
    df = riffle.from_arrow(table)
    out = pa.table(df)
    assert out.equals(table)
    # The values buffer crosses into Riffle and back without a copy.
    assert out.column("x").chunks[0].buffers()[1].address == table.column("x").chunks[0].buffers()[1].address
    reader = pa.RecordBatchReader.from_stream(df)
    assert reader.read_all().num_rows == 10_000
    assert pa.schema(df) == table.schema


def test_pandas_round_trip():
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"a": [1, 2], "b": ["u", "v"]})
    df = riffle.from_pandas(frame)
    assert df.to_pandas().equals(frame)


def test_sql_with_tables_and_ddl(tmp_path):
    df = people()
    rows = riffle.sql("SELECT team, count(*) AS n FROM p GROUP BY team ORDER BY team", p=df).to_pylist()
    assert rows == [{"team": "x", "n": 3}, {"team": "y", "n": 2}]
    # The name does not stay behind.
    with pytest.raises(riffle.UserError, match="p"):
        riffle.sql("SELECT * FROM p").to_pylist()


def test_write_and_read_files(tmp_path):
    df = people()
    for fmt in ("parquet", "csv", "json"):
        folder = tmp_path / fmt
        written = getattr(df, f"write_{fmt}")(str(folder))
        assert written == 5
        back = getattr(riffle, f"read_{fmt}")(str(folder))
        assert sorted(back.to_pydict()["name"], key=str) == sorted(df.to_pydict()["name"], key=str)
    table = pq.read_table(tmp_path / "parquet")
    assert pc.sum(table["age"]).as_py() == 113


def test_iter_batches_formats_and_early_close():
    df = riffle.from_pydict({"x": list(range(100)), "y": [float(i) for i in range(100)]})
    arrow = list(df.iter_batches())
    assert sum(b.num_rows for b in arrow) == 100
    pandas = pytest.importorskip("pandas")
    frames = list(df.iter_batches(batch_format="pandas"))
    assert isinstance(frames[0], pandas.DataFrame)
    arrays = next(iter(df.iter_batches(batch_format="numpy")))
    assert arrays["y"].dtype.name == "float64"
    with pytest.raises(ValueError, match="write 'arrow'"):
        df.iter_batches(batch_format="pyarrow")  # type: ignore[arg-type]


def unbounded(session: riffle.Session) -> riffle.DataFrame:
    session.sql(
        "CREATE TABLE ticks (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '200')"
    )
    return session.table("ticks")


def test_take_on_an_unbounded_source_returns(session):
    started = time.monotonic()
    rows = unbounded(session).take(5)
    assert len(rows) == 5
    slow = unbounded_slow(session).take(1_000_000, timeout=1.5)
    assert 0 < len(slow) < 1_000_000
    assert time.monotonic() - started < 60


def unbounded_slow(session: riffle.Session) -> riffle.DataFrame:
    session.sql(
        "CREATE TABLE slow (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '50')"
    )
    return session.table("slow")


def test_iter_batches_closed_early_cancels_the_job(session):
    batches = unbounded(session).iter_batches()
    first = next(batches)
    assert first.num_rows > 0
    batches.close()
    with pytest.raises(StopIteration):
        next(batches)
    # Leaving a for loop early does the same, through the iterator's finalizer.
    for batch in unbounded_slow(session).iter_batches():
        break


def test_errors_name_what_was_wrong():
    with pytest.raises(riffle.UserError) as info:
        people().select(col("nope")).to_pylist()
    assert "nope" in str(info.value)
    assert isinstance(info.value, riffle.RiffleError)
    with pytest.raises(TypeError, match="filter: predicate must be an Expr"):
        people().filter("age > 3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limit: n must be an int"):
        people().limit("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no truth value"):
        bool(col("a") > 1)
    with pytest.raises(riffle.UserError, match="cannot infer|No files|not found|does not exist"):
        riffle.read_parquet("/nonexistent/riffle/folder").to_pylist()


def test_repr_never_runs_a_job():
    df = unbounded(riffle.Session(parallelism=1))
    text = repr(df.filter(col("id") > 3))
    assert "lazy" in text and "id: int64" in text
    assert "explain" not in text
    plan = df.explain()
    assert "Job graph" in plan


def test_collect_materializes():
    df = people().collect()
    assert "ada" in repr(df)
    assert df.count() == 5
    assert df.filter(col("age") > 30).count() == 2


def test_relative_local_paths_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert people().write_parquet("../out") == 5
    assert riffle.read_parquet("../out").count() == 5


def test_from_pydict_keeps_pyarrows_types():
    df = riffle.from_pydict({"i": [1, 2], "f": [1, 2.5], "g": [0.5, 2], "n": [1, None], "s": ["a", "b"], "b": [True, False]})
    types = {f.name: str(f.type) for f in df.schema}
    assert types == {"i": "int64", "f": "double", "g": "double", "n": "int64", "s": "string", "b": "bool"}
    assert df.to_pydict()["f"] == [1.0, 2.5]
    assert df.to_pydict()["n"] == [1, None]


def test_drop_rename_and_iter_rows():
    df = riffle.from_pydict({"a": [1, 2], "b": ["x", "y"], "c": [0.5, 1.5]})
    assert df.drop("b").to_pydict() == {"a": [1, 2], "c": [0.5, 1.5]}
    assert df.rename({"a": "id"}, c="score").columns == ["id", "b", "score"]
    assert df.with_column_renamed("b", "name").to_pydict()["name"] == ["x", "y"]
    assert list(df.iter_rows()) == [{"a": 1, "b": "x", "c": 0.5}, {"a": 2, "b": "y", "c": 1.5}]
    with pytest.raises(ValueError, match=r"drop: no column\(s\) \['z'\]; the columns are \['a', 'b', 'c'\]"):
        df.drop("z")
    with pytest.raises(ValueError, match="drop every column"):
        df.drop("a", "b", "c")
    with pytest.raises(ValueError, match=r"rename: no column\(s\) \['z'\]"):
        df.rename({"z": "y"})
    with pytest.raises(ValueError, match=r"two columns named \['b'\]"):
        df.rename({"a": "b"})


def test_when_then_otherwise_and_describe():
    from riffle import col, when

    df = riffle.from_pydict({"x": [1, 5, 12, None], "name": ["a", "b", "c", "d"]})
    sized = df.select(when(col("x") > 10).then("big").when(col("x") > 3).then("mid").otherwise("small").alias("s"))
    # A NULL x satisfies no condition: the otherwise value.
    assert sized.to_pydict() == {"s": ["small", "mid", "big", "small"]}
    no_otherwise = df.select(when(col("x") > 3).then(col("x") * 10).alias("y"))
    assert no_otherwise.to_pydict() == {"y": [None, 50, 120, None]}
    summary = {r["column"]: r for r in df.describe().to_pylist()}
    assert summary["x"]["count"] == 3 and summary["x"]["nulls"] == 1
    assert summary["x"]["mean"] == 6.0 and (summary["x"]["min"], summary["x"]["max"]) == ("1", "12")
    assert summary["name"]["mean"] is None and (summary["name"]["min"], summary["name"]["max"]) == ("a", "d")


def test_iter_batches_of_a_given_size_and_take_batch():
    df = riffle.from_pydict({"x": list(range(1000))})
    sizes = [b.num_rows for b in df.iter_batches(batch_size=300)]
    assert sizes == [300, 300, 300, 100]
    rows = [v for b in df.iter_batches(batch_size=7, batch_format="numpy") for v in b["x"].tolist()]
    assert rows == list(range(1000))
    assert df.take_batch(5, batch_format="pandas")["x"].tolist() == [0, 1, 2, 3, 4]
    assert df.filter(riffle.col("x") < 0).take_batch(5).num_rows == 0
    with pytest.raises(ValueError, match="iter_batches: batch_size must be at least 1, not 0"):
        df.iter_batches(batch_size=0)
