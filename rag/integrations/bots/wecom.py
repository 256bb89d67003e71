"""WeCom (企业微信) self-built app: the encrypted callback and the message API.

A callback's `msg_signature` is SHA1 over the sorted token, timestamp, nonce and ciphertext;
the ciphertext is AES-256-CBC (key: the EncodingAESKey base64-decoded, IV: its first 16
bytes, PKCS#7 to 32) of 16 random bytes, a 4-byte big-endian length, the message and the
corp id. GET verifies the URL (echostr decrypted and returned); POST carries a message, answered
later with gettoken + message/send.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import xml.etree.ElementTree as ET
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

DEFAULT_API = "https://qyapi.weixin.qq.com/cgi-bin"
BLOCK = 32
MAX_BYTES = 2048  # WeCom's limit on a markdown message's content
ELLIPSIS = "…"
# errcodes meaning the access token is invalid or expired: fetch a new one.
TOKEN_ERRORS = {40001, 40014, 42001}


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypted])).encode()).hexdigest()


def aes_key(encoding_aes_key: str) -> bytes:
    return base64.b64decode(encoding_aes_key + "=")


def seal(encoding_aes_key: str, message: bytes, receive_id: str, random16: bytes) -> str:
    """The base64 ciphertext of `message` for `receive_id` (what WeCom sends; the fakes use it)."""
    key = aes_key(encoding_aes_key)
    plain = random16 + struct.pack(">I", len(message)) + message + receive_id.encode()
    return base64.b64encode(cipher.encrypt(key, key[:16], plain, BLOCK)).decode()


def open_sealed(encoding_aes_key: str, encrypted: str) -> tuple[bytes, str]:
    """(message, receive id) of a ciphertext (ValueError when it does not decrypt)."""
    key = aes_key(encoding_aes_key)
    try:
        plain = cipher.decrypt(key, key[:16], base64.b64decode(encrypted, validate=True), BLOCK)
    except binascii.Error as exc:
        raise ValueError("not base64") from exc
    if len(plain) < 20:
        raise ValueError("too short")
    (length,) = struct.unpack(">I", plain[16:20])
    if 20 + length > len(plain):
        raise ValueError("bad length")
    return plain[20 : 20 + length], plain[20 + length :].decode()


def parse_xml(data: bytes) -> dict[str, str]:
    """A flat WeCom XML document's elements (a DOCTYPE, hence any entity, is refused)."""
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise ValueError("DTDs are not accepted")
    root = ET.fromstring(data)
    return {child.tag: (child.text or "") for child in root}


