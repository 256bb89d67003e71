"""`rag eval`: a golden set against a knowledge base, every retrieval mode, a table and JSON.
The server runs it as a job on its own indexes (POST /v1/knowledge-bases/{kb}/eval)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rag.cli.common import fail
from rag.cli.remote import DEFAULT_URL, ApiKeyOpt, KbOpt, UrlOpt, connect, follow_job, resolve_kb

# The server's mode names (rag.evaluation.runner), spelt out: a client-only install has no
# server packages to import them from.
OURS = ("lexical", "dense", "hybrid")
RERANKED = "hybrid+rerank"
BASELINES = ("naive-bm25", "naive-dense")


def eval_command(
    kb: KbOpt,
    golden: Annotated[Path, typer.Option("--golden", help="JSONL golden set", exists=True)],
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    modes: Annotated[
        str | None,
        typer.Option(
            help="comma-separated: lexical,dense,hybrid,hybrid+rerank,naive-bm25,naive-dense "
            "(default: lexical, dense, hybrid, and hybrid+rerank when configured)"
        ),
    ] = None,
    rerank: Annotated[
        bool | None,
        typer.Option("--rerank/--no-rerank", help="add hybrid+rerank (default: if configured)"),
    ] = None,
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines",
            help="also the naive pipelines (jieba BM25 and dense alone over 400-character "
            "windows of the knowledge base's text) as modes naive-bm25 and naive-dense; "
            "naive-dense embeds all that text again (minutes per MB on a CPU)",
        ),
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Score retrieval on a golden set: hit@1/5/10, MRR, nDCG@10, latency per mode.

    The server runs it as a job on its own indexes; this command sends the set and waits.
    --baselines puts the naive pipelines beside ours (lexical, dense, hybrid, and hybrid+rerank
    with --rerank, unless --modes names others)."""
    items: list[dict[str, Any]] = []
    for n, line in enumerate(golden.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                fail(f"{golden}:{n}: not JSON ({exc.msg})")
    chosen = [m.strip() for m in modes.split(",") if m.strip()] if modes else None
    if baselines:
        # Modes must be named to add the baselines; reranking then needs --rerank.
        ours = chosen or [*OURS, *([RERANKED] if rerank else [])]
        chosen = [*BASELINES, *(m for m in ours if m not in BASELINES)]
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb)
        job = client.evaluate(row.id, items, modes=chosen, rerank=rerank)
        job = follow_job(client, job, "evaluating")
    if job.status != "succeeded":
        fail(f"the evaluation {job.status}: {job.error}")
    report = dict(job.result)
    table = report.pop("table", "")
    report["golden"] = str(golden)
    typer.echo(f"{report.get('questions', len(items))} questions from {golden} against {kb}\n")
    typer.echo(table)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        typer.echo(f"\nwrote {json_out}")
