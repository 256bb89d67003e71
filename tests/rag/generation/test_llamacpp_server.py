"""`rag llm serve --backend llamacpp`: the llama.cpp server's command line, the GGUF checks, and
the messages when something is missing (no real server here: tests/integration does that)."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli.llm import plan_serve
from rag.cli.main import app
from rag.core.config import LLMSettings
from rag.generation import llamacpp_server
from rag.generation.llamacpp_server import (
    LLMServerError,
    check_gguf,
    llamacpp_argv,
    served_model_name,
    start_llamacpp_server,
)

runner = CliRunner()


def gguf(tmp_path: Path, name: str = "SmolLM2-135M-Instruct.Q4_1.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(56))
    return path


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_served_name_is_the_file_name() -> None:
    assert served_model_name(Path("/m/SmolLM2-135M-Instruct.Q4_1.gguf")) == (
        "gguf/SmolLM2-135M-Instruct.Q4_1"
    )
    assert served_model_name(Path("/m/my model (v2).gguf")) == "gguf/my-model-v2"


def test_command_line(tmp_path: Path) -> None:
    argv = llamacpp_argv(gguf(tmp_path), "0.0.0.0", 8081, n_ctx=4096, threads=2, python="py")
    assert argv[:3] == ["py", "-m", "llama_cpp.server"]
    assert flag(argv, "--model").endswith(".gguf") and flag(argv, "--port") == "8081"
    assert flag(argv, "--model_alias") == "gguf/SmolLM2-135M-Instruct.Q4_1"
    assert flag(argv, "--n_ctx") == "4096"
    assert flag(argv, "--n_threads") == flag(argv, "--n_threads_batch") == "2"


def test_gguf_files_are_checked(tmp_path: Path) -> None:
    assert check_gguf(gguf(tmp_path)) == (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf")
    with pytest.raises(LLMServerError, match="rag models fetch"):
        check_gguf(tmp_path / "missing.gguf")
    not_gguf = tmp_path / "model.safetensors"
    not_gguf.write_bytes(b"{}")
    with pytest.raises(LLMServerError, match="not a GGUF file"):
        check_gguf(not_gguf)


def test_plan_for_the_llamacpp_backend(tmp_path: Path) -> None:
    cfg = LLMSettings(gguf_model=gguf(tmp_path), max_model_len=32768)
    plan = plan_serve(cfg, "127.0.0.1", 8081, "llamacpp")
    assert plan.backend == "llamacpp" and plan.reason == "--backend llamacpp"
    assert plan.argv[:3] == [sys.executable, "-m", "rag.generation.llamacpp_server"]
    assert plan.model == "gguf/SmolLM2-135M-Instruct.Q4_1"
    assert plan.max_model_len == 4096 and flag(plan.argv, "--n-ctx") == "4096"
    assert plan.base_url == "http://127.0.0.1:8081/v1"


def test_cli_dry_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAG_LLM__GGUF_MODEL", str(gguf(tmp_path)))
    monkeypatch.setenv("RAG_LLM__BASE_URL", "http://127.0.0.1:8124/v1")
    result = runner.invoke(app, ["llm", "serve", "--backend", "llamacpp", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "backend: llamacpp (--backend llamacpp)" in result.output
    command = next(line for line in result.output.splitlines() if line.startswith("command: "))
    argv = shlex.split(command.removeprefix("command: "))
    assert flag(argv, "--port") == "8124" and flag(argv, "--model") == str(gguf(tmp_path))


def test_cli_says_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAG_LLM__GGUF_MODEL", str(tmp_path / "missing.gguf"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "llama_cpp" else real_find_spec(name, *a),
    )
    result = runner.invoke(app, ["llm", "serve", "--backend", "llamacpp"])
    assert result.exit_code != 0 and "rag models fetch" in str(result.exception)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    result = runner.invoke(app, ["llm", "serve", "--backend", "llamacpp"])
    assert result.exit_code != 0 and "pip install -e '.[llamacpp]'" in str(result.exception)


def test_starting_without_llama_cpp_python_fails_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(llamacpp_server.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(LLMServerError, match=r"\[llamacpp\]"):
        start_llamacpp_server(gguf(tmp_path), port=1)


def test_the_cli_accepts_only_known_backends() -> None:
    result = runner.invoke(app, ["llm", "serve", "--backend", "ollama", "--dry-run"])
    assert result.exit_code != 0 and "llamacpp" in result.output
