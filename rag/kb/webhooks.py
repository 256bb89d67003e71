"""Webhook subscriptions and their delivery log: create, list, delete, and replay a delivery.
Scoped to the current principal's tenant like knowledge bases (another tenant's: NotFound).
What is sent and when lives in rag/integrations/webhook_delivery.py; events in rag/kb/events.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

from sqlalchemy import select

from rag.core import tenancy
from rag.core.errors import InvalidInput, NotFound
from rag.kb.events import ANY, EVENTS
from rag.security import audit
from rag.store.db import Database
from rag.store.models import DeliveryStatus, Webhook, WebhookDelivery

MAX_DELIVERIES_LISTED = 500


def _tenant() -> str | None:
    principal = tenancy.current()
    return None if principal is None else principal.tenant_id


def _check(url: str, events: Sequence[str]) -> list[str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"a webhook URL must be http(s)://host/...; got {url!r}")
    unknown = sorted(set(events) - {*EVENTS, ANY})
    if not events or unknown:
        raise InvalidInput(f"unknown or no events {unknown}: any of {[*EVENTS, ANY]}")
    return sorted(set(events))


def create(
    db: Database,
    url: str,
    events: Sequence[str],
    *,
    secret: str | None = None,
    kb_ids: list[str] | None = None,
) -> Webhook:
    """A new subscription for the current tenant; `secret` is generated when not given (the
    caller shows it once)."""
    wanted = _check(url, events)
    if secret is not None and len(secret) < 16:
        raise InvalidInput("a webhook secret needs at least 16 characters")
    with db.write() as session:
        hook = Webhook(
            tenant_id=_tenant() or tenancy.DEFAULT_TENANT,
            url=url,
            secret=secret or secrets.token_urlsafe(32),
            events=wanted,
            kb_ids=kb_ids,
        )
        session.add(hook)
        session.flush()
        audit.record(session, "webhook.create", hook.id, tenant_id=hook.tenant_id, url=url)
        session.expunge(hook)
        return hook


def _visible(hook: Webhook | None, hook_id: str) -> Webhook:
    tenant = _tenant()
    if hook is None or (tenant is not None and hook.tenant_id != tenant):
        raise NotFound(f"webhook {hook_id} does not exist")
    return hook


def list_hooks(db: Database) -> list[Webhook]:
    tenant = _tenant()
    stmt = select(Webhook).order_by(Webhook.created_at)
    if tenant is not None:
        stmt = stmt.where(Webhook.tenant_id == tenant)
    with db.read() as session:
        return list(session.execute(stmt).scalars())


def delete(db: Database, hook_id: str) -> None:
    """Remove a subscription and its delivery log."""
    with db.write() as session:
        hook = _visible(session.get(Webhook, hook_id), hook_id)
        session.query(WebhookDelivery).filter(WebhookDelivery.webhook_id == hook.id).delete()
        session.delete(hook)
        audit.record(session, "webhook.delete", hook_id, tenant_id=hook.tenant_id)


def deliveries(
    db: Database, hook_id: str, *, status: str | None = None, limit: int = 100
) -> list[WebhookDelivery]:
    """The subscription's deliveries, newest first."""
    if status is not None and status not in DeliveryStatus.__members__:
        raise InvalidInput(f"unknown delivery status {status!r}: one of {list(DeliveryStatus)}")
    with db.read() as session:
        _visible(session.get(Webhook, hook_id), hook_id)
        stmt = (
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == hook_id)
            .order_by(WebhookDelivery.created_at.desc())
            .limit(max(1, min(limit, MAX_DELIVERIES_LISTED)))
        )
        if status is not None:
            stmt = stmt.where(WebhookDelivery.status == status)
        return list(session.execute(stmt).scalars())


def replay(db: Database, delivery_id: str) -> WebhookDelivery:
    """Send a delivery again (a dead one, or a delivered one the receiver lost): due now, with
    a fresh count of attempts. The body is the same, so the receiver can deduplicate."""
    with db.write() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        tenant = _tenant()
        if delivery is None or (tenant is not None and delivery.tenant_id != tenant):
            raise NotFound(f"webhook delivery {delivery_id} does not exist")
        delivery.status = DeliveryStatus.pending
        delivery.attempts = 0
        delivery.next_attempt_at = db.now()
        delivery.last_error = None
        audit.record(session, "webhook.replay", delivery_id, tenant_id=delivery.tenant_id)
        session.flush()
        session.expunge(delivery)
        return delivery
