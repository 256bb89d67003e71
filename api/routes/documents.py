from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Query, Response, UploadFile, status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api.deps import DatabaseDep, KbIdDep, KnowledgeDep, SettingsDep, StagerDep, WorkerDep
from api.route_policy import UPLOAD, access
from api.schemas import DocumentList, DocumentOut
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
    file: Annotated[UploadFile, File(description="PDF, DOCX, TXT or Markdown")],
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
    idempotency_key: Annotated[
        str | None, Header(description="repeat a request safely: the first response returns")
    ] = None,
) -> DocumentOut | JSONResponse:
    meta = _metadata(metadata)
    rank = _priority(priority)
    key = idempotency.check_key(idempotency_key) if idempotency_key is not None else None
    staged = stage(file.file, file.filename, settings.data_dir, settings.ingest.max_upload_bytes)
    scope = f"upload:{kb_id}"
    fp = idempotency.fingerprint(staged.sha256, json.dumps(meta, sort_keys=True))
    if key is not None:
        try:
            prior = idempotency.recall(db, key, scope, fp)
        except BaseException:
            staged.path.unlink(missing_ok=True)
            raise
        if prior is not None:
            staged.path.unlink(missing_ok=True)
            return JSONResponse(prior[1], status_code=prior[0])
    doc, duplicate = kbs.add_document(kb_id, staged, meta, priority=rank)
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
        str | None, Query(alias="status", pattern="^(queued|processing|ready|failed)$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DocumentList:
    with db.read() as session:
        docs = knowledge.list_documents(session, kb_id, status_filter, limit, offset)
        return DocumentList(documents=_out(db, settings, session, docs))


@router.get("/{doc_id}", openapi_extra=access("read"))
def get_one(kb_id: KbIdDep, doc_id: str, db: DatabaseDep, settings: SettingsDep) -> DocumentOut:
    with db.read() as session:
        return _out(db, settings, session, [knowledge.get_document(session, kb_id, doc_id)])[0]


@router.delete("/{doc_id}", status_code=status.HTTP_204_NO_CONTENT, openapi_extra=access("ingest"))
def delete(kb_id: KbIdDep, doc_id: str, kbs: KnowledgeDep) -> None:
    kbs.delete_document(kb_id, doc_id)
