#!/usr/bin/env bash
# Benchmarks a, b and c of the Python front (see bench_python.py): installs Daft, Ray Data and
# an optimized build of Riffle into benchmarks/.venv-python, then runs them all.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/riffle/target}"
venv=benchmarks/.venv-python
if ! "$venv/bin/python" -c "import daft, ray, PIL, psutil" >/dev/null 2>&1; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet daft "ray[data]" pillow psutil pandas
fi
# The bench-fast build of the engine; with libjpeg-turbo's reduced-size JPEG decoding where
# the system has it (Debian: libturbojpeg0-dev), as the Rust image benchmark does.
if pkg-config --exists libturbojpeg 2>/dev/null; then
    echo "building Riffle with the turbojpeg feature"
    export MATURIN_PEP517_ARGS="--features turbojpeg"
else
    echo "building Riffle without turbojpeg (libturbojpeg0-dev is not installed): JPEGs decode with zune-jpeg"
fi
"$venv/bin/pip" install --quiet .
exec "$venv/bin/python" benchmarks/python/bench_python.py run "$@"
