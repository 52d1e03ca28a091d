#!/usr/bin/env bash
# Bootstrap: create .venv when missing and install requirements.txt; a no-op (well under a
# second) when requirements.txt has not changed since the last install. Source it or run it.
#   source scripts/env.sh      # then python/pytest are the venv's
# PYTHON=python3.11 picks the interpreter used to create the venv.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LAWGPT_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[env] creating $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$VENV" || { echo "[env] error: could not create a venv with $PYTHON" >&2; return 1 2>/dev/null || exit 1; }
fi

# The stamp holds the hash of the requirements last installed: reinstall only when it changes.
STAMP="$VENV/.requirements.sha256"
WANT="$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[env] installing requirements.txt into $VENV (first time: ~1-2 min)"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  if ! "$VENV/bin/python" -m pip install -q -r "$ROOT/requirements.txt" 2> >(grep -v "^WARNING: Location" >&2); then
    echo "[env] error: pip install -r requirements.txt failed (see above)" >&2
    return 1 2>/dev/null || exit 1
  fi
  echo "$WANT" > "$STAMP"
fi

export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
# Keep library caches inside the checkout, never in ~/.cache, and never reach for a model hub.
export HF_HOME="${HF_HOME:-$ROOT/.cache/huggingface}"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$ROOT/.cache/torchinductor}"
export MPLCONFIGDIR="${MPLCONFIGDIR:-$ROOT/.cache/matplotlib}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export GRADIO_ANALYTICS_ENABLED=False
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
