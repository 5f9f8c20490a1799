#!/usr/bin/env bash
# Creates .bench-venv/ (beside the repository's .venv) with the pinned peers of
# benchmarks/requirements.txt and Conveyor itself (editable), so that everything runs on one
# interpreter. Then: .bench-venv/bin/python benchmarks/run.py
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .bench-venv/bin/python ]; then
    "$PYTHON" -m venv .bench-venv
fi
.bench-venv/bin/python -m pip install --quiet --upgrade pip
.bench-venv/bin/python -m pip install --quiet -r benchmarks/requirements.txt
.bench-venv/bin/python -m pip install --quiet -e ".[redis,postgres]"
.bench-venv/bin/python -m pip check
echo "bench venv ready: .bench-venv/bin/python benchmarks/run.py"
