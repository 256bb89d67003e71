"""How long a context a GPU can serve: weights, KV cache and headroom against GPU memory.

`plan_context` chooses vLLM's --max-model-len, the YaRN factor and --gpu-memory-utilization
for a model config and a GPU, and says why (`rag llm plan`, `rag llm serve`). Standard library
only: docker-compose.yml runs this file as the vLLM container's launcher (`main`), where the
kbqa package is not installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GIB = 1024**3
DEFAULT_TARGET = 131072  # 128K: Qwen2.5's validated YaRN limit (factor 4 over 32,768)
NATIVE_CONTEXT = 32768  # Qwen2.5's original_max_position_embeddings
MAX_YARN_FACTOR = 4.0
QWEN25_ROPE_THETA = 1_000_000.0
ROPE_PARAMETERS_SINCE = (0, 12)  # vLLM reads transformers v5's rope_parameters from 0.12
# Lengths tried when the target does not fit, longest first: 16K steps keep YaRN factors round.
_STEP = 16384
# vLLM's profile run: one prefill chunk of max_num_batched_tokens (8192 for the OpenAI server
# on large GPUs) and fp32 logits for max_num_seqs (256) sequences. Plus CUDA context, CUDA
# graphs and allocator slack, which vLLM counts inside its utilisation budget too.
BATCHED_TOKENS = 8192
MAX_SEQS = 256
RUNTIME_OVERHEAD = 1 * GIB
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "fp8": 1, "float8": 1}
_SIZE = re.compile(r"^\s*([\d.]+)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)

# config.json values of models we know by name (so no download is needed to plan for them).
# Qwen2.5-7B-Instruct: https://huggingface.co/Qwen/Qwen2.5-7B-Instruct/blob/main/config.json
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-7B-Instruct": {
        "model_type": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "torch_dtype": "bfloat16",
    },
}


@dataclass(frozen=True)
class ModelSpec:
    """What the memory estimate needs of a transformer's config.json."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    dtype_bytes: int
    native_context: int
    tied_embeddings: bool = False
    qkv_bias: bool = False
    weight_bytes_on_disk: int | None = None  # safetensors index total_size, when known

    @classmethod
    def from_config(cls, name: str, cfg: dict[str, Any]) -> ModelSpec:
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
        native = rope.get("original_max_position_embeddings") or cfg["max_position_embeddings"]
        return cls(
            name=name,
            hidden=hidden,
            intermediate=int(cfg["intermediate_size"]),
            layers=int(cfg["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            vocab=int(cfg["vocab_size"]),
            dtype_bytes=_DTYPE_BYTES.get(str(cfg.get("torch_dtype") or cfg.get("dtype")), 2),
            native_context=int(native),
            tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=cfg.get("model_type") == "qwen2" or bool(cfg.get("attention_bias")),
        )

    @property
    def parameters(self) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = 2 * self.hidden * q + 2 * self.hidden * kv
        if self.qkv_bias:
            attention += q + 2 * kv
        mlp = 3 * self.hidden * self.intermediate  # gate, up, down
        per_layer = attention + mlp + 2 * self.hidden  # two RMSNorms
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * per_layer + embeddings + self.hidden

    @property
    def weight_bytes(self) -> int:
        return self.weight_bytes_on_disk or self.parameters * self.dtype_bytes

    def kv_bytes_per_token(self, kv_dtype_bytes: int | None = None) -> int:
        """K and V, every layer, every KV head: 2 x layers x kv_heads x head_dim x bytes."""
        size = kv_dtype_bytes or self.dtype_bytes
        return 2 * self.layers * self.kv_heads * self.head_dim * size

    def activation_bytes(self) -> int:
        """Peak of vLLM's profile run: a prefill chunk's widest tensors, and fp32 logits."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_token = 2 * self.intermediate + 3 * self.hidden + q + 2 * kv
        return BATCHED_TOKENS * per_token * self.dtype_bytes + MAX_SEQS * self.vocab * 4


@dataclass(frozen=True)
class ContextPlan:
    model: str
    gpu_memory: int  # bytes per GPU
    target: int  # the context asked for
    max_model_len: int  # the context chosen (0: not even the shortest fits)
    gpu_memory_utilization: float
    yarn_factor: float | None  # None: within the native context, no rope scaling
    weights: int  # bytes per GPU
    activations: int
    overhead: int
    kv_per_token: int
    kv_budget: int  # bytes left for the KV cache at the chosen utilisation
    fits_target: bool
    why: list[str] = field(default_factory=list)

    @property
    def kv_tokens(self) -> int:
        return max(0, self.kv_budget) // self.kv_per_token

    @property
    def concurrent_full_contexts(self) -> float:
        return self.kv_tokens / self.max_model_len if self.max_model_len else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kv_tokens": self.kv_tokens}


def parse_size(text: str) -> int:
    """'24GiB', '24GB', '80G', '24576MiB' -> bytes. GB is 10^9, GiB (and a bare G) is 2^30."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a memory size: {text!r} (e.g. 24GiB, 80GB, 24576MiB)")
    number, unit, binary = float(match[1]), match[2].upper(), match[3]
    power = "KMGT".index(unit) + 1 if unit else 0
    base = 1024 if binary or not text.strip().upper().endswith("B") else 1000
    return int(number * base**power)


def load_spec(model: str) -> ModelSpec:
    """A local folder with config.json (weights size from its safetensors index when present),
    or a name in KNOWN_CONFIGS."""
    folder = Path(model).expanduser()
    if (folder / "config.json").is_file():
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        spec = ModelSpec.from_config(model, cfg)
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            total = json.loads(index.read_text(encoding="utf-8")).get("metadata", {})
            if isinstance(total.get("total_size"), int):
                spec = _with(spec, weight_bytes_on_disk=total["total_size"])
        return spec
    if model in KNOWN_CONFIGS:
        return ModelSpec.from_config(model, KNOWN_CONFIGS[model])
    known = ", ".join(KNOWN_CONFIGS)
    raise ValueError(f"no config.json in {model!r}, and it is not a known model ({known})")


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _with(spec: ModelSpec, **changes: Any) -> ModelSpec:
    return ModelSpec(**{**spec.__dict__, **changes})


def _kv_budget(spec: ModelSpec, gpu_memory: int, utilization: float, tp: int) -> int:
    fixed = spec.weight_bytes // tp + spec.activation_bytes() // tp + RUNTIME_OVERHEAD
    return int(gpu_memory * utilization) - fixed


def plan_context(
    spec: ModelSpec,
    gpu_memory: int,
    *,
    target: int = DEFAULT_TARGET,
    utilization: float = 0.90,
    max_utilization: float = 0.95,
    tensor_parallel: int = 1,
    kv_dtype_bytes: int | None = None,
    max_yarn_factor: float = MAX_YARN_FACTOR,
) -> ContextPlan:
    """The longest context up to `target` whose KV cache fits beside weights and activations.

    vLLM refuses to start unless one sequence of max-model-len tokens fits its KV cache, so that
    is the test. The target is tried at `utilization`, then at up to `max_utilization` (in steps
    of 0.01, the lowest that fits); failing both, the longest multiple of 16K (or the native
    context, or a power of two below it) that fits at `utilization` is chosen, with a warning.
    """
    tp = max(1, tensor_parallel)
    limit = int(spec.native_context * max_yarn_factor)
    if target > limit:
        raise ValueError(
            f"a {target}-token context needs YaRN factor {target / spec.native_context:g}; "
            f"{spec.name} supports at most {limit} tokens (factor {max_yarn_factor:g})"
        )
    per_token = spec.kv_bytes_per_token(kv_dtype_bytes) // tp
    why = [
        f"weights {_gib(spec.weight_bytes // tp)} ({spec.parameters / 1e9:.2f}B parameters x "
        f"{spec.dtype_bytes} bytes{f', split over {tp} GPUs' if tp > 1 else ''})",
        f"KV cache {per_token // 1024} KiB per token (2 x {spec.layers} layers x "
        f"{spec.kv_heads} KV heads x {spec.head_dim} x {kv_dtype_bytes or spec.dtype_bytes} "
        f"bytes{f' / {tp} GPUs' if tp > 1 else ''}): {_gib(per_token * target)} for {target}",
        f"activations {_gib(spec.activation_bytes() // tp)} (one {BATCHED_TOKENS}-token "
        f"prefill chunk, logits of {MAX_SEQS} sequences) + {_gib(RUNTIME_OVERHEAD)} CUDA "
        "context and graphs",
    ]
    chosen_util, length, fits = utilization, 0, False
    steps = max(0, round((max_utilization - utilization) * 100))
    for i in range(steps + 1):
        util = round(utilization + i / 100, 2)
        if _kv_budget(spec, gpu_memory, util, tp) >= per_token * target:
            chosen_util, length, fits = util, target, True
            break
    budget_at_base = _kv_budget(spec, gpu_memory, utilization, tp)
    if fits:
        room = _kv_budget(spec, gpu_memory, chosen_util, tp)
        why.append(
            f"{target} tokens fit in {_gib(int(gpu_memory))} at utilisation {chosen_util:g}: "
            f"{_gib(room)} of KV cache holds {room // per_token} tokens"
            + (f" (raised from {utilization:g})" if chosen_util != utilization else "")
        )
    else:
        best = _kv_budget(spec, gpu_memory, max_utilization, tp)
        length = _longest_fitting(max(0, budget_at_base) // per_token, target, spec)
        why.append(
            f"WARNING: {target} tokens do not fit in {_gib(int(gpu_memory))}: they need "
            f"{_gib(per_token * target)} of KV cache, and at most {_gib(max(0, best))} is left at "
            f"utilisation {max_utilization:g}"
        )
        why.append(
            f"serving {length} tokens at utilisation {utilization:g} instead"
            if length
            else "not even a 1024-token context fits: use a larger GPU, more GPUs, or a "
            "quantised model"
        )
    factor = length / spec.native_context if length > spec.native_context else None
    if factor:
        why.append(f"YaRN factor {factor:g} over the native {spec.native_context} positions")
    elif length:
        why.append(f"no YaRN: {length} is within the native {spec.native_context} positions")
    kv_budget = _kv_budget(spec, gpu_memory, chosen_util, tp)
    return ContextPlan(
        model=spec.name,
        gpu_memory=gpu_memory,
        target=target,
        max_model_len=length,
        gpu_memory_utilization=chosen_util,
        yarn_factor=factor,
        weights=spec.weight_bytes // tp,
        activations=spec.activation_bytes() // tp,
        overhead=RUNTIME_OVERHEAD,
        kv_per_token=per_token,
        kv_budget=kv_budget,
        fits_target=fits,
        why=why,
    )


def _longest_fitting(tokens: int, target: int, spec: ModelSpec) -> int:
    candidates = set(range(_STEP, target + 1, _STEP)) | {spec.native_context}
    candidates |= {2**p for p in range(10, int(math.log2(spec.native_context)) + 1)}
    fitting = [n for n in candidates if n <= min(tokens, target)]
    return max(fitting, default=0)


def yarn_overrides(
    max_model_len: int,
    version: tuple[int, ...] | None,
    *,
    native: int = NATIVE_CONTEXT,
    max_factor: float = MAX_YARN_FACTOR,
    rope_theta: float = QWEN25_ROPE_THETA,
) -> dict[str, Any] | None:
    """vLLM's --hf-overrides for a context beyond the native one; None when not needed.

    vLLM's YaRN is static (it scales every prompt, short ones too, at some cost in quality), so
    it is turned on only beyond the native context, with factor = length / native. vLLM 0.12
    moved to transformers v5's `rope_parameters` key (vllm#28542); older versions read
    `rope_scaling` there (and vLLM < 0.6.4 its "type" key).
    """
    if max_model_len <= native:
        return None
    factor = max_model_len / native
    if factor > max_factor:
        raise ValueError(
            f"{max_model_len} tokens need YaRN factor {factor:g}; Qwen2.5 supports at most "
            f"{int(native * max_factor)} tokens (factor {max_factor:g})"
        )
    yarn = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": native}
    if version is None or version >= ROPE_PARAMETERS_SINCE:
        return {"rope_parameters": {**yarn, "rope_theta": rope_theta}}
    return {"rope_scaling": {**yarn, "type": "yarn"}}


def gpu_memory_total(timeout: float = 10.0) -> int | None:
    """The smallest GPU's memory in bytes, from nvidia-smi (None without one)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    query = [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    mib = [int(line) for line in out.stdout.split() if line.strip().isdigit()]
    return min(mib) * 1024**2 if mib else None


# --- the vLLM container's launcher (docker-compose.yml) -----------------------------------------


def _flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _set_flag(argv: list[str], name: str, value: str) -> list[str]:
    out = [a for a in argv if not a.startswith(name + "=")]
    if name in out:
        i = out.index(name)
        return [*out[: i + 1], value, *out[i + 2 :]]
    return [*out, name, value]


def launch_argv(
    argv: list[str], gpu_memory: int | None, version: tuple[int, ...] | None
) -> tuple[list[str], list[str]]:
    """vLLM's arguments fitted to the GPU, and the lines that explain it. The asked
    --max-model-len is kept where it fits; otherwise the longest that fits, with a warning."""
    model = _flag(argv, "--model") or ""
    asked = int(_flag(argv, "--max-model-len") or DEFAULT_TARGET)
    util = float(_flag(argv, "--gpu-memory-utilization") or 0.90)
    tp = int(_flag(argv, "--tensor-parallel-size") or 1)
    notes: list[str] = []
    try:
        spec = load_spec(model)
    except (ValueError, OSError) as exc:
        spec = None
        notes.append(f"no memory estimate ({exc}); serving {asked} tokens as asked")
    if spec is not None and gpu_memory is None:
        notes.append(f"no GPU memory size (nvidia-smi); serving {asked} tokens as asked")
    length = asked
    if spec is not None and gpu_memory is not None:
        plan = plan_context(spec, gpu_memory, target=asked, utilization=util, tensor_parallel=tp)
        notes += plan.why
        if plan.max_model_len:
            length = plan.max_model_len
            argv = _set_flag(argv, "--max-model-len", str(length))
            argv = _set_flag(argv, "--gpu-memory-utilization", f"{plan.gpu_memory_utilization:g}")
    native = spec.native_context if spec else NATIVE_CONTEXT
    overrides = yarn_overrides(length, version, native=native)
    if overrides is not None and _flag(argv, "--hf-overrides") is None:
        argv = [*argv, "--hf-overrides", json.dumps(overrides, separators=(",", ":"))]
    return argv, notes


def _torch_gpu_memory() -> int | None:
    """The first GPU's memory as torch sees it: the launcher's fallback without nvidia-smi."""
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory)
    except Exception:  # no torch, no driver: no size, and the asked length is kept
        pass
    return None


def _vllm_version() -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in re.findall(r"\d+", importlib.metadata.version("vllm"))[:3])
    except importlib.metadata.PackageNotFoundError:
        return None


def main(args: list[str] | None = None) -> None:
    """`python3 vram_plan.py -- <vLLM server arguments>`: fit them to this GPU, then exec the
    vLLM OpenAI server. KBQA_GPU_MEMORY (e.g. 24GiB) overrides what nvidia-smi reports."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    parser.add_argument("vllm_args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(args)
    vllm_args = [a for a in ns.vllm_args if a != "--"]
    size = os.environ.get("KBQA_GPU_MEMORY")
    memory = parse_size(size) if size else gpu_memory_total() or _torch_gpu_memory()
    argv, notes = launch_argv(vllm_args, memory, _vllm_version())
    for line in notes:
        print(f"kbqa: {line}", file=sys.stderr, flush=True)
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *argv]
    if ns.dry_run:
        print(json.dumps(command))
        return
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
