"""Chat-platform bots: create (admin; the credentials are checked and never shown again), list,
read, update (switch off, rename, rotate credentials), delete; and the callback each platform
calls, public here because the platform's own signature is verified instead
(rag/integrations/bots/, docs/bots.md)."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import BotsDep
from api.route_policy import access
from api.schemas import RequestBody
from api.types import UtcDateTime
from rag.integrations.bots.adapter import Callback
from rag.integrations.bots.store import BotInfo

router = APIRouter(tags=["bots"])


class BotCreate(RequestBody):
    platform: Literal["wecom", "dingtalk", "feishu", "slack"]
    assistant: str = Field(description="the assistant's id or name; the bot answers as it")
    name: str = Field("", max_length=200)
    credentials: dict[str, Any] = Field(
        description="wecom: corp_id, corp_secret, agent_id, token, encoding_aes_key; "
        "dingtalk: app_secret; feishu: app_id, app_secret, verification_token, encrypt_key "
        "(recommended); slack: signing_secret, bot_token"
    )
    api_base: str | None = Field(
        None, max_length=2000, description="the platform's API base; default: its public one"
    )


class BotUpdate(RequestBody):
    active: bool | None = Field(None, description="false: callbacks refused, nothing answered")
    name: str | None = Field(None, max_length=200)
    credentials: dict[str, Any] | None = Field(
        None, description="a complete new set, checked like at creation (replaces the old one)"
    )
    api_base: str | None = Field(
        None, max_length=2000, description="the platform's API base; null: its public one"
    )


class BotOut(BaseModel):
    id: str
    platform: str
    name: str
    assistant_id: str
    kb_id: str
    credentials_set: list[str] = Field(description="the names of the credentials stored")
    api_base: str | None
    active: bool
    created_at: UtcDateTime
    callback_path: str = Field(description="give the platform this path on this server")
    callback_url: str

    @classmethod
    def of(cls, bot: BotInfo, request: Request) -> BotOut:
        base = str(request.base_url).rstrip("/")
        return cls(
            id=bot.id,
            platform=bot.platform,
            name=bot.name,
            assistant_id=bot.assistant_id,
            kb_id=bot.kb_id,
            credentials_set=bot.credential_names,
            api_base=bot.api_base,
            active=bot.active,
            created_at=bot.created_at,
            callback_path=bot.callback_path,
            callback_url=base + bot.callback_path,
        )


@router.post("/v1/bots", status_code=status.HTTP_201_CREATED, openapi_extra=access("admin"))
async def create_bot(body: BotCreate, bots: BotsDep, request: Request) -> BotOut:
    check = bots.adapter(body.platform).check_credentials
    info = await run_in_threadpool(
        bots.store.create,
        body.platform,
        body.assistant,
        body.credentials,
        check,
        name=body.name,
        api_base=body.api_base,
    )
    return BotOut.of(info, request)


@router.get("/v1/bots", openapi_extra=access("admin"))
async def list_bots(bots: BotsDep, request: Request) -> list[BotOut]:
    return [BotOut.of(b, request) for b in await run_in_threadpool(bots.store.list_bots)]


@router.get("/v1/bots/{bot_id}", openapi_extra=access("admin"))
async def get_bot(bot_id: str, bots: BotsDep, request: Request) -> BotOut:
    return BotOut.of(await run_in_threadpool(bots.store.get, bot_id), request)


@router.patch("/v1/bots/{bot_id}", openapi_extra=access("admin"))
async def update_bot(bot_id: str, body: BotUpdate, bots: BotsDep, request: Request) -> BotOut:
    current = await run_in_threadpool(bots.store.get, bot_id)  # 404 before checking anything
    info = await run_in_threadpool(
        partial(
            bots.store.update,
            bot_id,
            bots.adapter(current.platform).check_credentials,
            active=body.active,
            name=body.name,
            credentials=body.credentials,
            api_base=body.api_base,
            clear_api_base="api_base" in body.model_fields_set and body.api_base is None,
        )
    )
    return BotOut.of(info, request)


@router.delete(
    "/v1/bots/{bot_id}", status_code=status.HTTP_204_NO_CONTENT, openapi_extra=access("admin")
)
async def delete_bot(bot_id: str, bots: BotsDep) -> Response:
    await run_in_threadpool(bots.store.delete, bot_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _callback(bot_id: str, request: Request, bots: BotsDep) -> Response:
    call = Callback(
        method=request.method,
        query=dict(request.query_params),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=await request.body(),
    )
    answered = await bots.callback(bot_id, call)
    return Response(answered.body, answered.status, media_type=answered.media_type)


@router.get(
    "/v1/bots/{bot_id}/callback",
    response_class=Response,
    openapi_extra=access("public"),
    summary="A platform's URL verification (WeCom's echostr)",
)
async def verify_callback(bot_id: str, request: Request, bots: BotsDep) -> Response:
    return await _callback(bot_id, request, bots)


@router.post(
    "/v1/bots/{bot_id}/callback",
    response_class=Response,
    openapi_extra=access("public"),
    summary="A platform's event: verified by its signature, acknowledged, answered later",
)
async def receive_callback(bot_id: str, request: Request, bots: BotsDep) -> Response:
    return await _callback(bot_id, request, bots)
