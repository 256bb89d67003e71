"""Server-Sent Events responses that always close their source.

Starlette cancels a streaming response when the client disconnects; the cancellation lands
inside our event generator if it is awaiting upstream, but not if it was suspended at a
`yield`. Closing the generator here, shielded from that cancellation, makes the upstream LLM
request end in both cases, at once, rather than whenever the garbage collector gets to it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Protocol

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Send

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str | None, data: object) -> str:
    """One event; `data` is JSON-encoded unless it is already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"


class Closable(Protocol):
    async def aclose(self) -> None: ...


class EventStream(StreamingResponse):
    """`closing` (an answer stream) is closed once the response ends, however it ends: also
    when the client left before the generator started, when closing the generator runs none
    of its code."""

    def __init__(self, events: AsyncGenerator[str, None], closing: Closable | None = None) -> None:
        super().__init__(events, media_type="text/event-stream", headers=SSE_HEADERS)
        self._events = events
        self._closing = closing

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._events.aclose()
                if self._closing is not None:
                    await self._closing.aclose()
