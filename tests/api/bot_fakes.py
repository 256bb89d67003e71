"""Local fake chat platforms for the bot tests: each signs callbacks as its platform does (and
can forge, replay or date them), serves the message API the adapter calls over real HTTP on
loopback, and checks what the platform would: its token, the payload's shape and required
fields (from the platforms' public API documentation). Every message taken is recorded.

A fake's `gate` holds its message API's answers until set: a test closes it to show that a
callback was acknowledged before its answer was sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import string
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi.testclient import TestClient

from api.app import create_app
from rag.generation.llm import LLMClient
from rag.integrations.bots import feishu, wecom
from rag.services import Services
from rag.store.models import Assistant
from tests.conftest import make_settings, wait_for
from tests.llm_script import ScriptedLLM, english_kb

Handled = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class Call:
    """A callback as the platform would send it to the bot's callback URL."""

    method: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def send(self, client: TestClient, bot_id: str) -> httpx.Response:
        return client.request(
            self.method,
            f"/v1/bots/{bot_id}/callback",
            params=self.params,
            headers=self.headers,
            content=self.body,
        )


class FakePlatform:
    """A platform's message API on a loopback port, in threads."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []  # messages the API took, as the bot sent them
        self.arrived = 0  # message-API calls that reached the gate
        self.problems: list[str] = []  # what the platform refused, and why
        self.fail_next = 0  # answer HTTP 500 to the next N message-API calls
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, reply = fake.dispatch(self.command, parts.path, query, headers, body)
                data = json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the bot gave up on the call (a cancelled answer, a timeout)

            do_GET = _serve
            do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def api_base(self) -> str:
        """The base URL the bot is configured with (the platform's API base)."""
        raise NotImplementedError

    def credentials(self) -> dict[str, Any]:
        """What an admin copies from the platform's console into POST /v1/bots."""
        raise NotImplementedError

    def dispatch(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> Handled:
        raise NotImplementedError

    def refuse(self, why: str, status: int, reply: dict[str, Any]) -> Handled:
        with self._lock:
            self.problems.append(why)
        return status, reply

    def take(self, message: dict[str, Any]) -> None:
        """Record a message the API accepted, once the gate is open."""
        with self._lock:
            self.arrived += 1
        self.gate.wait(30)
        with self._lock:
            self.sent.append(message)

    def failing(self) -> bool:
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return True
            return False

    def wait_sent(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.sent) >= count, timeout)
        return list(self.sent)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


# --- WeCom -------------------------------------------------------------------------------------


class FakeWeCom(FakePlatform):
    """WeCom's callback encryption and its gettoken + message/send API (under /cgi-bin)."""

    def __init__(self) -> None:
        super().__init__()
        self.corp_id = "ww" + secrets.token_hex(8)
        self.corp_secret = secrets.token_urlsafe(24)
        self.agent_id = 1000002
        self.token = secrets.token_hex(8)
        alphabet = string.ascii_letters + string.digits
        self.aes_key = "".join(secrets.choice(alphabet) for _ in range(43))
        self.access_tokens: set[str] = set()

    @property
    def api_base(self) -> str:
        return self.url + "/cgi-bin"

    def credentials(self) -> dict[str, Any]:
        return {
            "corp_id": self.corp_id,
            "corp_secret": self.corp_secret,
            "agent_id": self.agent_id,
            "token": self.token,
            "encoding_aes_key": self.aes_key,
        }

    def dispatch(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> Handled:
        if path == "/cgi-bin/gettoken" and method == "GET":
            if query.get("corpid") != self.corp_id or query.get("corpsecret") != self.corp_secret:
                return self.refuse("gettoken: bad corpid/corpsecret", 200, {"errcode": 40001})
            token = secrets.token_hex(16)
            self.access_tokens.add(token)
            return 200, {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}
        if path == "/cgi-bin/message/send" and method == "POST":
            if self.failing():
                return 500, {"errcode": -1, "errmsg": "system busy"}
            if query.get("access_token") not in self.access_tokens:
                return self.refuse("message/send: bad access_token", 200, {"errcode": 40014})
            msg = _json(body)
            problem = self._check_message(msg)
            if problem:
                return self.refuse(f"message/send: {problem}", 200, {"errcode": 40008})
            self.take(msg)
            return 200, {"errcode": 0, "errmsg": "ok", "msgid": secrets.token_hex(8)}
        return self.refuse(f"unknown API {method} {path}", 404, {"errcode": 404})

    def _check_message(self, msg: Any) -> str | None:
        if not isinstance(msg, dict):
            return "body is not a JSON object"
        if msg.get("agentid") != self.agent_id:
            return "agentid is not the app's"
        if not any(isinstance(msg.get(k), str) and msg[k] for k in ("touser", "toparty", "totag")):
            return "no touser/toparty/totag"
        kind = msg.get("msgtype")
        if kind not in ("text", "markdown"):
            return f"msgtype {kind!r}"
        content = (msg.get(kind) or {}).get("content")
        if not isinstance(content, str) or not content:
            return f"{kind}.content missing"
        if len(content.encode()) > 2048 * (2 if kind == "text" else 1):
            return "content over the size limit"
        return None

    def _signed(self, encrypted: str, timestamp: str | None, nonce: str | None) -> dict[str, str]:
        ts = timestamp or str(int(time.time()))
        nonce = nonce or secrets.token_hex(5)
        sig = wecom.signature(self.token, ts, nonce, encrypted)
        return {"msg_signature": sig, "timestamp": ts, "nonce": nonce}

    def verify_url(self, echo: str) -> Call:
        encrypted = wecom.seal(self.aes_key, echo.encode(), self.corp_id, os.urandom(16))
        params = self._signed(encrypted, None, None)
        return Call("GET", {**params, "echostr": encrypted}, {}, b"")

    def message(
        self,
        text: str,
        user: str = "zhangsan",
        *,
        msg_id: str | None = None,
        timestamp: str | None = None,
        forge: bool = False,
    ) -> Call:
        inner = (
            f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
            f"<FromUserName><![CDATA[{user}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id or secrets.randbits(48)}</MsgId>"
            f"<AgentID>{self.agent_id}</AgentID></xml>"
        )
        encrypted = wecom.seal(self.aes_key, inner.encode(), self.corp_id, os.urandom(16))
        params = self._signed(encrypted, timestamp, None)
        if forge:
            params["msg_signature"] = hashlib.sha1(b"forged").hexdigest()
        body = (
            f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
            f"<AgentID><![CDATA[{self.agent_id}]]></AgentID>"
            f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        )
        return Call("POST", params, {"content-type": "text/xml"}, body.encode())


# --- DingTalk ----------------------------------------------------------------------------------


class FakeDingTalk(FakePlatform):
    """A DingTalk robot's signed outgoing callback and its sessionWebhook."""

    def __init__(self) -> None:
        super().__init__()
        self.app_secret = secrets.token_urlsafe(32)
        self.sessions: dict[str, float] = {}  # session -> expiry (unix seconds)

    @property
    def api_base(self) -> str:
        return self.url

    def credentials(self) -> dict[str, Any]:
        return {"app_secret": self.app_secret}

    def dispatch(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> Handled:
        if path != "/robot/sendBySession" or method != "POST":
            return self.refuse(f"unknown API {method} {path}", 404, {"errcode": 404})
        if self.failing():
            return 500, {"errcode": -1, "errmsg": "busy"}
        expiry = self.sessions.get(query.get("session", ""))
        if expiry is None or expiry < time.time():
            return self.refuse(
                "sessionWebhook: unknown or expired session", 200, {"errcode": 300001}
            )
        msg = _json(body)
        problem = self._check_message(msg)
        if problem:
            return self.refuse(f"sendBySession: {problem}", 200, {"errcode": 40035})
        self.take(msg)
        return 200, {"errcode": 0, "errmsg": "ok"}

    @staticmethod
    def _check_message(msg: Any) -> str | None:
        if not isinstance(msg, dict):
            return "body is not a JSON object"
        kind = msg.get("msgtype")
        if kind == "text":
            ok = isinstance((msg.get("text") or {}).get("content"), str)
            return None if ok else "text.content missing"
        if kind == "markdown":
            md = msg.get("markdown") or {}
            if not isinstance(md.get("title"), str) or not md["title"]:
                return "markdown.title missing"
            return None if isinstance(md.get("text"), str) and md["text"] else "markdown.text"
        return f"msgtype {kind!r}"

    def message(
        self,
        text: str,
        conversation: str = "cid-group-1",
        *,
        msg_id: str | None = None,
        timestamp_ms: int | None = None,
        forge: bool = False,
    ) -> Call:
        session = secrets.token_hex(8)
        expires = time.time() + 3600
        self.sessions[session] = expires
        body = {
            "msgtype": "text",
            "text": {"content": f" {text}"},
            "msgId": msg_id or secrets.token_hex(8),
            "createAt": int(time.time() * 1000),
            "conversationType": "2",
            "conversationId": conversation,
            "conversationTitle": "helpdesk",
            "senderId": "$:LWCP_v1:$abc",
            "senderNick": "Zhang San",
            "senderStaffId": "staff-001",
            "chatbotUserId": "$:LWCP_v1:$bot",
            "isAdmin": False,
            "sessionWebhook": f"{self.url}/robot/sendBySession?session={session}",
            "sessionWebhookExpiredTime": int(expires * 1000),
        }
        ts = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
        secret = "forged" if forge else self.app_secret
        sign = base64.b64encode(
            hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
        ).decode()
        headers = {"content-type": "application/json", "timestamp": ts, "sign": sign}
        return Call("POST", {}, headers, json.dumps(body, ensure_ascii=False).encode())


# --- Feishu / Lark -----------------------------------------------------------------------------


class FakeFeishu(FakePlatform):
    """Feishu's encrypted, signed event subscription (schema 2.0) and its token + reply APIs."""

    def __init__(self) -> None:
        super().__init__()
        self.app_id = "cli_" + secrets.token_hex(8)
        self.app_secret = secrets.token_urlsafe(24)
        self.verification_token = secrets.token_urlsafe(16)
        self.encrypt_key = secrets.token_urlsafe(16)
        self.tokens: set[str] = set()
        self.messages: set[str] = set()  # ids of the messages it delivered

    @property
    def api_base(self) -> str:
        return self.url + "/open-apis"

    def credentials(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "app_secret": self.app_secret,
            "verification_token": self.verification_token,
            "encrypt_key": self.encrypt_key,
        }

    def dispatch(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> Handled:
        if path == "/open-apis/auth/v3/tenant_access_token/internal" and method == "POST":
            got = _json(body) or {}
            if got.get("app_id") != self.app_id or got.get("app_secret") != self.app_secret:
                return self.refuse("tenant_access_token: bad app", 400, {"code": 10014})
            token = "t-" + secrets.token_hex(16)
            self.tokens.add(token)
            return 200, {"code": 0, "msg": "ok", "tenant_access_token": token, "expire": 7200}
        prefix, suffix = "/open-apis/im/v1/messages/", "/reply"
        if path.startswith(prefix) and path.endswith(suffix) and method == "POST":
            if self.failing():
                return 500, {"code": 99991400, "msg": "busy"}
            auth = headers.get("authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
                return self.refuse("reply: bad tenant_access_token", 401, {"code": 99991663})
            message_id = path[len(prefix) : -len(suffix)]
            if message_id not in self.messages:
                return self.refuse("reply: unknown message_id", 400, {"code": 230001})
            msg = _json(body)
            problem = self._check_message(msg)
            if problem:
                return self.refuse(f"reply: {problem}", 400, {"code": 230001})
            self.take({"message_id": message_id, **msg})
            return 200, {
                "code": 0,
                "msg": "success",
                "data": {"message_id": "om_" + secrets.token_hex(8)},
            }
        return self.refuse(f"unknown API {method} {path}", 404, {"code": 404})

    @staticmethod
    def _check_message(msg: Any) -> str | None:
        if not isinstance(msg, dict):
            return "body is not a JSON object"
        kind, content = msg.get("msg_type"), msg.get("content")
        if kind not in ("text", "post", "interactive"):
            return f"msg_type {kind!r}"
        if not isinstance(content, str):
            return "content must be a JSON string"
        parsed = _json(content.encode())
        if kind == "text":
            return None if isinstance((parsed or {}).get("text"), str) else "text missing"
        if kind == "post":
            if not isinstance(parsed, dict) or not parsed:
                return "post content needs a language"
            for post in parsed.values():
                rows = post.get("content") if isinstance(post, dict) else None
                if not isinstance(rows, list) or not all(
                    isinstance(row, list)
                    and all(isinstance(el, dict) and "tag" in el for el in row)
                    for row in rows
                ):
                    return "post content must be rows of tagged elements"
        return None

    def _sealed(self, event: dict[str, Any]) -> bytes:
        plaintext = json.dumps(event, ensure_ascii=False).encode()
        return json.dumps(
            {"encrypt": feishu.seal(self.encrypt_key, plaintext, os.urandom(16))}
        ).encode()

    def challenge(self, *, token: str | None = None) -> Call:
        event = {
            "challenge": secrets.token_hex(8),
            "token": token or self.verification_token,
            "type": "url_verification",
        }
        return Call("POST", {}, {"content-type": "application/json"}, self._sealed(event))

    def message(
        self,
        text: str,
        chat_id: str = "oc_chat1",
        *,
        root_id: str | None = None,
        event_id: str | None = None,
        timestamp: str | None = None,
        nonce: str | None = None,
        forge: bool = False,
    ) -> Call:
        message_id = "om_" + secrets.token_hex(8)
        self.messages.add(message_id)
        event = {
            "schema": "2.0",
            "header": {
                "event_id": event_id or secrets.token_hex(16),
                "token": self.verification_token,
                "create_time": str(int(time.time() * 1000)),
                "event_type": "im.message.receive_v1",
                "tenant_key": "tenant-1",
                "app_id": self.app_id,
            },
            "event": {
                "sender": {"sender_id": {"open_id": "ou_user1"}, "sender_type": "user"},
                "message": {
                    "message_id": message_id,
                    "root_id": root_id or "",
                    "parent_id": root_id or "",
                    "create_time": str(int(time.time() * 1000)),
                    "chat_id": chat_id,
                    "chat_type": "group",
                    "message_type": "text",
                    "content": json.dumps({"text": f"@_user_1 {text}"}, ensure_ascii=False),
                    "mentions": [{"key": "@_user_1", "name": "helpdesk"}],
                },
            },
        }
        body = self._sealed(event)
        ts = timestamp or str(int(time.time()))
        nonce = nonce or secrets.token_hex(8)
        key = "forged" if forge else self.encrypt_key
        headers = {
            "content-type": "application/json",
            "x-lark-request-timestamp": ts,
            "x-lark-request-nonce": nonce,
            "x-lark-signature": feishu.signature(ts, nonce, key, body),
        }
        return Call("POST", {}, headers, body)


# --- Slack -------------------------------------------------------------------------------------


class FakeSlack(FakePlatform):
    """Slack's signed Events API requests and chat.postMessage (under /api)."""

    def __init__(self) -> None:
        super().__init__()
        self.signing_secret = secrets.token_hex(16)
        self.bot_token = "xoxb-" + secrets.token_hex(12)

    @property
    def api_base(self) -> str:
        return self.url + "/api"

    def credentials(self) -> dict[str, Any]:
        return {"signing_secret": self.signing_secret, "bot_token": self.bot_token}

    def dispatch(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> Handled:
        if path != "/api/chat.postMessage" or method != "POST":
            return self.refuse(f"unknown API {method} {path}", 404, {"ok": False})
        if self.failing():
            return 500, {"ok": False, "error": "internal_error"}
        if headers.get("authorization") != f"Bearer {self.bot_token}":
            return self.refuse(
                "chat.postMessage: bad token", 200, {"ok": False, "error": "invalid_auth"}
            )
        if not headers.get("content-type", "").startswith("application/json"):
            return self.refuse(
                "chat.postMessage: not JSON", 200, {"ok": False, "error": "invalid_form_data"}
            )
        msg = _json(body)
        if not isinstance(msg, dict) or not isinstance(msg.get("channel"), str):
            return self.refuse(
                "chat.postMessage: no channel", 200, {"ok": False, "error": "channel_not_found"}
            )
        if not any(msg.get(k) for k in ("text", "blocks", "attachments")):
            return self.refuse("chat.postMessage: no text", 200, {"ok": False, "error": "no_text"})
        self.take(msg)
        return 200, {"ok": True, "channel": msg["channel"], "ts": f"{time.time():.6f}"}

    def signed(self, payload: dict[str, Any], timestamp: str | None, forge: bool) -> Call:
        body = json.dumps(payload).encode()
        ts = timestamp or str(int(time.time()))
        secret = "forged" if forge else self.signing_secret
        digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256)
        headers = {
            "content-type": "application/json",
            "x-slack-request-timestamp": ts,
            "x-slack-signature": "v0=" + digest.hexdigest(),
        }
        return Call("POST", {}, headers, body)

    def url_verification(self) -> Call:
        payload = {
            "token": "legacy",
            "challenge": secrets.token_hex(12),
            "type": "url_verification",
        }
        return self.signed(payload, None, False)

    def event(
        self,
        text: str,
        channel: str = "C0HELP",
        *,
        ts: str | None = None,
        thread_ts: str | None = None,
        kind: str = "app_mention",
        bot_id: str | None = None,
        event_id: str | None = None,
        timestamp: str | None = None,
        forge: bool = False,
    ) -> Call:
        event: dict[str, Any] = {
            "type": kind,
            "user": "U0USER",
            "text": f"<@U0BOT> {text}" if kind == "app_mention" else text,
            "ts": ts or f"{time.time():.6f}",
            "channel": channel,
            "event_ts": f"{time.time():.6f}",
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        if bot_id:
            event["bot_id"] = bot_id
        payload = {
            "token": "legacy",
            "team_id": "T0TEAM",
            "api_app_id": "A0APP",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or "Ev" + secrets.token_hex(6).upper(),
            "event_time": int(time.time()),
        }
        return self.signed(payload, timestamp, forge)


# --- the service under test --------------------------------------------------------------------


@dataclass
class BotEnv:
    client: TestClient
    services: Services
    script: ScriptedLLM
    bot_id: str
    kb_id: str


@contextmanager
def bot_env(
    tmp_path: Path,
    script: ScriptedLLM,
    platform: str,
    fake: FakePlatform,
    database_url: str | None = None,
) -> Iterator[BotEnv]:
    """An app whose LLM is `script`, a knowledge base with the product FAQ, an assistant on it,
    and a bot of `platform` whose message API is `fake`."""
    settings = make_settings(
        tmp_path / "data",
        database_url,
        llm={"retry_backoff_s": 0.001},
        bots={"send_backoff_s": 0.01, "send_attempts": 3},
    )
    svc = Services.create(settings, llm=LLMClient(settings.llm, transport=script.transport()))
    try:
        with TestClient(create_app(services=svc)) as client:
            kb = english_kb(client)
            with svc.db.write() as session:
                session.add(Assistant(tenant_id="default", name="helpdesk", kb_id=kb, config={}))
            made = client.post(
                "/v1/bots",
                json={
                    "platform": platform,
                    "assistant": "helpdesk",
                    "name": f"{platform} helpdesk",
                    "credentials": fake.credentials(),
                    "api_base": fake.api_base,
                },
            )
            assert made.status_code == 201, made.text
            yield BotEnv(client, svc, script, made.json()["id"], kb)
    finally:
        fake.close()
        svc.close()
