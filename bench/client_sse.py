"""Parsing throughput of the client's /ask stream: the hand-written SSE parser vs httpx-sse.

    .venv/bin/python bench/client_sse.py [--events 2000] [--repeats 15] [--rounds 40]

A realistic /ask stream (N `delta` events of about 40 bytes, then `citations` and `done`, as
api/routes/ask.py sends them) is served from memory by an httpx.MockTransport, in network-sized
pieces, and read to typed events (rag.client's StreamEvent) by two readers, sync and async:

  old  the parser the client had before (`_SSEDecoder` over `response.iter_lines()`), copied
       below unchanged as the baseline
  new  rag.client._models._stream_events / _astream_events, the code the client runs now
       (httpx_sse.EventSource over the response)

Both readers run in the same process, interleaved (old, new, old, new, ...), `--rounds` streams
each per repetition, `--repeats` repetitions; the figure is the median per stream and the ratio
new/old of the medians (below 1: the new one is faster). Each reader also decodes the events'
JSON into the typed events, as the client must; the ratio is of the whole read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.client._models import (
    DeltaEvent,
    DoneEvent,
    StreamEvent,
    _astream_events,
    _stream_event,
    _stream_events,
)

PIECE = 4096  # bytes per body piece, as a socket read of a streamed response brings


# --------------------------------------------------------------------------- the baseline
# BASELINE: the client's hand-written parser before httpx-sse (rag/client/_models.py and the
# loops of ask_stream in rag/client/_client.py), copied unchanged.


class _SSEDecoder:
    """Lines in, (event, data) out, as the Server-Sent Events format delimits them."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                self._event = ""
                return None
            out = (self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None

    def flush(self) -> tuple[str, str] | None:
        return self.feed("")


def old_events(response: httpx.Response) -> Iterator[StreamEvent]:
    decoder = _SSEDecoder()
    for line in response.iter_lines():
        if (item := decoder.feed(line)) and (event := _stream_event(*item)):
            yield event
    if (item := decoder.flush()) and (event := _stream_event(*item)):
        yield event


async def old_aevents(response: httpx.Response) -> AsyncIterator[StreamEvent]:
    decoder = _SSEDecoder()
    async for line in response.aiter_lines():
        if (item := decoder.feed(line)) and (event := _stream_event(*item)):
            yield event
    if (item := decoder.flush()) and (event := _stream_event(*item)):
        yield event


# --------------------------------------------------------------------------- the stream


def stream_body(events: int) -> bytes:
    """What api/routes/ask.py sends: delta events (~40 bytes each), citations, done."""

    def sse(name: str, data: object) -> str:
        return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

    words = ["rotate ", "the key ", "年假 ", "in the ", "console "]
    parts = [sse("delta", {"text": words[i % len(words)]}) for i in range(events)]
    citation = {
        "index": 1,
        "chunk_id": 1,
        "document_id": "d",
        "filename": "manual.pdf",
        "page": 3,
        "text": "To rotate an access key, open the console.",
        "score": 0.9,
        "cited": True,
    }
    parts.append(sse("citations", [citation] * 5))
    done = {"model": "qwen", "usage": {"total_tokens": events}, "finish_reason": "stop"}
    parts.append(sse("done", done))
    return "".join(parts).encode()


class _Pieces(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, body: bytes) -> None:
        self._pieces = [body[i : i + PIECE] for i in range(0, len(body), PIECE)]

    def __iter__(self) -> Iterator[bytes]:
        yield from self._pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


def transport(body: bytes) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream; charset=utf-8"}
        return httpx.Response(200, headers=headers, stream=_Pieces(body))

    return httpx.MockTransport(handler)


# --------------------------------------------------------------------------- measuring


def _check(events: list[StreamEvent], n: int) -> None:
    deltas = sum(isinstance(e, DeltaEvent) for e in events)
    if deltas != n or not isinstance(events[-1], DoneEvent):
        raise SystemExit(f"a reader got {deltas} deltas of {n}, last {events[-1]!r}")


def time_sync(
    client: httpx.Client, read: Callable[[httpx.Response], Iterator[StreamEvent]], n: int, k: int
) -> float:
    started = time.perf_counter()
    for _ in range(k):
        with client.stream("POST", "http://kbqa.test/ask") as response:
            events = list(read(response))
    elapsed = time.perf_counter() - started
    _check(events, n)
    return elapsed / k


async def time_async(
    client: httpx.AsyncClient,
    read: Callable[[httpx.Response], AsyncIterator[StreamEvent]],
    n: int,
    k: int,
) -> float:
    started = time.perf_counter()
    for _ in range(k):
        async with client.stream("POST", "http://kbqa.test/ask") as response:
            events = [e async for e in read(response)]
    elapsed = time.perf_counter() - started
    _check(events, n)
    return elapsed / k


def summary(name: str, old: list[float], new: list[float], n: int) -> dict[str, float]:
    o, w = statistics.median(old), statistics.median(new)
    ratios = sorted(b / a for a, b in zip(old, new, strict=True))
    print(
        f"{name:5}: old {o * 1e3:7.3f} ms/stream ({n / o:9.0f} events/s)   "
        f"new {w * 1e3:7.3f} ms/stream ({n / w:9.0f} events/s)   "
        f"new/old {w / o:.3f} (per repetition {ratios[0]:.3f}..{ratios[-1]:.3f})"
    )
    return {"old_ms": o * 1e3, "new_ms": w * 1e3, "ratio_new_old": w / o}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=40, help="streams per reader per repeat")
    args = parser.parse_args()
    body = stream_body(args.events)
    n, k = args.events, args.rounds
    print(
        f"{n} delta events ({len(body)} bytes, {len(body) / (n + 2):.0f} bytes per event) in "
        f"{PIECE}-byte pieces, {args.repeats} repetitions x {k} streams per reader, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    with httpx.Client(transport=transport(body)) as client:
        old: list[float] = []
        new: list[float] = []
        time_sync(client, old_events, n, 3)  # warm-up
        time_sync(client, _stream_events, n, 3)
        for _ in range(args.repeats):
            old.append(time_sync(client, old_events, n, k))
            new.append(time_sync(client, _stream_events, n, k))
    summary("sync", old, new, n)

    async def run_async() -> tuple[list[float], list[float]]:
        old: list[float] = []
        new: list[float] = []
        async with httpx.AsyncClient(transport=transport(body)) as client:
            await time_async(client, old_aevents, n, 3)
            await time_async(client, _astream_events, n, 3)
            for _ in range(args.repeats):
                old.append(await time_async(client, old_aevents, n, k))
                new.append(await time_async(client, _astream_events, n, k))
        return old, new

    summary("async", *asyncio.run(run_async()), n)


if __name__ == "__main__":
    main()
