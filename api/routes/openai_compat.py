"""OpenAI-compatible endpoint for helpdesk tools: the model names a knowledge base or an assistant.

POST /v1/chat/completions   {"model": "kb:<name or id>" | "assistant:<name or id>", "messages"}
GET  /v1/models             one model per knowledge base and per assistant

The last message is the question, earlier user/assistant messages the conversation (`_spec`);
the response adds `citations`, `answered_by`, `route`, `cached` and `answer_flags` ({grounded,
truncated, degenerate}) (`_extras`). Works unchanged with the `openai` SDK. Unlike the
other request bodies, unknown fields are accepted: the SDKs send many OpenAI parameters.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, Field

from api.deps import AnswerServiceDep, DatabaseDep
from api.errors import INTERNAL_MESSAGE
from api.route_policy import GENERATION, access
from api.schemas import answer_flags, citations_out
from api.streaming import EventStream, sse
from rag.core.errors import InvalidInput, NotFound, RagError
from rag.kb import knowledge
from rag.qa import answer
from rag.qa.answer_cache import Policy
from rag.qa.assistants import Assistants, spec_for
from rag.qa.service import AnswerStream
from rag.store.db import Database
from rag.store.models import Assistant, KnowledgeBase

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])
MODEL_PREFIX = "kb:"
ASSISTANT_PREFIX = "assistant:"  # the answer then has the assistant's settings (spec_for)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    # Not a RequestBody: the SDKs send OpenAI parameters we do not use (top_p, seed, user ...),
    # which are accepted and ignored.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(
        description='"kb:<knowledge base name or id>" or "assistant:<assistant name or id>"'
    )
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    response_format: dict[str, Any] | None = None
    n: int = Field(1, ge=1, le=1)
    top_k: int | None = Field(None, ge=1, le=1000, description="passages to retrieve (extension)")
    cache: bool = Field(True, description="use the answer cache (extension)")


def model_card(item: KnowledgeBase | Assistant) -> dict[str, Any]:
    prefix = ASSISTANT_PREFIX if isinstance(item, Assistant) else MODEL_PREFIX
    return {
        "id": f"{prefix}{item.name}",
        "object": "model",
        "created": int(item.created_at.timestamp()),
        "owned_by": "kbqa",
    }


@router.get("/models", openapi_extra=access("read"))
def list_models(db: DatabaseDep) -> dict[str, Any]:
    with db.read() as session:
        kbs = knowledge.list_kbs(session)
    cards = [model_card(kb) for kb in kbs] + [model_card(a) for a in Assistants(db).list_all()]
    return {"object": "list", "data": cards}


@router.get("/models/{model}", openapi_extra=access("read"))
def get_model(model: str, db: DatabaseDep) -> dict[str, Any]:
    if model.startswith(ASSISTANT_PREFIX):
        return model_card(_find_assistant(db, model))
    return model_card(_find_kb(db, model))


def _find_assistant(db: Database, model: str) -> Assistant:
    try:
        return Assistants(db).get(model.removeprefix(ASSISTANT_PREFIX))
    except NotFound as exc:
        raise NotFound(f"model {model!r}: no such assistant (GET /v1/models)") from exc


def _resolve(db: Database, model: str, spec: answer.AskSpec) -> answer.AskSpec:
    """`spec` on the knowledge base the model names, or as the assistant it names answers."""
    if model.startswith(ASSISTANT_PREFIX):
        ref = model.removeprefix(ASSISTANT_PREFIX)
        with db.read() as session:
            try:
                return spec_for(session, ref, spec)
            except NotFound as exc:
                raise NotFound(f"model {model!r}: no such assistant (GET /v1/models)") from exc
    return replace(spec, kb_id=_find_kb(db, model).id)


def _find_kb(db: Database, model: str) -> KnowledgeBase:
    if not model.startswith(MODEL_PREFIX):
        raise NotFound(
            f'model {model!r} is neither a knowledge base nor an assistant; use "kb:<name or '
            'id>" or "assistant:<name or id>" (GET /v1/models lists them)'
        )
    with db.read() as session:
        try:
            return knowledge.find_kb(session, model.removeprefix(MODEL_PREFIX))
        except NotFound as exc:
            raise NotFound(f"model {model!r}: no such knowledge base (GET /v1/models)") from exc


def _spec(kb_id: str, body: ChatRequest) -> answer.AskSpec:
    """The last message is the question; earlier user/assistant messages are the conversation
    (a follow-up is condensed into a standalone question for retrieval). System messages from
    the client are ignored, since the service's own grounded system prompt applies."""
    turns = [m for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user" or not turns[-1].text().strip():
        raise InvalidInput("the last message must be the user's question")
    return answer.AskSpec(
        kb_id,
        turns[-1].text(),
        body.top_k,
        history=[{"role": m.role, "content": m.text()} for m in turns[:-1]],
        response_format=body.response_format,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        channel="openai",
    )


@router.post("/chat/completions", response_model=None, openapi_extra=access("query", GENERATION))
async def chat_completions(
    body: ChatRequest,
    db: DatabaseDep,
    qa: AnswerServiceDep,
    cache_control: Annotated[
        str | None, Header(description="no-cache: a fresh answer; no-store: the cache is not used")
    ] = None,
) -> dict[str, Any] | EventStream:
    spec = await anyio.to_thread.run_sync(_resolve, db, body.model, _spec("", body))
    # An extra body field "cache": false (the SDK's extra_body) or Cache-Control: no-cache /
    # no-store bypasses the answer cache.
    reply = await qa.ask(spec, Policy.of(body.cache, cache_control), stream=body.stream)
    ident = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    if reply.stream is not None:
        chunks = _chunks(reply.stream, ident, created, body.model, include_usage)
        return EventStream(chunks, closing=reply.stream)
    assert reply.answer is not None
    return _completion(reply.answer, ident, created, body.model, cached=reply.cached)


def _completion(
    result: answer.Answer, ident: str, created: int, model: str, *, cached: bool
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer},
                "finish_reason": result.finish_reason or "stop",
            }
        ],
        "usage": _usage(result.usage),
        **_extras(result, cached=cached),
    }