class WeComAdapter:
    platform = "wecom"
    ack_limit_s = 5.0

    def __init__(self) -> None:
        self._tokens = TokenCache()

    def check_credentials(self, credentials: Mapping[str, Any]) -> dict[str, Any]:
        names = ("corp_id", "corp_secret", "token", "encoding_aes_key")
        kept = require(credentials, self.platform, *names)
        agent = credentials.get("agent_id")
        if isinstance(agent, str) and agent.strip().isdigit():
            agent = int(agent)
        if not isinstance(agent, int) or isinstance(agent, bool) or agent <= 0:
            raise InvalidInput("a wecom bot needs agent_id, the app's AgentId (a number)")
        key = kept["encoding_aes_key"]
        try:
            valid = len(key) == 43 and len(aes_key(key)) == 32
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            raise InvalidInput("encoding_aes_key must be the 43-character EncodingAESKey")
        return {**kept, "agent_id": agent}

    def refusal(self, reason: str) -> Response:
        return Response.text("forbidden", 403)

    def _refuse(self, reason: str) -> Refused:
        return Refused(reason, self.refusal(reason))

    def _open(
        self, bot: BotConfig, call: Callback, encrypted: str, now: float, tol: float
    ) -> bytes:
        creds = bot.credentials
        q = call.query
        timestamp, nonce, given = q.get("timestamp", ""), q.get("nonce", ""), q.get("msg_signature")
        if not given or not nonce or not encrypted:
            raise self._refuse("missing msg_signature, nonce or ciphertext")
        if not same(signature(creds["token"], timestamp, nonce, encrypted), given):
            raise self._refuse("bad signature")
        if not fresh(timestamp, now, tol):
            raise self._refuse("stale timestamp")
        try:
            message, receive_id = open_sealed(creds["encoding_aes_key"], encrypted)
        except ValueError as exc:
            raise self._refuse(f"does not decrypt: {exc}") from None
        if not same(receive_id, creds["corp_id"]):
            raise self._refuse("for another corp id")
        return message

    def receive(self, bot: BotConfig, call: Callback, now: float, tolerance_s: float) -> Inbound:
        if call.method == "GET":  # URL verification: echo the decrypted echostr
            echo = self._open(bot, call, call.query.get("echostr", ""), now, tolerance_s)
            return Inbound(Response.text(echo.decode()))
        try:
            outer = parse_xml(call.body)
        except (ET.ParseError, ValueError):
            raise self._refuse("body is not WeCom XML") from None
        inner_raw = self._open(bot, call, outer.get("Encrypt", ""), now, tolerance_s)
        try:
            inner = parse_xml(inner_raw)
        except (ET.ParseError, ValueError):
            raise self._refuse("decrypted message is not XML") from None
        nonce = f"nonce:{call.query.get('timestamp')}:{call.query.get('nonce')}"
        ack = Response.text("")
        user = inner.get("FromUserName", "")
        if inner.get("MsgType") != "text" or not user:
            return Inbound(ack, (nonce,))  # events (entering the app, ...): nothing to answer
        return Inbound(
            ack,
            (nonce,),
            dedupe=f"msg:{inner.get('MsgId', '')}" if inner.get("MsgId") else None,
            message=Message(user, inner.get("Content", ""), {"touser": user}),
        )

    async def _token(self, http: httpx.AsyncClient, bot: BotConfig) -> str:
        cached = self._tokens.get(bot.id)
        if cached is not None:
            return cached
        creds = bot.credentials
        resp = await http.get(
            f"{bot.base(DEFAULT_API)}/gettoken",
            params={"corpid": creds["corp_id"], "corpsecret": creds["corp_secret"]},
        )
        status_ok(resp, self.platform)
        body = resp.json()
        if body.get("errcode", 0) != 0 or not body.get("access_token"):
            raise SendFailed(f"wecom gettoken: {body.get('errcode')} {body.get('errmsg')}")
        token = str(body["access_token"])
        return self._tokens.put(bot.id, token, int(body.get("expires_in", 7200)))

    async def send(
        self, http: httpx.AsyncClient, bot: BotConfig, target: Mapping[str, Any], reply: Reply
    ) -> None:
        token = await self._token(http, bot)
        resp = await http.post(
            f"{bot.base(DEFAULT_API)}/message/send",
            params={"access_token": token},
            json=render(bot, target, reply),
        )
        status_ok(resp, self.platform)
        body = resp.json()
        code = body.get("errcode", 0)
        if code in TOKEN_ERRORS:
            self._tokens.forget(bot.id)
        if code != 0:  # retried only when WeCom is busy (-1) or the token was stale
            retry = code == -1 or code in TOKEN_ERRORS
            raise SendFailed(f"wecom message/send: {code} {body.get('errmsg')}", retry=retry)


def render(bot: BotConfig, target: Mapping[str, Any], reply: Reply) -> dict[str, Any]:
    """A markdown app message: the answer, then a quoted list of its sources, within WeCom's
    2048 bytes (a longer answer is cut, its sources kept)."""
    sources = "".join(f"\n> {line}" for line in reply.sources)
    sources = ("\n" + sources) if sources else ""
    room = MAX_BYTES - len(sources.encode())
    text = reply.text
    if len(text.encode()) > room:
        text = text.encode()[: max(0, room - len(ELLIPSIS.encode()))].decode(errors="ignore")
        text += ELLIPSIS
    # Sources alone over the limit (dozens of them): cut, at a character boundary.
    content = (text + sources).encode()[:MAX_BYTES].decode(errors="ignore")
    return {
        "touser": target["touser"],
        "msgtype": "markdown",
        "agentid": bot.credentials["agent_id"],
        "markdown": {"content": content},
    }
