"""The composition root: builds every component once per process (FastAPI lifespan, the CLI,
the worker) and hands each one exactly what it uses. Components never receive this object.

Nothing loads at import time; the models load on first use (the embedder, the reranker, the
tokenizer, the LLM routes), which is why some components get a provider (a bound method of
this class) rather than the object.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from ingest import upload
from ingest.attachments import ChildDocuments
from ingest.jobs import Worker
from ingest.pipeline import Pipeline
from ingest.pipelined_worker import PipelinedWorker
from ingest.reindex import Build, Reindexer
from rag.core.config import IndexSettings, Settings, load_settings
from rag.evaluation.runner import Evaluator
from rag.index.backend import DenseBackend
from rag.index.dense import faiss_gpu
from rag.index.lexical import LexicalOptions
from rag.index.store import IndexStore
from rag.integrations.bots.runner import BotRunner
from rag.integrations.bots.store import BotStore
from rag.integrations.webhook_delivery import WebhookDispatcher
from rag.kb.doctor import Doctor
from rag.kb.knowledge import KnowledgeBases, StagedFile
from rag.kb.sync import Syncer
from rag.kb.versions import Versions
from rag.qa.analytics import Analytics
from rag.qa.answer import Answerer
from rag.qa.conversations import Conversations
from rag.qa.curated import Curation
from rag.qa.question_log import Purger, QuestionLog
from rag.qa.service import AnswerService
from rag.retrieval.relevance import RelevanceJudge
from rag.retrieval.retriever import Retriever
from rag.security.ratelimit import build_limiter
from rag.security.widget_keys import WidgetKeys
from rag.store import schema
from rag.store.db import Database

if TYPE_CHECKING:
    from fastapi import FastAPI

    from rag.generation.llm import LLMClient
    from rag.generation.model_routes import Router
    from rag.generation.route_classifier import Prediction
    from rag.ml.embedding import Embedder
    from rag.ml.rerank import Reranker
    from rag.ml.tokens import TokenCounter
    from rag.qa.answer_cache import AnswerCache

log = logging.getLogger(__name__)
W = TypeVar("W", bound=Worker)


def dense_backend(settings: IndexSettings) -> DenseBackend | None:
    """Milvus when RAG_INDEX__BACKEND=milvus (pymilvus imported only then); None: FAISS."""
    if settings.backend != "milvus":
        return None
    from rag.index.milvus import MilvusBackend

    return MilvusBackend.connect(
        settings.milvus_uri,
        token=settings.milvus_token,
        prefix=settings.milvus_prefix,
        index_type=settings.milvus_index,
        full_text=settings.milvus_lexical == "milvus",
    )


@dataclass
class Services:
    settings: Settings
    db: Database
    indexes: IndexStore
    _embedder: Embedder | None = None
    _llm: LLMClient | None = None
    # Set directly in tests; otherwise loaded from settings on first reranked search.
    _reranker: Reranker | None = None
    # Set directly in tests; otherwise built from RAG_LLM__ROUTES around `llm` on first use.
    _router: Router | None = None
    # Set directly in tests; otherwise built from RAG_CACHE__* on first use (None: disabled).
    _answer_cache: AnswerCache | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Embedders of models other than the configured one (an index version built with another
    # model must be queried with that model; vectors of two models never meet).
    _other_embedders: dict[str, Embedder] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        llm: LLMClient | None = None,
    ) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.sqlalchemy_url)
        chunking = settings.chunking
        schema.upgrade(db.engine, chunking=(chunking.chunk_tokens, chunking.overlap_tokens))
        return cls(
            settings=settings,
            db=db,
            indexes=IndexStore(
                settings.index_dir,
                db,
                ann_threshold=settings.retrieval.ann_threshold,
                ivf_nprobe=settings.retrieval.ivf_nprobe,
                lexical=LexicalOptions.from_settings(settings.retrieval),
                gpu=faiss_gpu(settings.retrieval.faiss_gpu, settings.retrieval.faiss_gpu_device),
                dense_backend=dense_backend(settings.index),
            ),
            _embedder=embedder,
            _llm=llm,
        )

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                from rag.ml.embedding import load_embedder

                self._embedder = load_embedder(self.settings.embedding)
            return self._embedder

    def embedder_for(self, model: str) -> Embedder:
        """The embedder of `model`: the configured one, or another loaded once and kept."""
        if model == self.settings.embedding.model:
            return self.embedder
        with self._lock:
            if self._embedder is not None and self._embedder.model_name == model:
                return self._embedder
            if model not in self._other_embedders:
                from rag.ml.embedding import load_embedder

                cfg = self.settings.embedding.model_copy(update={"model": model})
                self._other_embedders[model] = load_embedder(cfg)
            return self._other_embedders[model]

    @property
    def embedder_loaded(self) -> bool:
        return self._embedder is not None

    @property
    def llm(self) -> LLMClient:
        with self._lock:
            if self._llm is None:
                from rag.generation.llm import LLMClient

                self._llm = LLMClient(self.settings.llm)
            return self._llm

    @property
    def router(self) -> Router:
        default = self.llm
        with self._lock:
            if self._router is None:
                from rag.generation.model_routes import Router

                self._router = Router(
                    self.settings.llm, default, classifier=self._route_classifier()
                )
            return self._router

    def _route_classifier(self) -> Callable[[str], Prediction] | None:
        from rag.generation.route_classifier import classifier_path, question_classifier

        path = classifier_path(self.settings.llm.route_classifier, self.settings.data_dir)
        model = self.settings.embedding.model
        return question_classifier(path, lambda text: self.embedder.embed_query(text), model)

    @property
    def reranker(self) -> Reranker:
        with self._lock:
            if self._reranker is None:
                from rag.ml.rerank import load_reranker

                self._reranker = load_reranker(self.settings.retrieval)
            return self._reranker

    @property
    def answer_cache(self) -> AnswerCache | None:
        cfg = self.settings.cache
        if not cfg.enabled:
            return None
        with self._lock:
            if self._answer_cache is None:
                from rag.qa.answer_cache import build_cache

                self._answer_cache = build_cache(cfg.redis_url, cfg.max_entries, cfg.ttl_s)
            return self._answer_cache

    @cached_property
    def tokens(self) -> TokenCounter:
        from rag.ml.tokens import load_token_counter

        return load_token_counter(self.settings.tokenizer.path)

    def _tokens_now(self) -> TokenCounter:
        return self.tokens

    def _embedder_now(self) -> Embedder:
        return self.embedder

    def _router_now(self) -> Router:
        return self.router

    def _reranker_now(self) -> Reranker:
        return self.reranker

    # --- the components ---------------------------------------------------------------------

    @cached_property
    def knowledge(self) -> KnowledgeBases:
        s = self.settings
        return KnowledgeBases(
            self.db,
            self.indexes,
            data_dir=s.data_dir,
            chunking=s.chunking,
            embedder=self._embedder_now,
        )

    @cached_property
    def versions(self) -> Versions:
        return Versions(
            self.db,
            self.indexes,
            embedder_for=self.embedder_for,
            settings=self.settings.index,
        )

    @cached_property
    def doctor(self) -> Doctor:
        s = self.settings
        return Doctor(
            self.db,
            self.indexes,
            data_dir=s.data_dir,
            grace_s=s.doctor_grace_s,
            lease_s=s.ingest.lease_s,
        )

    @cached_property
    def conversations(self) -> Conversations:
        return Conversations(self.db)

    @cached_property
    def retriever(self) -> Retriever:
        return Retriever(
            self.db,
            self.indexes,
            settings=self.settings.retrieval,
            embedder_for=self.embedder_for,
            reranker=self._reranker_now,
        )

    @cached_property
    def relevance(self) -> RelevanceJudge:
        return RelevanceJudge(
            self.db,
            self.indexes,
            embedder_for=self.embedder_for,
            settings=self.settings.retrieval,
        )

    @cached_property
    def evaluator(self) -> Evaluator:
        return Evaluator(self.retriever, data_dir=self.settings.data_dir)

    @cached_property
    def answerer(self) -> Answerer:
        return Answerer(
            self.retriever,
            self.conversations,
            router=self._router_now,
            tokens=self._tokens_now,
            llm_settings=self.settings.llm,
            link_allowlist=self.settings.security.link_allowlist,
            relevance=self.relevance if self.settings.retrieval.relevance_refusal else None,
        )

    @cached_property
    def qa(self) -> AnswerService:
        return AnswerService(
            self.answerer,
            self.db,
            cache=self.answer_cache,
            settings=self.settings,
            journal=self.question_log,
            curated=self.curation.find,
        )

    @cached_property
    def question_log(self) -> QuestionLog:
        return QuestionLog(self.db, self.settings.analytics)

    @cached_property
    def curation(self) -> Curation:
        return Curation(self.db, self.question_log)

    @cached_property
    def analytics(self) -> Analytics:
        return Analytics(self.db, self.settings.analytics, embedder_for=self.embedder_for)

    def question_log_purger(self) -> Purger:
        """Purges the question log past its retention from this process; not started."""
        return Purger(self.question_log)

    @cached_property
    def bots(self) -> BotRunner:
        cfg = self.settings.bots
        store = BotStore(
            self.db,
            nonce_retention_s=cfg.nonce_retention_s,
            thread_retention_days=cfg.thread_retention_days,
        )
        return BotRunner(store, self._qa_now, self.conversations, self.question_log, cfg)

    def _qa_now(self) -> AnswerService:
        return self.qa

    @cached_property
    def widget_keys(self) -> WidgetKeys:
        # Its own limiter: widget keys count apart from API keys, in Redis when configured.
        limiter = build_limiter(self.settings.security.redis_url)
        return WidgetKeys(self.db, self.settings.widget, limiter)

    # --- ingestion ---------------------------------------------------------------------------

    @cached_property
    def pipeline(self) -> Pipeline:
        s = self.settings
        return Pipeline(
            self.db,
            self.indexes,
            data_dir=s.data_dir,
            ingest=s.ingest,
            tokens=self._tokens_now,
            embedder_for=self.embedder_for,
            children=ChildDocuments(
                self.knowledge, data_dir=s.data_dir, max_upload_bytes=s.ingest.max_upload_bytes
            ),
        )

    @cached_property
    def reindexer(self) -> Reindexer:
        return Reindexer(
            self.db, self.indexes, self.pipeline, self.versions, embedder_for=self.embedder_for
        )

    def worker(
        self,
        *,
        threads: int = 1,
        worker_id: str | None = None,
        reindex_build: Build | None = None,
    ) -> Worker:
        """A job worker (one job at a time per thread); not started."""
        return self._job_runner(
            Worker, threads=threads, worker_id=worker_id, reindex_build=reindex_build
        )

    def pipelined_worker(
        self,
        *,
        threads: int = 1,
        worker_id: str | None = None,
        max_batch_chunks: int | None = None,
    ) -> PipelinedWorker:
        """A worker that overlaps parsing, batched embedding and grouped commits; not started."""
        return self._job_runner(
            PipelinedWorker, threads=threads, worker_id=worker_id, max_batch_chunks=max_batch_chunks
        )

    @cached_property
    def syncer(self) -> Syncer:
        s = self.settings
        return Syncer(
            self.db,
            self.knowledge,
            settings=s.sync,
            data_dir=s.data_dir,
            max_upload_bytes=s.ingest.max_upload_bytes,
            stage=upload.stage_upload,
        )

    def _job_runner(self, kind: type[W], **options: Any) -> W:
        return kind(
            self.db,
            self.indexes,
            self.pipeline,
            self.reindexer,
            self.evaluator,
            ingest=self.settings.ingest,
            syncer=self.syncer,
            **options,
        )

    def webhook_dispatcher(self) -> WebhookDispatcher:
        """Sends the webhook outbox (rag/kb/events.py) from this process; not started."""
        return WebhookDispatcher(self.db, self.settings.webhooks)

    def ingest_worker(self) -> PipelinedWorker | None:
        """The worker `rag serve` runs beside the API (None: RAG_INGEST__WORKERS=0)."""
        threads = self.settings.ingest.workers
        return self.pipelined_worker(threads=threads) if threads > 0 else None

    def stage_upload(
        self, source: BinaryIO, filename: str | None, data_dir: Path, max_bytes: int
    ) -> StagedFile:
        return upload.stage_upload(source, filename, data_dir, max_bytes)

    def close(self) -> None:
        try:
            self.indexes.save_dirty()
        finally:
            if self._answer_cache is not None:
                self._answer_cache.close()
            if self._router is not None:
                self._router.close()
            if self._llm is not None:
                self._llm.close()
            if self.indexes.dense_backend is not None:
                self.indexes.dense_backend.close()  # Milvus' connection
            self.db.dispose()


def build_app(settings: Settings | None = None, *, start_worker: bool = True) -> FastAPI:
    """The HTTP app over a root built from `settings` (default: the environment), which it
    owns: `rag serve`, notebooks and scripts start the service with this."""
    from api.app import create_app

    root = Services.create(settings or load_settings())
    return create_app(root, start_worker=start_worker, close_services=True)
