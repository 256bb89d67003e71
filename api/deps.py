"""Annotated dependencies: each route names the components it uses, taken from the
composition root (rag/services.py) the app was built with, never from globals."""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends, Request

from rag.core.config import Settings
from rag.evaluation.runner import Evaluator
from rag.index.store import IndexStore
from rag.kb.knowledge import KnowledgeBases
from rag.kb.versions import Versions
from rag.qa.conversations import Conversations
from rag.qa.service import AnswerService
from rag.retrieval.retriever import Retriever
from rag.services import Services
from rag.store.db import Database


class Worker(Protocol):
    """The in-process worker of `rag serve` (ingest/), as the routes see it: queued work is
    picked up at once after `wake` instead of at the next poll."""

    def wake(self) -> None: ...


# `async def` although they do no I/O: FastAPI runs a plain `def` dependency in its thread
# pool, a thread hop (tenths of a millisecond, more under load) on every request.
def _root(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return _root(request)


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


ServicesDep = Annotated[Services, Depends(get_services)]
WorkerDep = Annotated[Worker | None, Depends(get_worker)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_db)]
IndexesDep = Annotated[IndexStore, Depends(get_indexes)]
KnowledgeDep = Annotated[KnowledgeBases, Depends(get_knowledge)]
VersionsDep = Annotated[Versions, Depends(get_versions)]
ConversationsDep = Annotated[Conversations, Depends(get_conversations)]
RetrieverDep = Annotated[Retriever, Depends(get_retriever)]
EvaluatorDep = Annotated[Evaluator, Depends(get_evaluator)]
AnswerServiceDep = Annotated[AnswerService, Depends(get_answer_service)]
