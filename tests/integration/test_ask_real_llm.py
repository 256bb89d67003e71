"""Ask through a real OpenAI-compatible server: `transformers serve` with SmolLM2-135M on CPU."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.core.config import Settings
from rag.generation.local_server import (
    served_model_name,
    start_transformers_serve,
    stop,
    wait_until_ready,
)
from rag.ml.offline_models import OfflineModels
from rag.services import Services
from tests.conftest import REPO, wait_document
from tests.integration.service_process import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def llm_url(
    offline_models: OfflineModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("llm") / "serve.log"
    proc = start_transformers_serve(offline_models.smollm2, port=port, log_file=log)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/v1", 300, proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(proc)


@pytest.fixture
def client(tmp_path: Path, offline_models: OfflineModels, llm_url: str) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "data",
        embedding={"model": str(offline_models.minilm)},  # type: ignore[arg-type]
        tokenizer={"path": offline_models.qwen_tiktoken},  # type: ignore[arg-type]
        llm={  # type: ignore[arg-type]
            "base_url": llm_url,
            "model": served_model_name(offline_models.smollm2),
            "max_model_len": 4096,
            "max_tokens": 48,
            "read_timeout_s": 300,
        },
    )
    svc = Services.create(settings)
    with TestClient(create_app(services=svc)) as c:
        yield c
    svc.close()


def _english_kb(client: TestClient) -> str:
    kb = client.post("/v1/knowledge-bases", json={"name": "product"}).json()["id"]
    path = REPO / "data" / "samples" / "product-faq.md"
    resp = client.post(
        f"/v1/knowledge-bases/{kb}/documents", files={"file": (path.name, path.read_bytes())}
    )
    assert wait_document(client, kb, resp.json()["id"])["status"] == "ready"
    return kb


def test_ask_returns_an_answer_with_citations(client: TestClient) -> None:
    kb = _english_kb(client)
    resp = client.post(
        f"/v1/knowledge-bases/{kb}/ask",
        json={"question": "How do I reset my access key?", "top_k": 3},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["answer"].strip()
    assert body["model"].startswith("local/SmolLM2-135M-Instruct")
    assert body["usage"]["completion_tokens"] > 0
    assert 1 <= len(body["citations"]) <= 3
    top = body["citations"][0]
    assert top["filename"] == "product-faq.md" and top["page"] == 1
    assert "Rotate" in " ".join(c["text"] for c in body["citations"])


def test_ask_streams_from_the_real_server(client: TestClient) -> None:
    kb = _english_kb(client)
    with client.stream(
        "POST",
        f"/v1/knowledge-bases/{kb}/ask",
        json={"question": "How is data encrypted?", "stream": True},
    ) as resp:
        assert resp.status_code == 200
        raw = "".join(resp.iter_text())
    events = [b.split("\n", 1) for b in raw.strip().split("\n\n")]
    names = [e[0].removeprefix("event: ") for e in events]
    assert names[0] == "delta" and names[-2:] == ["citations", "done"]
    text = "".join(json.loads(e[1][6:])["text"] for e in events if e[0] == "event: delta")
    assert text.strip()
    citations = json.loads(events[-2][1][6:])
    assert any("AES-256" in c["text"] for c in citations)
