from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import DatabaseDep, IndexesDep, KbIdDep, KnowledgeDep
from api.route_policy import access
from api.schemas import KnowledgeBaseCreate, KnowledgeBaseList, KnowledgeBaseOut
from rag.kb import knowledge

router = APIRouter(prefix="/v1/knowledge-bases", tags=["knowledge bases"])


@router.post("", status_code=status.HTTP_201_CREATED, openapi_extra=access("admin"))
def create(body: KnowledgeBaseCreate, db: DatabaseDep, kbs: KnowledgeDep) -> KnowledgeBaseOut:
    kb = kbs.create_kb(body.name, body.description)
    with db.read() as session:
        return KnowledgeBaseOut.of(kb, knowledge.kb_stats(session, kb))


@router.get("", openapi_extra=access("read"))
def list_all(db: DatabaseDep) -> KnowledgeBaseList:
    with db.read() as session:
        kbs = knowledge.list_kbs(session)
        return KnowledgeBaseList(
            knowledge_bases=[KnowledgeBaseOut.of(kb, knowledge.kb_stats(session, kb)) for kb in kbs]
        )


@router.get("/{kb_id}", openapi_extra=access("read"))
def get_one(kb_id: KbIdDep, db: DatabaseDep) -> KnowledgeBaseOut:
    with db.read() as session:
        kb = knowledge.get_kb(session, kb_id)
        return KnowledgeBaseOut.of(kb, knowledge.kb_stats(session, kb))


@router.delete("/{kb_id}", status_code=status.HTTP_204_NO_CONTENT, openapi_extra=access("admin"))
def delete(kb_id: KbIdDep, kbs: KnowledgeDep) -> None:
    kbs.delete_kb(kb_id)


@router.get("/{kb_id}/index", openapi_extra=access("read"))
def index_status(kb_id: KbIdDep, indexes: IndexesDep) -> dict[str, object]:
    """The FAISS index of this knowledge base compared with the chunks in SQL."""
    return indexes.check(kb_id)
