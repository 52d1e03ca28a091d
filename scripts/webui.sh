#!/usr/bin/env bash
# The legal chat in the browser at http://127.0.0.1:7860 — see webui.py --help.
#   bash scripts/webui.sh                                            # the demo model under models/
#   BASE_MODEL=models/base_models/gemma-3-270m LORA_WEIGHTS=outputs/sft-legal bash scripts/webui.sh
#   bash scripts/webui.sh --no_rag                                  # no retrieval (the demo model retrieves by default)
#   RAG=1 bash scripts/webui.sh                                      # retrieval for a model not trained with law_rag too
#   RAG=1 bash scripts/webui.sh --rag_retriever hybrid               # BM25 + e5 (python tools/build_dense_index.py once)
#   LAWGPT_WEBUI_AUTH=alice:secret bash scripts/webui.sh --server_name 0.0.0.0   # open to the network, with a login
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh

BASE_MODEL="${BASE_MODEL:-}"          # empty: from $LORA_WEIGHTS/run_info.json, else the demo model
LORA_WEIGHTS="${LORA_WEIGHTS:-}"
PROMPT_TEMPLATE="${PROMPT_TEMPLATE:-}"
SERVER_NAME="${SERVER_NAME:-127.0.0.1}"
SERVER_PORT="${SERVER_PORT:-7860}"
RAG="${RAG:-}"                        # non-empty: --rag (default: on for a model trained with law_rag)

python webui.py \
    ${BASE_MODEL:+--base_model "$BASE_MODEL"} \
    ${LORA_WEIGHTS:+--lora_weights "$LORA_WEIGHTS"} \
    ${PROMPT_TEMPLATE:+--prompt_template "$PROMPT_TEMPLATE"} \
    ${RAG:+--rag} \
    --server_name "$SERVER_NAME" \
    --server_port "$SERVER_PORT" \
    "$@"
