"""What every `rag` command shares: failing with a message, confirming destructive steps, and
the guard of the commands that open the data directory themselves (they never create one by
accident). Nothing of the server is imported here at module level: client commands stay light."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from rag.core.config import Settings
    from rag.services import Services

YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="do not ask for confirmation (needed when not a TTY)")
]
LOCAL_NOTE = "Works on the data directory (RAG_DATA_DIR) directly, not through the server."


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _interactive() -> bool:
    return sys.stdin.isatty()


def confirm(question: str, yes: bool) -> None:
    """Go on only with --yes or a "y" typed at a terminal; a script without --yes is refused,
    so a destructive command never runs because nobody was there to say no."""
    if yes:
        return
    if not _interactive():
        fail(f"{question} Not confirmed: pass --yes to run this without a terminal.")
    if not typer.confirm(question, default=False):
        fail("cancelled")


def data_dir_problem(settings: Settings) -> str | None:
    """Why this data directory is not one the service has made (None: it is)."""
    from sqlalchemy.engine import make_url

    data_dir = settings.data_dir.resolve()
    hint = (
        "Set RAG_DATA_DIR (or RAG_DATABASE_URL) to the service's data directory, or create a "
        "new one with `rag db upgrade` or `rag serve`."
    )
    if not data_dir.is_dir():
        return f"no data directory at {data_dir} (RAG_DATA_DIR={settings.data_dir}). {hint}"
    url = make_url(settings.sqlalchemy_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        database = Path(url.database).resolve()
        if not database.is_file():
            return f"no database at {database} (RAG_DATA_DIR={settings.data_dir}). {hint}"
    return None


def local_settings() -> Settings:
    """The settings of a command that works on an existing data directory; exits when the
    directory or its SQLite database does not exist rather than start an empty one there."""
    from rag.core.config import load_settings

    settings = load_settings()
    problem = data_dir_problem(settings)
    if problem is not None:
        fail(problem)
    return settings


def local_services() -> Services:
    from rag.services import Services

    return Services.create(local_settings())
