"""Index versions of a knowledge base: list them, roll back to the previous one, prune old
ones."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel

from api.deps import DatabaseDep, KbIdDep, VersionsDep, WorkerDep
from api.route_policy import access
from api.schemas import JobOut, ReindexOut, VersionList, VersionOut
from rag.kb import knowledge, versions

router = APIRouter(prefix="/v1/knowledge-bases/{kb_id}/versions", tags=["index versions"])


@router.get("", openapi_extra=access("read"))
def list_versions(kb_id: KbIdDep, db: DatabaseDep) -> VersionList:
    with db.write() as session:  # a build whose job ended without it is settled first
        kb = knowledge.get_kb(session, kb_id)
        versions.settle_abandoned(session, kb_id)
        session.flush()
        return VersionList(
            live=kb.live_version,
            versions=[VersionOut.of(v) for v in versions.list_versions(session, kb_id)],
        )


@router.post("/rollback", status_code=status.HTTP_202_ACCEPTED, openapi_extra=access("admin"))
def rollback(kb_id: KbIdDep, builds: VersionsDep, worker: WorkerDep) -> ReindexOut:
    """Make the most recent retired version live again (after giving it the documents added
    since); 409 when there is none or a version is being built."""
    version, job = builds.start_rollback(kb_id)
    if worker is not None:
        worker.wake()
    return ReindexOut(**JobOut.of(job).model_dump(), version=version.number)


class PruneOut(BaseModel):
    pruned: list[int]
    live: int


@router.post("/prune", openapi_extra=access("admin"))
def prune(
    kb_id: KbIdDep,
    db: DatabaseDep,
    builds: VersionsDep,
    keep: Annotated[
        int | None,
        Query(ge=1, description="versions kept, the live one included (default: the setting)"),
    ] = None,
) -> PruneOut:
    """Delete the chunks, vectors and index files of retired versions beyond the `keep` most
    recent versions (RAG_INDEX__KEEP_VERSIONS by default); never the live version or one
    being built. Pruned versions stay listed, with status pruned."""
    pruned = builds.prune(kb_id, keep)
    with db.read() as session:
        return PruneOut(pruned=pruned, live=knowledge.get_kb(session, kb_id).live_version)
