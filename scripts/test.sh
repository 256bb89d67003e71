#!/usr/bin/env bash
# Install the test dependencies and run the whole suite: unit tests with fakes, and the
# integration tests with the real offline models, real files, PostgreSQL (skipped with a reason
# where it is absent) and a real `transformers serve` process.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="server,offline,postgres,ray,redis,otel,dev" bash scripts/setup.sh
# llama.cpp's server for the GGUF fallback tests: built from its source distribution once per
# virtualenv (about 5 minutes on 2 cores; pip keeps the wheel). A failed build costs only those
# tests, which then say why they skip.
if ! .venv/bin/python -c "import llama_cpp.server" 2>/dev/null; then
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" .venv/bin/python -m pip install -q -e ".[llamacpp]" \
        || echo "could not build llama-cpp-python: the llama.cpp tests will say so" >&2
fi
# The web console's browser tests drive Debian's Chromium (browser downloads fail here); a CJK
# font makes the Chinese screenshots readable.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q chromium fonts-wqy-microhei >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null \
            && apt-get install -y -q chromium fonts-wqy-microhei >/dev/null; }) \
        || echo "could not install chromium: the browser tests will say so" >&2
fi
# Legacy Office files (.doc, .xls, .ppt, .wps) are converted by LibreOffice; the OCR tests
# compare against Tesseract with Chinese data.
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] \
    && { ! command -v soffice >/dev/null || ! command -v tesseract >/dev/null; }; then
    debs="libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui \
        tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-eng fonts-wqy-microhei"
    # shellcheck disable=SC2086
    (apt-get install -y -q --no-install-recommends $debs >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null \
            && apt-get install -y -q --no-install-recommends $debs >/dev/null; }) \
        || echo "could not install LibreOffice or Tesseract: their tests will say so" >&2
fi
# `docker compose config` validates docker-compose.yml; Debian's docker-compose stands in for a
# missing Compose plugin.
if command -v docker >/dev/null && ! docker compose version >/dev/null 2>&1 \
    && ! command -v docker-compose >/dev/null && command -v apt-get >/dev/null \
    && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q docker-compose >/dev/null 2>&1 \
        || echo "could not install docker-compose: the compose test will say so" >&2
fi
export RAG_TEST_MODELS_DIR="${RAG_TEST_MODELS_DIR:-$PWD/.models}"
.venv/bin/rag models fetch --dest "$RAG_TEST_MODELS_DIR" >/dev/null
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$status"
