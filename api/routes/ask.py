"""POST /v1/knowledge-bases/{kb_id}/ask: a cited answer, whole or streamed as SSE.

Stream events: `delta` {text} ... then `citations` [..] then `done` {model, usage, ...};
a failure after the stream started ends it with `error` {code, message} instead. Failures
before the first token (LLM down, overloaded) are plain HTTP errors with Retry-After.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

from fastapi import APIRouter

from api.deps import ServicesDep
from api.schemas import AskRequest, AskResponse, citations_out
from api.streaming import EventStream, sse
from rag import answer
from rag.errors import RagError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/knowledge-bases/{kb_id}", tags=["question answering"])


@router.post(
    "/ask",
    response_model=AskResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def ask(kb_id: str, body: AskRequest, svc: ServicesDep) -> AskResponse | EventStream:
    spec = body.spec(kb_id)
    if body.retrieval_only:
        return AskResponse.of(await answer.retrieve_only(svc, spec))
    plan = await answer.plan(svc, spec)
    if not body.stream:
        return AskResponse.of(await answer.generate(svc, plan))
    return EventStream(_events(await answer.open_stream(svc, plan)))


async def _events(live: answer.LiveAnswer) -> AsyncGenerator[str, None]:
    try:
        async for delta in live.deltas():
            yield sse("delta", {"text": delta})
        result = await live.finish()
        yield sse("citations", [c.model_dump() for c in citations_out(result)])
        yield sse(
            "done",
            {
                "model": result.model,
                "usage": result.usage,
                "route": result.route,
                "question": result.question,
                "finish_reason": result.finish_reason,
                "conversation_id": result.conversation_id,
                "message_id": result.message_id,
            },
        )
    except RagError as exc:
        yield sse("error", {"code": exc.code, "message": str(exc)})
    except Exception as exc:  # never leave the client hanging on a half-sent stream
        log.exception("ask stream failed")
        yield sse("error", {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"})
    finally:
        await live.aclose()
