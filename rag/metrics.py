"""Prometheus metrics. Plain metric objects are cheap, so they live at module level."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("rag_http_requests_total", "HTTP requests", ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "rag_http_request_duration_seconds", "HTTP request latency", ["method", "route"]
)
INGEST_STAGE_SECONDS = Histogram(
    "rag_ingest_stage_duration_seconds",
    "Time spent per ingestion stage and document",
    ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
DOCUMENTS_INGESTED = Counter(
    "rag_documents_ingested_total", "Documents finished by the worker", ["status"]
)
EMBEDDINGS_REUSED = Counter(
    "rag_embeddings_reused_total", "Chunks whose vector was reused from identical text"
)
RETRIEVAL_SECONDS = Histogram("rag_retrieval_duration_seconds", "Query embedding + search")
LLM_SECONDS = Histogram("rag_llm_duration_seconds", "LLM generation time")
LLM_ERRORS = Counter("rag_llm_errors_total", "LLM failures", ["kind"])
ANSWER_CACHE = Counter(
    "rag_answer_cache_requests_total", "Answer-cache lookups by result", ["result"]
)
