"""Conversations: create, list, read with messages, delete. Ask with `conversation_id` to
continue one (POST /v1/knowledge-bases/{kb_id}/ask). A `kb_id` here, too, may be the name."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from api.deps import ConversationsDep, DatabaseDep, resolve_kb
from api.route_policy import access
from api.schemas import RequestBody
from api.types import UtcDateTime
from rag.store.models import Conversation, Message

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])


class ConversationCreate(RequestBody):
    kb_id: str = Field(description="the knowledge base's id or name")
    title: str = Field("", max_length=200)


class ConversationOut(BaseModel):
    id: str
    kb_id: str
    title: str
    created_at: UtcDateTime
    updated_at: UtcDateTime

    @classmethod
    def of(cls, c: Conversation) -> ConversationOut:
        return cls(
            id=c.id, kb_id=c.kb_id, title=c.title, created_at=c.created_at, updated_at=c.updated_at
        )


class MessageOut(BaseModel):
    id: int
    role: str
    content: str
    standalone: str | None
    citations: list[dict[str, Any]]
    model: str | None
    usage: dict[str, Any]
    created_at: UtcDateTime

    @classmethod
    def of(cls, m: Message) -> MessageOut:
        return cls(
            id=m.id,
            role=m.role,
            content=m.content,
            standalone=m.standalone,
            citations=m.citations or [],
            model=m.model,
            usage=m.usage or {},
            created_at=m.created_at,
        )


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]


class ConversationList(BaseModel):
    conversations: list[ConversationOut]


@router.post("", status_code=201, response_model=ConversationOut, openapi_extra=access("query"))
def create(
    body: ConversationCreate, db: DatabaseDep, conversations: ConversationsDep
) -> ConversationOut:
    return ConversationOut.of(conversations.create(resolve_kb(db, body.kb_id), body.title))


@router.get("", response_model=ConversationList, openapi_extra=access("read"))
def list_(
    db: DatabaseDep, conversations: ConversationsDep, kb_id: str | None = None, limit: int = 100
) -> ConversationList:
    kb = resolve_kb(db, kb_id) if kb_id is not None else None
    rows = conversations.list_conversations(kb, max(1, min(limit, 1000)))
    return ConversationList(conversations=[ConversationOut.of(c) for c in rows])


@router.get("/{conversation_id}", response_model=ConversationDetail, openapi_extra=access("read"))
def get(conversation_id: str, conversations: ConversationsDep) -> ConversationDetail:
    conversation, messages = conversations.get(conversation_id)
    return ConversationDetail(
        **ConversationOut.of(conversation).model_dump(),
        messages=[MessageOut.of(m) for m in messages],
    )


@router.delete("/{conversation_id}", status_code=204, openapi_extra=access("query"))
def delete(conversation_id: str, conversations: ConversationsDep) -> Response:
    conversations.delete_conversation(conversation_id)
    return Response(status_code=204)
