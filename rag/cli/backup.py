"""`rag backup DEST` and `rag restore SRC` (rag/store/backup.py says what is kept and how)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rag.core.config import load_settings
from rag.core.errors import RagError
from rag.store import backup as backups


def backup_command(
    dest: Annotated[Path, typer.Argument(help="a new or empty directory")],
) -> None:
    """Back up the database, stored files and indexes while the service runs."""
    try:
        report = backups.backup(load_settings(), dest)
    except RagError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    rows = ", ".join(f"{n} {t}" for t, n in report.rows.items() if n)
    typer.echo(f"backup in {report.path} ({report.database}): {rows}; {report.files} files")


def restore_command(
    src: Annotated[Path, typer.Argument(help="a directory written by `rag backup`")],
) -> None:
    """Restore a backup into the configured (empty) data directory and database."""
    try:
        report = backups.restore(load_settings(), src)
    except RagError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"restored {report.rows.get('documents', 0)} documents, {report.files} files")
