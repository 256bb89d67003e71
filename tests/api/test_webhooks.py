"""Signed webhooks end to end: subscriptions over the API, events written in the same commit
as what they report, delivery to a real local receiver that fails, hangs or answers on
purpose, retries with backoff, dead letters, replay, two dispatchers sharing one outbox."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rag.core import tenancy
from rag.core.config import WebhookSettings
from rag.integrations.webhook_delivery import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    WebhookDispatcher,
    sign,
    verify,
)
from rag.kb import events, webhooks
from rag.services import Services
from rag.store.models import DeliveryStatus, WebhookDelivery
from tests.conftest import upload, wait_document

SECRET = "s3cret-s3cret-s3cret"


class Receiver:
    """A local HTTP receiver. Paths: /ok answers 200, /flaky fails its first `flaky` requests
    with 500, /down always 503, /hang sleeps `hang_s` before answering."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.flaky = 2
        self.hang_s = 3.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.received.append(
                        {
                            "path": self.path,
                            "body": body,
                            "signature": self.headers.get(SIGNATURE_HEADER, ""),
                            "delivery": self.headers.get(DELIVERY_HEADER),
                            "event": self.headers.get(EVENT_HEADER),
                        }
                    )
                    flaky_left = receiver.flaky
                    if self.path == "/flaky":
                        receiver.flaky -= 1
                if self.path == "/hang":
                    time.sleep(receiver.hang_s)
                code = {"/down": 503}.get(self.path, 200)
                if self.path == "/flaky" and flaky_left > 0:
                    code = 500
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.received if r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def fast(**overrides: Any) -> WebhookSettings:
    base: dict[str, Any] = {
        "timeout_s": 1.0,
        "max_attempts": 3,
        "backoff_s": 0.01,
        "max_backoff_s": 0.05,
        "poll_interval_s": 0.05,
    }
    return WebhookSettings(**{**base, **overrides})


def make_kb(svc: Services, name: str = "kb") -> str:
    return svc.knowledge.create_kb(name).id


def subscribe(svc: Services, url: str, evts: list[str] | None = None) -> str:
    return webhooks.create(svc.db, url, evts or ["*"], secret=SECRET).id


def queue_event(svc: Services, kb_id: str, tenant: str = tenancy.DEFAULT_TENANT) -> int:
    with svc.db.write() as session:
        return events.emit(session, tenant, events.DOCUMENT_READY, {"document_id": "d1"}, kb_id)


def deliveries(svc: Services) -> list[WebhookDelivery]:
    with svc.db.read() as session:
        return list(session.query(WebhookDelivery).order_by(WebhookDelivery.created_at))


def drain(dispatcher: WebhookDispatcher, rounds: int = 20) -> None:
    for _ in range(rounds):
        dispatcher.run_once()
        time.sleep(0.06)  # past the test backoff


def test_signature_checks_body_secret_and_time() -> None:
    body = b'{"event":"document.ready"}'
    header = sign(SECRET, 1_000_000, body)
    assert verify(SECRET, header, body, now=1_000_010)
    assert not verify(SECRET, header, body + b" ", now=1_000_010)  # tampered body
    assert not verify("another-secret-value", header, body, now=1_000_010)
    assert not verify(SECRET, header, body, now=1_000_000 + 301)  # replayed later
    assert not verify(SECRET, "garbage", body, now=1_000_000)


def test_delivered_signed_with_the_event(services: Services, receiver: Receiver) -> None:
    kb = make_kb(services)
    subscribe(services, receiver.url + "/ok")
    assert queue_event(services, kb) == 1
    dispatcher = WebhookDispatcher(services.db, fast())
    try:
        count = dispatcher.run_once()
    finally:
        dispatcher.stop()
    assert count.delivered == 1
    [got] = receiver.on("/ok")
    assert verify(SECRET, got["signature"], got["body"], now=time.time())
    payload = json.loads(got["body"])
    assert payload["event"] == got["event"] == "document.ready"
    assert payload["kb_id"] == kb and payload["data"] == {"document_id": "d1"}
    [row] = deliveries(services)
    assert row.id == got["delivery"] and row.status == DeliveryStatus.delivered
    assert row.attempts == 1 and row.last_status_code == 200


