"""Feedback and hand-off by answer id: a rating (up or down, with a comment) replaces an earlier
one and emits feedback.received; a hand-off is recorded and emits handoff.requested exactly
once; bad ratings and oversized comments are refused; another tenant's answer is 404 on every
route, and a key limited to other knowledge bases cannot see it either."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from rag.core import tenancy
from rag.core.errors import InvalidInput, NotFound
from rag.generation.llm import LLMClient
from rag.qa.question_log import MAX_COMMENT_CHARS
from rag.security import keys
from rag.services import Services
from rag.store.models import QuestionRecord, WebhookDelivery
from tests.conftest import FakeLLM, make_settings, upload, wait_document

HANDBOOK = "年假：入职满一年的员工每年有十天带薪年假。病假需要医院证明。"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    cfg = make_settings(tmp_path / "data", webhooks={"enabled": False})
    svc = Services.create(
        cfg, llm=LLMClient(cfg.llm, transport=httpx.MockTransport(FakeLLM().handler))
    )
    with TestClient(create_app(services=svc, warm_up=False)) as client:
        world: dict[str, Any] = {"client": client, "svc": svc}
        for tenant in ("acme", "globex"):
            with svc.db.write() as session:
                _, secret = keys.create(session, tenant_id=tenant, scopes=["admin"])
            client.app.state.guard.forget()  # type: ignore[attr-defined]
            auth = {"Authorization": f"Bearer {secret}"}
            kb = client.post("/v1/knowledge-bases", json={"name": "hr"}, headers=auth).json()
            doc = upload(client, kb["id"], "hr.txt", HANDBOOK.encode(), headers=auth)
            client.headers.update(auth)
            assert wait_document(client, kb["id"], doc.json()["id"])["status"] == "ready"
            hook = client.post(
                "/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "events": ["*"]}, headers=auth
            )
            assert hook.status_code == 201
            answer = client.post(
                f"/v1/knowledge-bases/{kb['id']}/ask",
                json={"question": "年假有几天？"},
                headers=auth,
            ).json()
            world[tenant] = {"auth": auth, "kb_id": kb["id"], "answer_id": answer["answer_id"]}
        client.headers.pop("Authorization")
        yield world
    svc.close()


def _events(svc: Services, event: str) -> list[dict[str, Any]]:
    with svc.db.read() as session:
        rows = session.execute(
            select(WebhookDelivery.payload, WebhookDelivery.tenant_id).where(
                WebhookDelivery.event == event
            )
        )
        return [{**dict(p), "tenant": t} for p, t in rows]


def test_rating_an_answer(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    acme = world["acme"]
    url = f"/v1/answers/{acme['answer_id']}/feedback"
    down = client.post(url, json={"rating": "down", "comment": "太笼统了"}, headers=acme["auth"])
    assert down.status_code == 200, down.text
    assert down.json()["rating"] == "down" and down.json()["comment"] == "太笼统了"
    # a down-rating alone does not hand the conversation over
    assert down.json()["handoff_requested"] is False
    assert _events(world["svc"], "handoff.requested") == []
    # a later rating replaces it; the comment is kept redacted like the question
    up = client.post(
        url, json={"rating": "up", "comment": "mail me: a@b.cn"}, headers=acme["auth"]
    ).json()
    assert up["rating"] == "up" and up["comment"] == "mail me: [REDACTED]"
    sent = _events(world["svc"], "feedback.received")
    assert [e["data"]["rating"] for e in sent] == ["down", "up"]
    assert all(e["tenant"] == "acme" and e["kb_id"] == acme["kb_id"] for e in sent)
    assert sent[0]["data"]["answer_id"] == acme["answer_id"]
    got = client.get(f"/v1/answers/{acme['answer_id']}", headers=acme["auth"]).json()
    assert got["rating"] == "up"


def test_bad_feedback_is_refused_and_changes_nothing(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    acme = world["acme"]
    url = f"/v1/answers/{acme['answer_id']}/feedback"
    for body in (
        {"rating": "meh"},
        {},
        {"rating": "up", "comment": "x" * (MAX_COMMENT_CHARS + 1)},
        {"rating": "up", "stars": 5},
    ):
        resp = client.post(url, json=body, headers=acme["auth"])
        assert resp.status_code == 422, (body, resp.text)
    got = client.get(f"/v1/answers/{acme['answer_id']}", headers=acme["auth"]).json()
    assert got["rating"] is None and _events(world["svc"], "feedback.received") == []
    # the same rules below the API
    journal = world["svc"].question_log
    with pytest.raises(InvalidInput, match="rating"):
        journal.feedback(acme["answer_id"], 0)
    with pytest.raises(InvalidInput, match="comment"):
        journal.feedback(acme["answer_id"], 1, "x" * (MAX_COMMENT_CHARS + 1))


def test_a_hand_off_is_requested_once(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    acme = world["acme"]
    url = f"/v1/answers/{acme['answer_id']}/handoff"
    first = client.post(url, json={"reason": "想找人工"}, headers=acme["auth"])
    assert first.status_code == 200, first.text
    assert first.json()["handoff_requested"] is True
    assert first.json()["handoff_reason"] == "想找人工"
    again = client.post(url, json={"reason": "再说一次"}, headers=acme["auth"]).json()
    assert again["handoff_requested"] is True and again["handoff_reason"] == "想找人工"
    bare = client.post(url, headers=acme["auth"])  # no body at all
    assert bare.status_code == 200
    [sent] = _events(world["svc"], "handoff.requested")
    assert sent["data"]["answer_id"] == acme["answer_id"] and sent["data"]["reason"] == "想找人工"
    assert sent["data"]["question"] == "年假有几天？"


def test_feedback_can_ask_for_a_person(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    globex = world["globex"]
    resp = client.post(
        f"/v1/answers/{globex['answer_id']}/feedback",
        json={"rating": "down", "comment": "没回答我的问题", "handoff": True},
        headers=globex["auth"],
    ).json()
    assert resp["rating"] == "down" and resp["handoff_requested"] is True
    [sent] = _events(world["svc"], "handoff.requested")
    assert sent["tenant"] == "globex" and sent["data"]["reason"] == "没回答我的问题"


def test_another_tenants_answer_does_not_exist(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    acme, globex = world["acme"], world["globex"]
    theirs = acme["answer_id"]
    for method, path, body in (
        ("GET", f"/v1/answers/{theirs}", None),
        ("POST", f"/v1/answers/{theirs}/feedback", {"rating": "down"}),
        ("POST", f"/v1/answers/{theirs}/feedback", {}),  # 404 before the body is checked
        ("POST", f"/v1/answers/{theirs}/handoff", {"reason": "x"}),
        ("POST", f"/v1/analytics/questions/{theirs}/curated", {"answer": "x"}),
        ("POST", f"/v1/analytics/questions/{theirs}/golden", {"chunk_id": 1}),
    ):
        resp = client.request(method, path, json=body, headers=globex["auth"])
        assert resp.status_code == 404, (method, path, resp.text)
        assert resp.json()["error"]["code"] == "not_found"
    got = client.get(f"/v1/answers/{theirs}", headers=acme["auth"]).json()
    assert got["rating"] is None and got["handoff_requested"] is False
    assert _events(world["svc"], "feedback.received") == []
    # a key of the same tenant limited to another knowledge base does not see it either
    svc: Services = world["svc"]
    other = client.post("/v1/knowledge-bases", json={"name": "it"}, headers=acme["auth"])
    with svc.db.write() as session:
        _, secret = keys.create(
            session, tenant_id="acme", scopes=["query"], kb_ids=[other.json()["id"]]
        )
    client.app.state.guard.forget()  # type: ignore[attr-defined]
    limited = {"Authorization": f"Bearer {secret}"}
    resp = client.post(f"/v1/answers/{theirs}/feedback", json={"rating": "up"}, headers=limited)
    assert resp.status_code == 404
    # and below the API, acting as globex
    principal = tenancy.Principal("t", "globex", frozenset({"query"}))
    with tenancy.acting_as(principal), pytest.raises(NotFound):
        svc.question_log.handoff(theirs)
    with svc.db.read() as session:
        assert session.get(QuestionRecord, theirs).handoff_at is None  # type: ignore[union-attr]


def test_a_query_key_may_rate_but_not_read_analytics(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    acme = world["acme"]
    svc: Services = world["svc"]
    with svc.db.write() as session:
        _, secret = keys.create(session, tenant_id="acme", scopes=["query"])
    client.app.state.guard.forget()  # type: ignore[attr-defined]
    auth = {"Authorization": f"Bearer {secret}"}
    rated = client.post(
        f"/v1/answers/{acme['answer_id']}/feedback", json={"rating": "up"}, headers=auth
    )
    assert rated.status_code == 200
    assert client.get("/v1/analytics/summary", headers=auth).status_code == 403
