"""`rag llm serve`: start the model server the service talks to, and wait until it answers.

With a GPU and vllm installed (the `gpu` extra): `vllm serve` for RAG_LLM__SERVE_MODEL (default:
RAG_LLM__MODEL, Qwen/Qwen2.5-7B-Instruct) with the project's settings. Elsewhere: `transformers
serve` with the small local model (RAG_LLM__LOCAL_MODEL, from `rag models fetch`), the offline
profile. Either way it says which it chose and why (`plan_serve`). A context beyond Qwen2.5's
native 32,768 positions turns on YaRN (`yarn_overrides` says why only then).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from rag.core.config import LLMSettings, load_settings
from rag.core.errors import ConfigError

app = typer.Typer(
    help="The LLM server (vLLM, or transformers serve without a GPU).", no_args_is_help=True
)

NATIVE_CONTEXT = 32768  # Qwen2.5's original_max_position_embeddings
MAX_YARN_FACTOR = 4.0  # Qwen2.5 is validated up to 131,072 tokens with YaRN
QWEN25_ROPE_THETA = 1_000_000.0
ROPE_PARAMETERS_SINCE = (0, 12)


@dataclass(frozen=True)
class ServePlan:
    backend: str  # "vllm" | "transformers"
    reason: str
    argv: list[str]
    base_url: str
    model: str  # the name clients send as "model"
    max_model_len: int


def vllm_version() -> tuple[int, ...] | None:
    try:
        version = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def find_vllm() -> str | None:
    local = Path(sys.executable).parent / "vllm"
    return str(local) if local.is_file() else shutil.which("vllm")


def gpu_count() -> int:
    """NVIDIA GPUs that nvidia-smi lists (0 without the driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def yarn_overrides(max_model_len: int, version: tuple[int, ...] | None) -> dict[str, Any] | None:
    """--hf-overrides for a context beyond Qwen2.5's native one; None when not needed.

    Qwen2.5 is trained for 32,768 positions. Beyond that vLLM needs YaRN rope scaling (factor =
    length / 32768, so 4 at 131,072), which we turn on only then: vLLM's YaRN is static, it
    scales every prompt, short ones included, and that costs quality on the short prompts most
    questions produce. vLLM removed `--rope-scaling` in 0.11.1 (vllm#28006) and moved to
    transformers v5's `rope_parameters` key (vllm#28542; its docs pass YaRN as
    `--hf-overrides '{"rope_parameters": {...}}'`); older versions take `rope_scaling` there.
    """
    if max_model_len <= NATIVE_CONTEXT:
        return None
    factor = max_model_len / NATIVE_CONTEXT
    if factor > MAX_YARN_FACTOR:
        raise ConfigError(
            f"RAG_LLM__MAX_MODEL_LEN={max_model_len} needs YaRN factor {factor:g}; Qwen2.5 "
            f"supports at most {int(NATIVE_CONTEXT * MAX_YARN_FACTOR)} tokens (factor 4)"
        )
    yarn = {
        "rope_type": "yarn",
        "factor": factor,
        "original_max_position_embeddings": NATIVE_CONTEXT,
    }
    if version is None or version >= ROPE_PARAMETERS_SINCE:
        return {"rope_parameters": {**yarn, "rope_theta": QWEN25_ROPE_THETA}}
    return {"rope_scaling": {**yarn, "type": "yarn"}}  # "type": what vLLM < 0.6.4 reads


def vllm_argv(
    cfg: LLMSettings,
    host: str,
    port: int,
    *,
    executable: str = "vllm",
    version: tuple[int, ...] | None = None,
) -> list[str]:
    argv = [executable, "serve", cfg.serve_model or cfg.model]
    argv += ["--served-model-name", cfg.model, "--host", host, "--port", str(port)]
    argv += ["--max-model-len", str(cfg.max_model_len), "--enable-prefix-caching"]
    argv += ["--gpu-memory-utilization", f"{cfg.gpu_memory_utilization:g}"]
    argv += ["--tensor-parallel-size", str(cfg.tensor_parallel_size)]
    overrides = yarn_overrides(cfg.max_model_len, version)
    if overrides is not None:
        argv += ["--hf-overrides", json.dumps(overrides, separators=(",", ":"))]
    return argv


def plan_serve(
    cfg: LLMSettings,
    host: str,
    port: int,
    backend: str = "auto",
    *,
    vllm: str | None = None,
    gpus: int | None = None,
    version: tuple[int, ...] | None = None,
) -> ServePlan:
    """Which server to start, and why: vLLM with a GPU and vllm installed (or when `backend`
    says so), else `transformers serve` with the local model."""
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/v1"
    if backend == "auto":
        gpus = gpu_count() if gpus is None else gpus
        if vllm is None:
            backend, reason = "transformers", "vllm is not installed (pip install -e '.[gpu]')"
        elif gpus == 0:
            backend, reason = "transformers", "no GPU found (nvidia-smi lists none)"
        else:
            backend, reason = "vllm", f"{gpus} GPU(s) and vllm found"
    else:
        reason = f"--backend {backend}"
    if backend == "vllm":
        argv = vllm_argv(cfg, host, port, executable=vllm or "vllm", version=version)
        return ServePlan("vllm", reason, argv, base_url, cfg.model, cfg.max_model_len)
    from rag.generation.local_server import served_model_name
    from rag.ml.offline_models import LOCAL_BUDGET_TOKENS

    folder = cfg.local_model.expanduser().resolve()
    argv = [sys.executable, "-m", "rag.generation.local_server", "--model-dir", str(folder)]
    argv += ["--host", host, "--port", str(port)]
    budget = min(cfg.max_model_len, LOCAL_BUDGET_TOKENS)
    return ServePlan("transformers", reason, argv, base_url, served_model_name(folder), budget)


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="default: the host of RAG_LLM__BASE_URL")] = None,
    port: Annotated[int | None, typer.Option(help="default: the port of RAG_LLM__BASE_URL")] = None,
    max_model_len: Annotated[int | None, typer.Option(help="RAG_LLM__MAX_MODEL_LEN")] = None,
    gpu_memory_utilization: Annotated[float | None, typer.Option()] = None,
    tensor_parallel_size: Annotated[int | None, typer.Option()] = None,
    backend: Annotated[str, typer.Option(help="auto | vllm | transformers")] = "auto",
    timeout: Annotated[float, typer.Option(help="seconds to wait for /v1/models")] = 1800.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the command only")] = False,
) -> None:
    """Start vLLM (GPU) or transformers serve (CPU) and wait until /v1/models answers."""
    from rag.generation.local_server import LLMServerError, stop, wait_until_ready

    if backend not in ("auto", "vllm", "transformers"):
        raise typer.BadParameter("--backend must be auto, vllm or transformers")
    settings = load_settings()
    changes = {
        "max_model_len": max_model_len,
        "gpu_memory_utilization": gpu_memory_utilization,
        "tensor_parallel_size": tensor_parallel_size,
    }
    cfg = LLMSettings.model_validate(
        {**settings.llm.model_dump(), **{k: v for k, v in changes.items() if v is not None}}
    )
    url = urlsplit(cfg.base_url)
    host = host or url.hostname or "127.0.0.1"
    port = port or url.port or 8000
    vllm = find_vllm()
    if backend == "vllm" and vllm is None and not dry_run:
        raise ConfigError("vllm is not installed: pip install -e '.[gpu]' on a GPU host")
    plan = plan_serve(cfg, host, port, backend, vllm=vllm, version=vllm_version())
    typer.echo(f"backend: {plan.backend} ({plan.reason})")
    typer.echo("command: " + shlex.join(plan.argv))
    if dry_run:
        return
    if plan.backend == "transformers" and not (cfg.local_model / "config.json").is_file():
        raise ConfigError(
            f"no local model at {cfg.local_model} (RAG_LLM__LOCAL_MODEL); run `rag models fetch`"
        )
    proc = subprocess.Popen(plan.argv, start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        wait_until_ready(plan.base_url, timeout, proc)
        served = _served_max_model_len(plan) or plan.max_model_len
        typer.echo(
            f"ready: {plan.base_url} serves {plan.model!r} with a {served}-token context "
            f"({plan.backend})"
        )
        typer.echo(
            f"  RAG_LLM__BASE_URL={plan.base_url} RAG_LLM__MODEL={plan.model} "
            f"RAG_LLM__MAX_MODEL_LEN={served}"
        )
        raise typer.Exit(proc.wait())
    except LLMServerError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        if proc.poll() is None:
            stop(proc, timeout_s=30.0)


def _served_max_model_len(plan: ServePlan) -> int | None:
    """vLLM reports the length it actually serves in /v1/models."""
    from rag.generation.llm import LLMClient

    client = LLMClient(LLMSettings(base_url=plan.base_url, model=plan.model))
    try:
        info = client.model_info() or {}
    finally:
        client.close()
    value = info.get("max_model_len")
    return value if isinstance(value, int) else None
