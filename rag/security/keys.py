"""API keys: created with a tenant and scopes, shown once, stored as a SHA-256, expiring and
revocable.

A key reads `kbqa_<id>_<secret>`: the id finds the row without scanning, the secret (32 random
bytes) is compared by hash in constant time. The id is not secret and appears in logs and the
audit log; the secret appears nowhere after creation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rag.core import tenancy
from rag.core.errors import InvalidInput, NotFound, Unauthorized
from rag.security import audit
from rag.store.db import Database, as_utc
from rag.store.models import ApiKey

PREFIX = "kbqa"
_ACTIVE_CACHE_S = 2.0


@dataclass(frozen=True)
class KeyLimits:
    requests_per_minute: int | None = None
    concurrent_generations: int | None = None
    upload_bytes_per_day: int | None = None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(tenancy.SCOPES))
    if unknown or not scopes:
        raise InvalidInput(
            f"scopes must be a non-empty subset of {', '.join(tenancy.SCOPES)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    return sorted(set(scopes))


def create(
    session: Session,
    *,
    tenant_id: str,
    scopes: list[str],
    name: str = "",
    kb_ids: list[str] | None = None,
    expires_in: timedelta | None = None,
    limits: KeyLimits = KeyLimits(),
) -> tuple[ApiKey, str]:
    """Add a key in the caller's transaction; returns the row and the full key (shown once)."""
    if not tenant_id.strip() or len(tenant_id) > 64:
        raise InvalidInput("the tenant must be 1 to 64 characters")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = ApiKey(
        id=key_id,
        name=name,
        tenant_id=tenant_id,
        scopes=_check_scopes(scopes),
        kb_ids=sorted(set(kb_ids)) if kb_ids else None,
        secret_sha256=_digest(secret),
        expires_at=datetime.now(UTC) + expires_in if expires_in else None,
        requests_per_minute=limits.requests_per_minute,
        concurrent_generations=limits.concurrent_generations,
        upload_bytes_per_day=limits.upload_bytes_per_day,
    )
    session.add(row)
    audit.record(
        session,
        "key.create",
        key_id,
        tenant_id=tenant_id,
        name=name,
        scopes=row.scopes,
        kb_ids=row.kb_ids,
        expires_at=row.expires_at.isoformat() if row.expires_at else None,
    )
    return row, f"{PREFIX}_{key_id}_{secret}"


def revoke(session: Session, key_id: str, tenant_id: str | None = None) -> ApiKey:
    """Revoke a key (idempotent); `tenant_id` restricts which keys the caller may touch."""
    row = session.get(ApiKey, key_id)
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        raise NotFound(f"API key {key_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        audit.record(session, "key.revoke", key_id, tenant_id=row.tenant_id)
    return row


def listing(session: Session, tenant_id: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at)
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    return list(session.execute(query).scalars())


def principal_for(row: ApiKey) -> tenancy.Principal:
    return tenancy.Principal(
        actor=f"key:{row.id}",
        tenant_id=row.tenant_id,
        scopes=frozenset(row.scopes),
        kb_ids=frozenset(row.kb_ids) if row.kb_ids is not None else None,
        key_id=row.id,
        requests_per_minute=row.requests_per_minute,
        concurrent_generations=row.concurrent_generations,
        upload_bytes_per_day=row.upload_bytes_per_day,
    )


def verify(db: Database, token: str) -> tenancy.Principal:
    """The principal of a presented key; Unauthorized saying why when it is not usable."""
    parts = token.split("_", 2)  # the secret itself may contain "_"
    if len(parts) != 3 or parts[0] != PREFIX or not parts[2]:
        raise Unauthorized("the API key is malformed")
    _, key_id, secret = parts
    with db.read() as session:
        row = session.get(ApiKey, key_id)
    # Compare even when the id is unknown, so timing does not tell ids apart.
    expected = row.secret_sha256 if row is not None else _digest("")
    if not hmac.compare_digest(expected, _digest(secret)) or row is None:
        raise Unauthorized("the API key is not valid")
    if row.revoked_at is not None:
        raise Unauthorized("the API key has been revoked")
    if row.expires_at is not None and as_utc(row.expires_at) <= datetime.now(UTC):
        raise Unauthorized("the API key has expired")
    return principal_for(row)


class KeysConfigured:
    """Whether any key was ever created: that ends open mode for good (revoking the last key
    must not silently re-open the API). Cached for 2 s, so a key created from the CLI in
    another process takes effect at once for practical purposes."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._at = -1e9
        self._value = False

    def any(self) -> bool:
        if self._value:
            return True
        now = time.monotonic()
        if now - self._at > _ACTIVE_CACHE_S:
            with self._db.read() as session:
                count = session.execute(select(func.count()).select_from(ApiKey)).scalar_one()
            self._value, self._at = count > 0, now
        return self._value

    def peek(self) -> bool | None:
        """`any()` when it needs no database read (the value is cached), else None."""
        if self._value or time.monotonic() - self._at <= _ACTIVE_CACHE_S:
            return self._value
        return None

    def invalidate(self) -> None:
        self._at = -1e9
