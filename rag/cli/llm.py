"""`rag llm serve`: start the model server the service talks to, and wait until it answers.

With a GPU and vllm installed (the `gpu` extra): `vllm serve` for RAG_LLM__SERVE_MODEL (default:
RAG_LLM__MODEL, Qwen/Qwen2.5-7B-Instruct) with the project's settings. Elsewhere: `transformers
serve` with the small local model (RAG_LLM__LOCAL_MODEL, from `rag models fetch`), the offline
profile. Either way it says which it chose and why (`plan_serve`). vLLM gets the longest context
up to 131,072 tokens that fits the GPU (`rag llm plan`, rag/generation/vram_plan.py); beyond
Qwen2.5's native 32,768 positions that turns on YaRN. `--backend llamacpp` serves the GGUF file
RAG_LLM__GGUF_MODEL with llama.cpp's server (the `llamacpp` extra): the CPU fallback route.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
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
from rag.generation import vram_plan

app = typer.Typer(
    help="The LLM server (vLLM, or transformers serve or llama.cpp without a GPU).",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class ServePlan:
    backend: str  # "vllm" | "transformers" | "llamacpp"
    reason: str
    argv: list[str]
    base_url: str
    model: str  # the name clients send as "model"
    max_model_len: int
    notes: tuple[str, ...] = ()  # how the context was fitted to the GPU (vram_plan)


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
    """--hf-overrides for a context beyond Qwen2.5's native one; None when not needed
    (rag/generation/vram_plan.py says why YaRN is on only then, and how vLLM takes it)."""
    try:
        return vram_plan.yarn_overrides(max_model_len, version)
    except ValueError as exc:
        raise ConfigError(f"RAG_LLM__MAX_MODEL_LEN={max_model_len}: {exc}") from exc


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


def fit_context(
    cfg: LLMSettings, gpu_memory: int, target: int | None
) -> tuple[LLMSettings, list[str]]:
    """cfg with the max-model-len and GPU memory utilisation vram_plan chooses for the served
    model, and its reasons; cfg unchanged when the model's config is unknown."""
    try:
        spec = vram_plan.load_spec(cfg.serve_model or cfg.model)
    except (ValueError, OSError) as exc:
        return cfg, [f"no memory estimate ({exc}); serving {cfg.max_model_len} tokens"]
    try:
        plan = vram_plan.plan_context(
            spec,
            gpu_memory,
            target=target or vram_plan.DEFAULT_TARGET,
            utilization=cfg.gpu_memory_utilization,
            tensor_parallel=cfg.tensor_parallel_size,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if not plan.max_model_len:
        raise ConfigError("; ".join(plan.why))
    fitted = cfg.model_copy(
        update={
            "max_model_len": plan.max_model_len,
            "gpu_memory_utilization": plan.gpu_memory_utilization,
        }
    )
    return fitted, plan.why


def plan_serve(
    cfg: LLMSettings,
    host: str,
    port: int,
    backend: str = "auto",
    *,
    vllm: str | None = None,
    gpus: int | None = None,
    version: tuple[int, ...] | None = None,
    gpu_memory: int | None = None,
    target: int | None = None,
) -> ServePlan:
    """Which server to start, and why: vLLM with a GPU and vllm installed (or when `backend`
    says so), else `transformers serve` with the local model. With `gpu_memory` (bytes per GPU)
    vLLM gets the longest context up to `target` (default 131,072) that fits (`fit_context`)."""
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
        notes: list[str] = []
        if gpu_memory is not None:
            cfg, notes = fit_context(cfg, gpu_memory, target)
        argv = vllm_argv(cfg, host, port, executable=vllm or "vllm", version=version)
        model, length = cfg.model, cfg.max_model_len
        return ServePlan("vllm", reason, argv, base_url, model, length, notes=tuple(notes))
    from rag.generation.local_server import served_model_name
    from rag.ml.offline_models import LOCAL_BUDGET_TOKENS

    if backend == "llamacpp":
        from rag.generation import llamacpp_server

        gguf = cfg.gguf_model.expanduser().resolve()
        budget = min(cfg.max_model_len, LOCAL_BUDGET_TOKENS)
        argv = [sys.executable, "-m", "rag.generation.llamacpp_server", "--model", str(gguf)]
        argv += ["--host", host, "--port", str(port), "--n-ctx", str(budget)]
        name = llamacpp_server.served_model_name(gguf)
        return ServePlan("llamacpp", reason, argv, base_url, name, budget)
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
    backend: Annotated[str, typer.Option(help="auto | vllm | transformers | llamacpp")] = "auto",
    timeout: Annotated[float, typer.Option(help="seconds to wait for /v1/models")] = 1800.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the command only")] = False,
) -> None:
    """Start vLLM (GPU) or transformers serve (CPU) and wait until /v1/models answers."""
    from rag.generation.local_server import LLMServerError, stop, wait_until_ready

    if backend not in ("auto", "vllm", "transformers", "llamacpp"):
        raise typer.BadParameter("--backend must be auto, vllm, transformers or llamacpp")
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
    # 128K where it fits: a length set on the command line or in the environment is the target.
    explicit = "max_model_len" in settings.llm.model_fields_set
    target = max_model_len or (settings.llm.max_model_len if explicit else None)
    plan = plan_serve(
        cfg,
        host,
        port,
        backend,
        vllm=vllm,
        version=vllm_version(),
        gpu_memory=vram_plan.gpu_memory_total(),
        target=target,
    )
    typer.echo(f"backend: {plan.backend} ({plan.reason})")
    for note in plan.notes:
        typer.echo(f"  {note}", err=note.startswith("WARNING"))
    typer.echo("command: " + shlex.join(plan.argv))
    if dry_run:
        return
    if plan.backend == "transformers" and not (cfg.local_model / "config.json").is_file():
        raise ConfigError(
            f"no local model at {cfg.local_model} (RAG_LLM__LOCAL_MODEL); run `rag models fetch`"
        )
    if plan.backend == "llamacpp":
        _check_llamacpp(cfg)
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


