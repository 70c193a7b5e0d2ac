"""How DataFrames look: reprs never run jobs; collected frames show rows, images as
thumbnails."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pyarrow as pa
import pytest

import riffle


def test_html_of_a_collected_frame_shows_image_thumbnails(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    pixels = np.random.default_rng(1).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    df = riffle.read_images(str(tmp_path)).collect()
    html = df._repr_html_()
    match = re.search(r'src="data:image/png;base64,([^"]+)"', html)
    assert match, html[:300]
    thumb = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    assert max(thumb.size) <= 128 and thumb.size == (85, 128)
    assert "200x300 RGB" in html
    assert "more rows" not in html and "more rows" not in repr(df)  # one row: nothing left out


def test_lazy_html_runs_nothing():
    session = riffle.Session(parallelism=1)
    session.sql("CREATE TABLE t (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '1')")
    html = session.table("t")._repr_html_()
    assert "lazy" in html and "id: int64" in html


def test_stats_report_the_last_job():
    df = riffle.from_pydict({"x": list(range(100))}).filter(riffle.col("x") > 9)
    assert df.stats().rows == 0
    df.to_arrow()
    report = df.stats()
    assert report.rows == 90 and report.seconds > 0 and report.restarts == 0
    assert "90 rows" in str(report)
    # Each stage's rows: the one reading the source read the 100; the last sent the 90.
    assert [v.rows_in for v in report.vertices if v.reads_source] == [100], report.vertices
    assert report.vertices[0].rows_out == 90 and "100 rows read" in str(report)
    # Every way of running a job reports that job, not the one before it.
    assert sum(b.num_rows for b in df.iter_batches()) == 90 and df.stats().rows == 90
    assert len(df.take(5)) == 5 and df.stats().rows == 5


def test_progress_shows_only_where_someone_watches(monkeypatch):
    import io
    import sys
    import time

    from riffle import progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def slow(batch):
        time.sleep(0.05)
        return {"y": batch["x"]}

    def run(stderr: io.StringIO) -> str:
        monkeypatch.setattr(sys, "stderr", stderr)
        df = riffle.from_pydict({"x": list(range(400))}).map_batches(
            slow, batch_size=20, concurrency=2, return_schema={"y": pa.int64()}
        )
        assert df.count() == 400 and len(df.to_arrow()) == 400
        monkeypatch.undo()
        return stderr.getvalue()

    monkeypatch.setattr(progress, "_DELAY", 0.0)
    monkeypatch.setattr(progress, "_EVERY", 0.05)
    monkeypatch.setenv("COLUMNS", "400")  # a wide terminal: no line is cut
    # Not a terminal: nothing drawn.
    assert run(io.StringIO()) == ""
    # A terminal: the job's line, a line per stage (rows, rate, backpressure) and one for
    # the worker pool (busy workers, requests in flight), redrawn in place, ended at the end.
    monkeypatch.setattr(progress, "_DELAY", 0.0)
    monkeypatch.setattr(progress, "_EVERY", 0.05)
    monkeypatch.setenv("COLUMNS", "400")
    drawn = run(Terminal())
    assert "riffle: 400 rows out" in drawn and drawn.endswith("\n")
    assert "x1: read 400, out 400" in drawn and "backpressure" in drawn, drawn
    assert "busy of 2" in drawn and "requests in flight" in drawn, drawn
    assert "\x1b[" in drawn  # redrawn in place
    # A narrow terminal: each line cut to its width.
    monkeypatch.setattr(progress, "_DELAY", 0.0)
    monkeypatch.setattr(progress, "_EVERY", 0.05)
    monkeypatch.setenv("COLUMNS", "40")
    narrow = run(Terminal())
    assert narrow and all(len(line.split("\x1b[2K")[-1]) <= 39 for line in narrow.split("\n")), narrow
    # Turned off: nothing drawn.
    monkeypatch.setattr(progress, "enabled", False)
    assert run(Terminal()) == ""


def test_previews_of_audio_vectors_and_tensors():
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes((np.sin(np.arange(12000) / 5) * 3000).astype("<i2").tobytes())
    sound = riffle.from_pydict({"b": [out.getvalue()]}).select(riffle.functions.audio_decode(riffle.col("b")).alias("a"))
    html = sound.collect()._repr_html_()
    assert '<audio controls title="audio 1.50 s, 8000 Hz, 1 ch"' in html and "data:audio/wav;base64," in html
    shaped = riffle.sql(
        "SELECT CAST([0.5, 0.25, 0.125, 1.0, 2.0] AS VECTOR(FLOAT, 5)) AS v, "
        "CAST([1.0, 2.0, 3.0, 4.0] AS TENSOR(FLOAT, [2, 2])) AS t"
    ).collect()
    text = repr(shaped)
    assert "[0.5, 0.25, 0.125, 1, … (5)]" in text, text
    assert "<tensor 2x2: 1, 2, 3, …>" in text, text
    assert "&lt;tensor 2x2: 1, 2, 3, …&gt;" in shaped._repr_html_()
