"""Streaming relay efficiency and added time to first token of POST .../ask with stream=true.

    .venv/bin/python bench/stream_relay.py [--tokens 2000] [--runs 30] [--pace TOKENS_PER_S]
        [--relay-over-httpx] [--save bench/results/stream_relay.json]

Three processes on loopback: a fake OpenAI-compatible upstream (bench/fake_openai.py) that
streams N tokens as fast as it can, our API (uvicorn, `rag serve`'s app) pointed at it, and
this client. Each run asks the upstream directly and then through our /ask stream, alternating,
so both see the same machine load; once with a client that decodes every event (as an
application does) and once with one that only counts token bytes (the cheapest client).

  relay efficiency = tokens/s received through /ask  /  tokens/s received straight from upstream
                     (tokens / seconds from sending the request to the last byte: it includes
                     the time to first token, which over a 2000-token flat-out stream is a fifth
                     of the whole; "streaming phase" shows the rate from first token to last)
  added TTFT       = p50 of (first token through /ask - first token straight from upstream)

The direct reader is plain httpx (`client.stream`), as an application would read the upstream.
The relay reads the upstream through rag.generation.stream_transport; --relay-over-httpx makes
it read through httpx instead (the relay before that transport), to compare the two in one
session. --save appends the figures to a JSON file.

Retrieval is stubbed in the service process (five fixed passages), so the added TTFT is ours:
HTTP, validation, prompt building and token counting with Qwen's tokenizer (if .models has it),
the upstream request and the relay. Targets: efficiency >= 0.95, added TTFT p50 <= 10 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from processes import free_port, wait_until_up  # noqa: E402

from rag.generation.local_server import stop  # noqa: E402

TOKEN = b"tok "
# The text of a token event in either stream: our delta {"text": ...}, OpenAI's "content".
_TEXT_FIELD = re.compile(rb'"(?:text|content)": ?"([^"]*)"')
_FIRST_TEXT = re.compile(rb'"(?:text|content)": ?"[^"]')
PASSAGE = (
    "To rotate an access key, open the console, go to Account > Access keys and press Rotate. "
    "The old key keeps working for 24 hours so that running jobs can switch over. "
) * 6


def serve_api(port: int, upstream: str, tokens: int) -> None:
    """The service process: our app with retrieval stubbed out."""
    import uvicorn

    from api.app import create_app
    from rag.core.config import Settings
    from rag.generation import llm
    from rag.kb import knowledge
    from rag.qa import answer
    from rag.retrieval.retriever import Passage
    from rag.services import Services

    qwen = REPO / ".models" / "qwen.tiktoken"
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="bench-relay-")),
        embedding={"model": "fake:64"},
        ingest={"workers": 0},
        tokenizer={"path": qwen if qwen.is_file() else None},
        llm={"base_url": upstream, "model": "fake", "max_tokens": tokens},
    )
    passages = [
        Passage(i, "doc", "manual.pdf", i, i, PASSAGE, 1.0 - i / 10, ("Access keys",))
        for i in range(1, 6)
    ]
    answer.search = lambda *args, **kwargs: passages
    llm.FAST_STREAMS = os.environ.get("BENCH_RELAY_OVER_HTTPX") != "1"
    svc = Services.create(settings)
    _ = svc.tokens  # load the tokenizer before the first request, as a warm server has
    # A real knowledge base: the answer cache looks it up (and misses: each round asks a new
    # question), as it does for every fresh answer, so its cost is in the figures.
    knowledge.create_kb(svc, "bench")
    app = create_app(services=svc, start_worker=False, warm_up=False)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def measure(
    client: httpx.Client, url: str, body: dict[str, object], parse: bool
) -> tuple[float, float, int]:
    """(seconds to the first token, seconds to the end, tokens received).

    parse=True decodes every event to its text, as an application must (OpenAI chunks:
    choices[0].delta.content; our /ask: the delta event's text). parse=False only counts
    token bytes, the cheapest possible client.
    """
    first = None
    count = 0
    pieces: list[str] = []
    received = bytearray()
    started = time.perf_counter()
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        if parse:
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if not isinstance(data, dict):  # our citations event
                    continue
                if "text" in data:
                    text = data["text"]
                elif data.get("choices"):
                    text = data["choices"][0]["delta"].get("content") or ""
                else:
                    continue
                if text:
                    pieces.append(text)
                    if first is None:
                        first = time.perf_counter()
        else:
            for chunk in response.iter_raw():
                received += chunk
                if first is None and _FIRST_TEXT.search(chunk):
                    first = time.perf_counter()
    ended = time.perf_counter()
    # Counted after the clock stops, over the joined text: the answer sanitizer may hold back
    # the tail of a token ("to" | "k ") until the next one shows it is harmless.
    if parse:
        count = "".join(pieces).count("tok ")
    else:
        count = b"".join(_TEXT_FIELD.findall(received)).count(TOKEN)
    return (first or ended) - started, ended - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--pace", type=float, default=0.0, help="upstream tokens/s (default: as fast as it can)"
    )
    parser.add_argument(
        "--relay-over-httpx", action="store_true", help="the relay reads its upstream with httpx"
    )
    parser.add_argument("--save", type=Path, help="append the figures to this JSON file")
    parser.add_argument("--serve-api", nargs=3, metavar=("PORT", "UPSTREAM", "TOKENS"))
    args = parser.parse_args()
    if args.serve_api:
        serve_api(int(args.serve_api[0]), args.serve_api[1], int(args.serve_api[2]))
        return

    up_port, api_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "fake_openai.py"),
                "--port",
                str(up_port),
                "--tokens",
                str(args.tokens),
                "--pace",
                str(args.pace),
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        ),
        subprocess.Popen(
            [sys.executable, __file__, "--serve-api", str(api_port), upstream, str(args.tokens)],
            cwd=REPO,
            start_new_session=True,
            env={
                **os.environ,
                "PYTHONPATH": str(REPO),
                "BENCH_RELAY_OVER_HTTPX": "1" if args.relay_over_httpx else "0",
            },
        ),
    ]
    try:
        wait_until_up(f"{upstream}/models", procs[0])
        wait_until_up(f"http://127.0.0.1:{api_port}/healthz", procs[1])
        direct_url = f"{upstream}/chat/completions"
        direct_body = {
            "model": "fake",
            "stream": True,
            "messages": [{"role": "user", "content": "How do I rotate my access key?"}],
        }
        kbs = httpx.get(f"http://127.0.0.1:{api_port}/v1/knowledge-bases").json()
        kb_id = next(kb["id"] for kb in kbs["knowledge_bases"] if kb["name"] == "bench")
        relay_url = f"http://127.0.0.1:{api_port}/v1/knowledge-bases/{kb_id}/ask"
        results: dict[bool, list[Row]] = {True: [], False: []}
        with httpx.Client(timeout=60) as client:
            for i in range(args.runs + 3):  # three warm-up rounds, not counted
                for parse in (True, False):
                    direct = measure(client, direct_url, direct_body, parse)
                    question = f"How do I rotate my access key? ({i}, {parse})"
                    relay_body = {"question": question, "stream": True}
                    relay = measure(client, relay_url, relay_body, parse)
                    for name, (_, _, n) in (("direct", direct), ("relay", relay)):
                        if n != args.tokens:
                            raise SystemExit(f"{name} run received {n} tokens, not {args.tokens}")
                    if i >= 3:
                        results[parse].append((direct, relay))
            floor = [_rtt(client, f"http://127.0.0.1:{api_port}/healthz") for _ in range(50)]
            bare = [_rtt(client, f"{upstream}/models") for _ in range(50)]
    finally:
        for proc in procs:
            stop(proc, timeout_s=30)
    pace = f"paced at {args.pace:g} tokens/s" if args.pace else "as fast as it can"
    relay = "httpx" if args.relay_over_httpx else "rag.generation.stream_transport"
    load = os.getloadavg()[0]
    print(
        f"{args.runs} paired runs of {args.tokens} tokens, upstream {pace}, relay reading "
        f"through {relay} (load average {load:.1f})"
    )
    figures = {
        "decoding": report(
            "client decoding every event (as an application does)", results[True], args.tokens
        ),
        "counting": report(
            "client counting token bytes only (cheapest client)", results[False], args.tokens
        ),
    }
    print(
        "\nfor scale, one GET round trip p50: our API (/healthz) "
        f"{statistics.median(floor):.2f} ms, the fake upstream (/models) "
        f"{statistics.median(bare):.2f} ms"
    )
    if args.save:
        saved = json.loads(args.save.read_text()) if args.save.is_file() else []
        saved.append(
            {
                "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "tokens": args.tokens,
                "runs": args.runs,
                "pace_tokens_per_s": args.pace or None,
                "relay_reads_through": relay,
                "load_average": round(load, 2),
                "cpus": os.cpu_count(),
                **figures,
            }
        )
        args.save.write_text(json.dumps(saved, indent=1) + "\n")


def _rtt(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    client.get(url).raise_for_status()
    return (time.perf_counter() - started) * 1000


Row = tuple[tuple[float, float, int], tuple[float, float, int]]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def report(title: str, rows: list[Row], n: int) -> dict[str, float]:
    direct_rate = statistics.median(n / d[1] for d, _ in rows)
    relay_rate = statistics.median(n / r[1] for _, r in rows)
    pairs = [(n / r[1]) / (n / d[1]) for d, r in rows]
    added = [(r[0] - d[0]) * 1000 for d, r in rows]
    direct_ttft = [d[0] * 1000 for d, _ in rows]
    relay_ttft = [r[0] * 1000 for _, r in rows]
    direct_phase = statistics.median(n / (d[1] - d[0]) for d, _ in rows)
    relay_phase = statistics.median(n / (r[1] - r[0]) for _, r in rows)
    figures = {
        "direct_tokens_per_s": round(direct_rate),
        "relay_tokens_per_s": round(relay_rate),
        "efficiency": round(relay_rate / direct_rate, 3),
        "efficiency_pairs_p10": round(_pct(pairs, 0.1), 3),
        "efficiency_pairs_p50": round(statistics.median(pairs), 3),
        "efficiency_pairs_p90": round(_pct(pairs, 0.9), 3),
        "streaming_phase_direct_tokens_per_s": round(direct_phase),
        "streaming_phase_relay_tokens_per_s": round(relay_phase),
        "direct_ttft_p50_ms": round(statistics.median(direct_ttft), 2),
        "direct_ttft_p90_ms": round(_pct(direct_ttft, 0.9), 2),
        "relay_ttft_p50_ms": round(statistics.median(relay_ttft), 2),
        "relay_ttft_p90_ms": round(_pct(relay_ttft, 0.9), 2),
        "added_ttft_p50_ms": round(statistics.median(added), 2),
        "added_ttft_p90_ms": round(_pct(added, 0.9), 2),
    }
    f = figures
    print(f"\n{title}: median tokens/s received")
    print(f"  straight from upstream : {direct_rate:9.0f} tokens/s")
    print(f"  through /ask stream    : {relay_rate:9.0f} tokens/s")
    print(
        f"  relay efficiency       : {f['efficiency']:.3f} (pairs: p10 "
        f"{f['efficiency_pairs_p10']:.3f}, p50 {f['efficiency_pairs_p50']:.3f}, p90 "
        f"{f['efficiency_pairs_p90']:.3f})   target >= 0.95"
    )
    print(
        f"  streaming phase        : upstream {direct_phase:.0f}, through /ask {relay_phase:.0f} "
        "tokens/s (first token to last)"
    )
    print(
        f"  TTFT p50 / p90         : upstream {f['direct_ttft_p50_ms']:.2f} / "
        f"{f['direct_ttft_p90_ms']:.2f} ms, through /ask {f['relay_ttft_p50_ms']:.2f} / "
        f"{f['relay_ttft_p90_ms']:.2f} ms"
    )
    print(
        f"  added TTFT p50         : {f['added_ttft_p50_ms']:.2f} ms (p90 "
        f"{f['added_ttft_p90_ms']:.2f} ms)   target <= 10 ms, retrieval stubbed"
    )
    return figures


if __name__ == "__main__":
    main()
