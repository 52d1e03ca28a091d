#!/usr/bin/env bash
# The project's test command (README, CI): bootstrap the venv, lint, run the test suite.
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -m "not slow"   # extra arguments go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh

echo "[test] ruff check"
ruff check .

echo "[test] pytest"
python -m pytest "$@"
