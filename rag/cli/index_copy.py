"""`rag index copy --kb NAME --to milvus|faiss`: fill the other backend's dense index of a
knowledge base's live version from SQL (rag/index/backend_copy.py), on the data directory or
database directly, while the replicas keep serving from the backend they run on; they are then
restarted one by one with RAG_INDEX__BACKEND set to the target (docs/deployment.md)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from rag.cli.common import LOCAL_NOTE, fail, local_settings

app = typer.Typer(
    help="A knowledge base's search indexes, on the data directory directly.",
    no_args_is_help=True,
)

Target = Literal["milvus", "faiss"]


@app.command("copy", help=f"Copy a knowledge base's vectors into another backend. {LOCAL_NOTE}")
def copy(
    kb: Annotated[str, typer.Option("--kb", help="knowledge base name or id")],
    to: Annotated[str, typer.Option("--to", help="the backend to fill: milvus or faiss")],
    version: Annotated[
        int | None, typer.Option(help="the index version to copy (default: the live one)")
    ] = None,
    milvus_uri: Annotated[
        str | None,
        typer.Option(help="the Milvus to fill (default RAG_INDEX__MILVUS_URI)"),
    ] = None,
) -> None:
    """Fill the target backend's index of the version from the vectors stored in SQL; what the
    running replicas serve is not touched. Run again right before switching: it only adds what
    was committed since, and the replicas catch up the rest when they load it."""
    from rag.core.errors import RagError
    from rag.index.backend_copy import copy_dense
    from rag.kb import knowledge
    from rag.services import dense_backend
    from rag.store.db import Database

    if to not in ("milvus", "faiss"):
        fail(f"--to must be milvus or faiss, not {to!r}")
    settings = local_settings()
    uri = milvus_uri or settings.index.milvus_uri
    if to == "milvus" and not uri:
        fail("--to milvus needs --milvus-uri or RAG_INDEX__MILVUS_URI")
    db = Database(settings.sqlalchemy_url)
    backend = None
    try:
        with db.read() as session:
            found = knowledge.find_kb(session, kb)
            kb_id, number = found.id, version if version is not None else found.live_version
        if to == "milvus":
            index = settings.index.model_copy(update={"backend": "milvus", "milvus_uri": uri})
            backend = dense_backend(index)
        directory = settings.index_dir / kb_id / f"v{number}"
        done = copy_dense(db, kb_id, number, backend=backend, directory=directory)
    except RagError as exc:
        fail(str(exc))
    finally:
        db.dispose()
        if backend is not None:
            backend.close()
    typer.echo(
        f"{to}: version {done.version} of {kb} holds {done.vectors} vectors up to sequence "
        f"{done.last_seq} ({done.added} added, {done.removed} removed)"
    )
