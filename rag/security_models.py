"""Tables of the security layer: API keys (stored hashed) and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from rag.models import Base, BigIntId, utcnow


class ApiKey(Base):
    """An integration's key. Only the SHA-256 of its secret is kept: the secret is 32 random
    bytes, so a fast hash is safe, and verification stays cheap on every request."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_tenant", "tenant_id"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public part of the key
    name: Mapped[str] = mapped_column(String(200), default="")
    tenant_id: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # None: every knowledge base of the tenant; else only these ids.
    kb_ids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # None: the service defaults (RAG_SECURITY__*).
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrent_generations: Mapped[int | None] = mapped_column(Integer, nullable=True)
    upload_bytes_per_day: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class AuditEvent(Base):
    """Who did what to keys, tenants and knowledge bases. Never holds a secret."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_tenant_at", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(80))  # "key:<id>", "cli", "open"
    tenant_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))  # key.create, kb.delete, ...
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
