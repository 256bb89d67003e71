"""`rag backup DEST` and `rag restore SRC` (rag/store/backup.py says what is kept and how). Both
work on the data directory directly: backup reads an existing one, restore fills an empty one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rag.cli.common import YesOpt, confirm, fail, local_settings


def backup_command(
    dest: Annotated[Path, typer.Argument(help="a new or empty directory")],
) -> None:
    """Back up the database, stored files and indexes while the service runs.

    Works on the data directory (RAG_DATA_DIR) directly; refuses one that does not exist."""
    from rag.core.errors import RagError
    from rag.store import backup as backups

    try:
        report = backups.backup(local_settings(), dest)
    except RagError as exc:
        fail(str(exc))
    rows = ", ".join(f"{n} {t}" for t, n in report.rows.items() if n)
    typer.echo(f"backup in {report.path} ({report.database}): {rows}; {report.files} files")


def restore_command(
    src: Annotated[Path, typer.Argument(help="a directory written by `rag backup`")],
    yes: YesOpt = False,
) -> None:
    """Restore a backup into an empty data directory and database.

    Works on RAG_DATA_DIR directly, not through the server, and creates it when missing.
    Asks first; --yes skips the question (and is needed without a terminal)."""
    from rag.core.config import load_settings
    from rag.core.errors import RagError
    from rag.store import backup as backups

    settings = load_settings()
    confirm(f"Restore the backup in {src} into {settings.data_dir.resolve()}?", yes)
    try:
        report = backups.restore(settings, src)
    except RagError as exc:
        fail(str(exc))
    typer.echo(f"restored {report.rows.get('documents', 0)} documents, {report.files} files")
