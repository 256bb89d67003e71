"""Failover with real processes: the primary (`transformers serve`, SmolLM2-135M) is killed and
restarted while llama.cpp's server (llama-cpp-python, the same model as GGUF) stands by as the
default route's fallback; and the upstream contract checked against the real llama.cpp server.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.core.config import LLMSettings, Settings
from rag.generation import structured
from rag.generation.llamacpp_server import served_model_name as gguf_name
from rag.generation.llamacpp_server import start_llamacpp_server
from rag.generation.llm import LLMClient
from rag.generation.local_server import (
    ServerProcess,
    served_model_name,
    start_transformers_serve,
    stop,
    wait_until_ready,
)
from rag.ml.offline_models import OfflineModels
from rag.services import Services
from tests.conftest import REPO, wait_document
from tests.integration.service_process import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python is not installed (pip install -e '.[llamacpp]')",
    ),
]
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


@pytest.fixture(scope="module")
def fallback_url(
    offline_models: OfflineModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    proc = start_llamacpp_server(offline_models.smollm2_gguf, port=port, log_file=log, n_ctx=4096)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_ready(url, 120, proc)
        yield url
    finally:
        stop(proc)


def start_primary(models: OfflineModels, port: int, log: Path) -> ServerProcess:
    proc = start_transformers_serve(models.smollm2, port=port, log_file=log)
    wait_until_ready(f"http://127.0.0.1:{port}/v1", 300, proc)
    return proc


def ask(client: TestClient, kb: str, question: str, **extra: Any) -> dict[str, Any]:
    resp = client.post(
        f"/v1/knowledge-bases/{kb}/ask", json={"question": question, "top_k": 2, **extra}
    )
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_the_fallback_answers_while_the_primary_is_down_and_the_primary_returns(
    tmp_path: Path, offline_models: OfflineModels, fallback_url: str
) -> None:
    port = free_port()
    primary_url = f"http://127.0.0.1:{port}/v1"
    primary = start_primary(offline_models, port, tmp_path / "primary-1.log")
    cpu = {
        "name": "cpu",
        "model": gguf_name(offline_models.smollm2_gguf),
        "base_url": fallback_url,
        "max_model_len": 4096,
    }
    settings = Settings(
        data_dir=tmp_path / "data",
        embedding={"model": str(offline_models.minilm)},  # type: ignore[arg-type]
        tokenizer={"path": offline_models.qwen_tiktoken},  # type: ignore[arg-type]
        cache={"enabled": False},  # type: ignore[arg-type]
        llm={  # type: ignore[arg-type]
            "base_url": primary_url,
            "model": served_model_name(offline_models.smollm2),
            "max_model_len": 4096,
            "max_tokens": 24,
            "read_timeout_s": 300,
            "max_retries": 0,
            "health_interval_s": 1.0,
            "fallback": "cpu",
            "routes": [cpu],
        },
    )
    svc = Services.create(settings)
    try:
        with TestClient(create_app(services=svc)) as client:
            kb = client.post("/v1/knowledge-bases", json={"name": "product"}).json()["id"]
            path = REPO / "data" / "samples" / "product-faq.md"
            doc = client.post(
                f"/v1/knowledge-bases/{kb}/documents",
                files={"file": (path.name, path.read_bytes())},
            ).json()
            assert wait_document(client, kb, doc["id"])["status"] == "ready"

            up = ask(client, kb, "How do I reset my access key?")
            assert up["route"] == "default" and up["fallback_from"] is None
            assert up["model"].startswith("local/SmolLM2-135M-Instruct")

            stop(primary)  # killed: the next call cannot connect and fails over at once
            down = ask(client, kb, "How is data encrypted?")
            assert down["route"] == "cpu" and down["fallback_from"] == "default"
            assert down["model"] == cpu["model"] and down["answer"].strip()
            streamed = client.post(
                f"/v1/knowledge-bases/{kb}/ask",
                json={"question": "How is data encrypted?", "stream": True, "top_k": 2},
            )
            done = json.loads(streamed.text.strip().split("\n\n")[-1].split("data: ", 1)[1])
            assert done["route"] == "cpu" and done["fallback_from"] == "default"

            primary = start_primary(offline_models, port, tmp_path / "primary-2.log")
            router = svc.router
            deadline = time.monotonic() + 30
            while router.available(router.default).name != "default":  # the next health check
                assert time.monotonic() < deadline, "the primary never came back"
                time.sleep(0.2)
            back = ask(client, kb, "How do I reset my access key?")
            assert back["route"] == "default" and back["fallback_from"] is None
            assert back["model"].startswith("local/SmolLM2-135M-Instruct")
    finally:
        svc.close()
        stop(primary)


def test_the_real_llamacpp_server_keeps_the_upstream_contract(
    offline_models: OfflineModels, fallback_url: str
) -> None:
    name = gguf_name(offline_models.smollm2_gguf)
    client = LLMClient(LLMSettings(base_url=fallback_url, model=name, max_tokens=32))
    assert client.ping() and (client.model_info() or {})["id"] == name
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    fmt = structured.check_format(
        {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}
    )

    async def exercise() -> None:
        whole = await client.complete(messages)
        assert whole.text.strip() and whole.model == name and whole.usage["completion_tokens"]
        stream = await client.stream(messages)
        text = "".join([d async for d in stream.deltas()])
        assert text.strip() and stream.finish_reason in ("stop", "length")
        # json_schema is refused (a 500) and sent again as json_object + schema: a grammar.
        shaped = await client.complete(messages, response_format=fmt, max_tokens=64)
        assert isinstance(structured.parse(shaped.text, fmt or {})["answer"], str)

    try:
        asyncio.run(exercise())
    finally:
        client.close()
