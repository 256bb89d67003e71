"""Fixtures for the web console's browser tests: Debian's Chromium driven by Playwright, and a
real HTTP server (uvicorn in a thread) whose LLM is a paced fake that streams a fixed answer.

Playwright's own browser downloads fail on these machines, so the tests launch the system's
Chromium (RAG_TEST_CHROMIUM, default /usr/bin/chromium) and skip, saying why, where it or the
playwright package is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from rag.core.config import Settings
from rag.generation.llm import LLMClient
from rag.services import Services
from tests.conftest import REPO
from tests.integration.service_process import free_port

CHROMIUM = Path(os.environ.get("RAG_TEST_CHROMIUM", "/usr/bin/chromium"))


def artifacts_dir() -> Path:
    """Screenshots go here (var/ is gitignored); CI may point RAG_TEST_ARTIFACTS elsewhere."""
    path = Path(os.environ.get("RAG_TEST_ARTIFACTS", REPO / "var" / "ui-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


class PacedTokens(httpx.AsyncByteStream):
    """An OpenAI-style SSE body sent one word at a time, `interval` seconds apart, so the
    browser sees the answer grow; it ends with `finish_reason` ("length": cut off)."""

    def __init__(self, text: str, model: str, interval: float, finish_reason: str = "stop") -> None:
        self.words = text.split(" ")
        self.model = model
        self.interval = interval
        self.finish_reason = finish_reason

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, word in enumerate(self.words):
            piece = word if i == len(self.words) - 1 else word + " "
            chunk = {"model": self.model, "choices": [{"index": 0, "delta": {"content": piece}}]}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            await asyncio.sleep(self.interval)
        last = {
            "model": self.model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": self.finish_reason}],
            "usage": {"prompt_tokens": 120, "completion_tokens": len(self.words)},
        }
        yield f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode()


class PacedLLM:
    """The upstream LLM at the httpx transport: every chat request gets `reply`, ending with
    `finish_reason` (a test may change both between questions)."""

    def __init__(self, reply: str, interval: float = 0.12) -> None:
        self.reply = reply
        self.finish_reason = "stop"
        self.interval = interval
        self.requests: list[dict[str, Any]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": "fake"}]})
        body = json.loads(request.content)
        self.requests.append(body)
        if body.get("stream"):
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                stream=PacedTokens(self.reply, body["model"], self.interval, self.finish_reason),
            )
        message = {"role": "assistant", "content": self.reply}
        return httpx.Response(
            200,
            json={
                "model": body["model"],
                "choices": [{"message": message, "finish_reason": self.finish_reason}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 9},
            },
        )


class LiveServer:
    """The real app on a real port, in this process (so its LLM can be a transport fake)."""

    def __init__(self, services: Services) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(services=services), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 60) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the console's test server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


ANSWER = "The descaling program runs for 42 minutes and uses one blue tablet [1]."
LLM_MODEL = "ui-test-llm"


@pytest.fixture(scope="module")
def paced_llm() -> PacedLLM:
    return PacedLLM(ANSWER)


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, paced_llm: PacedLLM
) -> Iterator[LiveServer]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("console") / "data",
        embedding={"model": "fake:256"},
        ingest={"poll_interval_s": 0.05, "lease_s": 2.0, "parse_timeout_s": 60},
        index_sync_interval_s=0.2,
        # Small chunks: each page of the test PDF becomes chunks of its own, so a citation's
        # page says exactly where the passage is.
        chunking={"chunk_tokens": 48},
        llm={"model": LLM_MODEL, "retry_backoff_s": 0.001},
    )
    services = Services.create(
        settings, llm=LLMClient(settings.llm, transport=httpx.MockTransport(paced_llm.handler))
    )
    server = LiveServer(services)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        services.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium) "
            "or set RAG_TEST_CHROMIUM; Playwright's own browser downloads are not used"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: pip install -e '.[dev]'")
    with sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()
