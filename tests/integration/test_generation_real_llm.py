"""Generation against a real OpenAI-compatible server, started the way operators start it:
`rag llm serve`, which on this machine (no GPU, no vllm) falls back to `transformers serve`
with SmolLM2-135M-Instruct. English questions over the R FAQ PDF; our API on a real socket;
/ask whole and streamed, and the official `openai` SDK as the client of /v1/chat/completions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import openai
import pytest
import uvicorn

from api.app import create_app
from rag.core.config import Settings
from rag.ml.offline_models import OfflineModels
from rag.services import Services
from tests.conftest import FILES, REPO, wait_for
from tests.integration.service_process import free_port
from tests.llm_script import events

pytestmark = pytest.mark.integration
MAX_TOKENS = 24  # SmolLM2 on two shared CPU cores: keep answers short


@pytest.fixture(scope="module")
def llm_serve(
    offline_models: OfflineModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, str]]:
    """`rag llm serve` as a process; yields (base_url, model name, its output so far)."""
    port = free_port()
    log = tmp_path_factory.mktemp("llm-serve") / "out.log"
    env = {
        **os.environ,
        "RAG_LLM__LOCAL_MODEL": str(offline_models.smollm2),
        "RAG_LLM__BASE_URL": f"http://127.0.0.1:{port}/v1",
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "llm", "serve"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: "ready:" in log.read_text() or proc.poll() is not None, timeout=300)
        text = log.read_text()
        assert proc.poll() is None, text[-3000:]
        model = next(
            line.split("RAG_LLM__MODEL=")[1].split()[0]
            for line in text.splitlines()
            if "RAG_LLM__MODEL=" in line
        )
        yield f"http://127.0.0.1:{port}/v1", model, text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own group: takes transformers serve along
        proc.wait(60)


def test_llm_serve_falls_back_to_transformers_and_says_so(
    llm_serve: tuple[str, str, str],
) -> None:
    base_url, model, output = llm_serve
    assert "backend: transformers (" in output
    assert "vllm is not installed" in output or "no GPU" in output
    assert f"ready: {base_url} serves 'local/SmolLM2-135M-Instruct'" in output
    assert model == "local/SmolLM2-135M-Instruct"
    ids = [m["id"] for m in httpx.get(f"{base_url}/models", timeout=10).json()["data"]]
    assert model in ids


@pytest.fixture(scope="module")
def service(
    llm_serve: tuple[str, str, str],
    offline_models: OfflineModels,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    """Our API on a loopback port with the R FAQ ingested; yields (url, kb id)."""
    base_url, model, _ = llm_serve
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        embedding={"model": str(offline_models.minilm)},  # type: ignore[arg-type]
        tokenizer={"path": offline_models.qwen_tiktoken},  # type: ignore[arg-type]
        llm={  # type: ignore[arg-type]
            "base_url": base_url,
            "model": model,
            "max_model_len": 4096,
            "max_tokens": MAX_TOKENS,
            "condense_max_tokens": 32,
            "read_timeout_s": 300,
        },
    )
    svc = Services.create(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(services=svc), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=120)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            kb = http.post("/v1/knowledge-bases", json={"name": "r-faq"}).json()["id"]
            pdf = FILES / "R-FAQ.pdf"
            doc = http.post(
                f"/v1/knowledge-bases/{kb}/documents", files={"file": (pdf.name, pdf.read_bytes())}
            ).json()

            def ready() -> bool:
                status = http.get(f"/v1/knowledge-bases/{kb}/documents/{doc['id']}").json()
                assert status["status"] != "failed", status
                return bool(status["status"] == "ready")

            wait_for(ready, timeout=300, interval=0.5)
        yield url, kb
    finally:
        server.should_exit = True
        thread.join(60)
        svc.close()


def _check_citations(citations: list[dict]) -> None:
    assert citations and all(c["filename"] == "R-FAQ.pdf" for c in citations)
    assert all(1 <= c["page"] <= 52 for c in citations)
    assert [c["index"] for c in citations] == list(range(1, len(citations) + 1))


def test_ask_whole_answer(service: tuple[str, str]) -> None:
    url, kb = service
    resp = httpx.post(
        f"{url}/v1/knowledge-bases/{kb}/ask",
        json={"question": "What is R?", "top_k": 3},
        timeout=300,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["answer"].strip()
    assert body["model"].startswith("local/SmolLM2-135M-Instruct") and body["route"] == "default"
    assert 0 < body["usage"]["completion_tokens"] <= MAX_TOKENS
    assert body["usage"]["prompt_tokens"] > 100
    _check_citations(body["citations"])


def test_ask_streamed(service: tuple[str, str]) -> None:
    url, kb = service
    with httpx.stream(
        "POST",
        f"{url}/v1/knowledge-bases/{kb}/ask",
        json={"question": "How can R be obtained?", "top_k": 3, "stream": True},
        timeout=300,
    ) as resp:
        assert resp.status_code == 200
        got = events("".join(resp.iter_text()))
    names = [name for name, _ in got]
    assert names[0] == "delta" and names[-2:] == ["citations", "done"], names
    assert set(names[:-2]) == {"delta"}
    assert "".join(data["text"] for name, data in got if name == "delta").strip()
    _check_citations(got[-2][1])
    assert got[-1][1]["usage"]["completion_tokens"] > 0  # usage came in the last chunk


def test_openai_sdk_whole_and_streamed(service: tuple[str, str]) -> None:
    url, _ = service
    # The SDK always sends a key, and none is valid until one exists: make one. That ends open
    # mode, so this test stays the module's last.
    made = httpx.post(f"{url}/v1/keys", json={"name": "sdk", "scopes": ["query"]}, timeout=60)
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=key, timeout=300, max_retries=0)
    assert "kb:r-faq" in [m.id for m in sdk.models.list()]

    completion = sdk.chat.completions.create(
        model="kb:r-faq",
        messages=[{"role": "user", "content": "What machines does R run on?"}],
        max_tokens=MAX_TOKENS,
    )
    assert (completion.choices[0].message.content or "").strip()
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    _check_citations((completion.model_extra or {})["citations"])
    assert (completion.model_extra or {})["answered_by"].startswith("local/SmolLM2")

    stream = sdk.chat.completions.create(
        model="kb:r-faq",
        messages=[
            {"role": "user", "content": "What is R?"},
            {"role": "assistant", "content": "R is a language for statistics."},
            {"role": "user", "content": "Where can I download it?"},  # condensed first
        ],
        max_tokens=MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert final, [c.model_dump() for c in chunks[-3:]]
    _check_citations((final[-1].model_extra or {})["citations"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    json.dumps([c.model_dump() for c in chunks])  # plain data all the way
