"""The LLM client against an upstream faked at the HTTP transport: statuses, timeouts, retries,
the circuit breaker, streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import anyio
import httpx
import pytest

from rag.core.circuit import CircuitBreaker
from rag.core.config import LLMSettings
from rag.core.errors import (
    LLMBadResponse,
    LLMCircuitOpen,
    LLMContextLengthExceeded,
    LLMTimeout,
    LLMUnavailable,
)
from rag.generation.llm import LLMClient, SSEDecoder
from rag.generation.stream_transport import StreamTransport, _Body, _Reader

MESSAGES = [{"role": "user", "content": "hi"}]
T = TypeVar("T")
Handler = Callable[[httpx.Request], httpx.Response]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def client(handler: Handler, **settings: Any) -> LLMClient:
    settings.setdefault("retry_backoff_s", 0.001)
    return LLMClient(LLMSettings(**settings), transport=httpx.MockTransport(handler))


def ok(text: str = "ok") -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"message": {"content": text}}]})


def sse(*chunks: dict[str, Any], done: bool = True) -> str:
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
    return body + ("data: [DONE]\n\n" if done else "")


SSE_HEADERS = {"content-type": "text/event-stream"}


def delta(text: str) -> dict[str, Any]:
    return {"model": "m", "choices": [{"index": 0, "delta": {"content": text}}]}


class Calls:
    """A handler that answers from a list of responses (or exceptions), counting calls."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        answer = self.answers[min(len(self.bodies), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def count(self) -> int:
        return len(self.bodies)


async def collect(llm: LLMClient) -> tuple[list[str], Any]:
    stream = await llm.stream(MESSAGES)
    return [d async for d in stream.deltas()], stream


def test_completion_request_and_usage() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "model": "qwen",
                "choices": [{"message": {"content": "好 [1]"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2},
            },
        )

    out = run(client(handler).complete(MESSAGES, max_tokens=9, temperature=None))
    assert out.text == "好 [1]" and out.model == "qwen" and out.finish_reason == "stop"
    assert out.usage == {"prompt_tokens": 5, "completion_tokens": 2}
    body = json.loads(seen[0].content)
    assert body["model"] == "Qwen/Qwen2.5-7B-Instruct" and body["stream"] is False
    assert body["max_tokens"] == 9 and body["temperature"] == 0.1  # None keeps the default
    assert seen[0].headers["authorization"] == "Bearer EMPTY"


def test_repetition_penalties_are_sent_upstream() -> None:
    calls = Calls(ok(), httpx.Response(200, text=sse(delta("a")), headers=SSE_HEADERS))
    llm = client(calls)
    run(llm.complete(MESSAGES))
    run(collect(llm))
    for body in calls.bodies:  # by default vLLM's repetition_penalty, as Qwen2.5 ships it
        assert body["repetition_penalty"] == 1.05
        assert "frequency_penalty" not in body and "presence_penalty" not in body
    calls = Calls(ok())
    configured = dict(repetition_penalty=None, frequency_penalty=0.3, presence_penalty=0.2)
    run(client(calls, **configured).complete(MESSAGES))
    body = calls.bodies[0]
    assert "repetition_penalty" not in body
    assert body["frequency_penalty"] == 0.3 and body["presence_penalty"] == 0.2


@pytest.mark.parametrize(
    "refusal",
    [
        # transformers serve (5.x) validates the body against OpenAI's schema
        httpx.Response(
            422, json={"detail": "Unexpected fields in the request: {'repetition_penalty'}"}
        ),
        httpx.Response(
            400,
            json={
                "error": {
                    "message": "Unrecognized request argument supplied: repetition_penalty",
                    "type": "invalid_request_error",
                }
            },
        ),
    ],
)
def test_a_server_refusing_repetition_penalty_gets_frequency_penalty(
    refusal: httpx.Response,
) -> None:
    calls = Calls(refusal, ok("first"), ok("second"))
    llm = client(calls, max_retries=0)  # the resend is not a retry
    assert run(llm.complete(MESSAGES)).text == "first"
    resent = calls.bodies[1]
    # `transformers serve` applies frequency_penalty f as repetition_penalty 1 + f.
    assert "repetition_penalty" not in resent and resent["frequency_penalty"] == 0.05
    assert run(llm.complete(MESSAGES)).text == "second"  # remembered: no refusal again
    assert calls.count == 3 and "repetition_penalty" not in calls.bodies[2]
    assert llm.breaker.state == "closed"


