"""The embeddable chat widget: its script, its publishable keys (admin) and the routes it calls.

GET /widget.js serves api/widget/widget.js. The /v1/widget/* routes are public in the route
policy: each checks the `X-Widget-Key` header and the browser's Origin itself (429 past the
key's rate; rag/security/widget_keys.py), then acts as a query-only principal of the key's
assistant's knowledge base, so answers, feedback and sources go through the same services as
the rest of /v1. CORS for them is api/cors.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import (
    AnswerServiceDep,
    ConversationsDep,
    DatabaseDep,
    QuestionLogDep,
    SettingsDep,
    WidgetKeysDep,
)
from api.errors import INTERNAL_MESSAGE
from api.route_policy import PUBLIC, access
from api.routes import sources
from api.schemas import RequestBody
from api.streaming import EventStream, sse
from api.types import UtcDateTime
from rag.core import tenancy
from rag.core.errors import NotFound, RagError
from rag.qa.answer import Answer, AskSpec
from rag.qa.assistants import find_assistant, settings_of, spec_for
from rag.qa.conversations import Conversations
from rag.qa.question_log import QuestionLog
from rag.qa.service import AnswerStream
from rag.security.widget_keys import WidgetGrant, WidgetKeys
from rag.store.db import Database
from rag.store.models import WidgetKey

log = logging.getLogger(__name__)
router = APIRouter(tags=["widget"])

SCRIPT = Path(__file__).resolve().parent.parent / "widget" / "widget.js"
CHANNEL = "widget"
_EXCERPT_CHARS = 400  # of a cited passage, shown under the answer


# --- the publishable keys (admin) ---------------------------------------------------------


class WidgetKeyCreate(RequestBody):
    assistant: str = Field(min_length=1, max_length=200, description="the assistant's id or name")
    allowed_origins: list[str] = Field(
        min_length=1,
        max_length=50,
        description="origins the widget may run on, exactly scheme://host[:port]; "
        "http://localhost:* (any port) is allowed for loopback hosts only",
    )
    requests_per_minute: int | None = Field(
        None, ge=1, le=100_000, description="None: RAG_WIDGET__DEFAULT_REQUESTS_PER_MINUTE"
    )
    name: str = Field("", max_length=200)


class WidgetKeyOut(BaseModel):
    id: str = Field(description="the publishable key itself (not a secret)")
    name: str
    tenant_id: str
    assistant_id: str
    allowed_origins: list[str]
    requests_per_minute: int
    created_at: UtcDateTime
    revoked_at: UtcDateTime | None
    embed: str = Field(description="the script tag to put on a page")

    @classmethod
    def of(cls, row: WidgetKey, base_url: str) -> WidgetKeyOut:
        tag = f'<script src="{base_url}widget.js" data-key="{row.id}" async></script>'
        return cls(
            id=row.id,
            name=row.name,
            tenant_id=row.tenant_id,
            assistant_id=row.assistant_id,
            allowed_origins=list(row.allowed_origins),
            requests_per_minute=row.requests_per_minute,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            embed=tag,
        )


def _admin() -> tenancy.Principal:
    principal = tenancy.current()
    assert principal is not None, "the auth middleware runs before every keyed /v1 route"
    return principal


def _create_key(db: Database, keys: WidgetKeys, body: WidgetKeyCreate) -> WidgetKey:
    with db.read() as session:  # the caller's tenant and knowledge bases only
        assistant = find_assistant(session, body.assistant)
        assistant_id = assistant.id
    return keys.create(
        tenant_id=_admin().tenant_id,
        assistant_id=assistant_id,
        allowed_origins=body.allowed_origins,
        requests_per_minute=body.requests_per_minute,
        name=body.name,
    )


@router.post("/v1/widget-keys", status_code=status.HTTP_201_CREATED, openapi_extra=access("admin"))
def create_widget_key(
    body: WidgetKeyCreate, db: DatabaseDep, keys: WidgetKeysDep, request: Request
) -> WidgetKeyOut:
    """A publishable key for one assistant, usable only from `allowed_origins`."""
    return WidgetKeyOut.of(_create_key(db, keys, body), str(request.base_url))


@router.get("/v1/widget-keys", openapi_extra=access("admin"))
def list_widget_keys(keys: WidgetKeysDep, request: Request) -> dict[str, list[WidgetKeyOut]]:
    rows = keys.listing(_admin().tenant_id)
    return {"keys": [WidgetKeyOut.of(r, str(request.base_url)) for r in rows]}


@router.delete(
    "/v1/widget-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    openapi_extra=access("admin"),
)
def revoke_widget_key(key_id: str, keys: WidgetKeysDep) -> Response:
    """Revoke a key: refused everywhere within RAG_WIDGET__CACHE_S seconds."""
    keys.revoke(key_id, _admin().tenant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- the script ---------------------------------------------------------------------------


@cache
def _script() -> bytes:
    return SCRIPT.read_bytes()


@router.get(
    "/widget.js",
    response_class=Response,
    responses={200: {"content": {"text/javascript": {}}}},
    openapi_extra=access(PUBLIC),
)
def widget_script() -> Response:
    """The widget: `<script src=".../widget.js" data-key="pk_..." data-lang="zh|en" async>`."""
    return Response(
        _script(),
        media_type="text/javascript; charset=utf-8",
        headers={
            "Cache-Control": "public, max-age=300",
            "X-Content-Type-Options": "nosniff",
            # Loaded by pages of other origins, including ones that isolate themselves (COEP).
            "Cross-Origin-Resource-Policy": "cross-origin",
        },
    )


# --- what the widget calls ----------------------------------------------------------------


async def _grant(
    keys: WidgetKeysDep,
    x_widget_key: Annotated[
        str | None, Header(description="the publishable key (pk_...) of the widget")
    ] = None,
    origin: Annotated[str | None, Header(description="set by the browser")] = None,
) -> WidgetGrant:
    return await run_in_threadpool(keys.authorize, x_widget_key, origin)


GrantDep = Annotated[WidgetGrant, Depends(_grant)]


class WidgetConfig(BaseModel):
    assistant: str
    greeting: str
    language: Literal["auto", "zh", "en"]


@router.get("/v1/widget/config", openapi_extra=access(PUBLIC))
def widget_config(grant: GrantDep, db: DatabaseDep) -> WidgetConfig:
    """What the widget shows before the first question."""
    with tenancy.acting_as(grant.principal()), db.read() as session:
        assistant = find_assistant(session, grant.assistant_id)
        settings = settings_of(assistant)
        name = assistant.name
    return WidgetConfig(assistant=name, greeting=settings.greeting, language=settings.language)


class WidgetAsk(RequestBody):
    question: str = Field(min_length=1, max_length=2_000)
    conversation_id: str | None = Field(
        None, max_length=64, description="the `done` event's, for a follow-up question"
    )


def _spec(db: Database, grant: WidgetGrant, body: WidgetAsk) -> AskSpec:
    with tenancy.acting_as(grant.principal()), db.read() as session:
        spec = spec_for(session, grant.assistant_id, AskSpec(kb_id="", question=body.question))
    return replace(spec, conversation_id=body.conversation_id, channel=CHANNEL)


def _start_conversation(
    conversations: Conversations, grant: WidgetGrant, spec: AskSpec, result: Answer
) -> str:
    """The conversation a visitor's follow-ups continue, opened with its first exchange."""
    with tenancy.acting_as(grant.principal()):
        conversation = conversations.create(spec.kb_id)
        conversations.record(
            conversation.id,
            spec.question,
            result.question,
            result.answer or "",
            citations=[c.as_dict() for c in result.citations],
            model=result.model,
            usage=result.usage,
        )
    return conversation.id