def test_retried_with_backoff_until_delivered(services: Services, receiver: Receiver) -> None:
    subscribe(services, receiver.url + "/flaky")
    queue_event(services, make_kb(services))
    dispatcher = WebhookDispatcher(services.db, fast(max_attempts=5))
    try:
        drain(dispatcher)
    finally:
        dispatcher.stop()
    [row] = deliveries(services)
    assert row.status == DeliveryStatus.delivered and row.attempts == 3
    got = receiver.on("/flaky")
    assert len(got) == 3 and len({g["delivery"] for g in got}) == 1  # one id to deduplicate on
    assert dispatcher.backoff_s(1) == 0.01 and dispatcher.backoff_s(10) == 0.05  # capped


def test_dead_after_max_attempts_then_replayed(services: Services, receiver: Receiver) -> None:
    hook = subscribe(services, receiver.url + "/down")
    queue_event(services, make_kb(services))
    dispatcher = WebhookDispatcher(services.db, fast(max_attempts=3))
    try:
        drain(dispatcher)
        [row] = deliveries(services)
        assert row.status == DeliveryStatus.dead and row.attempts == 3
        assert row.last_status_code == 503 and "503" in (row.last_error or "")
        assert len(receiver.on("/down")) == 3  # not tried again once dead
        assert [d.id for d in webhooks.deliveries(services.db, hook, status="dead")] == [row.id]
        # The receiver is fixed (same URL answers now): replay sends the same body again.
        with services.db.write() as session:
            from rag.store.models import Webhook

            session.get(Webhook, hook).url = receiver.url + "/ok"  # type: ignore[union-attr]
        replayed = webhooks.replay(services.db, row.id)
        assert replayed.status == DeliveryStatus.pending and replayed.attempts == 0
        drain(dispatcher, rounds=2)
    finally:
        dispatcher.stop()
    [row] = deliveries(services)
    assert row.status == DeliveryStatus.delivered
    [got] = receiver.on("/ok")
    assert got["delivery"] == row.id and json.loads(got["body"]) == row.payload


def test_a_hanging_receiver_does_not_hold_the_others(
    services: Services, receiver: Receiver
) -> None:
    kb = make_kb(services)
    subscribe(services, receiver.url + "/hang")
    subscribe(services, receiver.url + "/ok")
    queue_event(services, kb)
    dispatcher = WebhookDispatcher(services.db, fast(timeout_s=0.5, max_attempts=2))
    try:
        count = dispatcher.run_once()
    finally:
        dispatcher.stop()
    assert count.delivered == 1 and count.retried == 1
    by_url = {d.status: d for d in deliveries(services)}
    assert "Timeout" in (by_url[DeliveryStatus.pending].last_error or "")
    assert len(receiver.on("/ok")) == 1


def test_two_dispatchers_send_each_delivery_once(services: Services, receiver: Receiver) -> None:
    kb = make_kb(services)
    subscribe(services, receiver.url + "/ok")
    for _ in range(40):
        queue_event(services, kb)
    one = WebhookDispatcher(services.db, fast(batch_size=7))
    two = WebhookDispatcher(services.db, fast(batch_size=7))
    try:
        one.start()
        two.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(receiver.on("/ok")) < 40:
            time.sleep(0.05)
        time.sleep(0.3)  # room for a duplicate to show up
    finally:
        one.stop()
        two.stop()
    ids = [r["delivery"] for r in receiver.on("/ok")]
    assert len(ids) == 40 and len(set(ids)) == 40
    assert {d.status for d in deliveries(services)} == {DeliveryStatus.delivered}


