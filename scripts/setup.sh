#!/usr/bin/env bash
# Create .venv and install the project. The CPU build of torch goes in first, so that
# sentence-transformers does not pull a multi-GB CUDA build. EXTRAS picks the optional groups:
# `server` is the service itself with FAISS's CPU build (the base install is only the Python
# client, rag.client); `gpu` replaces it on GPU hosts; the other extras (offline, postgres,
# redis, ray, otel) add to either, and dev pulls in server.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-server,offline,postgres}"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
