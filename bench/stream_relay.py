"""Streaming relay efficiency and added time to first token of POST .../ask with stream=true.

    .venv/bin/python bench/stream_relay.py [--tokens 2000] [--runs 30] [--pace TOKENS_PER_S]
        [--relay-over-httpx | --relay-over-aiohttp | --compare]
        [--save bench/results/stream_relay.json]
    .venv/bin/python bench/stream_relay.py --calls 300 [--call-tokens 100]

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
it read through httpx instead (the relay before that transport), --relay-over-aiohttp through
aiohttp's client (`AiohttpTransport` below: aiohttp under the LLM client's httpx API, on the
requests stream_transport takes). --compare runs one service process per relay (all three)
and measures them in the same rounds (direct, then each relay, the order rotating per round),
and ends with each relay's figures against stream_transport's. --save appends the figures to a
JSON file.

--calls N is the whole-call benchmark instead: no service process; this process's LLMClient
(rag.generation.llm) makes N rounds of one whole (non-streamed) and one streamed chat
completion of --call-tokens tokens against the fake upstream, once per transport in each round
(stream_transport, aiohttp, httpx, the order rotating), and prints the median per round.

Retrieval is stubbed in the service process (five fixed passages), so the added TTFT is ours:
HTTP, validation, prompt building and token counting with Qwen's tokenizer (if .models has it),
the upstream request and the relay. Targets: efficiency >= 0.95, added TTFT p50 <= 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from fake_openai import answer  # noqa: E402
from processes import free_port, wait_until_up  # noqa: E402

from rag.generation.local_server import stop  # noqa: E402
from rag.generation.stream_transport import STREAM_EXTENSION  # noqa: E402

_WORD = re.compile(rb"[a-z]{3} ")  # one token of the fake upstream (bench/fake_openai.py)
# The text of a token event in either stream: our delta {"text": ...}, OpenAI's "content".
_TEXT_FIELD = re.compile(rb'"(?:text|content)": ?"([^"]*)"')
_FIRST_TEXT = re.compile(rb'"(?:text|content)": ?"[^"]')
PASSAGE = (
    "To rotate an access key, open the console, go to Account > Access keys and press Rotate. "
    "The old key keeps working for 24 hours so that running jobs can switch over. "
) * 6


RELAYS = {
    "stream_transport": "rag.generation.stream_transport",
    "httpx": "httpx",
    "aiohttp": "aiohttp (AiohttpTransport)",
}


class AiohttpTransport(httpx.AsyncBaseTransport):
    """aiohttp's client under httpx's API, for the requests stream_transport takes (marked
    with STREAM_EXTENSION, plain http); everything else goes to the transport it wraps. The
    body comes in network-sized pieces (`iter_any`), as stream_transport gives it; closing it
    before its end closes the connection; aiohttp's errors become httpx's, so the LLM client
    maps them as it maps httpx's."""

    def __init__(self, fallback: httpx.AsyncBaseTransport, *, max_idle: int = 100) -> None:
        self._fallback = fallback
        self._max_idle = max_idle
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on the event loop that uses it
            connector = aiohttp.TCPConnector(limit=1000, limit_per_host=self._max_idle)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # httpx decodes the body by its content-encoding
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http" or not request.extensions.get(STREAM_EXTENSION):
            return await self._fallback.handle_async_request(request)
        t = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=t.get("connect"), sock_read=t.get("read")
        )
        headers = [(k, v) for k, v in request.headers.multi_items() if k != "content-length"]
        try:
            response = await self._client().request(
                request.method,
                str(request.url),
                data=await request.aread(),
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            )
        except Exception as exc:
            raise _httpx_error(exc, request, connecting=True) from exc
        return httpx.Response(
            response.status,
            headers=[(k, v) for k, v in response.raw_headers],
            stream=_AiohttpBody(response, request),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode(),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._fallback.aclose()


class _AiohttpBody(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._response.content.iter_any():
                yield piece
        except Exception as exc:
            raise _httpx_error(exc, self._request, connecting=False) from exc

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # the connection goes back to the pool
        else:
            self._response.close()  # before its end: the server sees the connection go


def _httpx_error(exc: Exception, request: httpx.Request, *, connecting: bool) -> Exception:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(exc), request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return httpx.ReadTimeout(str(exc), request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(exc), request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(str(exc), request=request)
    if isinstance(exc, aiohttp.ClientError | OSError):
        error = httpx.ConnectError if connecting else httpx.ReadError
        return error(str(exc), request=request)
    return exc


def serve_api(port: int, upstream: str, tokens: int) -> None:
    """The service process: our app with retrieval stubbed out."""
    import uvicorn

    from api.app import create_app
    from ingest.upload import stage_upload
    from rag.core.config import Settings
    from rag.generation import llm
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
    relay = os.environ.get("BENCH_RELAY", "stream_transport")
    llm.FAST_STREAMS = relay != "httpx"
    if relay == "aiohttp":
        llm.StreamTransport = AiohttpTransport  # type: ignore[misc,assignment]
    svc = Services.create(settings)
    svc.retriever.search = lambda *args, **kwargs: passages  # type: ignore[method-assign]
    _ = svc.tokens  # load the tokenizer before the first request, as a warm server has
    # A real knowledge base with a ready document: the answer cache looks it up (and misses:
    # each round asks a new question) and checks that something is ready to answer from, as it
    # does for every fresh answer, so its cost is in the figures.
    kb = svc.knowledge.create_kb("bench")
    staged = stage_upload(io.BytesIO(PASSAGE.encode()), "manual.txt", settings.data_dir, 10**6)
    svc.knowledge.add_document(kb.id, staged)
    worker = svc.worker()
    while worker.run_once():
        pass
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
        count = len(_WORD.findall("".join(pieces).encode()))
    else:
        # Deltas only: the citations event after them quotes the passages' text.
        deltas = received.split(b"event: citations", 1)[0]
        count = len(_WORD.findall(b"".join(_TEXT_FIELD.findall(deltas))))
    return (first or ended) - started, ended - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--pace", type=float, default=0.0, help="upstream tokens/s (default: as fast as it can)"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--relay-over-httpx", action="store_true", help="the relay reads its upstream with httpx"
    )
    which.add_argument(
        "--relay-over-aiohttp", action="store_true", help="the relay reads it with aiohttp"
    )
    which.add_argument(
        "--compare", action="store_true", help="all three relays, measured in the same rounds"
    )
    parser.add_argument(
        "--calls", type=int, help="the whole-call benchmark instead: this many rounds"
    )
    parser.add_argument("--call-tokens", type=int, default=100, help="tokens per call (--calls)")
    parser.add_argument("--save", type=Path, help="append the figures to this JSON file")
    parser.add_argument("--serve-api", nargs=3, metavar=("PORT", "UPSTREAM", "TOKENS"))
    args = parser.parse_args()
    if args.serve_api:
        serve_api(int(args.serve_api[0]), args.serve_api[1], int(args.serve_api[2]))
        return
    if args.calls:
        whole_calls(args.calls, args.call_tokens)
        return
    if args.compare:
        relays = list(RELAYS)
    elif args.relay_over_httpx:
        relays = ["httpx"]
    elif args.relay_over_aiohttp:
        relays = ["aiohttp"]
    else:
        relays = ["stream_transport"]

    up_port = free_port()
    api_ports = {relay: free_port() for relay in relays}
    upstream = f"http://127.0.0.1:{up_port}/v1"
    upstream_proc = _fake_upstream(up_port, args.tokens, args.pace)
    procs = [upstream_proc]
    apis: dict[str, subprocess.Popen[bytes]] = {}
    for relay in relays:
        apis[relay] = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve-api",
                str(api_ports[relay]),
                upstream,
                str(args.tokens),
            ],
            cwd=REPO,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO), "BENCH_RELAY": relay},
        )
        procs.append(apis[relay])
    results: dict[str, dict[bool, list[Row]]] = {r: {True: [], False: []} for r in relays}
    try:
        wait_until_up(f"{upstream}/models", upstream_proc)
        relay_urls = {}
        for relay in relays:
            api = f"http://127.0.0.1:{api_ports[relay]}"
            wait_until_up(f"{api}/healthz", apis[relay])
            kbs = httpx.get(f"{api}/v1/knowledge-bases").json()
            kb_id = next(kb["id"] for kb in kbs["knowledge_bases"] if kb["name"] == "bench")
            relay_urls[relay] = f"{api}/v1/knowledge-bases/{kb_id}/ask"
        direct_url = f"{upstream}/chat/completions"
        direct_body = {
            "model": "fake",
            "stream": True,
            "messages": [{"role": "user", "content": "How do I rotate my access key?"}],
        }
        with httpx.Client(timeout=60) as client:
            for i in range(args.runs + 3):  # three warm-up rounds, not counted
                order = relays[i % len(relays) :] + relays[: i % len(relays)]
                for parse in (True, False):
                    direct = measure(client, direct_url, direct_body, parse)
                    _check_count("direct", direct, args.tokens)
                    for relay in order:
                        question = f"How do I rotate my access key? ({i}, {parse})"
                        relay_body = {"question": question, "stream": True}
                        measured = measure(client, relay_urls[relay], relay_body, parse)
                        _check_count(relay, measured, args.tokens)
                        if i >= 3:
                            results[relay][parse].append((direct, measured))
            api_port = api_ports[relays[0]]
            floor = [_rtt(client, f"http://127.0.0.1:{api_port}/healthz") for _ in range(50)]
            bare = [_rtt(client, f"{upstream}/models") for _ in range(50)]
    finally:
        for proc in procs:
            stop(proc, timeout_s=30)
    pace = f"paced at {args.pace:g} tokens/s" if args.pace else "as fast as it can"
    load = os.getloadavg()[0]
    all_figures: dict[str, dict[str, dict[str, float]]] = {}
    for relay in relays:
        print(
            f"\n{args.runs} paired runs of {args.tokens} tokens, upstream {pace}, relay reading "
            f"through {RELAYS[relay]} (load average {load:.1f})"
        )
        all_figures[relay] = {
            "decoding": report(
                "client decoding every event (as an application does)",
                results[relay][True],
                args.tokens,
            ),
            "counting": report(
                "client counting token bytes only (cheapest client)",
                results[relay][False],
                args.tokens,
            ),
        }
    if len(relays) > 1:
        compare(results, args.tokens)
    print(
        "\nfor scale, one GET round trip p50: our API (/healthz) "
        f"{statistics.median(floor):.2f} ms, the fake upstream (/models) "
        f"{statistics.median(bare):.2f} ms"
    )
    if args.save:
        saved = json.loads(args.save.read_text()) if args.save.is_file() else []
        for relay, figures in all_figures.items():
            saved.append(
                {
                    "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "command": " ".join([Path(sys.executable).name, *sys.argv]),
                    "tokens": args.tokens,
                    "runs": args.runs,
                    "pace_tokens_per_s": args.pace or None,
                    "relay_reads_through": RELAYS[relay],
                    "load_average": round(load, 2),
                    "cpus": os.cpu_count(),
                    **figures,
                }
            )
        args.save.write_text(json.dumps(saved, indent=1) + "\n")