def test_other_refusals_are_not_resent() -> None:
    calls = Calls(httpx.Response(422, json={"detail": "messages: field required"}), ok())
    with pytest.raises(LLMBadResponse):
        run(client(calls).complete(MESSAGES))
    assert calls.count == 1


@pytest.mark.parametrize("failure", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow")])
def test_connection_failures_are_retried_then_unavailable(failure: Exception) -> None:
    calls = Calls(failure)
    llm = client(calls, max_retries=2, base_url="http://10.0.0.1:8000/v1")
    with pytest.raises(LLMUnavailable) as info:
        run(llm.complete(MESSAGES))
    assert calls.count == 3
    assert "http://10.0.0.1:8000/v1/chat/completions" in str(info.value)
    assert "rag llm serve" in str(info.value) and info.value.retry_after_s


def test_read_timeout_is_not_retried() -> None:
    calls = Calls(httpx.ReadTimeout("slow"))
    with pytest.raises(LLMTimeout):
        run(client(calls, max_retries=3).complete(MESSAGES))
    assert calls.count == 1


def test_overload_is_retried_with_backoff_then_succeeds() -> None:
    busy = httpx.Response(503, headers={"retry-after": "0.01"}, text="busy")
    calls = Calls(busy, busy, ok("done"))
    assert run(client(calls, max_retries=2).complete(MESSAGES)).text == "done"
    assert calls.count == 3


def test_overload_with_a_long_retry_after_is_passed_on_at_once() -> None:
    calls = Calls(httpx.Response(429, headers={"retry-after": "7"}, text="too many requests"))
    with pytest.raises(LLMUnavailable) as info:
        run(client(calls, max_retries=3).complete(MESSAGES))
    assert calls.count == 1  # waiting 7 s inside one request would only hold the client up
    assert info.value.retry_after_s == 7 and info.value.status_code == 503


@pytest.mark.parametrize(
    ("message", "limit", "prompt"),
    [
        (
            "This model's maximum context length is 4096 tokens. However, you requested 5000 "
            "tokens (4500 in the messages, 500 in the completion). Please reduce the length of "
            "the messages or completion.",
            4096,
            4500,
        ),
        (
            "'max_tokens' or 'max_completion_tokens' is too large: 500. This model's maximum "
            "context length is 4096 tokens and your request has 3900 input tokens (500 > 4096 - "
            "3900).",
            4096,
            3900,
        ),
        ("Input is too long: reduce the length of the messages", None, None),
    ],
)
def test_context_length_error_is_recognised(message: str, limit: int, prompt: int) -> None:
    error = {"object": "error", "message": message, "type": "BadRequestError", "code": 400}
    calls = Calls(httpx.Response(400, json=error))
    with pytest.raises(LLMContextLengthExceeded) as info:
        run(client(calls).complete(MESSAGES))
    assert (info.value.max_context, info.value.prompt_tokens) == (limit, prompt)
    assert calls.count == 1


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(400, text="unknown parameter"),
        httpx.Response(401, text="bad key"),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json={"choices": []}),
    ],
)
def test_bad_responses(response: httpx.Response) -> None:
    with pytest.raises(LLMBadResponse) as info:
        run(client(lambda request: response).complete(MESSAGES))
    assert not isinstance(info.value, LLMContextLengthExceeded)


