#!/usr/bin/env bash
# Install the optional llama.cpp engine (requirements-llama-cpp.txt) into the project's venv:
#   bash scripts/install_llama_cpp.sh
# llama-cpp-python has no Linux CPU wheel on PyPI, so pip builds llama.cpp from its source distribution: cmake and a
# C++ compiler (installed with apt-get when missing and we are root), ~10-15 min on 2 cores the first time; pip
# caches the built wheel, so later installs take seconds. A no-op when requirements-llama-cpp.txt has not changed.
# Used by --engine llama.cpp, scripts/serve.sh on CPUs and benchmarks/bench_cpu_engines.py; scripts/test.sh runs it
# so CI tests that path (LAWGPT_LLAMA_CPP=0 skips it: those tests then skip and say why).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh

STAMP="$VIRTUAL_ENV/.llama-cpp.sha256"
WANT="$(sha256sum requirements-llama-cpp.txt | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] && python -c "import llama_cpp" 2>/dev/null; then
  exit 0
fi
if ! command -v cmake >/dev/null || ! command -v c++ >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[llama.cpp] installing cmake and a C++ compiler (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ >/dev/null
  else
    echo "[llama.cpp] error: building llama-cpp-python needs cmake and a C++ compiler: install them first" >&2
    exit 1
  fi
fi
echo "[llama.cpp] installing llama-cpp-python (first time: builds llama.cpp from source, ~10-15 min on 2 cores)"
start=$(date +%s)
if ! CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" python -m pip install -q -r requirements-llama-cpp.txt \
    2> >(grep -v "^WARNING: Location" >&2); then
  echo "[llama.cpp] error: pip install -r requirements-llama-cpp.txt failed (see above)" >&2
  exit 1
fi
echo "$WANT" > "$STAMP"
echo "[llama.cpp] installed in $(( $(date +%s) - start )) s"
