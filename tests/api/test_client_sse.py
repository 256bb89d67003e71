"""The client's /ask stream as httpx-sse parses it: line endings, pieces that split events (and
characters), Unicode line separators inside the JSON, and lines that are not events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import httpx

from rag.client import AsyncClient, Client, DeltaEvent, DoneEvent, StreamEvent


class _Pieces(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, body: bytes, size: int) -> None:
        self._pieces = [body[i : i + size] for i in range(0, len(body), size)]

    def __iter__(self) -> Iterator[bytes]:
        yield from self._pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


def _transport(body: bytes, size: int) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream; charset=utf-8"}
        return httpx.Response(200, headers=headers, stream=_Pieces(body, size))

    return httpx.MockTransport(handler)


def _both(body: bytes, size: int) -> tuple[list[StreamEvent], list[StreamEvent]]:
    """The events the sync and the async client read from the same body."""
    with Client("http://kbqa.test", transport=_transport(body, size)) as client:
        sync = list(client.ask_stream("kb", "q"))

    async def read() -> list[StreamEvent]:
        async with AsyncClient("http://kbqa.test", transport=_transport(body, size)) as client:
            return [e async for e in client.ask_stream("kb", "q")]

    return sync, asyncio.run(read())


def _sse(name: str, data: object, newline: str = "\n") -> str:
    text = json.dumps(data, ensure_ascii=False)  # as api/streaming.py writes it
    return f"event: {name}{newline}data: {text}{newline}{newline}"


def test_unicode_line_separators_inside_a_delta_are_text_not_line_breaks() -> None:
    tricky = "a\u2028b\u2029c\x85d\x1ce\x0bf"
    body = (_sse("delta", {"text": tricky}) + _sse("done", {"model": "m"})).encode()
    for events in _both(body, 4096):
        assert events == [DeltaEvent(tricky), DoneEvent(model="m")]


def test_crlf_and_cr_line_endings() -> None:
    for newline in ("\r\n", "\r"):
        body = (_sse("delta", {"text": "x"}, newline) + _sse("done", {}, newline)).encode()
        for events in _both(body, 4096):
            assert events == [DeltaEvent("x"), DoneEvent()]


def test_events_split_across_pieces_even_inside_a_character() -> None:
    body = "".join(_sse("delta", {"text": f"年假{i}"}) for i in range(50)).encode()
    body += _sse("done", {"usage": {"total_tokens": 50}}).encode()
    for size in (1, 3, 7):  # 3 and 7 cut through the three-byte UTF-8 characters
        for events in _both(body, size):
            assert events[:-1] == [DeltaEvent(f"年假{i}") for i in range(50)]
            assert events[-1] == DoneEvent(usage={"total_tokens": 50})


def test_comments_ids_retries_and_events_without_data_are_not_events() -> None:
    body = (
        b": keep-alive\n\n"
        b"id: 7\nretry: 1000\n\n"  # no data: no event
        b"event: delta\n\n"  # an event name alone: no event
        b'id: 8\nevent: delta\ndata: {"text": "ok"}\n\n'
        b"data: {}\n\n"  # an unnamed event (\"message\"): not one of /ask's, skipped
        b"event: done\ndata: {}\n\n"
    )
    for events in _both(body, 4096):
        assert events == [DeltaEvent("ok"), DoneEvent()]


def test_done_event_carries_the_answer_flags() -> None:
    done = {"model": "m", "grounded": True, "truncated": True, "degenerate": "echo", "new": 1}
    body = (_sse("delta", {"text": "x"}) + _sse("done", done)).encode()
    for events in _both(body, 7):
        assert events[-1] == DoneEvent(model="m", grounded=True, truncated=True, degenerate="echo")
