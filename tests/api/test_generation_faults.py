"""Faults of the LLM seen through the API, the upstream faked at the HTTP transport; and a
client that disconnects mid-stream cancelling the upstream generation (real sockets)."""

from __future__ import annotations

import io
import json
import re
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.generation.llm import LLMClient
from rag.services import Services
from tests.conftest import make_settings, serving, wait_for
from tests.llm_script import EndlessTokens, ScriptedLLM, Status, app_with, english_kb, events

QUESTION = {"question": "How do I reset my access key?", "top_k": 4}


def ask(client, kb: str, **extra):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/knowledge-bases/{kb}/ask", json={**QUESTION, **extra})


def test_llm_down_is_503_with_retry_after_then_the_circuit_opens(tmp_path: Path) -> None:
    script = ScriptedLLM(httpx.ConnectError("connection refused"))
    with app_with(tmp_path, script, max_retries=1, breaker_failures=2, breaker_reset_s=60) as (
        client,
        _,
    ):
        kb = english_kb(client)
        for _ in range(2):
            resp = ask(client, kb)
            assert resp.status_code == 503 and resp.headers["Retry-After"] == "10"
            assert "http://127.0.0.1:8000/v1/chat/completions" in resp.json()["error"]["message"]
        assert len(script.requests) == 4  # each call: one try + one retry
        opened = ask(client, kb)
        assert opened.status_code == 503 and opened.json()["error"]["code"] == "llm_circuit_open"
        assert 50 <= int(opened.headers["Retry-After"]) <= 60
        assert len(script.requests) == 4  # failed fast, the upstream was not called
        # Retrieval does not need the LLM.
        assert ask(client, kb, retrieval_only=True).status_code == 200


def test_connect_timeout_is_retried_then_503(tmp_path: Path) -> None:
    script = ScriptedLLM(httpx.ConnectTimeout("no SYN-ACK"))
    with app_with(tmp_path, script, max_retries=2) as (client, _):
        kb = english_kb(client)
        resp = ask(client, kb)
    assert resp.status_code == 503 and "Retry-After" in resp.headers
    assert "within 5 s" in resp.json()["error"]["message"]
    assert len(script.requests) == 3


def test_read_timeout_is_504(tmp_path: Path) -> None:
    script = ScriptedLLM(httpx.ReadTimeout("no answer"))
    with app_with(tmp_path, script, max_retries=2) as (client, _):
        kb = english_kb(client)
        resp = ask(client, kb)
    assert resp.status_code == 504 and resp.json()["error"]["code"] == "llm_timeout"
    assert len(script.requests) == 1


@pytest.mark.parametrize(("status", "retry_after"), [(429, "30"), (503, "45")])
def test_overload_is_passed_on_as_503_with_retry_after(
    tmp_path: Path, status: int, retry_after: str
) -> None:
    script = ScriptedLLM(Status(status, "server busy", {"Retry-After": retry_after}))
    with app_with(tmp_path, script, max_retries=2) as (client, _):
        kb = english_kb(client)
        resp = ask(client, kb)
        streamed = ask(client, kb, stream=True)  # refused before any token: a plain 503 too
    for r in (resp, streamed):
        assert r.status_code == 503 and r.headers["Retry-After"] == retry_after
        assert "overloaded" in r.json()["error"]["message"]


def test_brief_overload_is_retried_with_backoff(tmp_path: Path) -> None:
    busy = Status(503, "busy", {"Retry-After": "0"})
    script = ScriptedLLM(busy, busy, "Rotate it in the console [1].")
    with app_with(tmp_path, script, max_retries=2) as (client, _):
        kb = english_kb(client)
        resp = ask(client, kb)
    assert resp.status_code == 200 and resp.json()["answer"] == "Rotate it in the console [1]."
    assert len(script.requests) == 3


def _labels(body: dict) -> list[str]:
    return re.findall(r"^\[(\d+)\] ", body["messages"][-1]["content"], re.M)


@pytest.mark.parametrize("stream", [False, True])
def test_context_length_error_repacks_smaller_once(tmp_path: Path, stream: bool) -> None:
    too_long = Status(
        400,
        {
            "object": "error",
            "message": "This model's maximum context length is 4096 tokens. However, your request "
            "has 9000 input tokens. Please reduce the length of the input messages.",
            "type": "BadRequestError",
            "code": 400,
        },
    )
    script = ScriptedLLM(too_long, "Press Rotate [1].")
    with app_with(tmp_path, script, max_model_len=8192, max_tokens=256) as (client, _):
        kb = english_kb(client)
        resp = ask(client, kb, stream=stream, top_k=8)
        assert resp.status_code == 200, resp.text
        first, second = script.requests
        assert len(_labels(second)) < len(_labels(first))
        assert len(second["messages"][-1]["content"]) < len(first["messages"][-1]["content"])
        # The server counted 9000 tokens for our prompt: the retry is scaled to fit its 4096.
        assert second["max_tokens"] == 256

        script.steps = [too_long]  # refused again after repacking: give up, once
        script.requests.clear()
        again = ask(client, kb)
        assert again.status_code == 502 and len(script.requests) == 2
        assert again.json()["error"]["code"] == "llm_context_length_exceeded"


def _broken_stream(body: dict) -> httpx.Response:
    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield b'data: {"choices": [{"index": 0, "delta": {"content": "Press "}}]}\n\n'
            raise httpx.RemoteProtocolError("peer closed connection without sending complete body")

    return httpx.Response(200, stream=Broken(), headers={"content-type": "text/event-stream"})


