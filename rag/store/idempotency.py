"""Idempotency-Key: a retried request (same key, same route) gets the first response again.

A key reused for a different request (another file, another knowledge base) is refused, so a
client bug cannot silently return the wrong document. Records older than the TTL are ignored.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from rag.core.errors import Conflict, InvalidInput
from rag.store.db import Database, as_utc
from rag.store.models import IdempotencyRecord

TTL = timedelta(hours=24)
MAX_KEY = 255


def fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def check_key(key: str) -> str:
    key = key.strip()
    if not key or len(key) > MAX_KEY:
        raise InvalidInput(f"Idempotency-Key must be 1 to {MAX_KEY} characters")
    return key


def recall(db: Database, key: str, scope: str, fp: str) -> tuple[int, dict[str, Any]] | None:
    with db.read() as session:
        record = session.get(IdempotencyRecord, (key, scope))
        if record is None or as_utc(record.created_at) < db.now() - TTL:
            return None
        if record.fingerprint != fp:
            raise Conflict(
                "this Idempotency-Key was already used for a different request; "
                "use a new key for a new request"
            )
        return record.status_code, record.response


def remember(
    db: Database, key: str, scope: str, fp: str, status_code: int, response: dict[str, Any]
) -> None:
    try:
        with db.write() as session:
            old = session.get(IdempotencyRecord, (key, scope))
            if old is not None:  # expired: the key starts a new life
                session.delete(old)
                session.flush()
            session.add(
                IdempotencyRecord(
                    key=key, scope=scope, fingerprint=fp, status_code=status_code, response=response
                )
            )
    except IntegrityError:
        pass  # a concurrent retry stored the same outcome first