@router.post(
    "/v1/widget/ask",
    responses={200: {"content": {"text/event-stream": {}}}},
    openapi_extra=access(PUBLIC),
)
async def widget_ask(
    body: WidgetAsk,
    grant: GrantDep,
    db: DatabaseDep,
    qa: AnswerServiceDep,
    conversations: ConversationsDep,
) -> EventStream:
    """The answer as SSE: `delta` {text}..., `citations` [...], `done` {answer_id,
    conversation_id, grounded, covered, handoff_suggested}; `error` {code, message} when it
    fails once started. Failures before the first event are plain HTTP errors."""
    spec = await run_in_threadpool(_spec, db, grant, body)
    with tenancy.acting_as(grant.principal()):
        reply = await qa.ask(spec, stream=True)
    assert reply.stream is not None
    events = _events(reply.stream, grant, spec, conversations)
    return EventStream(events, closing=reply.stream)


def _citations(result: Answer) -> list[dict[str, Any]]:
    """The passages the answer cites, as the widget lists them."""
    return [
        {
            "index": c.index,
            "document_id": c.passage.document_id,
            "chunk_id": c.passage.chunk_id,
            "filename": c.passage.filename,
            "page": c.passage.page,
            "text": c.passage.text[:_EXCERPT_CHARS],
        }
        for c in result.citations
        if c.cited
    ]


