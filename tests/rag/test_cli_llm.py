"""`rag llm serve`: the vLLM command line (built without vllm) and the choice of backend."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli.llm import plan_serve, vllm_argv
from rag.cli.main import app
from rag.core.config import LLMSettings
from rag.core.errors import ConfigError

runner = CliRunner()


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_vllm_command_with_the_project_settings() -> None:
    cfg = LLMSettings(gpu_memory_utilization=0.85, tensor_parallel_size=2)
    argv = vllm_argv(cfg, "0.0.0.0", 8001, executable="/opt/venv/bin/vllm")
    assert argv[:3] == ["/opt/venv/bin/vllm", "serve", "Qwen/Qwen2.5-7B-Instruct"]
    assert flag(argv, "--served-model-name") == "Qwen/Qwen2.5-7B-Instruct"
    assert flag(argv, "--host") == "0.0.0.0" and flag(argv, "--port") == "8001"
    assert flag(argv, "--max-model-len") == "32768"
    assert "--enable-prefix-caching" in argv
    assert flag(argv, "--gpu-memory-utilization") == "0.85"
    assert flag(argv, "--tensor-parallel-size") == "2"
    assert "--hf-overrides" not in argv and "--rope-scaling" not in argv  # YaRN off at 32K


@pytest.mark.parametrize("version", [None, (0, 12, 0), (0, 15, 1)])
def test_128k_turns_on_yarn_the_way_current_vllm_takes_it(version: tuple[int, ...] | None) -> None:
    argv = vllm_argv(LLMSettings(max_model_len=131072), "127.0.0.1", 8000, version=version)
    assert flag(argv, "--max-model-len") == "131072"
    rope = json.loads(flag(argv, "--hf-overrides"))["rope_parameters"]
    assert rope["rope_type"] == "yarn" and rope["factor"] == 4.0
    assert rope["original_max_position_embeddings"] == 32768 and rope["rope_theta"] == 1e6


def test_older_vllm_gets_rope_scaling_through_hf_overrides() -> None:
    argv = vllm_argv(LLMSettings(max_model_len=65536), "127.0.0.1", 8000, version=(0, 8, 5))
    rope = json.loads(flag(argv, "--hf-overrides"))["rope_scaling"]
    assert rope == {
        "rope_type": "yarn",
        "type": "yarn",
        "factor": 2.0,
        "original_max_position_embeddings": 32768,
    }


def test_beyond_128k_is_refused() -> None:
    with pytest.raises(ConfigError, match="131072"):
        vllm_argv(LLMSettings(max_model_len=262144), "127.0.0.1", 8000)


def test_weights_and_served_name_can_differ() -> None:
    cfg = LLMSettings(serve_model="/models/qwen2.5-7b-awq", model="qwen")
    argv = vllm_argv(cfg, "127.0.0.1", 8000)
    assert argv[2] == "/models/qwen2.5-7b-awq" and flag(argv, "--served-model-name") == "qwen"


@pytest.mark.parametrize(
    ("vllm", "gpus", "backend", "why"),
    [
        (None, 1, "transformers", "vllm is not installed"),
        ("/usr/bin/vllm", 0, "transformers", "no GPU"),
        ("/usr/bin/vllm", 2, "vllm", "2 GPU(s)"),
    ],
)
def test_backend_choice(
    vllm: str | None, gpus: int, backend: str, why: str, tmp_path: Path
) -> None:
    cfg = LLMSettings(local_model=tmp_path / "SmolLM2-135M-Instruct")
    plan = plan_serve(cfg, "127.0.0.1", 8000, vllm=vllm, gpus=gpus)
    assert plan.backend == backend and why in plan.reason
    assert plan.base_url == "http://127.0.0.1:8000/v1"
    if backend == "transformers":
        assert plan.argv[1:3] == ["-m", "rag.generation.local_server"]
        assert plan.model == "local/SmolLM2-135M-Instruct" and plan.max_model_len == 4096
    else:
        assert plan.argv[0] == "/usr/bin/vllm" and plan.model == "Qwen/Qwen2.5-7B-Instruct"


def test_cli_dry_run_prints_a_runnable_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_LLM__MAX_MODEL_LEN", "131072")
    monkeypatch.setenv("RAG_LLM__BASE_URL", "http://127.0.0.1:8123/v1")
    result = runner.invoke(app, ["llm", "serve", "--backend", "vllm", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "backend: vllm" in result.output
    command = next(line for line in result.output.splitlines() if line.startswith("command: "))
    argv = shlex.split(command.removeprefix("command: "))
    assert flag(argv, "--port") == "8123"
    assert json.loads(flag(argv, "--hf-overrides"))["rope_parameters"]["factor"] == 4.0


def test_cli_without_a_local_model_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAG_LLM__LOCAL_MODEL", str(tmp_path / "missing"))
    result = runner.invoke(app, ["llm", "serve", "--backend", "transformers"])
    assert result.exit_code != 0
    assert "rag models fetch" in str(result.exception) + result.output
