"""The answer's flags (grounded, truncated, degenerate) reach every way of asking: the REST
response, the SSE `done` event and the OpenAI-compatible response, whole and streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.generation.llm import LLMClient
from rag.services import Services
from tests.conftest import FakeLLM, make_settings, upload, wait_document
from tests.llm_script import events


class LengthLimitedLLM(FakeLLM):
    """FakeLLM whose whole answers can be made to stop at the token limit."""

    def __init__(self) -> None:
        super().__init__()
        self.finish_reason = "stop"

    def handler(self, request: httpx.Request) -> httpx.Response:
        response = super().handler(request)
        if request.url.path.endswith("/chat/completions") and not json.loads(request.content).get(
            "stream"
        ):
            body = response.json()
            body["choices"][0]["finish_reason"] = self.finish_reason
            return httpx.Response(200, json=body)
        return response


@pytest.fixture
def llm() -> LengthLimitedLLM:
    return LengthLimitedLLM()


@pytest.fixture
def client(tmp_path: Path, llm: LengthLimitedLLM) -> Iterator[TestClient]:
    cfg = make_settings(tmp_path / "data")
    svc = Services.create(cfg, llm=LLMClient(cfg.llm, transport=httpx.MockTransport(llm.handler)))
    with TestClient(create_app(services=svc, warm_up=False)) as c:
        c.post("/v1/knowledge-bases", json={"name": "hr"})
        doc = upload(c, "hr", "hr.txt", "年假有十天，病假另计。".encode())
        assert wait_document(c, "hr", doc.json()["id"])["status"] == "ready"
        yield c
    svc.close()


FLAGS = ("grounded", "truncated", "degenerate")
QUESTION = {"question": "年假有几天？", "cache": False}
CHAT = {"model": "kb:hr", "messages": [{"role": "user", "content": "年假有几天？"}]}


def _flags(body: dict[str, Any]) -> dict[str, Any]:
    return {name: body[name] for name in FLAGS}


def test_rest_and_sse(client: TestClient, llm: LengthLimitedLLM) -> None:
    body = client.post("/v1/knowledge-bases/hr/ask", json=QUESTION).json()
    assert _flags(body) == {"grounded": True, "truncated": False, "degenerate": None}

    llm.finish_reason = "length"
    body = client.post("/v1/knowledge-bases/hr/ask", json=QUESTION).json()
    assert body["truncated"] is True and body["finish_reason"] == "length"

    llm.reply = "这个问题资料里没有提到。"  # cites nothing
    body = client.post("/v1/knowledge-bases/hr/ask", json=QUESTION).json()
    assert body["grounded"] is False

    llm.reply = "根据资料 [1]，年假有十天。"
    streamed = client.post("/v1/knowledge-bases/hr/ask", json={**QUESTION, "stream": True})
    name, done = events(streamed.text)[-1]
    assert name == "done"
    assert _flags(done) == {"grounded": True, "truncated": False, "degenerate": None}


def test_openai_compatible(client: TestClient) -> None:
    whole = client.post("/v1/chat/completions", json=CHAT).json()
    flags = whole["answer_flags"]
    assert {k: flags[k] for k in ("grounded", "truncated", "degenerate", "covered")} == {
        "grounded": True,
        "truncated": False,
        "degenerate": None,
        "covered": True,
    }
    # Which route answered and how it was chosen, and that no fallback or JSON retry was needed.
    assert flags["fallback_from"] is None and flags["structured_retries"] == 0
    assert flags["routing"]["route"] == "default"
    assert whole["choices"][0]["message"]["content"]  # OpenAI's own shape is unchanged
    streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    chunks = [data for _, data in events(streamed.text) if data != "[DONE]"]
    last = next(c for c in reversed(chunks) if c.get("choices"))
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["answer_flags"]["grounded"] is True
