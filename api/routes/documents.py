from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Query, Response, UploadFile, status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api.deps import ServicesDep, WorkerDep
from api.schemas import DocumentList, DocumentOut
from ingest import scheduling
from ingest.upload import stage_upload
from rag.core.errors import InvalidInput
from rag.kb import knowledge
from rag.services import Services
from rag.store import idempotency
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


def _out(svc: Services, session: Session, docs: list[Document]) -> list[DocumentOut]:
    """The documents with the queue state of those still in flight (one lookup for all)."""
    busy = [d.id for d in docs if d.status in (DocumentStatus.queued, DocumentStatus.processing)]
    states = scheduling.document_progress(session, busy, svc.db.now(), svc.settings.ingest.lease_s)
    return [DocumentOut.of(d, queue=states.get(d.id)) for d in docs]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DocumentOut,
    responses={200: {"description": "The same bytes are already in this knowledge base"}},
)
def upload(
    kb_id: str,
    file: Annotated[UploadFile, File(description="PDF, DOCX, TXT or Markdown")],
    svc: ServicesDep,
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
    with svc.db.read() as session:
        knowledge.get_kb(session, kb_id)
    staged = stage_upload(
        file.file, file.filename, svc.settings.data_dir, svc.settings.ingest.max_upload_bytes
    )
    scope = f"upload:{kb_id}"
    fp = idempotency.fingerprint(staged.sha256, json.dumps(meta, sort_keys=True))
    if key is not None:
        try:
            prior = idempotency.recall(svc.db, key, scope, fp)
        except BaseException:
            staged.path.unlink(missing_ok=True)
            raise
        if prior is not None:
            staged.path.unlink(missing_ok=True)
            return JSONResponse(prior[1], status_code=prior[0])
    doc, duplicate = knowledge.add_document(svc, kb_id, staged, meta, priority=rank)
    if duplicate:
        response.status_code = status.HTTP_200_OK
    elif worker is not None:
        worker.wake()
    out = DocumentOut.of(doc, duplicate)
    if key is not None:
        code = status.HTTP_200_OK if duplicate else status.HTTP_202_ACCEPTED
        idempotency.remember(svc.db, key, scope, fp, code, out.model_dump(mode="json"))
    return out


@router.get("")
def list_all(
    kb_id: str,
    svc: ServicesDep,
    status_filter: Annotated[
        str | None, Query(alias="status", pattern="^(queued|processing|ready|failed)$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DocumentList:
    with svc.db.read() as session:
        docs = knowledge.list_documents(session, kb_id, status_filter, limit, offset)
        return DocumentList(documents=_out(svc, session, docs))


@router.get("/{doc_id}")
def get_one(kb_id: str, doc_id: str, svc: ServicesDep) -> DocumentOut:
    with svc.db.read() as session:
        return _out(svc, session, [knowledge.get_document(session, kb_id, doc_id)])[0]


@router.delete("/{doc_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete(kb_id: str, doc_id: str, svc: ServicesDep) -> None:
    knowledge.delete_document(svc, kb_id, doc_id)
