"""`rag ingest --local` and `rag reindex --local`: the work done in this process, on the data
directory, with no server. Their reason to exist is `--engine ray` (this process is the Ray
driver; the API cannot start one); the local engine is kept beside it for bulk loads."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from rag.cli.common import fail, local_services

if TYPE_CHECKING:
    from ingest.reindex import Build
    from rag.services import Services


def _find_or_create_kb(svc: Services, kb: str, create: bool) -> str:
    import difflib

    from rag.core.errors import NotFound
    from rag.kb import knowledge

    with svc.db.read() as session:
        try:
            return knowledge.find_kb(session, kb).id
        except NotFound:
            names = [k.name for k in knowledge.list_kbs(session)]
    if not create:
        close = difflib.get_close_matches(kb, names, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        fail(f"no knowledge base {kb!r}.{hint} Add --create to create it.")
    row = svc.knowledge.create_kb(kb)
    typer.echo(f"created knowledge base {kb!r} ({row.id})")
    return row.id


def ingest(
    files: list[Path],
    kb: str,
    create: bool,
    metadata: dict[str, Any] | None,
    engine: str,
    ray_address: str | None,
) -> None:
    """Stage the files, run the pipelined worker (or Ray) here and wait until all are done."""
    from tqdm import tqdm

    from ingest.upload import stage_upload
    from rag.core.errors import RagError
    from rag.store.models import Document, DocumentStatus, JobPriority

    svc = local_services()
    kb_id = _find_or_create_kb(svc, kb, create)
    summary = {"ready": 0, "failed": 0, "superseded": 0, "duplicate": 0, "rejected": 0}
    pending: dict[str, Path] = {}
    for path in files:
        try:
            with path.open("rb") as fh:
                staged = stage_upload(
                    fh, path.name, svc.settings.data_dir, svc.settings.ingest.max_upload_bytes
                )
            # A folder of files is a batch: an upload someone waits for goes first.
            doc, duplicate = svc.knowledge.add_document(
                kb_id, staged, metadata, priority=JobPriority.batch
            )
        except RagError as exc:
            summary["rejected"] += 1
            typer.secho(f"rejected {path}: {exc}", fg=typer.colors.RED, err=True)
            continue
        if duplicate:
            summary["duplicate"] += 1
        else:
            pending[doc.id] = path
    if engine == "ray" and pending:
        from ingest.ray_engine import ingest_documents

        typer.echo(f"processing {len(pending)} document(s) on Ray")
        driver = svc.worker(worker_id=f"ray-driver:{os.getpid()}")
        ingest_documents(driver, svc.settings, list(pending), address=ray_address)
    # The pipelined worker (a running server's worker may take some of the jobs too).
    w = svc.pipelined_worker(threads=max(1, svc.settings.ingest.workers))
    if pending:
        w.start()
    # Superseded: a newer version of the same file name went live first.
    settled = (DocumentStatus.ready, DocumentStatus.failed, DocumentStatus.superseded)
    with tqdm(total=len(pending), unit="doc", desc="ingesting", disable=None) as bar:
        while pending:
            time.sleep(0.2)
            with svc.db.read() as session:
                for doc_id in list(pending):
                    row = session.get(Document, doc_id)
                    if row is None or row.status in settled:
                        status = row.status if row else "failed"
                        summary[status] += 1
                        if row is not None and row.status == DocumentStatus.failed:
                            tqdm.write(f"failed {pending[doc_id]}: {row.error}")
                        del pending[doc_id]
                        bar.update(1)
    w.stop()
    svc.indexes.save_dirty()
    svc.close()
    typer.echo(", ".join(f"{k}: {v}" for k, v in summary.items()))
    if summary["failed"] or summary["rejected"]:
        raise typer.Exit(2)


def reindex(
    kb: str,
    embedding_model: str | None,
    chunk_size: int | None,
    overlap: int | None,
    cache_only: bool,
    engine: str,
    ray_address: str | None,
) -> None:
    """Build the new index version in this process (parsing and embedding here or on Ray)."""
    from rag.kb import knowledge

    svc = local_services()
    with svc.db.read() as session:
        kb_id = knowledge.find_kb(session, kb).id
    if cache_only:
        index = svc.indexes.rebuild(kb_id)
        typer.echo(f"rebuilt index of {kb}: {len(index)} vectors up to sequence {index.last_seq}")
        svc.close()
        return
    version, job = svc.versions.start_reindex(
        kb_id, embedding_model=embedding_model, chunk_tokens=chunk_size, overlap_tokens=overlap
    )
    typer.echo(
        f"building index version {version.number} of {kb} ({version.embedding_model}, "
        f"{version.embedding_dim}-d, {version.chunk_tokens}/{version.overlap_tokens} tokens); "
        f"job {job.id}"
    )
    build = None
    if engine == "ray":
        from ingest.ray_engine import RayReindex

        build = RayReindex(svc.settings, ray_address)
        build.connect()  # here, in the main thread, before the job runs in another
        typer.echo("parsing and embedding on Ray")
    _run(svc, kb_id, job.id, version.number, build)


def _run(svc: Services, kb_id: str, job_id: str, number: int, build: Build | None) -> None:
    """Run the job here with a progress bar, then report the outcome; `build` says where
    documents are parsed and embedded (default: here)."""
    from tqdm import tqdm

    from rag.kb import job_control, versions

    # If a running server's worker claimed it first, we only follow its progress.
    ran: list[bool] = []
    runner = threading.Thread(
        target=lambda: ran.append(svc.worker(reindex_build=build).run_job(job_id)), daemon=True
    )
    runner.start()
    with tqdm(unit="doc", desc=f"version {number}", disable=None) as bar:
        while True:
            with svc.db.read() as session:
                job = job_control.get_job(session, job_id)
            bar.total = job.progress_total or None
            bar.n = job.progress_done
            bar.refresh()
            if job.status in job_control.FINAL:
                break
            time.sleep(0.2)
    runner.join()
    if build is not None and ran == [False]:
        typer.echo("note: another worker (a running server's) took the job; it built the version")
    with svc.db.read() as session:
        version = versions.get_version(session, kb_id, number)
    svc.close()
    report_checks(version.checks or {})
    if job.status != "succeeded" or version.status != "live":
        fail(f"index version {number} is {version.status}: {job.error or version.error}")
    typer.echo(f"index version {number} is live")


CHECKS = ("ready_documents", "sql_chunks", "vectors", "dense_hit_rate", "lexical_hit_rate")


def report_checks(checks: dict[str, Any]) -> None:
    shown = [f"{k}={checks[k]}" for k in CHECKS if k in checks]
    if shown:
        typer.echo("checks: " + ", ".join(shown))


def parse_metadata(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(f"--metadata is not valid JSON: {exc}")
    if not isinstance(value, dict):
        fail("--metadata must be a JSON object")
    return value
