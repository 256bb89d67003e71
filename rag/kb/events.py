"""Events for webhooks, written into the outbox (WebhookDelivery rows) inside the caller's
transaction: an event exists exactly when the change it reports was committed, and a crash
between the two cannot lose or invent one. rag/integrations/webhooks.py delivers them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rag.store.models import DeliveryStatus, Document, KnowledgeBase, Webhook, WebhookDelivery

DOCUMENT_READY = "document.ready"
DOCUMENT_FAILED = "document.failed"
SYNC_FINISHED = "sync.finished"
ANSWER_GIVEN = "answer.given"
FEEDBACK_RECEIVED = "feedback.received"
HANDOFF_REQUESTED = "handoff.requested"
EVENTS = (
    DOCUMENT_READY,
    DOCUMENT_FAILED,
    SYNC_FINISHED,
    ANSWER_GIVEN,
    FEEDBACK_RECEIVED,
    HANDOFF_REQUESTED,
)
ANY = "*"


def wants(hook: Webhook, event: str, kb_id: str | None) -> bool:
    """Whether a subscription receives this event of this knowledge base."""
    if not hook.active or (ANY not in hook.events and event not in hook.events):
        return False
    return hook.kb_ids is None or kb_id in hook.kb_ids


def emit(
    session: Session, tenant_id: str, event: str, data: dict[str, Any], kb_id: str | None = None
) -> int:
    """Queue `event` for every subscription of the tenant that wants it; returns how many.
    Nothing is sent here: the rows commit (or roll back) with the caller's transaction."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}: one of {EVENTS}")
    hooks = session.execute(
        select(Webhook).where(Webhook.tenant_id == tenant_id, Webhook.active.is_(True))
    ).scalars()
    now = datetime.now(UTC)
    count = 0
    for hook in hooks:
        if not wants(hook, event, kb_id):
            continue
        body = {"event": event, "created_at": now.isoformat(), "kb_id": kb_id, "data": data}
        session.add(
            WebhookDelivery(
                webhook_id=hook.id,
                tenant_id=tenant_id,
                event=event,
                payload=body,
                status=DeliveryStatus.pending,
                next_attempt_at=now,
            )
        )
        count += 1
    return count


def document_settled(
    session: Session, document_id: str, status: str, error: str | None = None
) -> int:
    """document.ready or document.failed for a document whose outcome this transaction
    commits; other statuses (deleted, superseded) are not events."""
    event = {"ready": DOCUMENT_READY, "failed": DOCUMENT_FAILED}.get(status)
    if event is None:
        return 0
    row = session.execute(
        select(Document, KnowledgeBase.tenant_id)
        .join(KnowledgeBase, KnowledgeBase.id == Document.kb_id)
        .where(Document.id == document_id)
    ).one_or_none()
    if row is None:
        return 0
    doc, tenant_id = row
    data: dict[str, Any] = {
        "document_id": doc.id,
        "filename": doc.filename,
        "status": status,
        "chunks": doc.chunk_count,
        "pages": doc.pages,
    }
    if error:
        data["error"] = error
    return emit(session, tenant_id, event, data, kb_id=doc.kb_id)


def sync_finished(
    session: Session, kb_id: str, job_id: str, report: dict[str, Any], error: str | None
) -> int:
    """sync.finished with the run's report (added, changed, deleted, failed), in its commit."""
    tenant_id = session.execute(
        select(KnowledgeBase.tenant_id).where(KnowledgeBase.id == kb_id)
    ).scalar_one_or_none()
    if tenant_id is None:
        return 0
    data: dict[str, Any] = {"job_id": job_id, "report": report}
    if error:
        data["error"] = error
    return emit(session, tenant_id, SYNC_FINISHED, data, kb_id=kb_id)
