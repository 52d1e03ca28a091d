#!/usr/bin/env bash
# The project's test command (README, CI): bootstrap the venv, lint, run the test suite.
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -m "not slow"   # extra arguments go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh

# The browser test (tests/test_webui_browser.py) drives Debian's chromium; install it (and a CJK font, so
# screenshots show Chinese, not boxes) when missing and we may. Otherwise that test is skipped, and says so.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[test] installing chromium + chromium-driver + fonts-wqy-zenhei for the browser test"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-wqy-zenhei; } \
    || echo "[test] warning: could not install chromium: the browser test will be skipped" >&2
fi

# The optional llama.cpp engine (--engine llama.cpp, scripts/serve.sh on CPUs): installed so its tests run, not
# skip. A first install builds llama.cpp (~3-4 min on 2 cores); later ones take seconds (the wheel is cached).
# LAWGPT_LLAMA_CPP=0 skips it (its tests then skip and say why).
if [ "${LAWGPT_LLAMA_CPP:-1}" != 0 ]; then
  bash scripts/install_llama_cpp.sh || echo "[test] warning: llama-cpp-python did not install: its tests will skip" >&2
fi

echo "[test] ruff check"
ruff check .

echo "[test] pytest"
python -m pytest "$@"
