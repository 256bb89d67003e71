"""The request id: taken from X-Request-ID or made, returned, on the log records of the request,
and sent upstream to the LLM, through httpx and through the streaming transport
(rag/generation/stream_transport.py) against a real socket. Also: the auth middleware's hot
path stays on the event loop."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api import auth
from api.app import create_app
from rag.generation.llm import LLMClient
from rag.security import keys
from rag.security.ratelimit import MemoryLimiter
from rag.services import Services
from tests.conftest import FakeLLM, make_settings, upload, wait_document

TEXT = "# 年假\n\n入职满一年的员工每年享有十天带薪年假。\n".encode()
GENERATED = re.compile(r"[0-9a-f]{32}")


def _chunk(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"delta": {"content": text}}]}).encode() + b"\n\n"


class _Handler(BaseHTTPRequestHandler):
    """An OpenAI-compatible upstream on a real socket: chunked SSE streams, JSON answers."""

    protocol_version = "HTTP/1.1"
    server: _Upstream

    def do_GET(self) -> None:
        self._json({"data": [{"id": "fake"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.seen.append({k.lower(): v for k, v in self.headers.items()})
        if not body.get("stream"):
            message = {"role": "assistant", "content": "十天 [1]。"}
            self._json({"choices": [{"message": message, "finish_reason": "stop"}]})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for piece in (_chunk("十天"), _chunk(" [1]。"), b"data: [DONE]\n\n"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _json(self, data: dict[str, Any]) -> None:
        raw = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Upstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict[str, str]] = []


@pytest.fixture
def upstream() -> Iterator[_Upstream]:
    server = _Upstream()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def live(tmp_path: Path, upstream: _Upstream) -> Iterator[tuple[TestClient, str]]:
    """The API with its LLM client on real sockets (no test transport), and a ready KB."""
    port = upstream.server_address[1]
    cfg = make_settings(tmp_path / "data", llm={"base_url": f"http://127.0.0.1:{port}/v1"})
    svc = Services.create(cfg, llm=LLMClient(cfg.llm))
    with TestClient(create_app(services=svc)) as client:
        kb = client.post("/v1/knowledge-bases", json={"name": "hr"}).json()["id"]
        doc = upload(client, kb, "hr.md", TEXT).json()
        assert wait_document(client, kb, doc["id"])["status"] == "ready"
        yield client, kb
    svc.close()


def test_streamed_ask_sends_the_callers_id_upstream_and_logs_it(
    live: tuple[TestClient, str], upstream: _Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    client, kb = live
    caplog.set_level(logging.DEBUG, logger="rag.generation.llm")
    body = {"question": "年假有几天？", "stream": True}
    headers = {"X-Request-ID": "helpdesk-4711"}
    with client.stream("POST", f"/v1/knowledge-bases/{kb}/ask", json=body, headers=headers) as r:
        text = r.read().decode()
    assert r.status_code == 200 and "event: done" in text, text
    assert r.headers["x-request-id"] == "helpdesk-4711"
    assert [seen.get("x-request-id") for seen in upstream.seen] == ["helpdesk-4711"]
    ended = [
        rec for rec in caplog.records if rec.name == "rag.generation.llm" and "ended" in rec.message
    ]
    assert ended and all(getattr(rec, "request_id", None) == "helpdesk-4711" for rec in ended)


def test_whole_ask_without_an_id_gets_a_new_one_sent_upstream(
    live: tuple[TestClient, str], upstream: _Upstream
) -> None:
    client, kb = live
    ids = []
    for _ in range(2):
        resp = client.post(f"/v1/knowledge-bases/{kb}/ask", json={"question": "年假有几天？"})
        assert resp.status_code == 200, resp.text
        ids.append(resp.headers["x-request-id"])
    assert all(GENERATED.fullmatch(i) for i in ids) and ids[0] != ids[1]
    # The answer cache may answer the second one without the LLM; the first went upstream.
    assert [seen.get("x-request-id") for seen in upstream.seen] == ids[: len(upstream.seen)]
    assert upstream.seen


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("abc-DEF_1.2:3", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("two words", False),
        ("<script>", False),
        ("", False),
    ],
)
def test_only_short_plain_ids_are_taken_from_the_caller(
    client: TestClient, given: str, kept: bool
) -> None:
    resp = client.get("/v1/knowledge-bases", headers={"X-Request-ID": given})
    assert resp.status_code == 200
    returned = resp.headers["x-request-id"]
    assert returned == given if kept else GENERATED.fullmatch(returned)


def test_errors_and_refusals_carry_the_id(client: TestClient, tmp_path: Path) -> None:
    missing = client.get("/v1/knowledge-bases/nope", headers={"X-Request-ID": "r-404"})
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "r-404"
    cfg = make_settings(tmp_path / "locked", host="0.0.0.0")  # no keys, not loopback: locked
    svc = Services.create(
        cfg, llm=LLMClient(cfg.llm, transport=httpx.MockTransport(FakeLLM().handler))
    )
    with TestClient(create_app(services=svc, start_worker=False, warm_up=False)) as locked:
        refused = locked.get("/v1/knowledge-bases", headers={"X-Request-ID": "r-401"})
        assert refused.status_code == 401 and refused.headers["x-request-id"] == "r-401"
        assert GENERATED.fullmatch(locked.get("/healthz").headers["x-request-id"])
    svc.close()


# --- the auth middleware's hot path ---------------------------------------------------------------


class _Hops:
    """Counts the middleware's hops to a worker thread."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def run_sync(self, func: Any, *args: Any) -> Any:
        from anyio import to_thread

        self.calls.append(getattr(func, "__name__", repr(func)))
        return await to_thread.run_sync(func, *args)