def test_event_only_when_its_transaction_commits(services: Services, receiver: Receiver) -> None:
    kb = make_kb(services)
    subscribe(services, receiver.url + "/ok")
    with pytest.raises(RuntimeError), services.db.write() as session:
        events.emit(session, tenancy.DEFAULT_TENANT, events.DOCUMENT_READY, {}, kb)
        raise RuntimeError("the change failed")
    assert deliveries(services) == []


def test_subscriptions_filter_events_kbs_and_tenants(
    services: Services, receiver: Receiver
) -> None:
    kb, other_kb = make_kb(services, "a"), make_kb(services, "b")
    webhooks.create(services.db, receiver.url + "/ok", ["document.failed"], secret=SECRET)
    webhooks.create(services.db, receiver.url + "/ok", ["*"], secret=SECRET, kb_ids=[other_kb])
    assert queue_event(services, kb) == 0  # wrong event for one, wrong knowledge base for other
    assert queue_event(services, other_kb) == 1
    assert queue_event(services, other_kb, tenant="someone-else") == 0
    with pytest.raises(ValueError), services.db.write() as session:
        events.emit(session, tenancy.DEFAULT_TENANT, "no.such.event", {}, kb)


def test_api_and_document_events_end_to_end(services: Services, receiver: Receiver) -> None:
    with TestClient(_app(services)) as client:
        kb = client.post("/v1/knowledge-bases", json={"name": "hooks"}).json()["id"]
        made = client.post(
            "/v1/webhooks",
            json={"url": receiver.url + "/ok", "events": ["document.ready", "document.failed"]},
        )
        assert made.status_code == 201, made.text
        hook = made.json()
        assert len(hook["secret"]) >= 16
        assert "secret" not in client.get("/v1/webhooks").json()[0]
        good = upload(client, kb, "a.txt", "年假有十五天。".encode()).json()
        bad = upload(client, kb, "b.pdf", b"%PDF-1.4 this is not really a pdf").json()
        assert wait_document(client, kb, good["id"])["status"] == "ready"
        assert wait_document(client, kb, bad["id"])["status"] == "failed"
        dispatcher = WebhookDispatcher(services.db, fast())
        try:
            drain(dispatcher, rounds=3)
        finally:
            dispatcher.stop()
        got = {json.loads(r["body"])["data"]["document_id"]: r for r in receiver.on("/ok")}
        assert json.loads(got[good["id"]]["body"])["event"] == "document.ready"
        failed = json.loads(got[bad["id"]]["body"])
        assert failed["event"] == "document.failed" and failed["data"]["error"]
        assert all(
            verify(hook["secret"], r["signature"], r["body"], now=time.time()) for r in got.values()
        )
        log = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()
        assert {d["status"] for d in log} == {"delivered"} and len(log) == 2
        replay = client.post(f"/v1/webhooks/deliveries/{log[0]['id']}/replay")
        assert replay.status_code == 200 and replay.json()["status"] == "pending"
        assert client.get("/v1/webhooks/nope/deliveries").status_code == 404
        assert client.post(
            "/v1/webhooks", json={"url": "ftp://x", "events": ["*"]}
        ).status_code in (
            400,
            422,
        )
        assert client.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
        assert client.get("/v1/webhooks").json() == []


def test_another_tenant_cannot_see_or_replay(services: Services, receiver: Receiver) -> None:
    hook = subscribe(services, receiver.url + "/ok")
    queue_event(services, make_kb(services))
    [row] = deliveries(services)
    stranger = tenancy.Principal("k", "other-tenant", frozenset({"admin"}))
    from rag.core.errors import NotFound

    with tenancy.acting_as(stranger):
        assert webhooks.list_hooks(services.db) == []
        with pytest.raises(NotFound):
            webhooks.deliveries(services.db, hook)
        with pytest.raises(NotFound):
            webhooks.replay(services.db, row.id)
        with pytest.raises(NotFound):
            webhooks.delete(services.db, hook)


def _app(services: Services) -> Any:
    from api.app import create_app

    return create_app(services=services)
