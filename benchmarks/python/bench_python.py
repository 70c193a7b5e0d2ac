"""Benchmarks of the Python front against Daft and Ray Data, each engine in a process of its
own (so that its peak memory is its own), in the same run:

  a. images: generated 640x480 JPEGs -> decode -> resize to 224 -> a numpy "model" (normalize,
     then a fixed matmul) in a class constructed once per worker, 2 workers -> Parquet.
  b. rows: the identity function on an integer over 1,000,000 rows, one Python call per row.
  c. fixed: a 100-row job from a fresh interpreter: import, plan, run, collect.

    benchmarks/python/run.sh            # installs the peers into benchmarks/.venv-python, runs all three

Prints images/s, rows/s and seconds, peak memory (the engine's process tree, sampled every
50 ms), and each engine against the faster peer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SIDE = 224
FEATURES = 16
ENGINES = ("riffle", "daft", "ray")


# ------------------------------------------------------------------------------ the model


class Model:
    """Normalizes a batch of HWC uint8 images with ImageNet's mean and std, then projects
    them with a fixed matrix: the same numpy work in every engine."""

    def __init__(self, seed: int = 0) -> None:
        import numpy as np

        rng = np.random.default_rng(seed)
        self.weights = rng.standard_normal((SIDE * SIDE * 3, FEATURES)).astype(np.float32)
        self.mean = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
        self.std = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255

    def project(self, images):
        import numpy as np

        x = (np.asarray(images, dtype=np.float32) - self.mean) / self.std
        return x.reshape(len(x), -1) @ self.weights


# --------------------------------------------------------------------------- the engines


def images_riffle(data: str, out: str) -> int:
    import pyarrow as pa

    import riffle
    from riffle import col

    class RiffleModel(Model):
        def __call__(self, batch):
            return {"path": batch["path"], "embedding": self.project(batch["image"])}

    # Resized as decoded (as Ray's read_images(size=) below): with turbojpeg, a JPEG decodes
    # at the smallest of 1/2, 1/4, 1/8 of its size still covering 224x224.
    df = riffle.read_images(data, size=(SIDE, SIDE)).select(col("file").field("uri").alias("path"), col("image"))
    return df.map_batches(
        RiffleModel,
        batch_format="numpy",
        batch_size=32,
        concurrency=2,
        return_schema={"path": pa.string(), "embedding": pa.list_(pa.float32(), FEATURES)},
    ).write_parquet(out)


def images_daft(data: str, out: str) -> int:
    import numpy as np

    import daft
    from daft import col
    from daft.functions import decode_image, download, resize

    @daft.cls(max_concurrency=2)
    class DaftModel(Model):
        @daft.method.batch(return_dtype=daft.DataType.fixed_size_list(daft.DataType.float32(), FEATURES))
        def __call__(self, images):
            return self.project(np.stack(images.to_pylist()))

    df = daft.from_glob_path(os.path.join(data, "*.jpg"))
    df = df.select(col("path"), resize(decode_image(download(col("path"))), SIDE, SIDE).alias("image"))
    df = df.select(col("path"), DaftModel()(col("image")).alias("embedding"))
    df.write_parquet(out)
    return len(os.listdir(data))


def images_ray(data: str, out: str) -> int:
    import ray

    class RayModel(Model):
        def __call__(self, batch):
            return {"embedding": self.project(batch["image"])}

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ds = ray.data.read_images(data, size=(SIDE, SIDE), mode="RGB")
    # Two actors holding a CPU each would leave none for the reads on two cores: half each.
    ds = ds.map_batches(RayModel, batch_format="numpy", batch_size=32, concurrency=2, num_cpus=0.5)
    ds.write_parquet(out)
    return len(os.listdir(data))


# Each engine sums the function's results, so that it must call the function on every row:
# counting rows alone lets an optimizer drop the unused column, and Daft's count_rows() and
# Riffle's count() both do (the first version of this benchmark measured no calls at all).
def expected_sum(n: int) -> int:
    return n * (n - 1) // 2


def checked(n: int, total: int) -> int:
    if total != expected_sum(n):
        raise SystemExit(f"the sum of the results is {total}, not {expected_sum(n)}")
    return n


def rows_riffle(n: int) -> int:
    import riffle

    @riffle.udf(concurrency=2)
    def identity(x: int) -> int:
        return x

    df = riffle.from_pydict({"x": list(range(n))}).with_column("y", identity(riffle.col("x")))
    return checked(n, df.agg(riffle.col("y").sum().alias("y")).to_pydict()["y"][0])


def rows_daft(n: int) -> int:
    import daft

    @daft.func
    def identity(x: int) -> int:
        return x

    df = daft.from_pydict({"x": list(range(n))}).with_column("y", identity(daft.col("x")))
    return checked(n, df.sum("y").to_pydict()["y"][0])


def rows_ray(n: int) -> int:
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    return checked(n, ray.data.range(n).map(lambda row: row).sum("id"))


FIXED = {
    "riffle": "import riffle; rows = riffle.from_pydict({'x': list(range(100))}).with_column('y', riffle.col('x') * 2).to_pylist()",
    "daft": "import daft; rows = daft.from_pydict({'x': list(range(100))}).with_column('y', daft.col('x') * 2).to_pylist()",
    "ray": "import ray; rows = ray.data.from_items([{'x': i} for i in range(100)]).map(lambda r: {'x': r['x'], 'y': r['x'] * 2}).take_all()",
}


# --------------------------------------------------------------------------- measurement


def peak_rss(process) -> float:
    """The process tree's resident memory, in MiB."""
    import psutil

    total = 0
    try:
        tree = [process] + process.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    for p in tree:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def measure(args: list[str], python: str) -> dict:
    """Runs ``bench_python.py one ...`` in a fresh interpreter; its result and peak memory."""
    import psutil

    started = time.monotonic()
    process = subprocess.Popen([python, __file__, "one", *args], stdout=subprocess.PIPE, text=True)
    watched = psutil.Process(process.pid)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, peak_rss(watched))
        time.sleep(0.05)
    output = process.stdout.read() if process.stdout else ""
    wall = time.monotonic() - started
    if process.returncode != 0:
        return {"error": f"exit {process.returncode}", "wall": wall}
    result = json.loads(output.strip().splitlines()[-1])
    result.update(peak_mib=peak, wall=wall)
    return result


