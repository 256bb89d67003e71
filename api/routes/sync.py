"""`POST …/sync`: keep a knowledge base equal to a server folder or a list of URLs."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import DatabaseDep, KbIdDep, SettingsDep, WorkerDep
from api.route_policy import access
from api.schemas import JobOut, SyncRequest
from rag.kb import sync

router = APIRouter(tags=["jobs"])


@router.post(
    "/v1/knowledge-bases/{kb_id}/sync",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    openapi_extra=access("admin"),
)
def start(
    kb_id: KbIdDep, body: SyncRequest, db: DatabaseDep, settings: SettingsDep, worker: WorkerDep
) -> JobOut:
    """Queue a sync job: what is new or changed in the source becomes a new version of the
    document with its key (the path below the folder, or the URL), what the source no longer
    lists is deleted, and the job's result reports it. With `interval_s` each run queues the
    next; cancelling the queued run ends the schedule, and a new sync of the knowledge base
    replaces it. Admin only: the worker reads the folder or fetches the URLs itself."""
    spec = sync.SyncSpec(
        folder=body.folder,
        urls=tuple(body.urls or ()),
        interval_s=body.interval_s,
        delete_missing=body.delete_missing,
    )
    job = sync.start_sync(db, kb_id, spec, settings.sync)
    if worker is not None:
        worker.wake()
    return JobOut.of(job)
