"""POST /v1/knowledge-bases/{kb_id}/ask: a cited answer, whole or streamed as SSE.

Stream events: `delta` {text} ... then `citations` [..] then `done` {model, usage, cached,
grounded, truncated, degenerate, ...}; a failure after the stream started ends it with `error`
{code, message} instead. Failures before the first token are plain HTTP errors.

A question asked again of an unchanged knowledge base is answered from the answer cache
(rag/qa/answer_cache.py), streamed the same way when asked for; `cached` says so. `"cache": false`
in the body (or `Cache-Control: no-cache` / `no-store`) bypasses it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import APIRouter, Header

from api.deps import AnswerServiceDep, KbRefDep
from api.errors import INTERNAL_MESSAGE
from api.route_policy import GENERATION, access
from api.schemas import AskRequest, AskResponse, answer_flags, citations_out
from api.streaming import EventStream, sse
from rag.core.errors import RagError
from rag.qa.answer import Answer, AskSpec
from rag.qa.answer_cache import Policy
from rag.qa.service import AnswerService, AnswerStream

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/knowledge-bases/{kb_id}", tags=["question answering"])


@router.post(
    "/ask",
    response_model=AskResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
    openapi_extra=access("query", GENERATION),
)
async def ask(
    kb_id: KbRefDep,
    body: AskRequest,
    qa: AnswerServiceDep,
    cache_control: Annotated[
        str | None, Header(description="no-cache: a fresh answer; no-store: the cache is not used")
    ] = None,
) -> AskResponse | EventStream:
    return await respond(body.spec(kb_id), body, qa, cache_control)


async def respond(
    spec: AskSpec, body: AskRequest, qa: AnswerService, cache_control: str | None
) -> AskResponse | EventStream:
    """The answer to `spec` as the ask routes send it: whole, or streamed as SSE events. Every
    REST ask route (a knowledge base's, an assistant's: api/routes/assistants.py) ends here."""
    if body.retrieval_only:
        return AskResponse.of(await qa.retrieve_only(spec))
    reply = await qa.ask(spec, Policy.of(body.cache, cache_control), stream=body.stream)
    if reply.stream is not None:
        return EventStream(_events(reply.stream), closing=reply.stream)
    assert reply.answer is not None
    return AskResponse.of(reply.answer, cached=reply.cached)


def done_event(result: Answer, *, cached: bool) -> dict[str, Any]:
    return {
        "model": result.model,
        "usage": result.usage,
        "route": result.route,
        "question": result.question,
        "finish_reason": result.finish_reason,
        "conversation_id": result.conversation_id,
        "message_id": result.message_id,
        "cached": cached,
        **answer_flags(result),
    }


async def _events(stream: AnswerStream) -> AsyncGenerator[str, None]:
    try:
        async for delta in stream.deltas():
            yield sse("delta", {"text": delta})
        result = await stream.finish()
        yield sse("citations", [c.model_dump() for c in citations_out(result)])
        yield sse("done", done_event(result, cached=stream.cached))
    except RagError as exc:
        yield sse("error", {"code": exc.code, "message": str(exc)})
    except Exception:  # never leave the client hanging on a half-sent stream
        log.exception("ask stream failed")
        yield sse("error", {"code": "internal_error", "message": INTERNAL_MESSAGE})
