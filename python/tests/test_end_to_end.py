"""The image pipeline end to end: generated JPEGs -> read_images -> resize -> a
map_batches class "model" (a fixed numpy matmul) in 2 worker processes -> write_parquet,
read back with pyarrow and compared row by row with the same computation in plain numpy."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import riffle
from riffle import col

SIDE = 24
FEATURES = 8


class MatmulModel:
    """A stand-in for a model: a fixed projection of the normalised pixels."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.weights = rng.standard_normal((SIDE * SIDE * 3, FEATURES)).astype(np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, object]:
        pixels = batch["image"].reshape(len(batch["image"]), -1).astype(np.float32) / 255.0
        return {"file": batch["file"], "embedding": pixels @ self.weights}


def write_jpegs(folder, count: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(7)
    for i in range(count):
        width, height = int(rng.integers(40, 90)), int(rng.integers(30, 70))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="JPEG", quality=90)
        (folder / f"img{i:03}.jpg").write_bytes(out.getvalue())


def test_images_through_a_numpy_model_in_two_workers(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_jpegs(images, 60)
    session = riffle.Session(parallelism=2)
    resized = riffle.read_images(str(images), session=session).select(
        col("file"),
        col("image").image.resize(SIDE, SIDE).alias("image"),
    )
    out_dir = tmp_path / "out"
    schema = {"file": resized.schema.field("file").type, "embedding": pa.list_(pa.float32(), FEATURES)}
    written = resized.map_batches(
        MatmulModel,
        fn_constructor_args=(42,),
        batch_format="numpy",
        batch_size=8,
        concurrency=2,
        return_schema=schema,
    ).write_parquet(str(out_dir))
    assert written == 60
    table = pq.read_table(out_dir)
    got = {row["file"]["uri"]: np.array(row["embedding"], dtype=np.float32) for row in table.to_pylist()}
    assert len(got) == 60
    # The same computation in plain numpy, on the pixels Riffle resized.
    model = MatmulModel(42)
    reference = resized.to_arrow()
    for row in reference.to_pylist():
        image = row["image"]
        pixels = np.frombuffer(image["pixels"], dtype=np.uint8).reshape(1, SIDE, SIDE, 3)
        expected = model({"image": pixels, "file": np.array([row["file"]])})["embedding"][0]
        np.testing.assert_allclose(got[row["file"]["uri"]], expected, rtol=1e-5, atol=1e-5)


def test_read_images_with_a_size_resizes_as_it_decodes(tmp_path):
    write_jpegs(tmp_path, 6)
    sized = riffle.read_images(str(tmp_path), size=(SIDE, SIDE + 8)).sort("file").to_pylist()
    after = (
        riffle.read_images(str(tmp_path))
        .select(col("file"), col("image").image.resize(SIDE + 8, SIDE).alias("image"))
        .sort("file")
        .to_pylist()
    )
    assert len(sized) == 6
    # An IMAGE column (numpy batches and displays know it), with or without a size.
    for frame in (riffle.read_images(str(tmp_path), size=(8, 8)), riffle.read_images(str(tmp_path), ignore_corrupt=True)):
        assert frame.schema.field("image").metadata == {b"ARROW:extension:name": b"riffle.image"}
    for fused, plain in zip(sized, after):
        # (height, width): 24 rows of 32 pixels; the same pixels as decoding, then resizing.
        assert (fused["image"]["width"], fused["image"]["height"]) == (SIDE + 8, SIDE)
        assert fused["image"]["pixels"] == plain["image"]["pixels"]
    with pytest.raises(ValueError, match=r"size must be \(height, width\)"):
        riffle.read_images(str(tmp_path), size=(0, 5))
