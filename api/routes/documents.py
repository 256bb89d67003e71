"""Documents: upload (a new version under a key), list, read, versions, restore, delete."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Query, Response, UploadFile, status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api.deps import DatabaseDep, KbIdDep, KnowledgeDep, SettingsDep, StagerDep, WorkerDep
from api.route_policy import UPLOAD, access
from api.schemas import DocumentList, DocumentOut, DocumentVersions, RestoreRequest
from rag.core.config import Settings
from rag.core.errors import InvalidInput
from rag.kb import knowledge, scheduling
from rag.store import idempotency
from rag.store.db import Database
from rag.store.models import Document, DocumentStatus

router = APIRouter(prefix="/v1/knowledge-bases/{kb_id}/documents", tags=["documents"])


def _metadata(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidInput("metadata must be a JSON object")
    return value


def _priority(raw: str) -> int:
    try:
        return scheduling.PRIORITIES[raw]
    except KeyError:
        choices = " or ".join(scheduling.PRIORITIES)
        raise InvalidInput(f"priority must be {choices}, not {raw!r}") from None


def _out(
    db: Database, settings: Settings, session: Session, docs: list[Document]
) -> list[DocumentOut]:
    """The documents with the queue state of those still in flight (one lookup for all)."""
    busy = [d.id for d in docs if d.status in (DocumentStatus.queued, DocumentStatus.processing)]
    states = scheduling.document_progress(session, busy, db.now(), settings.ingest.lease_s)
    return [DocumentOut.of(d, queue=states.get(d.id)) for d in docs]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DocumentOut,
    responses={200: {"description": "The same bytes are already in this knowledge base"}},
    openapi_extra=access("ingest", UPLOAD),
)
def upload(
    kb_id: KbIdDep,
    file: Annotated[
        UploadFile,
        File(description="PDF, Office, HTML, mail, text, Markdown or an image (docs/api.md)"),
    ],
    db: DatabaseDep,
    settings: SettingsDep,
    kbs: KnowledgeDep,
    stage: StagerDep,
    worker: WorkerDep,
    response: Response,
    metadata: Annotated[
        str | None, Form(description="a JSON object kept with the document")
    ] = None,
    priority: Annotated[
        str,
        Form(
            description="interactive (a person waits; the default) or batch (bulk loads): "
            "interactive uploads are ingested first"
        ),
    ] = "interactive",
    external_id: Annotated[
        str | None,
        Form(
            description="the document's stable key (default: the filename): an upload under "
            "the key of an existing document is its new version, which replaces it once ready"
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None, Header(description="repeat a request safely: the first response returns")
    ] = None,
) -> DocumentOut | JSONResponse:
    meta = _metadata(metadata)
    rank = _priority(priority)
    external_id = knowledge.check_external_id(external_id)
    key = idempotency.check_key(idempotency_key) if idempotency_key is not None else None
    staged = stage(file.file, file.filename, settings.data_dir, settings.ingest.max_upload_bytes)
    scope = f"upload:{kb_id}"
    # The external id is part of the request only when given, as fingerprints made before
    # it existed are still valid.
    extra = [external_id] if external_id is not None else []
    fp = idempotency.fingerprint(staged.sha256, json.dumps(meta, sort_keys=True), *extra)
    if key is not None:
        try:
            prior = idempotency.recall(db, key, scope, fp)
        except BaseException:
            staged.path.unlink(missing_ok=True)
            raise
        if prior is not None:
            staged.path.unlink(missing_ok=True)
            return JSONResponse(prior[1], status_code=prior[0])
    doc, duplicate = kbs.add_document(kb_id, staged, meta, priority=rank, external_id=external_id)
    if duplicate:
        response.status_code = status.HTTP_200_OK
    elif worker is not None:
        worker.wake()
    out = DocumentOut.of(doc, duplicate)
    if key is not None:
        code = status.HTTP_200_OK if duplicate else status.HTTP_202_ACCEPTED
        idempotency.remember(db, key, scope, fp, code, out.model_dump(mode="json"))
    return out


@router.get("", openapi_extra=access("read"))
def list_all(
    kb_id: KbIdDep,
    db: DatabaseDep,
    settings: SettingsDep,
    status_filter: Annotated[
        str | None,
        Query(alias="status", pattern="^(queued|processing|ready|failed|superseded)$"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
    external_id: Annotated[str | None, Query(max_length=500)] = None,
    all_versions: Annotated[
        bool,
        Query(description="every version, not only the current one of each key"),
    ] = False,
) -> DocumentList:
    with db.read() as session:
        docs = knowledge.list_documents(
            session,
            kb_id,
            status_filter,
            limit,
            offset,
            external_id=external_id,
            all_versions=all_versions,
        )
        return DocumentList(documents=_out(db, settings, session, docs))


@router.get("/{doc_id}", openapi_extra=access("read"))
def get_one(kb_id: KbIdDep, doc_id: str, db: DatabaseDep, settings: SettingsDep) -> DocumentOut:
    with db.read() as session:
        return _out(db, settings, session, [knowledge.get_document(session, kb_id, doc_id)])[0]


@router.get("/{doc_id}/versions", openapi_extra=access("read"))
def versions(
    kb_id: KbIdDep, doc_id: str, db: DatabaseDep, settings: SettingsDep
) -> DocumentVersions:
    """Every version of the document's key, newest first: the current one, a newer one still
    being ingested, older ones superseded (restorable while their files are kept)."""
    with db.read() as session:
        docs = knowledge.list_versions(session, kb_id, doc_id)
        return DocumentVersions(key=docs[0].doc_key, versions=_out(db, settings, session, docs))


@router.post(
    "/{doc_id}/restore",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DocumentOut,
    responses={200: {"description": "That version is current already"}},
    openapi_extra=access("ingest"),
)
def restore(
    kb_id: KbIdDep,
    doc_id: str,
    kbs: KnowledgeDep,
    worker: WorkerDep,
    response: Response,
    body: RestoreRequest | None = None,
) -> DocumentOut:
    """Make an older version current again: its stored file is queued as the newest version,
    which replaces the current one once ready (202); the current one stays until then."""
    version = body.version if body is not None else None
    doc, unchanged = kbs.restore_version(kb_id, doc_id, version)
    if unchanged:
        response.status_code = status.HTTP_200_OK
    elif worker is not None:
        worker.wake()
    return DocumentOut.of(doc, unchanged)


@router.delete("/{doc_id}", status_code=status.HTTP_204_NO_CONTENT, openapi_extra=access("ingest"))
def delete(kb_id: KbIdDep, doc_id: str, kbs: KnowledgeDep) -> None:
    """Delete the document: every version of its key, and the documents extracted from it."""
    kbs.delete_document(kb_id, doc_id)
