"""The VRAM estimator: weights, KV cache and headroom against GPU memory decide vLLM's context,
YaRN factor and utilisation (`rag llm plan`, `rag llm serve`, the compose launcher)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli.llm import plan_serve
from rag.cli.main import app
from rag.core.config import LLMSettings
from rag.generation import vram_plan
from rag.generation.vram_plan import GIB, launch_argv, load_spec, parse_size, plan_context

QWEN = "Qwen/Qwen2.5-7B-Instruct"
runner = CliRunner()


def test_qwen25_7b_figures_come_from_its_config() -> None:
    spec = load_spec(QWEN)
    assert spec.parameters == pytest.approx(7.62e9, rel=0.005)  # the model card says 7.61B
    assert spec.weight_bytes / GIB == pytest.approx(14.2, abs=0.05)
    assert spec.kv_bytes_per_token() == 2 * 28 * 4 * 128 * 2 == 57344  # 56 KiB
    assert spec.kv_bytes_per_token() * 131072 / GIB == pytest.approx(7.0)
    assert spec.native_context == 32768


@pytest.mark.parametrize("memory", ["24GiB", "48GiB", "80GiB"])
def test_32k_fits_every_card_without_yarn(memory: str) -> None:
    plan = plan_context(load_spec(QWEN), parse_size(memory), target=32768)
    assert plan.fits_target and plan.max_model_len == 32768
    assert plan.yarn_factor is None and plan.gpu_memory_utilization == 0.90
    assert plan.kv_tokens >= 32768


@pytest.mark.parametrize(("memory", "sequences"), [("48GiB", 3.5), ("80GiB", 7.5)])
def test_128k_fits_48_and_80_gb_with_yarn_factor_4(memory: str, sequences: float) -> None:
    plan = plan_context(load_spec(QWEN), parse_size(memory), target=131072)
    assert plan.fits_target and plan.max_model_len == 131072
    assert plan.yarn_factor == 4.0 and plan.gpu_memory_utilization == 0.90
    assert plan.concurrent_full_contexts > sequences
    assert not any(line.startswith("WARNING") for line in plan.why)


def test_128k_does_not_fit_24_gb_and_the_plan_says_why() -> None:
    """14.2 GiB of weights plus 7 GiB of KV cache and the headroom exceed 0.95 x 24 GiB."""
    plan = plan_context(load_spec(QWEN), parse_size("24GiB"), target=131072)
    assert not plan.fits_target
    assert plan.max_model_len == 98304 and plan.yarn_factor == 3.0
    assert plan.gpu_memory_utilization == 0.90
    assert plan.kv_tokens >= plan.max_model_len  # vLLM's own start-up test passes
    warning = next(line for line in plan.why if line.startswith("WARNING"))
    assert "131072" in warning and "7.0 GiB" in warning
    print("\n".join(plan.why))


def test_utilisation_is_raised_only_as_far_as_the_target_needs() -> None:
    spec = load_spec(QWEN)
    need = spec.weight_bytes + spec.activation_bytes() + vram_plan.RUNTIME_OVERHEAD
    need += spec.kv_bytes_per_token() * 131072
    memory = int(need / 0.925)  # fits at 0.93, not at 0.92
    plan = plan_context(spec, memory, target=131072)
    assert plan.fits_target and plan.gpu_memory_utilization == 0.93
    assert any("raised from 0.9" in line for line in plan.why)


def test_tensor_parallel_splits_weights_and_cache() -> None:
    one = plan_context(load_spec(QWEN), parse_size("24GiB"), target=131072)
    two = plan_context(load_spec(QWEN), parse_size("24GiB"), target=131072, tensor_parallel=2)
    assert two.weights == one.weights // 2 and two.kv_per_token == one.kv_per_token // 2
    assert two.fits_target and two.max_model_len == 131072


def test_a_local_config_folder_is_read(tmp_path: Path) -> None:
    config = dict(vram_plan.KNOWN_CONFIGS[QWEN], num_key_value_heads=28)  # no GQA
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 15_231_233_024}})
    )
    spec = load_spec(str(tmp_path))
    assert spec.kv_bytes_per_token() == 7 * 57344 and spec.weight_bytes == 15_231_233_024


def test_unknown_models_and_impossible_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="not a known model"):
        load_spec("acme/unknown-13b")
    with pytest.raises(ValueError, match="131072"):
        plan_context(load_spec(QWEN), parse_size("80GiB"), target=262144)
    with pytest.raises(ValueError, match="memory size"):
        parse_size("lots")
    tiny = plan_context(load_spec(QWEN), parse_size("12GiB"), target=32768)
    assert tiny.max_model_len == 0 and "not even" in tiny.why[-1]


def test_sizes() -> None:
    assert parse_size("24GiB") == parse_size("24G") == 24 * GIB
    assert parse_size("24GB") == 24 * 10**9
    assert parse_size("24576MiB") == 24 * GIB


def test_llm_plan_command_explains_its_choice() -> None:
    result = runner.invoke(app, ["llm", "plan", "--gpu-memory", "24GiB", "--model", QWEN])
    assert result.exit_code == 0, result.output
    assert "WARNING: 131072 tokens do not fit" in result.output
    assert "max-model-len 98304, gpu-memory-utilization 0.9, YaRN factor 3" in result.output
    result = runner.invoke(app, ["llm", "plan", "--gpu-memory", "80GiB", "--model", QWEN, "--json"])
    data = json.loads(result.output)
    assert data["max_model_len"] == 131072 and data["yarn_factor"] == 4.0


def test_serve_fits_the_context_to_the_gpu() -> None:
    on_24 = plan_serve(
        LLMSettings(), "127.0.0.1", 8000, "vllm", gpu_memory=parse_size("24GiB"), version=(0, 12)
    )
    argv = on_24.argv
    assert argv[argv.index("--max-model-len") + 1] == "98304" and on_24.max_model_len == 98304
    rope = json.loads(argv[argv.index("--hf-overrides") + 1])["rope_parameters"]
    assert rope["factor"] == 3.0
    assert any(note.startswith("WARNING") for note in on_24.notes)
    asked = plan_serve(LLMSettings(), "127.0.0.1", 8000, "vllm", gpu_memory=80 * GIB, target=32768)
    assert asked.max_model_len == 32768 and "--hf-overrides" not in asked.argv
    unknown = plan_serve(LLMSettings(), "127.0.0.1", 8000, "vllm")  # no GPU size: as configured
    assert unknown.max_model_len == 32768 and unknown.notes == ()


def test_compose_launcher_keeps_what_fits_and_warns_otherwise() -> None:
    args = ["--model", QWEN, "--max-model-len", "131072", "--gpu-memory-utilization", "0.90"]
    argv, notes = launch_argv(args, 80 * GIB, (0, 11, 0))
    assert argv[argv.index("--max-model-len") + 1] == "131072"
    rope = json.loads(argv[argv.index("--hf-overrides") + 1])["rope_scaling"]  # vLLM 0.11
    assert rope["factor"] == 4.0 and rope["type"] == "yarn"
    argv, notes = launch_argv(args, 24 * GIB, (0, 11, 0))
    assert argv[argv.index("--max-model-len") + 1] == "98304"
    assert any(line.startswith("WARNING") for line in notes)
    argv, notes = launch_argv(["--model", "/models/other", *args[2:]], None, None)
    assert argv[argv.index("--max-model-len") + 1] == "131072"
    assert "as asked" in notes[0]


def test_the_launcher_execs_vllms_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KBQA_GPU_MEMORY", "48GiB")
    vram_plan.main(["--dry-run", "--", "--model", QWEN, "--max-model-len", "131072"])
    command = json.loads(capsys.readouterr().out)
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--max-model-len") + 1] == "131072"
