"""The audit log: administration of keys, tenants and knowledge bases, one row per action.

Rows name the actor (the key id, "cli" or "open") and never carry secrets: callers pass ids and
settings, and `record` drops any detail field whose name suggests a secret as a last guard.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rag.core import tenancy
from rag.store.models import AuditEvent

log = logging.getLogger(__name__)
_SECRET_SUFFIXES = ("secret", "token", "password", "api_key")


def actor() -> tuple[str, str]:
    """(actor, tenant) of the current request, or the CLI when there is none."""
    principal = tenancy.current()
    if principal is None:
        return "cli", tenancy.DEFAULT_TENANT
    return principal.actor, principal.tenant_id


def record(
    session: Session,
    action: str,
    target: str = "",
    *,
    tenant_id: str | None = None,
    **detail: Any,
) -> None:
    """Add an event to the caller's transaction (it commits or rolls back with the change)."""
    who, tenant = actor()
    clean = {k: v for k, v in detail.items() if not k.lower().endswith(_SECRET_SUFFIXES)}
    session.add(
        AuditEvent(
            actor=who, tenant_id=tenant_id or tenant, action=action, target=target, detail=clean
        )
    )
    log.info("audit: %s %s %s by %s", action, target, clean or "", who)


def events(session: Session, tenant_id: str | None, limit: int = 100) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if tenant_id is not None:
        query = query.where(AuditEvent.tenant_id == tenant_id)
    return list(session.execute(query).scalars())
