"""Admin API for keys and the audit log. An admin key manages its own tenant's keys only;
keys for other tenants are made by the operator with `rag keys create`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, Field

from api.deps import DatabaseDep
from api.route_policy import access
from api.schemas import RequestBody
from api.types import UtcDateTime
from rag.core import tenancy
from rag.security import audit, keys
from rag.store.models import ApiKey

router = APIRouter(tags=["security"])


class KeyCreate(RequestBody):
    name: str = Field("", max_length=200)
    scopes: list[str] = Field(min_length=1)
    kb_ids: list[str] | None = None
    expires_in_days: float | None = Field(None, gt=0, le=36_500)
    requests_per_minute: int | None = Field(None, ge=1)
    concurrent_generations: int | None = Field(None, ge=1)
    upload_bytes_per_day: int | None = Field(None, ge=1)


class KeyOut(BaseModel):
    id: str
    name: str
    tenant_id: str
    scopes: list[str]
    kb_ids: list[str] | None
    created_at: UtcDateTime
    expires_at: UtcDateTime | None
    revoked_at: UtcDateTime | None
    requests_per_minute: int | None
    concurrent_generations: int | None
    upload_bytes_per_day: int | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyOut:
        return cls.model_validate(row, from_attributes=True)


class KeyCreated(KeyOut):
    key: str = Field(description="the full key; shown only in this response")


class AuditOut(BaseModel):
    id: int
    at: UtcDateTime
    actor: str
    tenant_id: str
    action: str
    target: str
    detail: dict[str, Any]


def _principal() -> tenancy.Principal:
    principal = tenancy.current()
    assert principal is not None, "the auth middleware runs before every /v1 route"
    return principal


@router.post("/v1/keys", status_code=status.HTTP_201_CREATED, openapi_extra=access("admin"))
def create_key(body: KeyCreate, db: DatabaseDep, request: Request) -> KeyCreated:
    """Create a key for the caller's tenant. The response is the only time the key is shown."""
    principal = _principal()
    with db.write() as session:
        row, secret = keys.create(
            session,
            tenant_id=principal.tenant_id,
            scopes=body.scopes,
            name=body.name,
            kb_ids=body.kb_ids,
            expires_in=timedelta(days=body.expires_in_days) if body.expires_in_days else None,
            limits=keys.KeyLimits(
                body.requests_per_minute, body.concurrent_generations, body.upload_bytes_per_day
            ),
        )
    request.app.state.guard.forget()
    return KeyCreated(**KeyOut.of(row).model_dump(), key=secret)


@router.get("/v1/keys", openapi_extra=access("admin"))
def list_keys(db: DatabaseDep) -> dict[str, list[KeyOut]]:
    with db.read() as session:
        rows = keys.listing(session, _principal().tenant_id)
    return {"keys": [KeyOut.of(r) for r in rows]}


@router.delete(
    "/v1/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, openapi_extra=access("admin")
)
def revoke_key(key_id: str, db: DatabaseDep, request: Request) -> Response:
    with db.write() as session:
        keys.revoke(session, key_id, _principal().tenant_id)
    request.app.state.guard.forget()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/v1/audit", openapi_extra=access("admin"))
def audit_log(db: DatabaseDep, limit: int = 100) -> dict[str, list[AuditOut]]:
    """The caller's tenant's administration events, newest first."""
    with db.read() as session:
        rows = audit.events(session, _principal().tenant_id, max(1, min(limit, 1000)))
    return {"events": [AuditOut.model_validate(r, from_attributes=True) for r in rows]}
