"""Render bench/REPORT.md and bench/plots/*.png from the JSON results that `python bench/runner.py`
collects.

    .venv/bin/python bench/bench_report.py [--results bench/results/report]
        [--report bench/REPORT.md] [--plots bench/plots]

Reads what is there (meta.json, ingest_pipeline.json, retrieval_scale.json, load_api.json,
memory.json, stream_relay.json, rerank_latency.json, dense_ann.json) and says "not run" for
what is missing, so a partial run still renders. Renders only: it measures nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

BENCH = Path(__file__).resolve().parent
MET, MISSED = "#2a9d4b", "#c0392b"


@dataclass(frozen=True)
class Check:
    """One figure against its target; `higher` when bigger is better."""

    name: str
    value: float | None
    target: float
    higher: bool
    unit: str = ""
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value >= self.target if self.higher else self.value <= self.target

    def verdict(self) -> str:
        return {True: "met", False: "NOT met", None: "not run"}[self.met]

    def target_text(self) -> str:
        return f"{'≥' if self.higher else '≤'} {_num(self.target)}{self.unit}"

    def value_text(self) -> str:
        return "–" if self.value is None else f"{_num(self.value)}{self.unit}"

    def label(self) -> str:
        return f"{self.value_text()} (target {self.target_text()}: {self.verdict()})"


def _num(x: float) -> str:
    if x == 0 or abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def _load(results: Path, name: str) -> Any:
    path = results / name
    return json.loads(path.read_text("utf-8")) if path.is_file() else None


def _color(check: Check) -> str:
    return MET if check.met else MISSED


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- figures ----------------------------------------------------------------------------------


def plot_ingest(data: dict[str, Any], checks: list[Check], out: Path) -> Path:
    overlap = data["overlap"]
    rates = {k: v for k, v in overlap["stage_throughput"].items() if v}
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    names = list(rates)
    bars = ax.bar(names, [rates[n] for n in names], color="#4c72b0")
    ax.set_yscale("log")
    ax.set_ylabel("throughput (log scale)")
    for bar, name in zip(bars, names, strict=True):
        unit = "pages/s" if name == "parse" else "chunks/s"
        ax.annotate(
            f"{rates[name]:,.1f} {unit}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_title(
        f"Ingestion throughput per stage ({overlap['pages']} pages, {overlap['chunks']} chunks)"
    )
    _checks_box(ax, checks)
    ax.margins(y=0.25)
    return _save(fig, out)


def _checks_box(ax: Axes, checks: list[Check]) -> None:
    for i, check in enumerate(checks):
        ax.text(
            0.01,
            0.97 - i * 0.075,
            f"{check.name}: {check.label()}",
            transform=ax.transAxes,
            va="top",
            fontsize=8.5,
            color=_color(check),
        )


def plot_retrieval(rows: list[dict[str, Any]], checks: list[Check], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    sizes = [r["chunks"] for r in rows]
    layout = [r.get("ivf") or r["flat"] for r in rows]  # what the service would use
    ax.plot(sizes, [r["hybrid_p50_ms"] for r in layout], "o-", label="ours hybrid p50")
    ax.plot(sizes, [r["hybrid_p95_ms"] for r in layout], "s--", label="ours hybrid p95")
    raw = [r["raw_faiss_p50_ms"] + r["raw_bm25_p50_ms"] for r in layout]
    ax.plot(sizes, raw, "^:", color="grey", label="raw FAISS + bm25s p50")
    if any("ivf" in r for r in rows):
        flat = [(r["chunks"], r["flat"]["hybrid_p50_ms"]) for r in rows if "ivf" in r]
        ax.plot(*zip(*flat, strict=True), "x", color="#c44e52", ms=9, label="flat at that size")
    e2e = [(r["chunks"], r["e2e_hybrid_p50_ms"]) for r in rows if "e2e_hybrid_p50_ms" in r]
    if e2e:
        ax.plot(*zip(*e2e, strict=True), "D-.", label="search() with SQLite p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("chunks in the knowledge base (log)")
    ax.set_ylabel("ms per query (log)")
    ax.set_title("Retrieval latency against corpus size (IVF above 200k)")
    ax.legend(fontsize=8, loc="lower right")
    _checks_box(ax, checks)
    ax.margins(y=0.3)
    return _save(fig, out)


def plot_load(load: dict[str, Any], overhead: Check, out_tp: Path, out_lat: Path) -> list[Path]:
    levels = load["levels"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for endpoint, rows in levels.items():
        ax.plot(
            [r["users"] for r in rows],
            [r["throughput_rps"] for r in rows],
            "o-",
            label=f"/{endpoint}",
        )
    _users_axis(ax, levels)
    ax.set_xlabel("concurrent users (closed loop, locust in another process)")
    ax.set_ylabel("requests per second")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Throughput against concurrency ({load['chunks']} chunks, fake LLM)")
    ax.legend()
    paths = [_save(fig, out_tp)]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for endpoint, rows in levels.items():
        users = [r["users"] for r in rows]
        (line,) = ax.plot(users, [r["p50_ms"] for r in rows], "o-", label=f"/{endpoint} p50")
        color = line.get_color()
        ax.plot(users, [r["p95_ms"] for r in rows], "s--", color=color, label=f"/{endpoint} p95")
    _users_axis(ax, levels)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent users")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title("Latency against concurrency")
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    _checks_box(ax, [overhead])
    ax.margins(y=0.25)
    paths.append(_save(fig, out_lat))
    return paths


def _users_axis(ax: Axes, levels: dict[str, list[dict[str, Any]]]) -> None:
    users = sorted({r["users"] for rows in levels.values() for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(users, [str(u) for u in users])
    ax.minorticks_off()


def _line_label(ax: Axes, y: float, text: str) -> None:
    """A dashed target line labelled at its right end, in axes units so it is never clipped."""
    ax.axhline(y, color="black", ls="--", lw=1)
    box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1}
    ax.text(0.99, y, text, transform=ax.get_yaxis_transform(), ha="right", va="bottom", bbox=box)


def plot_overhead(o: dict[str, Any], check: Check, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    names = [
        "client-side\n(/ask − retrieval − direct upstream)",
        "server-side\n(total − retrieval − generation)",
    ]
    keys = ["ask_overhead_client", "ask_overhead_server"]
    p50 = [o[k]["p50_ms"] for k in keys]
    p95 = [o[k]["p95_ms"] for k in keys]
    x = range(len(names))
    ax.bar([i - 0.18 for i in x], p50, 0.36, label="p50", color=_color(check))
    ax.bar([i + 0.18 for i in x], p95, 0.36, label="p95", color="#bbbbbb")
    _line_label(ax, check.target, f"target: p50 ≤ {check.target:g} ms")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("ms per /ask (concurrency 1)")
    ax.set_title(f"/ask overhead beyond retrieval and generation: {check.label()}")
    ax.title.set_fontsize(10)
    ax.legend(loc="upper left")
    return _save(fig, out)


def plot_memory(m: dict[str, Any], check: Check, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    vector, text = m["vector_bytes"], m["mean_text_bytes"]
    ax.bar(0, vector, color="#4c72b0", label="vector (512 × float32)")
    ax.bar(0, text, bottom=vector, color="#8da0cb", label="text (UTF-8)")
    ax.bar(1, m["service_bytes_per_chunk"], color=_color(check), label="measured in the service")
    ax.bar(2, m["dense_bytes_per_chunk"], color="#55a868", label="KBIndex alone")
    ax.bar(
        2,
        m["lexical_bytes_per_chunk"],
        bottom=m["dense_bytes_per_chunk"],
        color="#c8d96f",
        label="BM25 index alone",
    )
    limit = check.target * m["own_bytes_per_chunk"]
    _line_label(ax, limit, f"target: {check.target:g} × own bytes = {limit:,.0f} B")
    ax.set_xticks([0, 1, 2], ["own bytes", "service RSS growth", "breakdown"])
    ax.set_ylabel("bytes per chunk")
    ax.set_title(f"Memory per indexed chunk ({m['chunks']:,} chunks): ratio {check.label()}")
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.margins(y=0.15)
    return _save(fig, out)


# --- the report -------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _machine(meta: dict[str, Any] | None) -> str:
    if not meta:
        return "Machine: unknown (no meta.json).\n"
    m = meta.get("machine", {})
    rows = [
        ["date (UTC)", f"{meta.get('started', '?')} – {meta.get('finished', '?')}"],
        ["mode", str(meta.get("mode", "?"))],
        ["CPU", str(m.get("cpu", "?"))],
        ["cores", str(m.get("cores", "?"))],
        ["RAM", f"{m.get('ram_gb', '?')} GB"],
        ["OS", str(m.get("os", "?"))],
        ["Python", str(m.get("python", "?"))],
        *[[name, str(v)] for name, v in sorted(m.get("packages", {}).items())],
        ["load average (1 min), start / end", f"{m.get('load_start')} / {m.get('load_end')}"],
    ]
    return _table(["", ""], rows) + "\n"


def _steps(meta: dict[str, Any] | None) -> str:
    if not meta or not meta.get("steps"):
        return ""
    rows = [
        [
            s["name"],
            f"`{s['command']}`",
            f"{s['seconds']:.0f} s",
            "ok" if s["ok"] else f"FAILED: {s.get('error', '')[:120]}",
        ]
        for s in meta["steps"]
    ]
    return "\n" + _table(["step", "command", "time", "result"], rows) + "\n"


def build_checks(results: Path) -> dict[str, list[Check]]:
    """Every target the issues set, with what this run measured (None: not run)."""
    ingest = _load(results, "ingest_pipeline.json")
    retrieval = _load(results, "retrieval_scale.json")
    load = _load(results, "load_api.json")
    memory = _load(results, "memory.json")
    relay = _load(results, "stream_relay.json")
    checks: dict[str, list[Check]] = {}
    checks["overhead"] = [
        Check(
            "/ask overhead p50",
            load["overhead"]["ask_overhead_client"]["p50_ms"] if load else None,
            5.0,
            False,
            " ms",
        )
    ]
    checks["memory"] = [
        Check("memory per chunk ÷ (vector + text)", memory["ratio"] if memory else None, 1.5, False)
    ]
    checks["ingest"] = [
        Check("parse ours ÷ pypdf", ingest["parse"]["ratio"] if ingest else None, 0.9, True),
        Check("embed ours ÷ encode", ingest["embed"]["ratio"] if ingest else None, 0.9, True),
        Check(
            "whole pipeline ÷ slowest stage",
            ingest["overlap"]["ratio"] if ingest else None,
            1.15,
            False,
        ),
        Check(
            "peak RSS many ÷ few files",
            ingest["memory"]["ratio"] if ingest else None,
            1.1,
            False,
            note="target: flat",
        ),
    ]
    checks["retrieval"] = [
        Check(
            f"ours ÷ raw at {r['chunks']:,} ({'IVF' if 'ivf' in r else 'flat'})",
            (r.get("ivf") or r["flat"])["overhead_ratio"],
            1.1,
            False,
        )
        for r in retrieval or []
    ] or [Check("ours ÷ raw", None, 1.1, False)]
    last = relay[-1] if relay else None
    checks["relay"] = [
        Check(
            "stream relay efficiency",
            last["decoding"]["efficiency"] if last else None,
            0.95,
            True,
        ),
        Check(
            "stream added TTFT p50",
            last["decoding"]["added_ttft_p50_ms"] if last else None,
            10.0,
            False,
            " ms",
        ),
    ]
    return checks


def render(results: Path, report: Path, plots: Path) -> list[Path]:
    """Write the report and its figures; returns the PNG paths written."""
    plots.mkdir(parents=True, exist_ok=True)
    report.parent.mkdir(parents=True, exist_ok=True)
    meta = _load(results, "meta.json")
    checks = build_checks(results)
    written: list[Path] = []

    def img(path: Path) -> str:
        return f"![{path.stem}]({Path(os.path.relpath(path, report.parent)).as_posix()})\n"

    def section(title: str, name: str, body: Callable[[Any], str]) -> str:
        data = _load(results, name)
        if data is None:
            return f"## {title}\n\nNot run in this report ({name} is missing).\n"
        return f"## {title}\n\n{body(data)}"

    def ingest_body(d: dict[str, Any]) -> str:
        written.append(plot_ingest(d, checks["ingest"], plots / "ingest_stages.png"))
        o = d["overlap"]
        stage_rows = [
            [
                stage,
                f"{seconds:.2f} s",
                f"{o['stage_throughput'][stage]:,.1f} "
                + ("pages/s" if stage == "parse" else "chunks/s"),
            ]
            for stage, seconds in o["stage_seconds"].items()
            if o["stage_throughput"].get(stage)
        ]
        p, e = d["parse"], d["embed"]
        return (
            img(written[-1])
            + "\nPer stage, inside one pipelined run (2 worker threads) over the real fixture "
            "documents with m3e-small; index = the catch-up from SQL into FAISS + BM25:\n\n"
            + _table(["stage", "time in stage", "throughput"], stage_rows)
            + f"\n\nParse: ours {p['ours_pages_per_s']:.1f} pages/s against raw pypdf "
            f"{p['raw_pages_per_s']:.1f}. Embed: ours {e['ours_chunks_per_s']:.1f} chunks/s "
            f"against SentenceTransformer.encode {e['plain_chunks_per_s']:.1f} "
            f"({e['chunks']} chunks, {e['torch_threads']} torch threads). Whole pipeline "
            f"{o['whole_s']:.1f} s against its slowest stage alone. Ingestion peak RSS "
            + ", ".join(f"{n} files {mb:.0f} MB" for n, mb in d["memory"]["peak_rss_mb"].items())
            + ".\n\n"
            + _checks_table(checks["ingest"])
        )

    def retrieval_body(rows: list[dict[str, Any]]) -> str:
        written.append(plot_retrieval(rows, checks["retrieval"], plots / "retrieval_latency.png"))
        table = []
        for r in rows:
            for layout in ("flat", "ivf"):
                if layout not in r:
                    continue
                x = r[layout]
                table.append(
                    [
                        f"{r['chunks']:,}",
                        layout,
                        f"{x['raw_faiss_p50_ms']:.2f} / {x['raw_bm25_p50_ms']:.2f} ms",
                        f"{x['hybrid_p50_ms']:.2f} / {x['hybrid_p95_ms']:.2f} ms",
                        f"{x['overhead_ratio']:.3f}",
                        f"{x['serial_ratio']:.3f}" if "serial_ratio" in x else "–",
                        f"{x['overhead_p50_ms'] * 1000:.0f} µs",
                        f"{r['e2e_hybrid_p50_ms']:.1f} ms" if "e2e_hybrid_p50_ms" in r else "–",
                    ]
                )
        return (
            img(written[-1])
            + "\nSynthetic 512-d vectors and 60-word documents (`bench/retrieval_scale.py`); "
            "ours = `rag.retrieval.retriever.rank` hybrid (from 5k chunks BM25 scores on a "
            "second core "
            "during the FAISS scan), serial = the same with that overlap off, raw = the FAISS "
            "and bm25s calls it makes, overhead = serial minus raw per query, "
            "e2e = `search()` with the chunks in SQLite. Above 200k chunks the service uses IVF "
            "(the flat figures at that size are for comparison).\n\n"
            + _table(
                [
                    "chunks",
                    "layout",
                    "raw FAISS / BM25 p50",
                    "ours hybrid p50 / p95",
                    "ours ÷ raw",
                    "serial ÷ raw",
                    "overhead p50",
                    "e2e p50",
                ],
                table,
            )
            + "\n\n"
            + _checks_table(checks["retrieval"])
        )

    def load_body(d: dict[str, Any]) -> str:
        written.extend(
            plot_load(
                d, checks["overhead"][0], plots / "load_throughput.png", plots / "load_latency.png"
            )
        )
        written.append(
            plot_overhead(d["overhead"], checks["overhead"][0], plots / "ask_overhead.png")
        )
        rows = [
            [
                f"/{endpoint}",
                str(r["users"]),
                f"{r['throughput_rps']:.1f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p95_ms']:.1f}",
                "–"
                if r["server_overhead_p50_ms"] is None
                else f"{r['server_overhead_p50_ms']:.1f}",
                str(r["errors"]),
            ]
            for endpoint, level in d["levels"].items()
            for r in level
        ]
        o = d["overhead"]
        parts = [
            ("/ask as the client sees it", "ask_client"),
            ("retrieval inside /ask", "retrieval_in_ask"),
            ("generation inside /ask (LLMClient.complete)", "generation_in_ask"),
            ("the upstream asked directly", "direct_upstream_client"),
            ("**overhead, client-side**", "ask_overhead_client"),
            ("overhead, server-side", "ask_overhead_server"),
            ("/search as the client sees it", "search_client"),
            ("/search overhead beyond retrieval, client-side", "search_overhead_client"),
            ("/search overhead beyond retrieval, server-side", "search_overhead_server"),
        ]
        return (
            img(written[-3])
            + img(written[-2])
            + f"\nThe API (uvicorn, one process) serves a knowledge base of {d['chunks']} chunks "
            f"({', '.join(d['documents'])}, fake 512-d embedder) and asks a fake OpenAI-compatible "
            f"upstream (`bench/fake_openai.py`) for non-streamed answers of {d['tokens']} tokens. "
            "The load is locust (`bench/locustfile.py`, FastHttpUser, no wait: N users = N "
            f"requests in flight) in its own process on loopback, {d['duration_s']:g} s per level, "
            "the first second dropped. The answer cache is off and per-key limits raised, so each "
            "/ask retrieves and generates. The load generator, the server and the fake upstream "
            "share the same cores.\n\n"
            + _table(
                [
                    "endpoint",
                    "users",
                    "req/s",
                    "p50 ms",
                    "p95 ms",
                    "server overhead p50 ms",
                    "errors",
                ],
                rows,
            )
            + "\n\n### /ask overhead beyond retrieval and generation\n\n"
            + img(written[-1])
            + f"\n{o['rounds']} sequential rounds (concurrency 1) of three requests for the same "
            "question, in alternating order: `/search`, `/ask`, and the fake upstream asked "
            "directly with a prompt of the same size (the question plus the five passages "
            "`/search` returned). In the server process only, an ASGI wrapper outside every "
            "middleware times each request from its first byte in to its last byte out, and "
            "wrappers around `rag.retrieval.retriever.search` and `LLMClient.complete` time "
            "retrieval and "
            "generation inside it (the service code is unchanged).\n\n"
            "- **client-side** (the target figure) = /ask latency at the client − retrieval "
            "inside that /ask − the direct upstream call of the same round: everything the "
            "service adds, including its HTTP hop, middleware, prompt building and token "
            "counting, its LLM client, and answer post-processing.\n"
            "- **server-side** = time inside the server − retrieval − time inside "
            "`LLMClient.complete`: the same without uvicorn's HTTP parsing and without our "
            "LLM client's own cost (that is counted as generation here).\n"
            f"- coarser, from medians of whole requests: p50(/ask) − p50(/search) − "
            f"p50(direct) = {o['ask_minus_search_minus_direct_p50_ms']:.2f} ms (this cancels "
            "the HTTP and middleware cost that /search also pays).\n\n"
            + _table(
                ["", "p50 ms", "p95 ms"],
                [[label, f"{o[k]['p50_ms']:.2f}", f"{o[k]['p95_ms']:.2f}"] for label, k in parts],
            )
            + "\n\n"
            + _checks_table(checks["overhead"])
        )

    def memory_body(m: dict[str, Any]) -> str:
        written.append(plot_memory(m, checks["memory"][0], plots / "memory_per_chunk.png"))
        return (
            img(written[-1])
            + f"\n{m['chunks']:,} chunks of real Chinese text (windows of the Debian FAQ, "
            f"{m['mean_text_bytes']:.0f} UTF-8 bytes on average) with random {m['dim']}-d float32 "
            "vectors, written to SQLite; a fresh process measures its RSS before and after the "
            "service loads that knowledge base (FAISS IndexIDMap2 + BM25, merged, one search), "
            "after a tiny knowledge base was loaded first so the libraries are not counted. "
            "Chunk texts stay in SQL. The breakdown comes from two more fresh processes that "
            "build a KBIndex alone and a LexicalIndex alone from the same data. The BM25 side "
            "includes costs per index (its vocabulary), spread over the chunks: the same "
            "measurement gives a higher ratio for a smaller knowledge base "
            "(`python bench/runner.py --quick` uses 20,000 chunks, the full run 100,000), and a "
            "real corpus, whose vocabulary "
            "keeps growing, a somewhat higher one than these windows of one document.\n\n"
            + _table(
                ["", "bytes per chunk"],
                [
                    ["vector + text (own bytes)", f"{m['own_bytes_per_chunk']:,.0f}"],
                    ["service RSS growth", f"{m['service_bytes_per_chunk']:,.0f}"],
                    ["KBIndex alone", f"{m['dense_bytes_per_chunk']:,.0f}"],
                    ["BM25 index alone", f"{m['lexical_bytes_per_chunk']:,.0f}"],
                ],
            )
            + "\n\n"
            + _checks_table(checks["memory"])
        )

    def relay_body(runs: list[dict[str, Any]]) -> str:
        rows = [
            [
                r["relay_reads_through"],
                f"{r['decoding']['efficiency']:.3f}",
                f"{r['counting']['efficiency']:.3f}",
                f"{r['decoding']['added_ttft_p50_ms']:.2f} ms",
                str(r["load_average"]),
            ]
            for r in runs
        ]
        return (
            "`bench/stream_relay.py`: tokens/s through the /ask stream ÷ straight from the fake "
            "upstream, and the time to first token it adds (retrieval stubbed).\n\n"
            + _table(
                [
                    "relay",
                    "efficiency (decoding client)",
                    "efficiency (counting client)",
                    "added TTFT p50",
                    "load",
                ],
                rows,
            )
            + "\n\n"
            + _checks_table(checks["relay"])
        )

    def rerank_body(d: dict[str, Any]) -> str:
        rows = [
            [f"top-{r['candidates']}", str(r["tokens"]), f"{r['median_s']:.2f} s"]
            for r in d["rows"]
        ]
        return (
            "bge-reranker-base's architecture with random weights on CPU "
            f"({d['torch_threads']} torch threads), per query (no target: informs when to turn "
            "reranking on).\n\n" + _table(["candidates", "tokens per pair", "median"], rows) + "\n"
        )

    def ann_body(d: dict[str, Any]) -> str:
        rows = [
            [str(r["nprobe"]), f"{r['recall_at_10']:.3f}", f"{r['ivf_p50_ms']:.2f} ms"]
            for r in d["ivf"]
        ]
        return (
            f"IVF{d['nlist']} over {d['vectors']:,} m3e-small vectors ({d['real_vectors']:,} "
            f"real), {d['queries']} real questions; flat p50 {d['flat_p50_ms']:.1f} ms.\n\n"
            + _table(["nprobe", "recall@10 vs flat", "p50"], rows)
            + "\n"
        )

    sections = [
        section("Ingestion throughput per stage", "ingest_pipeline.json", ingest_body),
        section("Retrieval latency against corpus size", "retrieval_scale.json", retrieval_body),
        section("/search and /ask under load", "load_api.json", load_body),
        section("Memory per indexed chunk", "memory.json", memory_body),
        section("Streaming relay", "stream_relay.json", relay_body),
        section("Reranking cost", "rerank_latency.json", rerank_body),
        section("Dense ANN recall", "dense_ann.json", ann_body),
    ]
    summary = [c for group in checks.values() for c in group]
    text = (
        "# Benchmark report\n\n"
        "Generated by `python bench/runner.py` (`make bench`); re-render with "
        "`python bench/bench_report.py`. A benchmark measures and asserts nothing. Goals are "
        "ratios against the plain libraries doing the same work in the same run, or small "
        "absolute budgets, because this machine is shared: **other jobs ran on the same cores "
        "during this run** (see the load average below), so absolute times are indicative and "
        "vary between runs; the ratios move less.\n\n"
        "## Summary\n\n" + _checks_table(summary) + "\n\n## Machine\n\n" + _machine(meta)
        + _steps(meta) + "\n" + "\n".join(s.rstrip("\n") + "\n" for s in sections)
    )  # fmt: skip
    report.write_text(text, "utf-8")
    return written


def _checks_table(checks: list[Check]) -> str:
    return _table(
        ["figure", "measured", "target", ""],
        [
            [
                c.name + (f" ({c.note})" if c.note else ""),
                c.value_text(),
                c.target_text(),
                c.verdict(),
            ]
            for c in checks
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--results", type=Path, default=BENCH / "results" / "report")
    parser.add_argument("--report", type=Path, default=BENCH / "REPORT.md")
    parser.add_argument("--plots", type=Path, default=BENCH / "plots")
    args = parser.parse_args()
    for path in render(args.results, args.report, args.plots):
        print(f"wrote {path}")
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main()
