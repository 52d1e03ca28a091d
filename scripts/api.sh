#!/usr/bin/env bash
# The OpenAI-compatible API on http://127.0.0.1:8000/v1 — see api.py --help.
#   bash scripts/api.sh                                              # the demo model under models/
#   LORA_WEIGHTS=outputs/sft-legal BASE_MODEL= bash scripts/api.sh   # an adapter (base from its run_info.json)
#   RAG=1 bash scripts/api.sh                                        # + retrieved statutes and citation checks
#   LAWGPT_API_KEY=secret bash scripts/api.sh --host 0.0.0.0         # open to the network, behind a key
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh

DEMO=models/lawgpt-demo; [ -d "$DEMO" ] || DEMO=models/base_models/gemma-3-270m
BASE_MODEL="${BASE_MODEL-$DEMO}"      # empty: from $LORA_WEIGHTS/run_info.json
LORA_WEIGHTS="${LORA_WEIGHTS:-}"
PROMPT_TEMPLATE="${PROMPT_TEMPLATE:-}" # empty: the model's (run_info.json), else law_template; chat = its own template
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
MAX_BATCH_SIZE="${MAX_BATCH_SIZE:-16}"
RAG="${RAG:-}"                         # non-empty: --rag (default: on for a model trained with law_rag)

python api.py \
    ${BASE_MODEL:+--base_model "$BASE_MODEL"} \
    ${LORA_WEIGHTS:+--lora_weights "$LORA_WEIGHTS"} \
    ${PROMPT_TEMPLATE:+--prompt_template "$PROMPT_TEMPLATE"} \
    ${RAG:+--rag} \
    --host "$HOST" \
    --port "$PORT" \
    --max_batch_size "$MAX_BATCH_SIZE" \
    "$@"