def test_failure_mid_stream_ends_with_an_error_event(tmp_path: Path) -> None:
    script = ScriptedLLM(_broken_stream)
    with app_with(tmp_path, script) as (client, _):
        kb = english_kb(client)
        with client.stream(
            "POST", f"/v1/knowledge-bases/{kb}/ask", json={**QUESTION, "stream": True}
        ) as r:
            assert r.status_code == 200
            got = events("".join(r.iter_text()))  # returns: the stream was closed, not left hanging
    names = [name for name, _ in got]
    # the text may come in several deltas (the answer sanitiser holds back a possible echo of
    # the system prompt for a few characters), but all of it comes before the error event
    assert set(names[:-1]) == {"delta"} and names[-1] == "error"
    assert "".join(data["text"] for _, data in got[:-1]) == "Press "
    assert got[-1][1]["code"] == "llm_bad_response" and "broke off" in got[-1][1]["message"]


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[tuple[str, EndlessTokens, ScriptedLLM]]:
    """Our app on a real loopback socket; the upstream streams tokens until it is closed."""
    upstream = EndlessTokens(interval=0.02)
    script = ScriptedLLM(
        lambda body: httpx.Response(
            200, stream=upstream, headers={"content-type": "text/event-stream"}
        )
    )
    settings = make_settings(tmp_path / "data")
    svc = Services.create(settings, llm=LLMClient(settings.llm, transport=script.transport()))
    # A knowledge base with a ready document: one with none is refused before the LLM (409).
    staged = svc.stage_upload(
        io.BytesIO(b"Press the red button to start. " * 20), "manual.txt", settings.data_dir, 10**6
    )
    svc.knowledge.add_document(svc.knowledge.create_kb("manual").id, staged)
    worker = svc.worker()
    while worker.run_once():
        pass
    try:
        with serving(create_app(services=svc, start_worker=False)) as url:
            yield url, upstream, script
    finally:
        svc.close()


@pytest.mark.parametrize("endpoint", ["ask", "openai"])
def test_client_disconnect_cancels_the_upstream_generation(
    live_server: tuple[str, EndlessTokens, ScriptedLLM], endpoint: str
) -> None:
    url, upstream, script = live_server
    with httpx.Client(base_url=url, timeout=30) as http:
        listed = http.get("/v1/knowledge-bases").json()["knowledge_bases"]
        kb = next(k["id"] for k in listed if k["name"] == "manual")
        if endpoint == "ask":
            request = http.build_request(
                "POST",
                f"/v1/knowledge-bases/{kb}/ask",
                json={"question": "Tell me all.", "stream": True},
            )
        else:
            request = http.build_request(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "kb:manual",
                    "stream": True,
                    "messages": [{"role": "user", "content": "Tell me all."}],
                },
            )
        response = http.send(request, stream=True)
        assert response.status_code == 200
        lines = response.iter_lines()
        assert any("to" in line for line in lines)  # tokens are flowing (split as they come)
        assert not upstream.closed
        response.close()  # the client goes away mid-answer
    wait_for(lambda: upstream.closed, timeout=10)  # ... and the upstream request is closed
    sent = upstream.sent
    time.sleep(0.2)
    assert upstream.sent == sent  # no more tokens are pulled from the LLM
    assert len(script.requests) == 1


class _SplitUpstream(socketserver.BaseRequestHandler):
    """A real upstream socket whose answer arrives in awkward pieces: headers and several token
    chunks in one write, then an event cut inside a multi-byte character, then the rest."""

    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.request.recv(65536)
        head, body = data.split(b"\r\n\r\n", 1)
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += self.request.recv(65536)
        words = ["Press ", "Rotate ", "in the console [1]. ", "好"]
        chunks = [
            {"model": "served", "choices": [{"index": 0, "delta": {"content": w}}]} for w in words
        ]
        chunks.append(
            {
                "model": "served",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57},
            }
        )
        events_ = [f"data: {json.dumps(c, ensure_ascii=False)}\n\n".encode() for c in chunks]
        events_.append(b"data: [DONE]\n\n")
        wire = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events_) + b"0\r\n\r\n"
        head_out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        cut = wire.index("好".encode()) + 1
        for piece in (head_out + b"transfer-encoding: chunked\r\n\r\n" + wire[:cut], wire[cut:]):
            self.request.sendall(piece)
            time.sleep(0.05)


@pytest.mark.parametrize("endpoint", ["ask", "openai"])
def test_stream_from_a_real_socket_upstream_keeps_events_and_text(
    tmp_path: Path, endpoint: str
) -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SplitUpstream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    settings = make_settings(tmp_path / "data", llm={"base_url": url, "max_retries": 0})
    svc = Services.create(
        settings
    )  # the real LLM client: streams through rag.generation.stream_transport
    try:
        with TestClient(create_app(services=svc)) as client:
            kb = english_kb(client)
            if endpoint == "ask":
                r = ask(client, kb, stream=True)
                got = events(r.text)
                names = [name for name, _ in got]
                assert names[-2:] == ["citations", "done"] and set(names[:-2]) == {"delta"}
                text = "".join(data["text"] for name, data in got if name == "delta")
                done = got[-1][1]
                assert done["model"] == "served" and done["finish_reason"] == "stop"
                assert done["usage"]["completion_tokens"] == 7
                assert any(c["cited"] for c in got[-2][1])
            else:
                r = client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "kb:product",
                        "stream": True,
                        "messages": [{"role": "user", "content": QUESTION["question"]}],
                    },
                )
                got = events(r.text)
                assert got[-1] == ("message", "[DONE]")
                chunks = [data for _, data in got[:-1]]
                text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
                assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
                assert chunks[-1]["citations"]
            assert r.status_code == 200
            assert text == "Press Rotate in the console [1]. 好"
    finally:
        svc.close()
        server.shutdown()
