"""POST /v1/knowledge-bases/{kb_id}/ask: a cited answer, whole or streamed as SSE.

Stream events: `delta` {text} ... then `citations` [..] then `done` {model, usage, cached, ...};
a failure after the stream started ends it with `error` {code, message} instead. Failures
before the first token (LLM down, overloaded) are plain HTTP errors with Retry-After.

A question asked again of an unchanged knowledge base is answered from the answer cache
(rag/qa/answer_cache.py), streamed the same way when asked for; `cached` says so. `"cache": false`
in the body (or `Cache-Control: no-cache` / `no-store`) bypasses it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import APIRouter, Header

from api.deps import ServicesDep
from api.schemas import AskRequest, AskResponse, citations_out
from api.streaming import EventStream, sse
from rag.core.errors import RagError
from rag.qa import answer, answer_cache

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/knowledge-bases/{kb_id}", tags=["question answering"])


@router.post(
    "/ask",
    response_model=AskResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def ask(
    kb_id: str,
    body: AskRequest,
    svc: ServicesDep,
    cache_control: Annotated[
        str | None, Header(description="no-cache: a fresh answer; no-store: the cache is not used")
    ] = None,
) -> AskResponse | EventStream:
    spec = body.spec(kb_id)
    if body.retrieval_only:
        return AskResponse.of(await answer.retrieve_only(svc, spec))
    found = await answer_cache.lookup(
        svc, spec, answer_cache.Policy.of(body.cache, cache_control), stream=body.stream
    )
    if found.hit is not None:
        if body.stream:
            return EventStream(_events(answer_cache.Replay(found.hit), found, cached=True))
        return AskResponse.of(found.hit, cached=True)
    fresh = await answer_cache.answer_missed(svc, spec, found, stream=body.stream)
    if isinstance(fresh, answer.Answer):
        return AskResponse.of(fresh)
    return EventStream(_events(fresh, found, cached=False), on_close=found.release)


def done_event(result: answer.Answer, *, cached: bool) -> dict[str, Any]:
    return {
        "model": result.model,
        "usage": result.usage,
        "route": result.route,
        "question": result.question,
        "finish_reason": result.finish_reason,
        "conversation_id": result.conversation_id,
        "message_id": result.message_id,
        "cached": cached,
    }


async def _events(
    live: answer.LiveAnswer | answer_cache.Replay, found: answer_cache.Lookup, *, cached: bool
) -> AsyncGenerator[str, None]:
    try:
        async for delta in live.deltas():
            yield sse("delta", {"text": delta})
        result = await live.finish()
        # Kept only here: a stream that failed or that the client left never reaches this.
        await found.keep(result)
        yield sse("citations", [c.model_dump() for c in citations_out(result)])
        yield sse("done", done_event(result, cached=cached))
    except RagError as exc:
        yield sse("error", {"code": exc.code, "message": str(exc)})
    except Exception as exc:  # never leave the client hanging on a half-sent stream
        log.exception("ask stream failed")
        yield sse("error", {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"})
    finally:
        await live.aclose()
