"""A scripted OpenAI-compatible upstream at the httpx transport, and an app wired to it.

Each chat request takes the next scripted step (the last one repeats): a reply text (streamed
word by word when the request streams, with usage in the last chunk as vLLM sends it), an HTTP
status, an exception, or a callable that builds the response. Every request body is recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from api.app import create_app
from rag.generation.llm import LLMClient
from rag.services import Services
from tests.conftest import REPO, make_settings, upload, wait_document

Step = str | int | Exception | Callable[[dict[str, Any]], httpx.Response]


@dataclass
class Status:
    code: int
    body: Any = "upstream failure"
    headers: dict[str, str] = field(default_factory=dict)


def sse_body(text: str, model: str, *, usage: bool = True) -> str:
    words = text.split(" ")
    chunks = [
        {
            "model": model,
            "choices": [
                {"index": 0, "delta": {"content": w + (" " if i < len(words) - 1 else "")}}
            ],
        }
        for i, w in enumerate(words)
    ]
    last: dict[str, Any] = {
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    if usage:
        last["usage"] = {
            "prompt_tokens": 100,
            "completion_tokens": len(words),
            "total_tokens": 100 + len(words),
        }
    chunks.append(last)
    return (
        "".join(f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks)
        + "data: [DONE]\n\n"
    )


class ScriptedLLM:
    def __init__(self, *steps: Step | Status) -> None:
        self.steps: list[Step | Status] = list(steps) or ["An answer [1]."]
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(f"{request.url.host}{request.url.path}")
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": "fake"}]})
        if not request.url.path.endswith("/chat/completions"):
            return httpx.Response(404, json={"error": "not found"})
        body = json.loads(request.content)
        self.requests.append(body)
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, Status):
            content = step.body if isinstance(step.body, str) else json.dumps(step.body)
            return httpx.Response(step.code, text=content, headers=step.headers)
        if isinstance(step, int):
            return httpx.Response(step, json={"error": "scripted failure"})
        if callable(step):
            return step(body)
        if body.get("stream"):
            return httpx.Response(
                200,
                text=sse_body(step, body["model"]),
                headers={"content-type": "text/event-stream"},
            )
        return httpx.Response(
            200,
            json={
                "model": body["model"],
                "choices": [
                    {"message": {"role": "assistant", "content": step}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
            },
        )

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    def user_messages(self, i: int = -1) -> str:
        return self.requests[i]["messages"][-1]["content"]


class EndlessTokens(httpx.AsyncByteStream):
    """An upstream stream that sends a token every `interval` seconds until it is closed.

    The tokens differ ("toaa ", "toab ", ...): one token sent again and again is a runaway
    repetition, which the answer stops by itself (rag/qa/degenerate.py)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        letters = "abcdefghijklmnopqrstuvwxyz"
        while True:
            word = f"to{letters[self.sent // 26 % 26]}{letters[self.sent % 26]} "
            chunk = {"model": "fake", "choices": [{"index": 0, "delta": {"content": word}}]}
            self.sent += 1
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            await asyncio.sleep(self.interval)

    async def aclose(self) -> None:
        self.closed = True


def english_kb(client: TestClient, name: str = "product") -> str:
    kb = client.post("/v1/knowledge-bases", json={"name": name}).json()["id"]
    path = REPO / "data" / "samples" / "product-faq.md"
    doc = upload(client, kb, path.name, path.read_bytes()).json()
    assert wait_document(client, kb, doc["id"])["status"] == "ready"
    return kb


@contextmanager
def app_with(
    tmp_path: Path,
    script: ScriptedLLM,
    *,
    services: Callable[[Services], None] | None = None,
    database_url: str | None = None,
    **llm: Any,
) -> Iterator[tuple[TestClient, Services]]:
    """A TestClient on an app whose LLM is the script; llm: RAG_LLM__* overrides."""
    llm.setdefault("retry_backoff_s", 0.001)
    settings = make_settings(tmp_path / "data", database_url, llm=llm)
    svc = Services.create(settings, llm=LLMClient(settings.llm, transport=script.transport()))
    if services is not None:
        services(svc)
    try:
        with TestClient(create_app(services=svc)) as client:
            yield client, svc
    finally:
        svc.close()


def events(raw: str) -> list[tuple[str, Any]]:
    """SSE text -> [(event name, decoded data)]."""
    out = []
    for block in raw.strip().split("\n\n"):
        name, data = "message", ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        out.append((name, data if data == "[DONE]" else json.loads(data)))
    return out
