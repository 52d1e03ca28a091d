#!/usr/bin/env bash
# GPU preflight before a long job (tools/gpu_check.py): every accelerator path for a few steps, one table.
#   bash scripts/gpu_check.sh                                  # demo model, all GPUs, ~5 min
#   MODEL=models/base_models/my-7b PATHS=clm_bf16_lora,sft_qlora_4bit bash scripts/gpu_check.sh
# Without CUDA it stops at once with one line (exit status 1).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

MODEL="${MODEL:-}"                       # empty: the demo model (fetched when missing)
PATHS="${PATHS:-all}"                    # see: python tools/gpu_check.py --list_paths
STEPS="${STEPS:-10}"
OUTPUT_DIR="${OUTPUT_DIR:-outputs/gpu-check}"

EXTRA=()
[ -n "$MODEL" ] && EXTRA+=(--model "$MODEL")
python tools/gpu_check.py --paths "$PATHS" --steps "$STEPS" --output_dir "$OUTPUT_DIR" "${EXTRA[@]}" "$@"