def test_circuit_opens_after_failures_fails_fast_and_recovers() -> None:
    now = [0.0]
    calls = Calls(httpx.ConnectError("refused"))
    llm = client(calls, max_retries=0)
    llm.breaker = CircuitBreaker(2, 30.0, clock=lambda: now[0])
    for _ in range(2):
        with pytest.raises(LLMUnavailable):
            run(llm.complete(MESSAGES))
    with pytest.raises(LLMCircuitOpen) as info:
        run(llm.complete(MESSAGES))
    assert calls.count == 2  # the open circuit did not call the upstream
    assert info.value.status_code == 503 and 0 < (info.value.retry_after_s or 0) <= 30
    now[0] = 31.0  # half-open: one trial call goes through, and it succeeds
    calls.answers = [ok("back")]
    assert run(llm.complete(MESSAGES)).text == "back"
    assert llm.breaker.state == "closed"


def test_client_errors_do_not_open_the_circuit() -> None:
    calls = Calls(httpx.Response(400, text="maximum context length is 10 tokens"))
    llm = client(calls, breaker_failures=1)
    for _ in range(3):
        with pytest.raises(LLMContextLengthExceeded):
            run(llm.complete(MESSAGES))
    assert calls.count == 3 and llm.breaker.state == "closed"


def test_stream_yields_deltas_usage_and_model_with_or_without_done() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    last = {"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    for done in (True, False):  # transformers serve sends no [DONE]
        calls = Calls(
            httpx.Response(
                200, text=sse(delta("你"), delta("好"), {**last, "usage": usage}, done=done)
            )
        )
        # One network read here: the deltas arrive joined, as they would from a fast upstream.
        parts, stream = run(collect(client(calls)))
        assert "".join(parts) == "你好"
        assert stream.usage == usage and stream.model == "m" and stream.finish_reason == "stop"
        assert calls.bodies[0]["stream"] is True
        assert calls.bodies[0]["stream_options"] == {"include_usage": True}


class SlowBytes(httpx.AsyncByteStream):
    """Chunks one network read at a time, then an optional failure; records being closed."""

    def __init__(self, chunks: list[bytes], fail: Exception | None = None) -> None:
        self.chunks, self.fail, self.closed = chunks, fail, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            await asyncio.sleep(0)
            yield chunk
        if self.fail is not None:
            raise self.fail

    async def aclose(self) -> None:
        self.closed = True


def test_stream_deltas_arrive_one_per_network_read() -> None:
    body = SlowBytes([sse(delta("a"), done=False).encode(), sse(delta("b")).encode()])
    parts, _ = run(collect(client(lambda request: httpx.Response(200, stream=body))))
    assert parts == ["a", "b"] and body.closed


@pytest.mark.parametrize(
    ("fail", "expected"),
    [
        (httpx.ReadError("connection reset"), LLMBadResponse),
        (httpx.ReadTimeout("stalled"), LLMTimeout),
        (None, LLMBadResponse),  # an error chunk from the server
    ],
)
def test_stream_failures_midway(fail: Exception | None, expected: type[Exception]) -> None:
    chunks = [sse(delta("partial "), done=False).encode()]
    if fail is None:
        chunks.append(b'data: {"error": {"message": "engine died"}}\n\n')
    body = SlowBytes(chunks, fail)
    received: list[str] = []

    async def consume() -> None:
        stream = await client(lambda request: httpx.Response(200, stream=body)).stream(MESSAGES)
        async for d in stream.deltas():
            received.append(d)

    with pytest.raises(expected):
        run(consume())
    assert received == ["partial "] and body.closed


def test_stream_refused_before_any_token_raises_when_opened() -> None:
    calls = Calls(httpx.Response(503, headers={"retry-after": "9"}, text="busy"))
    with pytest.raises(LLMUnavailable) as info:
        run(client(calls, max_retries=0).stream(MESSAGES))
    assert info.value.retry_after_s == 9


def test_server_token_count_from_vllm_tokenize() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/tokenize":
            assert json.loads(request.content)["messages"] == MESSAGES
            return httpx.Response(200, json={"count": 42, "max_model_len": 32768})
        return httpx.Response(404)

    assert run(client(handler).count_tokens(MESSAGES)) == 42
    assert run(client(lambda r: httpx.Response(404)).count_tokens(MESSAGES)) is None


def test_sse_decoder_splits_across_reads() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a"') == []
    assert decoder.feed(b": 1}\n\nevent: x\ndata: [DONE]\n\n") == ['{"a": 1}', "[DONE]"]
    assert decoder.feed(b": keep-alive comment\ndata:\n\n") == []  # nothing to decode


# --- the streaming transport, against a real loopback socket ----------------------------------


def chunked(*pieces: bytes, end: bool = True) -> bytes:
    """HTTP/1.1 chunked framing, one chunk per piece, as vLLM sends one per token."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return body + (b"0\r\n\r\n" if end else b"")


def event(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return b"data: %s\n\n" % text.encode()  # raw UTF-8, as vLLM sends it


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
STALL = b""  # in a script: send nothing more, wait until the client goes away


class SocketUpstream:
    """A loopback HTTP/1.1 server answering each request with a script of writes, pausing after
    each so that it arrives as its own network read. A script that ends its body cleanly keeps
    the connection for the next request (unless close_idle); one that ends inside it closes the
    connection there; STALL keeps it open and silent until the client closes it."""

    def __init__(self, *scripts: list[bytes], close_idle: bool = False) -> None:
        self.scripts = list(scripts)
        self.close_idle = close_idle
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        self.client_closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.scripts:
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                self.requests.append(json.loads(await reader.readexactly(length)))
                script = self.scripts.pop(0)
                for piece in script:
                    if piece == STALL:
                        break
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.02)
                else:
                    if self.close_idle or not script[-1].endswith(b"0\r\n\r\n"):
                        return  # closes the connection, inside the body or after it
                    continue
                break
            if not await reader.read(1):  # EOF: the client closed the connection
                self.client_closed.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.client_closed.set()
        finally:
            writer.close()


def socket_client(url: str, **settings: Any) -> LLMClient:
    settings.setdefault("retry_backoff_s", 0.001)
    return LLMClient(LLMSettings(base_url=url, **settings))


def test_socket_stream_reassembles_tokens_however_the_network_splits_them() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 5}
    last = {"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    tokens = [event(delta(t)) for t in ("Press ", "Rotate ", "[1]", "。", "你好")]
    body = STREAM_HEAD + chunked(*tokens, event({**last, "usage": usage}), event("[DONE]"))
    cut = body.index("你".encode()) + 1  # inside the character's three bytes, inside an event
    script = [body[:cut], body[cut:]]  # headers and four token chunks arrive in one read

    async def go() -> tuple[list[str], list[str], Any, SocketUpstream]:
        upstream = SocketUpstream(script, script)
        async with upstream as url:
            llm = socket_client(url)
            first, stream = await collect(llm)
            second, _ = await collect(llm)  # the kept-alive connection carries the next one
        return first, second, stream, upstream

    first, second, stream, upstream = run(go())
    assert "".join(first) == "".join(second) == "Press Rotate [1]。你好"
    assert len(first) <= 2  # what one read brought is passed on together, not token by token
    assert stream.usage == usage and stream.finish_reason == "stop" and stream.model == "m"
    assert upstream.requests[0]["stream"] is True and upstream.connections == 1


def test_socket_stream_error_event_midway_after_the_text_before_it() -> None:
    error = b'data: {"error": {"message": "engine died"}}\n\n'
    script = [STREAM_HEAD + chunked(event(delta("partial ")), end=False), chunked(error)]
    received: list[str] = []

    async def go() -> None:
        async with SocketUpstream(script) as url:
            stream = await socket_client(url).stream(MESSAGES)
            async for d in stream.deltas():
                received.append(d)

    with pytest.raises(LLMBadResponse, match="engine died"):
        run(go())
    assert received == ["partial "]


def test_socket_stream_closed_by_its_reader_closes_the_upstream_connection() -> None:
    script = [STREAM_HEAD + chunked(event(delta("a")), end=False), STALL]

    async def go() -> bool:
        upstream = SocketUpstream(script)
        async with upstream as url:
            stream = await socket_client(url).stream(MESSAGES)
            async for _ in stream.deltas():
                break  # the client went away after the first token
            await asyncio.wait_for(upstream.client_closed.wait(), 5)
        return upstream.client_closed.is_set()

    assert run(go())


def test_socket_stream_faults_map_like_httpx() -> None:
    stall = [STREAM_HEAD + chunked(event(delta("a")), end=False), STALL]
    broken = [STREAM_HEAD + b"5\r\ndata:"]  # the connection closes inside a chunk
    busy = [b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 9\r\ncontent-length: 4\r\n\r\nbusy"]

    async def deltas(script: list[bytes], **settings: Any) -> list[str]:
        async with SocketUpstream(script) as url:
            stream = await socket_client(url, **settings).stream(MESSAGES)
            return [d async for d in stream.deltas()]

    with pytest.raises(LLMTimeout):
        run(deltas(stall, read_timeout_s=0.3))
    with pytest.raises(LLMBadResponse, match="broke off"):
        run(deltas(broken))
    with pytest.raises(LLMUnavailable) as info:
        run(deltas(busy, max_retries=0))
    assert info.value.retry_after_s == 9

    async def refused() -> None:
        async with SocketUpstream() as url:
            pass  # closed: nothing listens there any more
        await socket_client(url, max_retries=1).stream(MESSAGES)

    with pytest.raises(LLMUnavailable, match="rag llm serve"):
        run(refused())


def test_socket_stream_survives_the_server_closing_an_idle_connection() -> None:
    whole = [STREAM_HEAD + chunked(event(delta("ok")), event("[DONE]"))]

    async def go() -> tuple[list[str], list[str], SocketUpstream]:
        upstream = SocketUpstream(whole, whole, close_idle=True)
        async with upstream as url:
            llm = socket_client(url, max_retries=0)
            first, _ = await collect(llm)
            await asyncio.sleep(0.05)  # the server has dropped the kept-alive connection
            second, _ = await collect(llm)
        return first, second, upstream

    first, second, upstream = run(go())
    assert first == second == ["ok"] and upstream.connections == 2


class ScriptedSocket:
    """Stands in for a connection: receive() returns the given reads, then the end."""

    def __init__(self, reads: list[bytes]) -> None:
        self.reads = list(reads)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self.reads:
            raise anyio.EndOfStream
        return self.reads.pop(0)

    async def aclose(self) -> None:
        self.reads = []


def test_dechunking_is_exact_for_every_way_the_reads_can_split() -> None:
    payload = [event(delta(t)) for t in ("a", "你好", "[1]")] + [event("[DONE]")]
    wire = chunked(*payload)
    headers = [(b"transfer-encoding", b"chunked")]
    request = httpx.Request("POST", "http://upstream/v1/chat/completions")

    transport = StreamTransport(httpx.AsyncHTTPTransport())

    async def body(reads: list[bytes]) -> list[bytes]:
        reader = _Reader(ScriptedSocket(reads), request, None)  # type: ignore[arg-type]
        return [p async for p in _Body(transport, ("upstream", 80), reader, headers, no_body=False)]

    splits = [[wire[:i], wire[i:]] for i in range(1, len(wire))]
    splits.append([wire[i : i + 1] for i in range(len(wire))])  # one byte per read

    async def every_split() -> None:
        for reads in splits:
            pieces = await body(reads)
            assert b"".join(pieces) == b"".join(payload), reads
            assert all(pieces) and len(pieces) <= len(reads)

    run(every_split())
    # several chunks in one read come out as one piece
    assert run(body([wire])) == [b"".join(payload)]
    with pytest.raises(httpx.RemoteProtocolError):
        run(body([wire[:-7]]))  # the connection closed inside the body
    with pytest.raises(httpx.RemoteProtocolError):
        run(body([b"zz\r\n" + wire]))  # not a chunk size
