"""Webhook subscriptions and their delivery log: create (the secret is shown once), list,
delete, read deliveries, replay one. Admin scope, the caller's tenant only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import DatabaseDep
from api.route_policy import access
from api.schemas import RequestBody
from api.types import UtcDateTime
from rag.kb import webhooks
from rag.kb.events import ANY, EVENTS
from rag.store.models import Webhook, WebhookDelivery

router = APIRouter(tags=["webhooks"])


class WebhookCreate(RequestBody):
    url: str = Field(max_length=2000, description="http(s) URL that receives the POSTs")
    events: list[str] = Field(
        min_length=1, description=f"any of {[*EVENTS, ANY]}; {ANY!r} is every event"
    )
    secret: str | None = Field(
        None, min_length=16, max_length=200, description="HMAC key; generated when left out"
    )
    kb_ids: list[str] | None = Field(None, description="only these knowledge bases' events")


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    kb_ids: list[str] | None
    active: bool
    created_at: UtcDateTime

    @classmethod
    def of(cls, row: Webhook) -> WebhookOut:
        return cls.model_validate(row, from_attributes=True)


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret; shown only in this response")


class DeliveryOut(BaseModel):
    id: str
    webhook_id: str
    event: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: UtcDateTime
    last_status_code: int | None
    last_error: str | None
    created_at: UtcDateTime
    delivered_at: UtcDateTime | None

    @classmethod
    def of(cls, row: WebhookDelivery) -> DeliveryOut:
        return cls.model_validate(row, from_attributes=True)


@router.post("/v1/webhooks", status_code=status.HTTP_201_CREATED, openapi_extra=access("admin"))
async def create_webhook(body: WebhookCreate, db: DatabaseDep) -> WebhookCreated:
    """Subscribe a URL to events. Each POST carries `X-Kbqa-Signature: t=<unix>,v1=<hex>`, the
    HMAC-SHA256 of `"<t>." + body` with the secret; `X-Kbqa-Delivery` is the id to deduplicate
    on (deliveries are at least once)."""
    row = await run_in_threadpool(
        webhooks.create, db, body.url, body.events, secret=body.secret, kb_ids=body.kb_ids
    )
    return WebhookCreated(**WebhookOut.of(row).model_dump(), secret=row.secret)


@router.get("/v1/webhooks", openapi_extra=access("admin"))
async def list_webhooks(db: DatabaseDep) -> list[WebhookOut]:
    return [WebhookOut.of(h) for h in await run_in_threadpool(webhooks.list_hooks, db)]


@router.delete(
    "/v1/webhooks/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    openapi_extra=access("admin"),
)
async def delete_webhook(webhook_id: str, db: DatabaseDep) -> Response:
    await run_in_threadpool(webhooks.delete, db, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/v1/webhooks/{webhook_id}/deliveries", openapi_extra=access("admin"))
async def list_deliveries(
    webhook_id: str,
    db: DatabaseDep,
    status_filter: str | None = Query(None, alias="status", description="pending, delivered, dead"),
    limit: int = Query(100, ge=1, le=webhooks.MAX_DELIVERIES_LISTED),
) -> list[DeliveryOut]:
    """The delivery log, newest first."""
    rows = await run_in_threadpool(
        webhooks.deliveries, db, webhook_id, status=status_filter, limit=limit
    )
    return [DeliveryOut.of(d) for d in rows]


@router.post("/v1/webhooks/deliveries/{delivery_id}/replay", openapi_extra=access("admin"))
async def replay_delivery(delivery_id: str, db: DatabaseDep) -> DeliveryOut:
    """Send a delivery again now (a dead one included), with the same body and id."""
    return DeliveryOut.of(await run_in_threadpool(webhooks.replay, db, delivery_id))
