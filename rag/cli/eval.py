"""`rag eval`: a golden set against a knowledge base, every retrieval mode, a table and JSON.
The server runs it as a job on its own indexes (POST /v1/knowledge-bases/{kb}/eval)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rag.cli.common import fail
from rag.cli.remote import DEFAULT_URL, ApiKeyOpt, KbOpt, UrlOpt, connect, follow_job, resolve_kb


def eval_command(
    kb: KbOpt,
    golden: Annotated[Path, typer.Option("--golden", help="JSONL golden set", exists=True)],
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    modes: Annotated[
        str | None,
        typer.Option(help="comma-separated: lexical,dense,hybrid,hybrid+rerank (default: all)"),
    ] = None,
    rerank: Annotated[
        bool | None,
        typer.Option("--rerank/--no-rerank", help="add hybrid+rerank (default: if configured)"),
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Score retrieval on a golden set: hit@1/5/10, MRR, nDCG@10, latency per mode.

    The server runs it as a job on its own indexes; this command sends the set and waits."""
    items: list[dict[str, Any]] = []
    for n, line in enumerate(golden.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                fail(f"{golden}:{n}: not JSON ({exc.msg})")
    chosen = [m.strip() for m in modes.split(",") if m.strip()] if modes else None
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
