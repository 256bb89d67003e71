"""`rag eval`: a golden set against a knowledge base, every retrieval mode, a table and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def eval_command(
    kb: Annotated[str, typer.Option("--kb", help="knowledge base name or id")],
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
) -> None:
    """Score retrieval on a golden set: hit@1/5/10, MRR, nDCG@10, latency p50/p95 per mode."""
    from rag.core.config import load_settings
    from rag.evaluation.golden import load_golden
    from rag.evaluation.runner import as_json, table
    from rag.kb import knowledge
    from rag.services import Services

    svc = Services.create(load_settings())
    try:
        with svc.db.read() as session:
            kb_id = knowledge.find_kb(session, kb).id
        items = load_golden(golden)
        chosen = (
            [m.strip() for m in modes.split(",")] if modes else svc.evaluator.default_modes(rerank)
        )
        reports = svc.evaluator.run_modes(kb_id, items, chosen)
    finally:
        svc.close()
    typer.echo(f"{len(items)} questions from {golden} against {kb}\n")
    typer.echo(table(reports))
    if json_out is not None:
        json_out.write_text(json.dumps(as_json(kb_id, str(golden), reports), indent=2) + "\n")
        typer.echo(f"\nwrote {json_out}")