def _check_llamacpp(cfg: LLMSettings) -> None:
    """Fail before starting anything: llama-cpp-python missing, or no GGUF file."""
    from rag.generation import llamacpp_server

    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigError(llamacpp_server.INSTALL_HINT)
    try:
        llamacpp_server.check_gguf(cfg.gguf_model)
    except llamacpp_server.LLMServerError as exc:
        raise ConfigError(str(exc)) from exc


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


@app.command("plan")
def plan(
    model: Annotated[
        str | None,
        typer.Option(
            help="a local folder with config.json, or a known name (default: the served model)"
        ),
    ] = None,
    gpu_memory: Annotated[
        str | None, typer.Option(help="memory per GPU, e.g. 24GiB (default: nvidia-smi's)")
    ] = None,
    max_model_len: Annotated[
        int, typer.Option(help="the context to aim for")
    ] = vram_plan.DEFAULT_TARGET,
    gpu_memory_utilization: Annotated[float | None, typer.Option()] = None,
    max_utilization: Annotated[
        float, typer.Option(help="how far utilisation may be raised to fit the target")
    ] = 0.95,
    tensor_parallel_size: Annotated[int | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the plan as JSON")] = False,
) -> None:
    """Estimate weights, KV cache and activations on a GPU, and choose vLLM's max-model-len,
    YaRN factor and GPU memory utilisation."""
    cfg = load_settings().llm
    name = model or cfg.serve_model or cfg.model
    memory = vram_plan.parse_size(gpu_memory) if gpu_memory else vram_plan.gpu_memory_total()
    if memory is None:
        raise ConfigError("no GPU found (nvidia-smi): say its memory with --gpu-memory 24GiB")
    try:
        result = vram_plan.plan_context(
            vram_plan.load_spec(name),
            memory,
            target=max_model_len,
            utilization=gpu_memory_utilization or cfg.gpu_memory_utilization,
            max_utilization=max_utilization,
            tensor_parallel=tensor_parallel_size or cfg.tensor_parallel_size,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    for line in result.why:
        typer.echo(line, err=line.startswith("WARNING"))
    typer.echo(
        f"max-model-len {result.max_model_len}, gpu-memory-utilization "
        f"{result.gpu_memory_utilization:g}, YaRN factor "
        f"{'off' if result.yarn_factor is None else f'{result.yarn_factor:g}'}; the KV cache holds "
        f"{result.kv_tokens} tokens ({result.concurrent_full_contexts:.1f} full contexts at once)"
    )