async def _events(
    stream: AnswerStream, grant: WidgetGrant, spec: AskSpec, conversations: Conversations
) -> AsyncGenerator[str, None]:
    # The stream runs after the route returned: it acts as the widget's principal itself.
    with tenancy.acting_as(grant.principal()):
        try:
            async for delta in stream.deltas():
                yield sse("delta", {"text": delta})
            result = await stream.finish()
            yield sse("citations", _citations(result))
            conversation_id = result.conversation_id
            if conversation_id is None and result.answer is not None:
                # A first question is asked on its own, so the answer cache may serve it; the
                # visitor's follow-ups then continue a conversation that starts with it.
                conversation_id = await run_in_threadpool(
                    _start_conversation, conversations, grant, spec, result
                )
            done = {
                "answer_id": result.answer_id,
                "conversation_id": conversation_id,
                "grounded": result.grounded,
                "covered": result.covered,
                "curated": result.curated,
                "handoff_suggested": result.needs_handoff,
            }
            yield sse("done", done)
        except RagError as exc:
            yield sse("error", {"code": exc.code, "message": str(exc)})
        except Exception:  # never leave the visitor waiting on a half-sent stream
            log.exception("widget answer stream failed")
            yield sse("error", {"code": "internal_error", "message": INTERNAL_MESSAGE})


class WidgetFeedback(RequestBody):
    answer_id: str = Field(min_length=1, max_length=64)
    rating: Literal[1, -1] = Field(description="+1 thumbs up, -1 thumbs down")
    comment: str | None = Field(None, max_length=2_000)


class WidgetHandoff(RequestBody):
    answer_id: str = Field(min_length=1, max_length=64)
    reason: str | None = Field(None, max_length=2_000)


class WidgetRecordOut(BaseModel):
    answer_id: str
    rating: int | None
    handoff_requested: bool
    handoff_suggested: bool = Field(
        description="a person could take over: rated down, not covered or not grounded"
    )


def _own_answer(journal: QuestionLog, grant: WidgetGrant, answer_id: str) -> None:
    """An answer another assistant gave (even on the same knowledge base) does not exist here."""
    if journal.get(answer_id).assistant_id != grant.assistant_id:
        raise NotFound(f"answer {answer_id} does not exist")


def _record_out(
    answer_id: str, rating: int | None, handoff: bool, grounded: bool, covered: bool
) -> WidgetRecordOut:
    suggested = rating == -1 or not grounded or not covered
    return WidgetRecordOut(
        answer_id=answer_id, rating=rating, handoff_requested=handoff, handoff_suggested=suggested
    )


@router.post("/v1/widget/feedback", openapi_extra=access(PUBLIC))
def widget_feedback(
    body: WidgetFeedback, grant: GrantDep, journal: QuestionLogDep
) -> WidgetRecordOut:
    """Thumbs up or down on one of this assistant's answers (a later rating replaces it)."""
    with tenancy.acting_as(grant.principal()):
        _own_answer(journal, grant, body.answer_id)
        r = journal.feedback(body.answer_id, body.rating, body.comment)
    return _record_out(r.id, r.rating, r.handoff_requested, r.grounded, r.covered)


@router.post("/v1/widget/handoff", openapi_extra=access(PUBLIC))
def widget_handoff(
    body: WidgetHandoff, grant: GrantDep, journal: QuestionLogDep
) -> WidgetRecordOut:
    """Ask for a person to take over (the handoff.requested webhook); idempotent."""
    with tenancy.acting_as(grant.principal()):
        _own_answer(journal, grant, body.answer_id)
        r = journal.handoff(body.answer_id, body.reason)
    return _record_out(r.id, r.rating, r.handoff_requested, r.grounded, r.covered)


@router.get(
    "/v1/widget/sources/{document_id}/pages/{page}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the rendered page"}},
    openapi_extra=access(PUBLIC),
)
def widget_source_page(
    document_id: str,
    page: int,
    grant: GrantDep,
    db: DatabaseDep,
    settings: SettingsDep,
    renderer: sources.RendererDep,
    chunk_id: Annotated[
        int | None, Query(description="highlight this chunk's text on the page")
    ] = None,
) -> Response:
    """A page of a document of the assistant's knowledge base, the passage highlighted: what
    GET /v1/knowledge-bases/{kb_id}/documents/{doc_id}/pages/{page}.png answers."""
    with tenancy.acting_as(grant.principal()):
        return sources.get_page(
            grant.kb_id, document_id, page, db, settings, renderer, chunk_id=chunk_id
        )
