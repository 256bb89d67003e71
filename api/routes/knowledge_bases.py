from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import ServicesDep
from api.schemas import KnowledgeBaseCreate, KnowledgeBaseList, KnowledgeBaseOut
from rag.kb import knowledge

router = APIRouter(prefix="/v1/knowledge-bases", tags=["knowledge bases"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create(body: KnowledgeBaseCreate, svc: ServicesDep) -> KnowledgeBaseOut:
    kb = knowledge.create_kb(svc, body.name, body.description)
    with svc.db.read() as session:
        return KnowledgeBaseOut.of(kb, knowledge.kb_stats(session, kb))


@router.get("")
def list_all(svc: ServicesDep) -> KnowledgeBaseList:
    with svc.db.read() as session:
        kbs = knowledge.list_kbs(session)
        return KnowledgeBaseList(
            knowledge_bases=[KnowledgeBaseOut.of(kb, knowledge.kb_stats(session, kb)) for kb in kbs]
        )


@router.get("/{kb_id}")
def get_one(kb_id: str, svc: ServicesDep) -> KnowledgeBaseOut:
    with svc.db.read() as session:
        kb = knowledge.get_kb(session, kb_id)
        return KnowledgeBaseOut.of(kb, knowledge.kb_stats(session, kb))


@router.delete("/{kb_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete(kb_id: str, svc: ServicesDep) -> None:
    knowledge.delete_kb(svc, kb_id)


@router.get("/{kb_id}/index")
def index_status(kb_id: str, svc: ServicesDep) -> dict[str, object]:
    """The FAISS index of this knowledge base compared with the chunks in SQL."""
    with svc.db.read() as session:
        knowledge.get_kb(session, kb_id)
    return svc.indexes.check(kb_id)