def _fake_upstream(port: int, tokens: int, pace: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(BENCH / "fake_openai.py"),
            "--port",
            str(port),
            "--tokens",
            str(tokens),
            "--pace",
            str(pace),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def _check_count(name: str, measured: tuple[float, float, int], tokens: int) -> None:
    if measured[2] != tokens:
        raise SystemExit(f"{name} run received {measured[2]} tokens, not {tokens}")


def compare(results: dict[str, dict[bool, list[Row]]], n: int) -> None:
    """Each relay against stream_transport, round by round (the same rounds, the same load)."""
    base = results["stream_transport"]
    print("\nagainst stream_transport, the same rounds: median of the per-round ratios")
    print("  relay              client     tokens/s ratio (p10..p90)   added TTFT p50 (ms)")
    for relay, rows in results.items():
        for parse, client in ((True, "decoding"), (False, "counting")):
            ratios = [
                (n / r[1]) / (n / b[1])
                for (_, r), (_, b) in zip(rows[parse], base[parse], strict=True)
            ]
            added = statistics.median((r[0] - d[0]) * 1000 for d, r in rows[parse])
            print(
                f"  {relay:18} {client:9}  {statistics.median(ratios):.3f} "
                f"({_pct(ratios, 0.1):.3f}..{_pct(ratios, 0.9):.3f})"
                f"{'':14}{added:.2f}"
            )


def whole_calls(rounds: int, tokens: int) -> None:
    """Per round and per transport: one whole and one streamed completion through LLMClient."""
    port = free_port()
    upstream = f"http://127.0.0.1:{port}/v1"
    proc = _fake_upstream(port, tokens, 0.0)
    try:
        wait_until_up(f"{upstream}/models", proc)
        times = asyncio.run(_whole_calls(upstream, rounds, tokens))
    finally:
        stop(proc, timeout_s=30)
    base = times["stream_transport"]
    print(
        f"{rounds} rounds of one whole + one streamed completion of {tokens} tokens through "
        f"LLMClient, per transport ({os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}); medians, and medians of the per-round ratios to "
        "stream_transport's"
    )
    print(
        "  transport          whole ms (ratio)   streamed ms (ratio)   first delta ms (ratio)"
        "   round ms (ratio, p10..p90)"
    )
    for name, rows in times.items():
        cells = []
        for part in range(3):
            ms = statistics.median(r[part] for r in rows) * 1000
            ratio = statistics.median(r[part] / b[part] for r, b in zip(rows, base, strict=True))
            cells.append(f"{ms:7.3f} ({ratio:.3f})")
        total = statistics.median(r[0] + r[1] for r in rows) * 1000
        ratios = [(r[0] + r[1]) / (b[0] + b[1]) for r, b in zip(rows, base, strict=True)]
        print(
            f"  {name:18} {cells[0]:17}  {cells[1]:20}  {cells[2]:22}   {total:7.3f} "
            f"({statistics.median(ratios):.3f}, {_pct(ratios, 0.1):.3f}..{_pct(ratios, 0.9):.3f})"
        )


async def _whole_calls(
    upstream: str, rounds: int, tokens: int
) -> dict[str, list[tuple[float, float, float]]]:
    from rag.core.config import LLMSettings
    from rag.generation.llm import _LIMITS, LLMClient
    from rag.generation.stream_transport import StreamTransport

    settings = LLMSettings(base_url=upstream, model="fake", max_tokens=tokens)
    transports: dict[str, Any] = {
        "stream_transport": lambda: StreamTransport(httpx.AsyncHTTPTransport(limits=_LIMITS)),
        "aiohttp": lambda: AiohttpTransport(httpx.AsyncHTTPTransport(limits=_LIMITS)),
        "httpx": lambda: httpx.AsyncHTTPTransport(limits=_LIMITS),
    }
    clients = {name: LLMClient(settings, transport=make()) for name, make in transports.items()}
    messages = [{"role": "user", "content": "How do I rotate my access key?"}]
    expected = answer(tokens)

    async def one(client: LLMClient) -> tuple[float, float, float]:
        """(whole call, streamed call, streamed call's first delta) in seconds."""
        started = time.perf_counter()
        whole = await client.complete(messages)
        middle = time.perf_counter()
        stream = await client.stream(messages)
        pieces = []
        first = None
        async for delta in stream.deltas():
            if first is None:
                first = time.perf_counter()
            pieces.append(delta)
        ended = time.perf_counter()
        text = "".join(pieces)
        if whole.text != expected or text != expected or first is None:
            raise SystemExit(f"a call received {len(whole.text)} / {len(text)} characters")
        return middle - started, ended - middle, first - middle

    names = list(clients)
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    for i in range(rounds + 20):  # twenty warm-up rounds, not counted
        for name in names[i % len(names) :] + names[: i % len(names)]:
            measured = await one(clients[name])
            if i >= 20:
                times[name].append(measured)
    for client in clients.values():
        assert client._ahttp is not None
        await client._ahttp.aclose()
    return times


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