def one(kind: str, engine: str, size: int, data: str) -> dict:
    if kind == "fixed":
        started = time.monotonic()
        exec(FIXED[engine], {})
        return {"seconds": time.monotonic() - started}
    out = tempfile.mkdtemp(prefix=f"bench-{engine}-")
    try:
        started = time.monotonic()
        if kind == "images":
            count = {"riffle": images_riffle, "daft": images_daft, "ray": images_ray}[engine](data, out)
        else:
            count = {"riffle": rows_riffle, "daft": rows_daft, "ray": rows_ray}[engine](size)
        return {"seconds": time.monotonic() - started, "count": count}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def generate_images(folder: str, count: int) -> None:
    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    if len([f for f in os.listdir(folder) if f.endswith(".jpg")]) == count:
        return
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for i in range(count):
        Image.fromarray(np.roll(base, i, axis=1)).save(os.path.join(folder, f"img{i:05}.jpg"), quality=90)


def report(kind: str, results: dict[str, dict], unit: str, per: int) -> None:
    print(f"\n== {kind} ==", flush=True)
    speeds = {}
    for engine, r in results.items():
        if "error" in r:
            print(f"{engine:7} failed: {r['error']}")
            continue
        if kind.endswith("fixed cost"):
            speeds[engine] = 1 / r["wall"]
            print(f"{engine:7} {r['wall']:.2f} s from a fresh interpreter (job {r['seconds']:.2f} s), peak {r['peak_mib']:.0f} MiB")
        else:
            speeds[engine] = per / r["seconds"]
            print(f"{engine:7} {per / r['seconds']:,.1f} {unit}/s ({r['seconds']:.1f} s), peak {r['peak_mib']:.0f} MiB")
    peers = [speeds[e] for e in ("daft", "ray") if e in speeds]
    if "riffle" in speeds and peers:
        print(f"riffle vs the faster peer: {speeds['riffle'] / max(peers):.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--benchmarks", default="a,b,c")
    run.add_argument("--engines", default=",".join(ENGINES))
    run.add_argument("--images", type=int, default=2000)
    run.add_argument("--rows", type=int, default=1_000_000)
    run.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "python-images"))
    single = sub.add_parser("one")
    single.add_argument("kind")
    single.add_argument("engine")
    single.add_argument("size", type=int)
    single.add_argument("data")
    args = parser.parse_args()
    if args.command == "one":
        print(json.dumps(one(args.kind, args.engine, args.size, args.data)))
        return 0
    engines = args.engines.split(",")
    chosen = args.benchmarks.split(",")
    if "a" in chosen:
        generate_images(args.data, args.images)
        results = {e: measure(["images", e, str(args.images), args.data], sys.executable) for e in engines}
        report("a. images", results, "images", args.images)
    if "b" in chosen:
        results = {e: measure(["rows", e, str(args.rows), "-"], sys.executable) for e in engines}
        report("b. rows", results, "rows", args.rows)
    if "c" in chosen:
        results = {e: measure(["fixed", e, "100", "-"], sys.executable) for e in engines}
        report("c. fixed cost", results, "jobs", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
