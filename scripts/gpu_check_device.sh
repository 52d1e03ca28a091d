#!/usr/bin/env bash
# The GPU preflight as one command on a bare, offline CUDA machine whose python3 has torch and accelerate but not
# the rest of requirements.txt, and no model (this project's lent GPU machines: docs/gpu-check.md, "On a machine
# without our environment"). It installs the wheels of scripts/gpu_check_wheels.sh from WHEEL_DIR into SITE (builds
# DeepSpeed from its source there, without its CUDA ops), builds a random-weight model of RANDOM_MODEL's shape and
# runs tools/gpu_check.py; with OUT set, the table, the JSON and the logs of failed paths are copied there.
#   here:  bash scripts/gpu_check_wheels.sh                 # .whl/, ~33 MB
#   there: bash scripts/gpu_check_device.sh                 # carry .whl; ~8 min on one GPU (BUDGET_S)
set -uo pipefail
cd "$(dirname "$0")/.."

WHEEL_DIR="${WHEEL_DIR:-.whl}"
SITE="${SITE:-/tmp/site}"
RANDOM_MODEL="${RANDOM_MODEL:-llama-1b}"
BUDGET_S="${BUDGET_S:-420}"
OUTPUT_DIR="${OUTPUT_DIR:-outputs/gpu-check}"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$WHEEL_DIR"/*.whl || { echo "gpu_check_device: error: installing $WHEEL_DIR/*.whl failed" >&2; exit 1; }
if ls "$WHEEL_DIR"/deepspeed-*.tar.gz >/dev/null 2>&1; then
  # source only on PyPI; without it the two ZeRO rows say "deepspeed is not installed" and the rest runs
  DS_BUILD_OPS=0 timeout 180 python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
      --target "$SITE" "$WHEEL_DIR"/deepspeed-*.tar.gz || echo "gpu_check_device: deepspeed did not build" >&2
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export HF_HOME="$PWD/.cache/huggingface" MPLCONFIGDIR="$PWD/.cache/matplotlib"
python3 - <<'EOF'
from importlib.metadata import PackageNotFoundError, version

found = []
for name in ("torch", "transformers", "accelerate", "peft", "bitsandbytes", "datasets", "deepspeed"):
    try:
        found.append(f"{name} {version(name)}")
    except PackageNotFoundError:
        found.append(f"{name} missing")
print("[gpu_check_device]", ", ".join(found), flush=True)
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

python3 tools/gpu_check.py --random_model "$RANDOM_MODEL" --budget_s "$BUDGET_S" --output_dir "$OUTPUT_DIR" "$@"
status=$?
if [ -n "${OUT:-}" ] && [ -d "$OUTPUT_DIR" ]; then
  cp "$OUTPUT_DIR"/gpu_check.md "$OUTPUT_DIR"/gpu_check.json "$OUT"/ 2>/dev/null
  # the logs of the paths that failed (the reasons in the table are their last lines)
  python3 - "$OUTPUT_DIR" "$OUT" <<'EOF' || true
import json, shutil, sys
from pathlib import Path

out, dest = Path(sys.argv[1]), Path(sys.argv[2])
report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8")) if (out / "gpu_check.json").is_file() else {}
failed = [r["path"] for r in report["rows"] if not r["ok"]] if report else ["random_model"]
for name in failed[:5]:
    if (out / f"{name}.log").is_file():
        shutil.copy(out / f"{name}.log", dest / f"{name}.log")
EOF
fi
exit $status