def _usage(usage: dict[str, int]) -> dict[str, int]:
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _extras(result: answer.Answer, *, cached: bool) -> dict[str, Any]:
    """Fields beyond OpenAI's, on the response (on the last chunk when streaming): the
    `citations` the answer's [n] markers refer to; `answered_by`, the LLM that answered;
    `cached`, whether the answer came from the answer cache (rag/qa/answer_cache.py; only for a
    single question, not a conversation); and `answer_flags`, what the answer says of itself
    ({grounded, truncated, degenerate}, as on the REST response). An object of its own keeps
    these names clear of any OpenAI may add at the top level."""
    return {
        "citations": [c.model_dump() for c in citations_out(result)],
        "answered_by": result.model,
        "route": result.route,
        "cached": cached,
        "answer_flags": answer_flags(result),
    }


async def _chunks(
    stream: AnswerStream, ident: str, created: int, model: str, include_usage: bool
) -> AsyncGenerator[str, None]:
    # Every chunk shares this head; only the delta differs, so build it once.
    head = json.dumps(
        {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
    )[:-1]

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        tail = json.dumps({"choices": [choice], **extra}, ensure_ascii=False)[1:]
        return sse(None, f"{head}, {tail}")

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for delta in stream.deltas():
            yield chunk({"content": delta})
        result = await stream.finish()
        yield chunk({}, result.finish_reason or "stop", **_extras(result, cached=stream.cached))
        if include_usage:
            yield sse(None, f'{head}, "choices": [], "usage": {json.dumps(_usage(result.usage))}}}')
        yield sse(None, "[DONE]")
    except RagError as exc:
        yield sse(None, {"error": {"message": str(exc), "type": exc.code, "code": exc.code}})
    except Exception:  # never leave the client hanging on a half-sent stream
        log.exception("chat completion stream failed")
        yield sse(
            None,
            {
                "error": {
                    "message": INTERNAL_MESSAGE,
                    "type": "internal_error",
                    "code": "internal_error",
                }
            },
        )
