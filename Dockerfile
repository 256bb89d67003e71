# kbqa CPU image: the API (`rag serve`, the default command) and the ingestion worker
# (`rag worker`) run from this one image. The LLM is not in it: point RAG_LLM__BASE_URL at vLLM
# (docker-compose.yml runs vllm/vllm-openai beside it). See README "Deployment with Docker".
#
#   docker build -t kbqa .
#   docker run -p 8080:8080 -v kbqa-data:/data -v /opt/models:/models:ro \
#       -e RAG_EMBEDDING__MODEL=/models/bge-small-zh-v1.5 kbqa
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from PyTorch's CPU index: on PyPI the Linux x86_64 torch wheel is the CUDA
# build, which pulls several GB of nvidia-* wheels this image never uses (embeddings run on
# CPU here; generation runs in vLLM). With torch already installed, sentence-transformers'
# "torch>=..." requirement is satisfied and pip does not fetch the CUDA build afterwards.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

# What ingestion calls outside Python: LibreOffice headless converts legacy .doc/.wps/.ppt/.xls
# (without it those uploads are a 415 naming the package), Tesseract is the second OCR engine
# (RAG_INGEST__OCR_ENGINE=tesseract), and a CJK font renders cited pages with Chinese text.
# INSTALL_OFFICE=0 leaves them out for a smaller image.
ARG INSTALL_OFFICE=1
RUN if [ "$INSTALL_OFFICE" = "1" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends libreoffice-writer-nogui \
            libreoffice-calc-nogui libreoffice-impress-nogui tesseract-ocr tesseract-ocr-chi-sim \
            tesseract-ocr-eng fonts-wqy-microhei \
        && rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /app
COPY pyproject.toml README.md ./
COPY rag ./rag
COPY ingest ./ingest
COPY api ./api
# server: the service (the base install is only the Python client); postgres: psycopg for
# RAG_DATABASE_URL=postgresql+psycopg://...; redis: limits shared between API replicas
# (RAG_SECURITY__REDIS_URL); milvus: pymilvus for RAG_INDEX__BACKEND=milvus (the compose
# profile and the Helm chart's Milvus use this image unchanged).
ARG EXTRAS=server,postgres,redis,milvus
RUN pip install ".[${EXTRAS}]" && rm -rf /app/build

# A non-root user owns the data dir (uploaded files, FAISS/BM25 caches, SQLite if no
# PostgreSQL). /data/index exists in the image so a volume mounted there starts owned by it.
RUN useradd --create-home --uid 10001 --user-group rag \
    && mkdir -p /data/index /models \
    && chown -R rag:rag /data
USER rag
WORKDIR /home/rag

# Listen beyond loopback inside the container: the API then requires API keys
# (`rag keys create --tenant default --scopes admin` makes the first one).
# HF_HUB_OFFLINE: air-gapped sites mount model folders (RAG_EMBEDDING__MODEL=/models/...)
# instead of downloading from the hub at run time.
ENV RAG_DATA_DIR=/data \
    RAG_HOST=0.0.0.0 \
    RAG_PORT=8080 \
    HF_HOME=/home/rag/.cache/huggingface \
    HF_HUB_OFFLINE=1

VOLUME ["/data"]
EXPOSE 8080

# Liveness of the API process (python: the slim image has no curl). The worker has no HTTP
# port: docker-compose.yml turns this check off for it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RAG_PORT', '8080'), timeout=4)" || exit 1

CMD ["rag", "serve"]
