"""A live server for the `rag` command's tests: our app with its worker on a loopback port
(uvicorn in a thread, the fake embedder, the LLM faked at the transport), RAG_URL pointing at
it and RAG_DATA_DIR at its data directory, so client and local commands see the same service."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from rag.generation.llm import LLMClient
from rag.services import Services
from tests.conftest import FakeLLM, make_settings, serving


@dataclass
class LiveServer:
    url: str
    app: FastAPI
    services: Services
    llm: FakeLLM


@contextmanager
def live_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> Iterator[LiveServer]:
    fake = FakeLLM()
    config = make_settings(tmp_path / "data", llm={"max_retries": 0}, **settings)
    svc = Services.create(
        config, llm=LLMClient(config.llm, transport=httpx.MockTransport(fake.handler))
    )
    app = create_app(services=svc)
    try:
        with serving(app) as url:
            monkeypatch.setenv("RAG_URL", url)
            monkeypatch.setenv("RAG_DATA_DIR", str(config.data_dir))
            monkeypatch.setenv("RAG_EMBEDDING__MODEL", "fake:64")
            monkeypatch.delenv("RAG_API_KEY", raising=False)
            yield LiveServer(url, app, svc, fake)
    finally:
        svc.close()
