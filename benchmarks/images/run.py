#!/usr/bin/env python3
"""The image benchmark: decode, resize to 224x224 and tensorize a folder of JPEGs.

    python3 benchmarks/images/run.py            # 2000 pictures, 640x480

Runs, in one go and on the same folder:
  - Riffle (the `riffle-bench-images` binary, built with the bench-fast profile, with the
    `turbojpeg` feature where libturbojpeg0-dev is installed, else pure Rust; --pure-rust
    forces the latter): files() -> file_read -> image_decode -> image_resize(224, 224,
    bilinear) -> image_to_tensor (float32, CHW, scaled to [0, 1]), on all cores;
  - Pillow in a Python loop: open, convert to RGB, resize (bilinear), numpy float32 CHW;
  - Daft (pip-installed into this benchmark's own virtual environment):
    from_glob_path -> download -> decode_image -> resize(224, 224) -> image_to_tensor
    (uint8: Daft has no float scaling of its own, so it does a little less work).

Prints images per second for each and the ratios. The pictures are generated once into
benchmarks/data/images-<count>/ (smooth gradients, shapes and noise, JPEG quality 90).
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "benchmarks" / ".venv-images"
PACKAGES = ["daft==0.7.26", "pillow>=10", "numpy>=1.26"]


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_venv() -> None:
    """Re-runs this script inside its own virtual environment, made on first use."""
    if in_venv():
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} and installing {' '.join(PACKAGES)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True
        )
    os.execv(str(python), [str(python), *sys.argv])


def generate(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    done = folder / ".complete"
    if done.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    ys, xs = np.mgrid[0:480, 0:640]
    print(f"generating {count} 640x480 JPEGs in {folder} ...", flush=True)
    for i in range(count):
        a, b, c = rng.uniform(0.2, 3.0, 3)
        base = np.stack(
            [
                127 + 120 * np.sin(xs / (40 * a) + i),
                127 + 120 * np.cos(ys / (35 * b) - i),
                127 + 120 * np.sin((xs + ys) / (50 * c)),
            ],
            axis=-1,
        )
        noisy = base + rng.normal(0, 12, base.shape)
        picture = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(picture)
        for _ in range(6):
            x0, y0 = rng.integers(0, 560), rng.integers(0, 400)
            color = tuple(int(v) for v in rng.integers(0, 255, 3))
            draw.ellipse([x0, y0, x0 + rng.integers(20, 80), y0 + rng.integers(20, 80)], fill=color)
        picture.save(folder / f"img{i:05d}.jpg", quality=90)
    done.touch()


def best_of(repeat: int, run) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def pillow(files: list[Path]) -> None:
    import numpy as np
    from PIL import Image

    for path in files:
        with Image.open(path) as picture:
            resized = picture.convert("RGB").resize((224, 224), Image.BILINEAR)
        tensor = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0
        assert tensor.shape == (3, 224, 224)


def daft_run(folder: Path) -> int:
    import daft
    from daft import col
    from daft.functions import decode_image, download, image_to_tensor, resize

    frame = daft.from_glob_path(str(folder / "*.jpg"))
    frame = frame.select(
        image_to_tensor(resize(decode_image(download(col("path"))), 224, 224)).alias("t")
    )
    return len(frame.collect())


def turbojpeg_available() -> bool:
    """Whether the system has libjpeg-turbo's TurboJPEG library (libturbojpeg0-dev)."""
    found = subprocess.run(["pkg-config", "--exists", "libturbojpeg"], check=False)
    return found.returncode == 0


def riffle(folder: Path, repeat: int, turbojpeg: bool) -> tuple[float, int]:
    # Where cargo puts it: CARGO_TARGET_DIR when set (.ci/run and the README use a shared
    # folder outside the clone), else the workspace's target/.
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    binary = target / "bench-fast" / "riffle-bench-images"
    features = ["--features", "turbojpeg"] if turbojpeg else []
    # cargo rebuilds only what changed (and when the feature changes).
    subprocess.run(
        ["cargo", "build", "--profile", "bench-fast", "-p", "riffle-benchmarks",
         "--bin", "riffle-bench-images", *features],
        cwd=ROOT, check=True,
    )
    output = subprocess.run(
        [str(binary), "--dir", str(folder), "--repeat", str(repeat)],
        check=True, capture_output=True, text=True,
    ).stdout
    fields = dict(part.split("=") for part in output.split()[1:])
    return float(fields["seconds"]), int(fields["images"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pure-rust", action="store_true",
                        help="decode JPEGs with zune-jpeg even where libjpeg-turbo is installed")
    args = parser.parse_args()
    os.environ["DO_NOT_TRACK"] = "1"
    ensure_venv()

    folder = ROOT / "benchmarks" / "data" / f"images-{args.count}"
    generate(folder, args.count)
    files = sorted(folder.glob("*.jpg"))
    cores = os.cpu_count()

    turbojpeg = turbojpeg_available() and not args.pure_rust
    riffle_s, riffle_n = riffle(folder, args.repeat, turbojpeg)
    assert riffle_n == len(files), (riffle_n, len(files))
    pillow_s = best_of(args.repeat, lambda: pillow(files))
    daft_rows = []
    daft_s = best_of(args.repeat, lambda: daft_rows.append(daft_run(folder)))
    assert daft_rows[-1] == len(files), daft_rows

    n = len(files)
    print(f"\n{n} JPEGs 640x480 -> 224x224 tensors, {cores} cores, best of {args.repeat}")
    print(f"{'engine':<34}{'seconds':>9}{'images/s':>10}{'vs Riffle':>11}")
    for name, seconds in [
        (f"Riffle (all cores, {'libjpeg-turbo' if turbojpeg else 'zune-jpeg'})", riffle_s),
        ("Pillow loop (one core)", pillow_s),
        ("Daft (all cores)", daft_s),
    ]:
        print(f"{name:<34}{seconds:>9.3f}{n / seconds:>10.1f}{riffle_s / seconds:>11.2f}")
    print(f"\nRiffle / Daft throughput: {daft_s / riffle_s:.2f}x; Riffle / Pillow: {pillow_s / riffle_s:.2f}x")


if __name__ == "__main__":
    main()
