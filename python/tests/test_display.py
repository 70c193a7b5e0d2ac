"""How DataFrames look: reprs never run jobs; collected frames show rows, images as
thumbnails."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
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


def test_progress_shows_only_where_someone_watches(capsys, monkeypatch):
    from riffle import progress

    class FakeJob:
        def report(self):
            return {"models": "model m: 2 in flight"}

    # Not a terminal (pytest captures stderr): nothing drawn.
    bar = progress.Progress(FakeJob())
    bar._started -= 5
    bar.update(10)
    bar.done()
    assert capsys.readouterr().err == ""
    # A terminal: one line, redrawn in place, ended at the end.
    bar = progress.Progress(FakeJob())
    bar._terminal = True
    bar._started -= 5
    bar.update(1000)
    bar.done()
    err = capsys.readouterr().err
    assert "riffle: 1,000 rows out" in err and err.endswith("\n")
    monkeypatch.setattr(progress, "enabled", False)
    bar = progress.Progress(FakeJob())
    bar._terminal = True
    bar._started -= 5
    bar.update(5)
    bar.done()
    assert capsys.readouterr().err == ""