class _RemoteLimiter:
    """Stands in for Redis: anything but the in-memory limiter may block, so it gets a thread."""

    def __init__(self) -> None:
        self._inner = MemoryLimiter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_cached_keys_and_memory_limits_stay_on_the_event_loop(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops = _Hops()
    monkeypatch.setattr(auth, "to_thread", hops)
    with services.db.write() as session:
        _, secret = keys.create(session, tenant_id="default", scopes=["admin"])
    guard = client.app.state.guard  # type: ignore[attr-defined]
    guard.forget()
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/v1/knowledge-bases", headers=headers).status_code == 200
    assert hops.calls == ["authenticate"]  # first sight of the key: a database read
    hops.calls.clear()
    kb = client.post("/v1/knowledge-bases", json={"name": "k"}, headers=headers)
    assert kb.status_code == 201
    ask = client.post(
        f"/v1/knowledge-bases/{kb.json()['id']}/ask",
        json={"question": "q", "retrieval_only": True},
        headers=headers,
    )
    assert ask.status_code == 200
    assert hops.calls == []  # verified moments ago; rate and generation slot in memory
    assert (
        client.get("/v1/knowledge-bases", headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    assert hops.calls == ["authenticate"]  # an unknown key is looked up, off the loop

    hops.calls.clear()
    guard.limiter = _RemoteLimiter()
    ask = client.post(
        f"/v1/knowledge-bases/{kb.json()['id']}/ask",
        json={"question": "q", "retrieval_only": True},
        headers=headers,
    )
    assert ask.status_code == 200
    assert hops.calls == ["check_rate", "take_generation_slot", "release_generation_slot"]


def test_an_upload_job_carries_the_request_id_to_the_worker_logs(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest")
    kb = client.post("/v1/knowledge-bases", json={"name": "hr"}).json()["id"]
    resp = upload(client, kb, "hr.md", TEXT, headers={"X-Request-ID": "upload-4711"})
    assert resp.status_code == 202 and resp.headers["x-request-id"] == "upload-4711"
    doc = resp.json()["id"]
    assert wait_document(client, kb, doc)["status"] == "ready"
    jobs = client.get("/v1/jobs", params={"kb_id": kb}).json()["jobs"]
    assert [(j["document_id"], j["request_id"]) for j in jobs] == [(doc, "upload-4711")]
    done = [r for r in caplog.records if r.getMessage().startswith(f"document {doc}: ready")]
    assert done and all(getattr(r, "request_id", None) == "upload-4711" for r in done)
