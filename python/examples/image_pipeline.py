"""Images through a numpy "model" in two worker processes, to Parquet: the README's example.

    python3 python/examples/image_pipeline.py PHOTOS_FOLDER OUT_FOLDER
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pyarrow as pa

import riffle
from riffle import col

SIDE = 32


class Model:
    """Constructed once per worker; called per batch of same-size images."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.weights = rng.standard_normal((SIDE * SIDE * 3, 8)).astype(np.float32)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        pixels = batch["image"].reshape(len(batch["image"]), -1).astype(np.float32) / 255.0
        return {"path": batch["path"], "embedding": pixels @ self.weights}


def main(photos: str, out: str) -> int:
    images = riffle.read_images(photos).select(
        col("file").field("uri").alias("path"),
        col("image").image.resize(SIDE, SIDE).alias("image"),
    )
    embedded = images.map_batches(
        Model,
        fn_constructor_args=(42,),
        batch_format="numpy",
        concurrency=2,
        return_schema={"path": pa.string(), "embedding": pa.list_(pa.float32(), 8)},
    )
    written = embedded.write_parquet(out)
    print(f"{written} images embedded into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
