#!/usr/bin/env bash
# Install the optional llama.cpp engine (requirements-llama-cpp.txt) into the project's venv:
#   bash scripts/install_llama_cpp.sh
# llama-cpp-python has no Linux CPU wheel on PyPI, so its source distribution is built here once (cmake and a C++
# compiler, installed with apt-get when missing and we are root): ~3-4 min on 2 cores. The wheel is kept in
# ~/.cache/lawgpt/wheels/<key>/ (LAWGPT_WHEELS moves it), keyed by the pins and the build flags, so later installs
# and fresh clones on this machine take seconds. A no-op when nothing changed since the last install.
# Build flags: a portable AVX2 build (GGML_NATIVE=OFF). A native build (pip's default) enabled AMX/AVX-512 kernels on
# a Xeon whose kernel does not let processes use them: "Illegal instruction" on the first q8_0 matmul.
# LLAMA_CMAKE_ARGS replaces them (e.g. "-DGGML_NATIVE=ON" on your own machine).
# Used by --engine llama.cpp, scripts/serve.sh on CPUs and benchmarks; scripts/test.sh runs it so CI tests that path
# (LAWGPT_LLAMA_CPP=0 there skips it: those tests then skip and say why).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh

FLAGS="${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}"
KEY="$( (grep -v '^\s*#' requirements-llama-cpp.txt; echo "$FLAGS"; python -c 'import sys; print(sys.version_info[:2])') \
        | sha256sum | cut -c1-16)"  # the pins, flags and Python: a comment edit keeps the wheel
STAMP="$VIRTUAL_ENV/.llama-cpp.key"
if [ "$(cat "$STAMP" 2>/dev/null)" = "$KEY" ] && python -c "import llama_cpp" 2>/dev/null; then
  exit 0
fi
WHEELS="${LAWGPT_WHEELS:-$HOME/.cache/lawgpt/wheels}/$KEY"
VERSION="$(grep -o 'llama-cpp-python\[server\]==[0-9.]*' requirements-llama-cpp.txt | cut -d= -f3)"
if ! ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  if ! command -v cmake >/dev/null || ! command -v c++ >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "[llama.cpp] installing cmake and a C++ compiler (apt-get)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ >/dev/null
    else
      echo "[llama.cpp] error: building llama-cpp-python needs cmake and a C++ compiler: install them first" >&2
      exit 1
    fi
  fi
  echo "[llama.cpp] building llama-cpp-python $VERSION ($FLAGS; once per machine, ~3-4 min on 2 cores)"
  start=$(date +%s)
  mkdir -p "$WHEELS"
  if ! CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" python -m pip wheel -q --no-deps --no-cache-dir \
      --no-binary llama-cpp-python -w "$WHEELS.tmp" "llama-cpp-python==$VERSION" 2> >(grep -v "^WARNING: Location" >&2)
  then
    echo "[llama.cpp] error: building llama-cpp-python failed (see above)" >&2
    exit 1
  fi
  mv "$WHEELS.tmp"/llama_cpp_python-*.whl "$WHEELS"/ && rmdir "$WHEELS.tmp"
  echo "[llama.cpp] built in $(( $(date +%s) - start )) s: $WHEELS"
fi
python -m pip uninstall -q -y llama-cpp-python 2>/dev/null || true  # a wheel of other flags would be kept otherwise
if ! python -m pip install -q --find-links "$WHEELS" -r requirements-llama-cpp.txt \
    2> >(grep -v "^WARNING: Location" >&2); then
  echo "[llama.cpp] error: pip install -r requirements-llama-cpp.txt failed (see above)" >&2
  exit 1
fi
echo "$KEY" > "$STAMP"
echo "[llama.cpp] installed llama-cpp-python $VERSION"
