"""The source behind a citation: a document's original file, a page rendered with a passage
highlighted, its chunks page by page, and disabling or enabling one chunk."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response

from api.deps import DatabaseDep, IndexesDep, KbIdDep, SettingsDep
from api.route_policy import access
from api.schemas import ChunkList, ChunkOut, ChunkUpdate
from rag.core.errors import NotFound, UnsupportedMediaType
from rag.kb import chunks, knowledge
from rag.kb.page_render import MAX_SCALE, MIN_SCALE, PageRenderer

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/knowledge-bases/{kb_id}/documents/{doc_id}", tags=["sources"])

PDF = "application/pdf"
# The stored bytes are the user's: never let a browser run or sniff them as anything else.
_FILE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Cache-Control": "private, no-cache",
}


def _renderer(request: Request, settings: SettingsDep) -> PageRenderer:
    """One renderer per app, made on first use: it bounds how many pages render at once."""
    renderer: PageRenderer | None = getattr(request.app.state, "page_renderer", None)
    if renderer is None:
        renderer = PageRenderer(
            settings.data_dir / "cache" / "pages", memory_mb=settings.ingest.parse_memory_mb
        )
        request.app.state.page_renderer = renderer
    return renderer


def _chunks(db: DatabaseDep, indexes: IndexesDep) -> chunks.Chunks:
    return chunks.Chunks(db, indexes)


RendererDep = Annotated[PageRenderer, Depends(_renderer)]
ChunksDep = Annotated[chunks.Chunks, Depends(_chunks)]


def content_disposition(filename: str) -> str:
    """`attachment` with the user's file name: an ASCII stand-in for old clients and the exact
    name percent-encoded (RFC 6266 / 5987), so no quote, semicolon or newline escapes."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\;%' else "_" for c in filename
    )
    encoded = quote(filename, safe="")
    return f"attachment; filename=\"{fallback or 'document'}\"; filename*=UTF-8''{encoded}"


def _stored(data_dir: Path, storage_path: str, doc_id: str) -> Path:
    """The stored file of a document, which must lie inside data_dir/files."""
    root = (data_dir / "files").resolve()
    path = (data_dir / storage_path).resolve()
    if not path.is_relative_to(root):
        log.error("document %s names a file outside %s: %s", doc_id, root, storage_path)
        raise NotFound(f"the stored file of document {doc_id} is not available")
    if not path.is_file():
        raise NotFound(f"the stored file of document {doc_id} is missing from the data directory")
    return path


@router.get(
    "/file",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the bytes"}},
    openapi_extra=access("read"),
)
def get_file(kb_id: KbIdDep, doc_id: str, db: DatabaseDep, settings: SettingsDep) -> FileResponse:
    """The original file as it was uploaded, with its detected media type, as an attachment."""
    with db.read() as session:
        doc = knowledge.get_document(session, kb_id, doc_id)
        filename, media_type, storage = doc.filename, doc.media_type, doc.storage_path
    path = _stored(settings.data_dir, storage, doc_id)
    headers = {**_FILE_HEADERS, "Content-Disposition": content_disposition(filename)}
    return FileResponse(path, media_type=media_type, headers=headers)


@router.get(
    "/pages/{page}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the rendered page"}},
    openapi_extra=access("read"),
)
def get_page(
    kb_id: KbIdDep,
    doc_id: str,
    page: int,
    db: DatabaseDep,
    settings: SettingsDep,
    renderer: RendererDep,
    chunk_id: Annotated[
        int | None, Query(description="highlight this chunk's text on the page")
    ] = None,
    scale: Annotated[
        float, Query(ge=MIN_SCALE, le=MAX_SCALE, description="pixels per PDF point")
    ] = 1.5,
) -> Response:
    """Page `page` (from 1) of a PDF as PNG. With `chunk_id`, the part of that chunk's text on
    this page is highlighted; `X-Highlight-Count` says how many rectangles were drawn (0: the
    text was not found in the page's text layer, as on a scanned page). Other formats have no
    pages to render: 415 (their chunks and original file are still available)."""
    with db.read() as session:
        doc = knowledge.get_document(session, kb_id, doc_id)
        if doc.media_type != PDF:
            raise UnsupportedMediaType(
                f"only PDF pages can be rendered; {doc.filename} is {doc.media_type}: read its "
                "chunks (…/chunks) or download the original (…/file)"
            )
        if page < 1:
            raise NotFound(f"page {page} does not exist: pages are numbered from 1")
        if doc.pages is not None and page > doc.pages:
            raise NotFound(f"page {page} does not exist: the document has {doc.pages} pages")
        sha256, storage = doc.sha256, doc.storage_path
        passage = ""
        if chunk_id is not None:
            chunk = chunks.get_chunk(session, kb_id, doc_id, chunk_id)
            passage = chunk.text_on_page(page) or chunk.text
    path = _stored(settings.data_dir, storage, doc_id)
    rendered = renderer.render(path, sha256, page, scale=scale, passage=passage)
    return Response(
        rendered.png,
        media_type="image/png",
        headers={
            "X-Highlight-Count": str(rendered.highlights),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=300",
        },
    )


@router.get("/chunks", openapi_extra=access("read"))
def list_chunks(
    kb_id: KbIdDep,
    doc_id: str,
    db: DatabaseDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ChunkList:
    """The document's chunks in the live index version, in document order, disabled ones too."""
    with db.read() as session:
        found = chunks.list_chunks(session, kb_id, doc_id, offset=offset, limit=limit)
    return ChunkList(
        version=found.version,
        total=found.total,
        offset=found.offset,
        limit=limit,
        chunks=[ChunkOut.of(c) for c in found.chunks],
    )


@router.patch("/chunks/{chunk_id}", openapi_extra=access("ingest"))
def update_chunk(
    kb_id: KbIdDep, doc_id: str, chunk_id: int, body: ChunkUpdate, service: ChunksDep
) -> ChunkOut:
    """Disable a chunk (it stays in SQL, leaves search and answers in every process) or enable
    it again; the response shows its new state."""
    return ChunkOut.of(service.set_disabled(kb_id, doc_id, chunk_id, body.disabled))
