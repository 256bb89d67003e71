"""Throughput and latency of /search and /ask under load, and the service's own time per /ask.

    .venv/bin/python bench/load_api.py [--levels 1 2 4 8 16] [--duration 15] [--rounds 200]
        [--tokens 100] [--json-out var/bench/load_api.json]

Three kinds of processes on loopback: the fake OpenAI-compatible upstream (bench/fake_openai.py,
a non-streamed answer of --tokens tokens), our API (uvicorn with `rag serve`'s app, the fake
512-d embedder and a small knowledge base: the Chinese Debian FAQ of tests/fixtures), and the
load: locust (bench/locustfile.py) in its own process, closed loop, N users = N requests in
flight, for /search and /ask at every level. The answer cache is off and the per-key limits are
raised, so every /ask retrieves and generates and nothing is refused.

Overhead per /ask beyond retrieval and generation, measured at concurrency 1 in rounds that
alternate /ask, /search and a direct request to the upstream with the same question:

  client   (/ask as the client sees it) - (retrieval inside that request, timed in the server
           around rag.retrieval.retriever.search) - (the same upstream asked directly by this
           client, with a
           prompt of the same size): everything the service adds, its HTTP hop included
  server   (first byte in to last byte out, timed by an ASGI wrapper outside every middleware)
           - retrieval - generation (the time inside LLMClient.complete) for the same request
  Target: client overhead p50 <= 5 ms.

The server-side timings are taken in the benchmark's server process only (a wrapper around the
app and the two calls); the service code is unchanged.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from processes import free_port, wait_until_up  # noqa: E402

from rag.generation.local_server import stop  # noqa: E402

QUESTIONS = REPO / "tests" / "fixtures" / "debian-faq-zh.jsonl"
DOCUMENTS = ("debian-faq.zh-cn.txt",)
TIMINGS = "/_bench/timings"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The timing record of the request being served (None outside /ask and /search).
_current: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "bench_timing", default=None
)


# --- the server process -----------------------------------------------------------------------


class Timed:
    """Outermost ASGI wrapper: times /ask and /search from the request to the last body byte.

    The record lives in a context variable, which anyio copies into the worker threads and
    tasks the app starts, so the wrapped retrieval and LLM calls add their time to it.
    GET /_bench/timings returns the records so far and clears them.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self.records: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.endswith(("/ask", "/search", TIMINGS)):
            await self.app(scope, receive, send)
            return
        if path == TIMINGS:
            body = json.dumps(self.records).encode()
            self.records = []
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        record = {"retrieval_ms": 0.0, "generation_ms": 0.0}
        status = 0
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                record["total_ms"] = (time.perf_counter() - started) * 1000

        token = _current.set(record)
        try:
            await self.app(scope, receive, sending)
        finally:
            _current.reset(token)
        record.setdefault("total_ms", (time.perf_counter() - started) * 1000)
        self.records.append({"endpoint": path.rsplit("/", 1)[1], "status": status, **record})


