"""DingTalk (钉钉) robot, outgoing mode: the signed callback and the session webhook reply.

Headers `timestamp` (milliseconds) and `sign` = base64(HmacSHA256(app_secret,
timestamp + "\\n" + app_secret)); DingTalk refuses timestamps over an hour old, and so do we (or
sooner, RAG_BOTS__TIMESTAMP_TOLERANCE_S). The answer is POSTed as markdown to the message's
`sessionWebhook`, which must lie under the bot's API base (no other host is ever called).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from rag.integrations.bots.adapter import (
    BotConfig,
    Callback,
    Inbound,
    Message,
    Refused,
    Reply,
    Response,
    SendFailed,
    fresh,
    require,
    same,
    status_ok,
)

DEFAULT_API = "https://oapi.dingtalk.com"
MAX_AGE_S = 3600.0
TITLE_CHARS = 30


def sign(app_secret: str, timestamp: str) -> str:
    digest = hmac.new(
        app_secret.encode(), f"{timestamp}\n{app_secret}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


class DingTalkAdapter:
    platform = "dingtalk"
    ack_limit_s = 5.0

    def check_credentials(self, credentials: Mapping[str, Any]) -> dict[str, Any]:
        return require(credentials, self.platform, "app_secret")

    def refusal(self, reason: str) -> Response:
        return Response.json({"errcode": 403, "errmsg": "forbidden"}, 403)

    def _refuse(self, reason: str) -> Refused:
        return Refused(reason, self.refusal(reason))

    def receive(self, bot: BotConfig, call: Callback, now: float, tolerance_s: float) -> Inbound:
        timestamp, given = call.headers.get("timestamp", ""), call.headers.get("sign", "")
        if not timestamp or not given:
            raise self._refuse("missing timestamp or sign header")
        if not same(sign(bot.credentials["app_secret"], timestamp), given):
            raise self._refuse("bad signature")
        seconds = str(int(timestamp) / 1000) if timestamp.isdigit() else ""
        if not fresh(seconds, now, min(MAX_AGE_S, tolerance_s)):
            raise self._refuse("stale timestamp")
        try:
            body = json.loads(call.body)
            conversation = str(body["conversationId"])
            webhook = str(body["sessionWebhook"])
            expires_ms = int(body.get("sessionWebhookExpiredTime") or 0)
        except (ValueError, KeyError, TypeError):
            raise self._refuse("body is not a DingTalk robot message") from None
        if not webhook.startswith(bot.base(DEFAULT_API) + "/"):
            raise self._refuse("sessionWebhook is not on the DingTalk API")
        nonce = f"msg:{body.get('msgId') or timestamp + ':' + given}"
        ack = Response.json({})
        text = (body.get("text") or {}).get("content", "")
        if body.get("msgtype") != "text" or not isinstance(text, str):
            return Inbound(ack, (nonce,))
        target = {"webhook": webhook, "expires_ms": expires_ms}
        return Inbound(ack, (nonce,), message=Message(conversation, text, target))

    async def send(
        self, http: httpx.AsyncClient, bot: BotConfig, target: Mapping[str, Any], reply: Reply
    ) -> None:
        expires_ms = int(target.get("expires_ms") or 0)
        if expires_ms and expires_ms < time.time() * 1000:
            raise SendFailed("the sessionWebhook has expired", retry=False)
        resp = await http.post(str(target["webhook"]), json=render(reply))
        status_ok(resp, self.platform)
        body = resp.json()
        if body.get("errcode", 0) != 0:
            raise SendFailed(f"dingtalk sessionWebhook: {body.get('errcode')} {body.get('errmsg')}")


def render(reply: Reply) -> dict[str, Any]:
    """A markdown message; the title (shown in notifications) is the answer's start."""
    text = reply.text
    if reply.sources:
        text += "\n\n" + "\n".join(f"- {line}" for line in reply.sources)
    title = reply.text.strip().splitlines()[0][:TITLE_CHARS] if reply.text.strip() else "answer"
    return {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
