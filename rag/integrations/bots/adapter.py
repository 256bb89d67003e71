"""What every platform adapter provides, and the values passed between it and the runner.

An adapter is pure where it can be: `receive` verifies a callback (signature, timestamp,
decryption, token) and says what to acknowledge and what to answer; `send` posts a reply
through the platform's message API. It never answers a question itself (runner.py does).
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from rag.core.errors import InvalidInput

PLATFORMS = ("wecom", "dingtalk", "feishu", "slack")


@dataclass(frozen=True)
class Callback:
    """A platform's HTTP request to /v1/bots/{id}/callback, as received (headers lower-case)."""

    method: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Response:
    """What the callback route answers the platform."""

    status: int = 200
    body: bytes = b""
    media_type: str = "text/plain"

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(value, ensure_ascii=False).encode(), "application/json")

    @classmethod
    def text(cls, value: str, status: int = 200) -> Response:
        return cls(status, value.encode(), "text/plain")


class Refused(Exception):
    """A callback that failed verification: `response` is the platform's expected refusal
    (never a 5xx, which the platform would retry), `reason` goes to the log."""

    def __init__(self, reason: str, response: Response) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response


class SendFailed(Exception):
    """The platform's message API did not take the reply; `retry` False: trying again is futile."""

    def __init__(self, message: str, *, retry: bool = True, after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.after_s = after_s


@dataclass(frozen=True)
class BotConfig:
    """A bot as the adapters see it: a snapshot of its row and its assistant's knowledge base."""

    id: str
    tenant_id: str
    platform: str
    assistant_id: str
    kb_id: str
    credentials: Mapping[str, Any]
    api_base: str | None = None
    # False: switched off by an admin; its callbacks get the platform's refusal.
    active: bool = True

    def base(self, default: str) -> str:
        return (self.api_base or default).rstrip("/")


@dataclass(frozen=True)
class Message:
    """A question (or a feedback command) from one chat thread, and where the reply goes."""

    thread_key: str
    text: str
    target: Mapping[str, Any]


@dataclass(frozen=True)
class Inbound:
    """A verified callback: acknowledge with `ack`; `nonces` must be new (one seen before is a
    replay: refused); `dedupe`, seen before, is the platform retrying a delivery (acknowledged,
    not answered again); `message` is what to answer, if anything."""

    ack: Response
    nonces: tuple[str, ...] = ()
    dedupe: str | None = None
    message: Message | None = None


@dataclass(frozen=True)
class Reply:
    """An answer to send: its text (the [n] markers kept) and one line per cited source."""

    text: str
    sources: list[str] = field(default_factory=list)


class Adapter(Protocol):
    platform: str
    # The time within which the platform wants the callback acknowledged (docs/bots.md).
    ack_limit_s: float

    def check_credentials(self, credentials: Mapping[str, Any]) -> dict[str, Any]:
        """The credentials to keep (InvalidInput names what is missing or malformed)."""
        ...

    def receive(self, bot: BotConfig, call: Callback, now: float, tolerance_s: float) -> Inbound:
        """Verify and read a callback (Refused when it fails)."""
        ...

    def refusal(self, reason: str) -> Response:
        """The platform's expected refusal, e.g. for a replayed nonce."""
        ...

    async def send(
        self, http: httpx.AsyncClient, bot: BotConfig, target: Mapping[str, Any], reply: Reply
    ) -> None:
        """Post `reply` through the platform's message API (SendFailed when it does not take it)."""
        ...


def require(credentials: Mapping[str, Any], platform: str, *names: str) -> dict[str, Any]:
    """The named credentials, each a non-empty string (InvalidInput lists those missing)."""
    missing = [n for n in names if not isinstance(credentials.get(n), str) or not credentials[n]]
    if missing:
        raise InvalidInput(f"a {platform} bot needs the credential(s) {missing}")
    return {n: credentials[n].strip() for n in names}


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two signatures or tokens."""
    return hmac.compare_digest(a.encode(), b.encode())


def fresh(timestamp: str | None, now: float, limit_s: float) -> bool:
    """Whether a callback's unix timestamp (seconds) is within `limit_s` of now."""
    try:
        value = float(timestamp or "")
    except ValueError:
        return False
    return abs(now - value) <= limit_s


class TokenCache:
    """A platform's access tokens per bot (WeCom, Feishu), renewed a few minutes before they
    expire: a token must not expire between the lookup and the send."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}  # bot id -> (token, monotonic expiry)

    def get(self, bot_id: str) -> str | None:
        cached = self._tokens.get(bot_id)
        return cached[0] if cached is not None and cached[1] > time.monotonic() else None

    def put(self, bot_id: str, token: str, expires_in_s: int) -> str:
        self._tokens[bot_id] = (token, time.monotonic() + max(60, expires_in_s - 300))
        return token

    def forget(self, bot_id: str) -> None:
        """The platform refused the token: the next send fetches a new one."""
        self._tokens.pop(bot_id, None)


def status_ok(response: httpx.Response, platform: str) -> None:
    """Raise SendFailed for an HTTP failure: retried for 429 and 5xx, not for other 4xx."""
    if response.status_code < 400:
        return
    after = response.headers.get("retry-after")
    retry = response.status_code == 429 or response.status_code >= 500
    raise SendFailed(
        f"{platform} answered HTTP {response.status_code}",
        retry=retry,
        after_s=float(after) if after and after.isdigit() else None,
    )


_FOLD = re.compile(r"\s+")


def plain(text: str) -> str:
    """Whitespace folded: how a command is compared."""
    return _FOLD.sub(" ", text).strip()
