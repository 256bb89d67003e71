"""`rag sync`: keep a knowledge base equal to a folder or a list of URLs, through the server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rag.cli.common import fail
from rag.cli.remote import (
    DEFAULT_URL,
    ApiKeyOpt,
    KbOpt,
    UrlOpt,
    connect,
    follow_job,
    resolve_kb,
)


def _urls(urls: list[str] | None, urls_file: Path | None) -> list[str]:
    found = list(urls or [])
    if urls_file is not None:
        lines = urls_file.read_text(encoding="utf-8").splitlines()
        found += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return found


def echo_report(result: dict[str, Any]) -> None:
    """A sync job's result, as a person reads it."""
    counts = result.get("counts") or {}
    typer.echo(
        f"{result.get('source', 'source')}: {result.get('listed', 0)} listed; "
        + ", ".join(f"{n} {kind}" for kind, n in counts.items())
    )
    for kind in ("added", "changed", "deleted"):
        for key in result.get(kind) or []:
            typer.echo(f"  {kind:8} {key}")
    for dup in result.get("duplicates") or []:
        typer.echo(f"  same as  {dup['key']} -> document {dup['document_id']}")
    for failure in result.get("failed") or []:
        typer.echo(f"  failed   {failure['key']}: {failure['reason']}")
    for note in result.get("notes") or []:
        typer.echo(f"  note: {note}")


def sync(
    kb: KbOpt,
    folder: Annotated[
        Path | None,
        typer.Option(help="a folder on the server's machine, inside one of RAG_SYNC__FOLDERS"),
    ] = None,
    url_list: Annotated[
        list[str] | None,
        typer.Option("--source-url", help="a URL to keep (repeat the option for more)"),
    ] = None,
    urls_file: Annotated[
        Path | None, typer.Option(help="a file with one URL per line (# starts a comment)")
    ] = None,
    every: Annotated[
        float | None,
        typer.Option(help="run again this many seconds after each run, until cancelled"),
    ] = None,
    keep_missing: Annotated[
        bool, typer.Option(help="keep documents the source no longer lists")
    ] = False,
    no_wait: Annotated[bool, typer.Option(help="queue the run and return")] = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: ApiKeyOpt = None,
) -> None:
    """Keep a knowledge base equal to a folder or a list of URLs: new and changed files become
    new document versions, files gone from the source are deleted, and the run's report is
    printed. With --every the server runs it on that schedule (`rag jobs cancel` on the
    queued run stops it). Needs an admin key."""
    urls = _urls(url_list, urls_file)
    if (folder is None) == (not urls):
        fail("give either --folder or --source-url/--urls-file")
    with connect(url, api_key) as client:
        row = resolve_kb(client, kb)
        job = client.sync(
            row.id,
            folder=str(folder.absolute()) if folder is not None else None,
            urls=urls or None,
            interval_s=every,
            delete_missing=not keep_missing,
        )
        typer.echo(f"sync job {job.id} queued for {row.name!r}")
        if no_wait:
            return
        job = follow_job(client, job, "syncing")
    echo_report(job.result)
    if job.status != "succeeded":
        fail(f"sync {job.status}: {job.error}")
    if job.result.get("next_job_id"):
        typer.echo(f"next run: job {job.result['next_job_id']} (`rag jobs cancel` stops it)")
