"""Annotated dependencies: each route names the components it uses, taken from the
composition root the app was built with (`Root`; rag/services.py builds it), never from
globals. The API does not import the root or ingest/: it states here what it needs of them.
`KbIdDep` and `KbRefDep` turn the `{kb_id}` path segment, an id or a name, into the id."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Protocol

from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool

from rag.core.config import Settings
from rag.evaluation.runner import Evaluator
from rag.generation.llm import LLMClient
from rag.index.store import IndexStore
from rag.integrations.bots.runner import BotRunner
from rag.integrations.webhook_delivery import WebhookDispatcher
from rag.kb import knowledge
from rag.kb.doctor import Doctor
from rag.kb.knowledge import KnowledgeBases, StagedFile
from rag.kb.versions import Versions
from rag.ml.embedding import Embedder
from rag.qa.analytics import Analytics
from rag.qa.conversations import Conversations
from rag.qa.curated import Curation
from rag.qa.question_log import Purger, QuestionLog
from rag.qa.service import AnswerService
from rag.retrieval.relevance import RelevanceJudge
from rag.retrieval.retriever import Retriever
from rag.security.widget_keys import WidgetKeys
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
    def relevance(self) -> RelevanceJudge: ...
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
    @property
    def question_log(self) -> QuestionLog: ...
    @property
    def bots(self) -> BotRunner: ...
    @property
    def curation(self) -> Curation: ...
    @property
    def analytics(self) -> Analytics: ...
    @property
    def widget_keys(self) -> WidgetKeys: ...

    def ingest_worker(self) -> Worker | None:
        """The worker `rag serve` runs in the API process (None: RAG_INGEST__WORKERS=0)."""

    def webhook_dispatcher(self) -> WebhookDispatcher:
        """A webhook dispatcher for this process (not started)."""

    def question_log_purger(self) -> Purger:
        """The question log's retention purger for this process (not started)."""

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


async def get_worker(request: Request) -> Worker | None:
    worker: Worker | None = request.app.state.worker
    return worker


def _part(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency giving the root's component `name` (the Annotated type below says which
    type it is)."""

    async def part(request: Request) -> Any:
        return getattr(_root(request), name)

    part.__name__ = f"get_{name}"
    return part


RootDep = Annotated[Root, Depends(get_services)]
WorkerDep = Annotated[Worker | None, Depends(get_worker)]
SettingsDep = Annotated[Settings, Depends(_part("settings"))]
DatabaseDep = Annotated[Database, Depends(_part("db"))]
IndexesDep = Annotated[IndexStore, Depends(_part("indexes"))]
KnowledgeDep = Annotated[KnowledgeBases, Depends(_part("knowledge"))]
VersionsDep = Annotated[Versions, Depends(_part("versions"))]
StagerDep = Annotated[Stager, Depends(_part("stage_upload"))]
ConversationsDep = Annotated[Conversations, Depends(_part("conversations"))]
RetrieverDep = Annotated[Retriever, Depends(_part("retriever"))]
RelevanceDep = Annotated[RelevanceJudge, Depends(_part("relevance"))]
EvaluatorDep = Annotated[Evaluator, Depends(_part("evaluator"))]
AnswerServiceDep = Annotated[AnswerService, Depends(_part("qa"))]
QuestionLogDep = Annotated[QuestionLog, Depends(_part("question_log"))]
BotsDep = Annotated[BotRunner, Depends(_part("bots"))]
CurationDep = Annotated[Curation, Depends(_part("curation"))]
AnalyticsDep = Annotated[Analytics, Depends(_part("analytics"))]
WidgetKeysDep = Annotated[WidgetKeys, Depends(_part("widget_keys"))]


def resolve_kb(db: Database, name_or_id: str) -> str:
    """The id of the knowledge base with this id or name that the caller may see (NotFound
    otherwise; an id wins over a name, rag/kb/knowledge.py `find_kb`)."""
    with db.read() as session:
        return knowledge.find_kb(session, name_or_id).id


_KbSegment = Annotated[
    str, PathParam(description="the knowledge base's id or its name (URL-encoded); an id wins")
]


def _kb_id(kb_id: _KbSegment, db: DatabaseDep) -> str:
    return resolve_kb(db, kb_id)


async def _kb_ref(kb_id: _KbSegment, db: DatabaseDep) -> str:
    if knowledge.is_id_shaped(kb_id):
        return kb_id  # never a name (create_kb refuses such names): no lookup, no thread hop
    return await run_in_threadpool(resolve_kb, db, kb_id)


# Every route with a {kb_id} segment takes it through one of these, and gets the canonical id.
# KbIdDep checks that the caller may see the knowledge base; KbRefDep only turns a name into an
# id, for the hot routes (search, ask) whose services check the id themselves (Retriever.search,
# AnswerService.ask): a lookup and a thread hop less per request, measured in bench/REPORT.md.
KbIdDep = Annotated[str, Depends(_kb_id)]
KbRefDep = Annotated[str, Depends(_kb_ref)]