def _instrument() -> None:
    """Time retrieval (retriever.search, as /ask and /search call it) and generation."""
    from rag.generation.llm import LLMClient
    from rag.retrieval.retriever import Retriever

    def timed_search(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                record = _current.get()
                if record is not None:
                    record["retrieval_ms"] += (time.perf_counter() - started) * 1000

        return wrapper

    Retriever.search = timed_search(Retriever.search)  # type: ignore[method-assign]
    complete = LLMClient.complete

    async def timed_complete(self: LLMClient, messages: Any, **extra: Any) -> Any:
        started = time.perf_counter()
        try:
            return await complete(self, messages, **extra)
        finally:
            record = _current.get()
            if record is not None:
                record["generation_ms"] += (time.perf_counter() - started) * 1000

    LLMClient.complete = timed_complete  # type: ignore[method-assign]


def serve_api(port: int, upstream: str, data_dir: Path, tokens: int) -> None:
    import uvicorn

    from api.app import create_app
    from ingest.upload import stage_upload
    from rag.core.config import Settings
    from rag.services import Services

    qwen = REPO / ".models" / "qwen.tiktoken"
    settings = Settings(
        data_dir=data_dir,
        embedding={"model": "fake:512"},
        ingest={"workers": 0},
        tokenizer={"path": qwen if qwen.is_file() else None},
        llm={"base_url": upstream, "model": "fake", "max_tokens": tokens},
        security={"requests_per_minute": 10**7, "concurrent_generations": 4096},
        cache={"enabled": False},
        log_level="WARNING",
    )
    svc = Services.create(settings)
    kb = svc.knowledge.create_kb("bench")
    for name in DOCUMENTS:
        with (REPO / "tests" / "fixtures" / "files" / name).open("rb") as fh:
            svc.knowledge.add_document(kb.id, stage_upload(fh, name, data_dir, 10**8))
    worker = svc.worker()
    while worker.run_once():
        pass
    dense, _ = svc.indexes.pair(kb.id)
    svc.indexes.save_dirty()
    _ = svc.tokens  # the tokenizer loads on first use: before the first request, as when warm
    (data_dir / "kb.json").write_text(json.dumps({"id": kb.id, "chunks": len(dense)}))
    _instrument()
    app = Timed(create_app(services=svc, start_worker=False))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- the driver -------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": statistics.median(values), "p95_ms": pct(values, 0.95)}


def _timed_post(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    response = client.post(url, json=body)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed, response.json()


def measure_overhead(
    client: httpx.Client, api: str, upstream: str, kb: str, questions: list[str], rounds: int
) -> dict[str, Any]:
    """Sequential rounds of /search, /ask and the upstream directly, in alternating order."""
    search_url, ask_url = (
        f"{api}/v1/knowledge-bases/{kb}/search",
        f"{api}/v1/knowledge-bases/{kb}/ask",
    )
    direct_url = f"{upstream}/chat/completions"
    warmup = 10
    rows: list[tuple[float, float, float]] = []  # (search, ask, direct) client ms
    for i in range(rounds + warmup):
        q = questions[i % len(questions)]
        context = "\n\n".join(
            f"[{n}] {r['text']}"
            for n, r in enumerate(
                client.post(search_url, json={"query": q, "top_k": 5}).json()["results"], 1
            )
        )
        direct = {
            "model": "fake",
            "stream": False,
            "messages": [
                {"role": "system", "content": "Answer from the references.\n\n" + context},
                {"role": "user", "content": q},
            ],
        }
        calls: list[tuple[str, dict[str, Any]]] = [
            (search_url, {"query": q, "top_k": 5}),
            (ask_url, {"question": q}),
            (direct_url, direct),
        ]
        times: dict[str, float] = {}
        for url, body in calls if i % 2 else reversed(calls):
            times[url] = _timed_post(client, url, body)[0]
        if i == warmup - 1:
            client.get(f"{api}{TIMINGS}")  # drop the warm-up records
        if i >= warmup:
            rows.append((times[search_url], times[ask_url], times[direct_url]))
    records = client.get(f"{api}{TIMINGS}").json()
    asks = [r for r in records if r["endpoint"] == "ask"]
    searches = [r for r in records if r["endpoint"] == "search" and r["status"] == 200]
    searches = searches[1::2]  # every round made two searches: the context one, then the timed
    if len(asks) != len(rows) or len(searches) != len(rows):
        raise SystemExit(
            f"{len(rows)} rounds but {len(asks)} /ask and {len(searches)} /search records"
        )
    client_ask = [a - r["retrieval_ms"] - d for (_, a, d), r in zip(rows, asks, strict=True)]
    server_ask = [r["total_ms"] - r["retrieval_ms"] - r["generation_ms"] for r in asks]
    client_search = [s - r["retrieval_ms"] for (s, _, _), r in zip(rows, searches, strict=True)]
    server_search = [r["total_ms"] - r["retrieval_ms"] for r in searches]
    ask_ms, search_ms, direct_ms = (statistics.median(row[i] for row in rows) for i in (1, 0, 2))
    return {
        "rounds": len(rows),
        "ask_client": _summary([row[1] for row in rows]),
        "search_client": _summary([row[0] for row in rows]),
        "direct_upstream_client": _summary([row[2] for row in rows]),
        "retrieval_in_ask": _summary([r["retrieval_ms"] for r in asks]),
        "generation_in_ask": _summary([r["generation_ms"] for r in asks]),
        "ask_server_total": _summary([r["total_ms"] for r in asks]),
        "ask_overhead_client": _summary(client_ask),
        "ask_overhead_server": _summary(server_ask),
        "search_overhead_client": _summary(client_search),
        "search_overhead_server": _summary(server_search),
        # The coarser comparison: medians of whole requests, not pairs within a round.
        "ask_minus_search_minus_direct_p50_ms": ask_ms - search_ms - direct_ms,
    }


def run_level(
    endpoint: str, users: int, duration: float, api: str, kb: str, questions: Path, out: Path
) -> dict[str, Any]:
    """One locust run in its own process; percentiles and throughput after a warm-up second."""
    httpx.get(f"{api}{TIMINGS}")  # reset the server-side records
    result = out / f"locust-{endpoint}-{users}.json"
    result.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "locust", "-f", str(BENCH / "locustfile.py"), "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{duration:g}s", "--host", api,
        "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "10",
    ]  # fmt: skip
    env = {
        **os.environ,
        "BENCH_KB": kb,
        "BENCH_ENDPOINT": endpoint,
        "BENCH_QUESTIONS": str(questions),
        "BENCH_OUT": str(result),
    }
    proc = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=duration + 120, cwd=REPO
    )
    if not result.is_file():
        raise SystemExit(
            f"locust wrote no results (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    data = json.loads(result.read_text())
    samples = sorted(data["samples"])
    if not samples:
        raise SystemExit(f"locust: no successful {endpoint} requests: {data['errors'][:3]}")
    warm = samples[0][0] + min(1.0, duration / 5)
    kept = [ms for end, ms in samples if end >= warm]
    window = samples[-1][0] - warm
    records = httpx.get(f"{api}{TIMINGS}").json()
    if endpoint == "ask":
        overhead = [r["total_ms"] - r["retrieval_ms"] - r["generation_ms"] for r in records]
    else:
        overhead = [r["total_ms"] - r["retrieval_ms"] for r in records]
    row = {
        "users": users,
        "requests": len(kept),
        "errors": len(data["errors"]),
        "error_examples": data["errors"][:3],
        "throughput_rps": len(kept) / window if window > 0 else float("nan"),
        **_summary(kept),
        "server_overhead_p50_ms": statistics.median(overhead) if overhead else None,
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(
        f"  {endpoint:<6} {users:>3} users: {row['throughput_rps']:7.1f} req/s   p50 "
        f"{row['p50_ms']:7.2f} ms   p95 {row['p95_ms']:7.2f} ms   errors {row['errors']}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per level")
    parser.add_argument("--rounds", type=int, default=200, help="overhead rounds")
    parser.add_argument("--tokens", type=int, default=100, help="tokens in each fake answer")
    parser.add_argument("--endpoints", nargs="+", default=["search", "ask"])
    parser.add_argument("--json-out", type=Path, default=REPO / "var" / "bench" / "load_api.json")
    parser.add_argument("--serve", nargs=4, metavar=("PORT", "UPSTREAM", "DATA_DIR", "TOKENS"))
    args = parser.parse_args()
    if args.serve:
        serve_api(int(args.serve[0]), args.serve[1], Path(args.serve[2]), int(args.serve[3]))
        return

    up_port, api_port = free_port(), free_port()
    upstream, api = f"http://127.0.0.1:{up_port}/v1", f"http://127.0.0.1:{api_port}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text("utf-8").splitlines()]
    question_file = tmp / "questions.txt"
    question_file.write_text("\n".join(questions), "utf-8")
    fake = [sys.executable, str(BENCH / "fake_openai.py"), "--port", str(up_port)]
    procs = [
        subprocess.Popen(
            [*fake, "--tokens", str(args.tokens)],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        ),
        subprocess.Popen(
            [sys.executable, __file__, "--serve", str(api_port), upstream, str(tmp / "data"),
             str(args.tokens)],
            cwd=REPO,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        ),
    ]  # fmt: skip
    try:
        wait_until_up(f"{upstream}/models", procs[0], 60)
        wait_until_up(f"{api}/healthz", procs[1], 600)
        kb = json.loads((tmp / "data" / "kb.json").read_text())
        print(f"knowledge base: {kb['chunks']} chunks; fake answers of {args.tokens} tokens")
        with httpx.Client(timeout=60) as client:
            overhead = measure_overhead(client, api, upstream, kb["id"], questions, args.rounds)
        o = overhead
        print(
            f"/ask overhead p50 (p95): client-side {o['ask_overhead_client']['p50_ms']:.2f} "
            f"({o['ask_overhead_client']['p95_ms']:.2f}) ms, server-side "
            f"{o['ask_overhead_server']['p50_ms']:.2f} ({o['ask_overhead_server']['p95_ms']:.2f})"
            f" ms   target p50 <= 5 ms; retrieval p50 {o['retrieval_in_ask']['p50_ms']:.2f} ms, "
            f"generation p50 {o['generation_in_ask']['p50_ms']:.2f} ms",
            flush=True,
        )
        levels: dict[str, list[dict[str, Any]]] = {}
        for endpoint in args.endpoints:
            levels[endpoint] = [
                run_level(endpoint, users, args.duration, api, kb["id"], question_file, tmp)
                for users in args.levels
            ]
    finally:
        for proc in procs:
            stop(proc, timeout_s=30)
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "chunks": kb["chunks"],
        "documents": list(DOCUMENTS),
        "tokens": args.tokens,
        "duration_s": args.duration,
        "embedder": "fake:512",
        "cpus": os.cpu_count(),
        "overhead": overhead,
        "levels": levels,
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
