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
"$venv/bin/pip" install --quiet .   # the bench-fast build of the engine
exec "$venv/bin/python" benchmarks/python/bench_python.py run "$@"
