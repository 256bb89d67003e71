"""Slack Events API: the signed callback and chat.postMessage in the question's thread.

X-Slack-Signature = "v0=" + hex HMAC-SHA256(signing_secret, "v0:" + timestamp + ":" + raw body),
with X-Slack-Request-Timestamp within 5 minutes. An event id seen before is Slack retrying
(X-Slack-Retry-Num: acknowledged, not answered again) or a replay (refused). The bot's own
messages (bot_id, or a subtype) are ignored; in channels it answers mentions only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

import httpx

from rag.core.errors import InvalidInput
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

DEFAULT_API = "https://slack.com/api"
MAX_AGE_S = 300.0
_MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>\s*")
# Slack's mrkdwn control characters, escaped in text that is not markup.
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def signature(signing_secret: str, timestamp: str, body: bytes) -> str:
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def escape(text: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in text)


class SlackAdapter:
    platform = "slack"
    ack_limit_s = 3.0

    def check_credentials(self, credentials: Mapping[str, Any]) -> dict[str, Any]:
        kept = require(credentials, self.platform, "signing_secret", "bot_token")
        if not kept["bot_token"].startswith("xox"):
            raise InvalidInput("bot_token must be the app's Bot User OAuth Token (xoxb-...)")
        return kept

    def refusal(self, reason: str) -> Response:
        return Response.text("unauthorized", 401)

    def _refuse(self, reason: str) -> Refused:
        return Refused(reason, self.refusal(reason))

    def receive(self, bot: BotConfig, call: Callback, now: float, tolerance_s: float) -> Inbound:
        ts = call.headers.get("x-slack-request-timestamp", "")
        given = call.headers.get("x-slack-signature", "")
        secret = bot.credentials["signing_secret"]
        if not given or not same(signature(secret, ts, call.body), given):
            raise self._refuse("bad signature")
        if not fresh(ts, now, min(MAX_AGE_S, tolerance_s)):
            raise self._refuse("stale timestamp")
        try:
            body = json.loads(call.body)
        except ValueError:
            raise self._refuse("body is not JSON") from None
        if not isinstance(body, dict):
            raise self._refuse("body is not a JSON object")
        if body.get("type") == "url_verification":
            return Inbound(Response.json({"challenge": body.get("challenge", "")}))
        ack = Response.text("")
        event_id = f"event:{body.get('event_id', '')}"
        # The same event id again is Slack retrying when it says so, a replay otherwise.
        retry = "x-slack-retry-num" in call.headers
        nonces, dedupe = ((), event_id) if retry else ((event_id,), None)
        event = body.get("event") or {}
        kind = event.get("type")
        own = bool(event.get("bot_id")) or bool(event.get("subtype"))
        wanted = kind == "app_mention" or (kind == "message" and event.get("channel_type") == "im")
        if body.get("type") != "event_callback" or own or not wanted:
            return Inbound(ack, nonces, dedupe)
        channel, ts_of = (
            str(event.get("channel", "")),
            str(event.get("thread_ts") or event.get("ts") or ""),
        )
        if not channel or not ts_of:
            return Inbound(ack, nonces, dedupe)
        text = _MENTION.sub("", str(event.get("text", "")))
        target = {"channel": channel, "thread_ts": ts_of}
        return Inbound(ack, nonces, dedupe, Message(f"{channel}:{ts_of}", text, target))

    async def send(
        self, http: httpx.AsyncClient, bot: BotConfig, target: Mapping[str, Any], reply: Reply
    ) -> None:
        resp = await http.post(
            f"{bot.base(DEFAULT_API)}/chat.postMessage",
            headers={"Authorization": f"Bearer {bot.credentials['bot_token']}"},
            json=render(target, reply),
        )
        status_ok(resp, self.platform)
        body = resp.json()
        if not body.get("ok"):
            error = body.get("error")
            retry = error in ("ratelimited", "internal_error", "service_unavailable")
            raise SendFailed(f"slack chat.postMessage: {error}", retry=retry)


def render(target: Mapping[str, Any], reply: Reply) -> dict[str, Any]:
    """mrkdwn text in the question's thread: the answer, then the sources as a list."""
    text = escape(reply.text)
    if reply.sources:
        text += "\n\n" + "\n".join(f"• {escape(line)}" for line in reply.sources)
    return {
        "channel": target["channel"],
        "thread_ts": target["thread_ts"],
        "text": text,
        "mrkdwn": True,
    }
