"""Feishu / Lark event subscription (schema 2.0): the challenge, the signed and encrypted
callback, and the reply through the message API.

With an Encrypt Key the body is {"encrypt": base64(iv16 + AES-256-CBC(sha256(key)))} and each
event carries X-Lark-Signature = sha256_hex(timestamp + nonce + encrypt_key + raw body); every
event's header.token must equal the Verification Token. Replies: tenant_access_token, then
im/v1/messages/{message_id}/reply with a "post" message listing the sources.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import httpx

from rag.core.errors import InvalidInput
from rag.integrations.bots import cipher
from rag.integrations.bots.adapter import (
    BotConfig,
    Callback,
    Inbound,
    Message,
    Refused,
    Reply,
    Response,
    SendFailed,
    TokenCache,
    fresh,
    require,
    same,
    status_ok,
)

DEFAULT_API = "https://open.feishu.cn/open-apis"
# codes meaning the tenant access token is invalid or expired: fetch a new one.
TOKEN_ERRORS = {99991661, 99991663, 99991668}
_MENTION = re.compile(r"@_user_\d+\s*")


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


def seal(encrypt_key: str, plaintext: bytes, iv: bytes) -> str:
    """What Feishu sends as `encrypt` (the fakes use it)."""
    key = hashlib.sha256(encrypt_key.encode()).digest()
    return base64.b64encode(iv + cipher.encrypt(key, iv, plaintext)).decode()


def open_sealed(encrypt_key: str, encrypted: str) -> bytes:
    key = hashlib.sha256(encrypt_key.encode()).digest()
    try:
        raw = base64.b64decode(encrypted, validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64") from exc
    return cipher.decrypt(key, raw[:16], raw[16:])


class FeishuAdapter:
    platform = "feishu"
    ack_limit_s = 3.0

    def __init__(self) -> None:
        self._tokens = TokenCache()

    def check_credentials(self, credentials: Mapping[str, Any]) -> dict[str, Any]:
        kept = require(credentials, self.platform, "app_id", "app_secret", "verification_token")
        key = credentials.get("encrypt_key")
        if key is not None and (not isinstance(key, str) or not key.strip()):
            raise InvalidInput("encrypt_key, when given, must be the app's Encrypt Key")
        return {**kept, **({"encrypt_key": key.strip()} if key else {})}

    def refusal(self, reason: str) -> Response:
        return Response.json({"msg": "unauthorized"}, 401)

    def _refuse(self, reason: str) -> Refused:
        return Refused(reason, self.refusal(reason))

    def _payload(
        self, bot: BotConfig, call: Callback, now: float, tol: float
    ) -> tuple[dict[str, Any], str | None]:
        """The event, decrypted, its signature checked, and its nonce (None: not signed; the
        challenge is not signed and is checked by its token alone)."""
        try:
            outer = json.loads(call.body)
        except ValueError:
            raise self._refuse("body is not JSON") from None
        if not isinstance(outer, dict):
            raise self._refuse("body is not a JSON object")
        key = bot.credentials.get("encrypt_key")
        if not key:
            return outer, None
        if not isinstance(outer.get("encrypt"), str):
            raise self._refuse("an Encrypt Key is set but the body is not encrypted")
        try:
            event = json.loads(open_sealed(key, outer["encrypt"]))
        except ValueError:
            raise self._refuse("does not decrypt") from None
        if not isinstance(event, dict):
            raise self._refuse("decrypted body is not a JSON object")
        if event.get("type") == "url_verification":
            return event, None
        h = call.headers
        ts, nonce = h.get("x-lark-request-timestamp", ""), h.get("x-lark-request-nonce", "")
        given = h.get("x-lark-signature", "")
        if not given or not same(signature(ts, nonce, key, call.body), given):
            raise self._refuse("bad signature")
        if not fresh(ts, now, tol):
            raise self._refuse("stale timestamp")
        return event, nonce

    def receive(self, bot: BotConfig, call: Callback, now: float, tolerance_s: float) -> Inbound:
        event, nonce = self._payload(bot, call, now, tolerance_s)
        token = bot.credentials["verification_token"]
        if event.get("type") == "url_verification":
            if not same(str(event.get("token", "")), token):
                raise self._refuse("bad verification token")
            return Inbound(Response.json({"challenge": event.get("challenge", "")}))
        header = event.get("header") or {}
        if not same(str(header.get("token", "")), token):
            raise self._refuse("bad verification token")
        nonces = (f"nonce:{nonce}",) if nonce else ()
        ack = Response.json({})
        event_id = f"event:{header.get('event_id', '')}" if header.get("event_id") else None
        body = event.get("event") or {}
        message = body.get("message") or {}
        sender = body.get("sender") or {}
        if (
            header.get("event_type") != "im.message.receive_v1"
            or message.get("message_type") != "text"
            or sender.get("sender_type", "user") != "user"
        ):
            return Inbound(ack, nonces, dedupe=event_id)
        try:
            text = json.loads(message.get("content") or "{}").get("text", "")
        except (ValueError, AttributeError):
            text = ""
        chat, root = message.get("chat_id", ""), message.get("root_id") or message.get("thread_id")
        thread = f"{chat}:{root}" if root else str(chat)
        target = {"message_id": message.get("message_id", "")}
        text = _MENTION.sub("", str(text))
        return Inbound(ack, nonces, dedupe=event_id, message=Message(thread, text, target))

    async def _token(self, http: httpx.AsyncClient, bot: BotConfig) -> str:
        cached = self._tokens.get(bot.id)
        if cached is not None:
            return cached
        creds = bot.credentials
        resp = await http.post(
            f"{bot.base(DEFAULT_API)}/auth/v3/tenant_access_token/internal",
            json={"app_id": creds["app_id"], "app_secret": creds["app_secret"]},
        )
        status_ok(resp, self.platform)
        body = resp.json()
        if body.get("code", 0) != 0 or not body.get("tenant_access_token"):
            raise SendFailed(f"feishu tenant_access_token: {body.get('code')} {body.get('msg')}")
        token = str(body["tenant_access_token"])
        return self._tokens.put(bot.id, token, int(body.get("expire", 7200)))

    async def send(
        self, http: httpx.AsyncClient, bot: BotConfig, target: Mapping[str, Any], reply: Reply
    ) -> None:
        token = await self._token(http, bot)
        resp = await http.post(
            f"{bot.base(DEFAULT_API)}/im/v1/messages/{target['message_id']}/reply",
            headers={"Authorization": f"Bearer {token}"},
            json=render(reply),
        )
        if resp.status_code < 500 and resp.headers.get("content-type", "").startswith(
            "application/json"
        ):
            code = resp.json().get("code", 0)
            if code in TOKEN_ERRORS:
                self._tokens.forget(bot.id)
                raise SendFailed(f"feishu reply: token refused ({code})")
            if code != 0:
                raise SendFailed(f"feishu reply: {code} {resp.json().get('msg')}", retry=False)
        status_ok(resp, self.platform)


def render(reply: Reply) -> dict[str, Any]:
    """A rich-text ("post") message: the answer's paragraphs, then one line per source."""
    paragraphs = [[{"tag": "text", "text": p}] for p in reply.text.split("\n") if p.strip()]
    paragraphs += [[{"tag": "text", "text": line}] for line in reply.sources]
    post = {"zh_cn": {"title": "", "content": paragraphs or [[{"tag": "text", "text": " "}]]}}
    return {"msg_type": "post", "content": json.dumps(post, ensure_ascii=False)}
