"""Annotated dependencies: each route names the components it uses, taken from the
composition root the app was built with (`Root`; rag/services.py builds it), never from
globals. The API does not import the root or ingest/: it states here what it needs of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, BinaryIO, Protocol

from fastapi import Depends, Request

from rag.core.config import Settings
from rag.evaluation.runner import Evaluator
from rag.generation.llm import LLMClient
from rag.index.store import IndexStore
from rag.kb.doctor import Doctor
from rag.kb.knowledge import KnowledgeBases, StagedFile
from rag.kb.versions import Versions
from rag.ml.embedding import Embedder
from rag.qa.conversations import Conversations
from rag.qa.service import AnswerService
from rag.retrieval.retriever import Retriever
from rag.store.db import Database


class Worker(Protocol):
    """The in-process worker of `rag serve` (ingest/), as the routes see it: queued work is
    picked up at once after `wake` instead of at the next poll."""

    def wake(self) -> None: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 30.0) -> None: ...


# Copies an upload into data_dir/tmp with the size limit and type check (ingest/upload.py).
Stager = Callable[[BinaryIO, str | None, Path, int], StagedFile]


class Root(Protocol):
    """What the API uses of the composition root."""

    settings: Settings
    db: Database
    indexes: IndexStore

    @property
    def knowledge(self) -> KnowledgeBases: ...
    @property
    def versions(self) -> Versions: ...
    @property
    def conversations(self) -> Conversations: ...
    @property
    def retriever(self) -> Retriever: ...
    @property
    def evaluator(self) -> Evaluator: ...
    @property
    def qa(self) -> AnswerService: ...
    @property
    def doctor(self) -> Doctor: ...
    @property
    def embedder(self) -> Embedder: ...
    @property
    def embedder_loaded(self) -> bool: ...
    @property
    def llm(self) -> LLMClient: ...

    def ingest_worker(self) -> Worker | None:
        """The worker `rag serve` runs in the API process (None: RAG_INGEST__WORKERS=0)."""

    def stage_upload(
        self, source: BinaryIO, filename: str | None, data_dir: Path, max_bytes: int
    ) -> StagedFile: ...

    def close(self) -> None: ...


# `async def` although they do no I/O: FastAPI runs a plain `def` dependency in its thread
# pool, a thread hop (tenths of a millisecond, more under load) on every request.
def _root(request: Request) -> Root:
    services: Root = request.app.state.services
    return services


async def get_services(request: Request) -> Root:
    return _root(request)


async def get_stager(request: Request) -> Stager:
    return _root(request).stage_upload


async def get_worker(request: Request) -> Worker | None:
    worker: Worker | None = request.app.state.worker
    return worker


async def get_settings(request: Request) -> Settings:
    return _root(request).settings


async def get_db(request: Request) -> Database:
    return _root(request).db


async def get_indexes(request: Request) -> IndexStore:
    return _root(request).indexes


async def get_knowledge(request: Request) -> KnowledgeBases:
    return _root(request).knowledge


async def get_versions(request: Request) -> Versions:
    return _root(request).versions


async def get_conversations(request: Request) -> Conversations:
    return _root(request).conversations


async def get_retriever(request: Request) -> Retriever:
    return _root(request).retriever


async def get_evaluator(request: Request) -> Evaluator:
    return _root(request).evaluator


async def get_answer_service(request: Request) -> AnswerService:
    return _root(request).qa


RootDep = Annotated[Root, Depends(get_services)]
WorkerDep = Annotated[Worker | None, Depends(get_worker)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_db)]
IndexesDep = Annotated[IndexStore, Depends(get_indexes)]
KnowledgeDep = Annotated[KnowledgeBases, Depends(get_knowledge)]
VersionsDep = Annotated[Versions, Depends(get_versions)]
StagerDep = Annotated[Stager, Depends(get_stager)]
ConversationsDep = Annotated[Conversations, Depends(get_conversations)]
RetrieverDep = Annotated[Retriever, Depends(get_retriever)]
EvaluatorDep = Annotated[Evaluator, Depends(get_evaluator)]
AnswerServiceDep = Annotated[AnswerService, Depends(get_answer_service)]
