"""Shared fixtures: a data dir in tmp_path, the fake embedder, the LLM faked at the transport,
and SQLite/PostgreSQL databases (PostgreSQL skipped with a reason where it is absent)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from rag.core.config import Settings
from rag.generation.llm import LLMClient
from rag.services import Services

FIXTURES = Path(__file__).parent / "fixtures"
FILES = FIXTURES / "files"
REPO = Path(__file__).parent.parent
POSTGRES_URL = os.environ.get(
    "RAG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_reason() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL not reachable at {POSTGRES_URL} ({exc.__class__.__name__})"
    return None


_PG_REASON: str | bool | None = False


def postgres_reason() -> str | None:
    global _PG_REASON
    if _PG_REASON is False:
        _PG_REASON = _postgres_reason()
    return _PG_REASON  # type: ignore[return-value]


REDIS_URL = os.environ.get("RAG_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_reason() -> str | None:
    """Why the Redis-backed tests cannot run here, or None when they can."""
    try:
        import redis
    except ImportError:
        return "the redis package is not installed (pip install -e '.[redis]')"
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        return f"no Redis at {REDIS_URL} ({exc}); set RAG_TEST_REDIS_URL"
    return None


@contextmanager
def postgres_schema(prefix: str = "t") -> Iterator[str]:
    """A URL to a fresh, empty PostgreSQL schema, dropped afterwards (skips without PostgreSQL)."""
    reason = postgres_reason()
    if reason:
        pytest.skip(reason)
    from bench.harness.cluster import postgres_schema as fresh_schema

    with fresh_schema(POSTGRES_URL, prefix) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each persistence test runs on SQLite and on PostgreSQL (in a schema of its own)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rag.db'}"
        return
    with postgres_schema() as url:
        yield url


def make_settings(data_dir: Path, database_url: str | None = None, **extra: Any) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        embedding={"model": "fake:64"},  # type: ignore[arg-type]
        ingest={"poll_interval_s": 0.05, "lease_s": 2.0, "parse_timeout_s": 60},  # type: ignore[arg-type]
        index_sync_interval_s=0.2,
        **extra,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


class FakeLLM:
    """An OpenAI-compatible upstream at the transport level; records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.reply = "根据资料 [1]，这是答案。"
        self.fail_with: int | Exception | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "fake"}]})
        body = json.loads(request.content)
        self.requests.append(body)
        if isinstance(self.fail_with, Exception):
            raise self.fail_with
        if isinstance(self.fail_with, int):
            return httpx.Response(self.fail_with, json={"error": "fake failure"})
        if body.get("stream"):
            words = [w + " " for w in self.reply.split(" ")]
            chunks = [
                "data: " + json.dumps({"choices": [{"delta": {"content": w}}]}) + "\n\n"
                for w in words
            ]
            return httpx.Response(
                200,
                content="".join(chunks) + "data: [DONE]\n\n",
                headers={"content-type": "text/event-stream"},
            )
        return httpx.Response(
            200,
            json={
                "model": body["model"],
                "choices": [
                    {
                        "message": {"role": "assistant", "content": self.reply},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
            },
        )


@pytest.fixture
def fake_llm() -> FakeLLM:
    return FakeLLM()


@pytest.fixture
def services(settings: Settings, fake_llm: FakeLLM) -> Iterator[Services]:
    llm = LLMClient(settings.llm, transport=httpx.MockTransport(fake_llm.handler))
    svc = Services.create(settings, llm=llm)
    yield svc
    svc.close()


@pytest.fixture
def db_services(tmp_path: Path, database_url: str) -> Iterator[Services]:
    """Services over SQLite and over PostgreSQL (parametrised by `database_url`)."""
    cfg = make_settings(tmp_path / "data", database_url)
    svc = Services.create(
        cfg, llm=LLMClient(cfg.llm, transport=httpx.MockTransport(FakeLLM().handler))
    )
    yield svc
    svc.close()


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=services)) as c:
        yield c


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port in a thread (real sockets, for what
    TestClient cannot show); yields its base URL and stops the server afterwards."""
    import threading

    import uvicorn

    from tests.integration.service_process import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def upload(client: TestClient, kb_id: str, name: str, content: bytes, **kw: Any) -> httpx.Response:
    return client.post(
        f"/v1/knowledge-bases/{kb_id}/documents", files={"file": (name, content)}, **kw
    )


def wait_document(client: TestClient, kb_id: str, doc_id: str, timeout: float = 60) -> dict:
    state: dict[str, Any] = {}

    def done() -> bool:
        state.update(client.get(f"/v1/knowledge-bases/{kb_id}/documents/{doc_id}").json())
        return state.get("status") in ("ready", "failed")

    wait_for(done, timeout)
    return state
