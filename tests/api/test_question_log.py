"""Every answer is logged once with its flags, latency and citations, redacted, and announced by
an answer.given event in the same transaction: generated, cached, streamed, refused and curated
answers alike; retrieval-only results are not; with the log off nothing is recorded. A curated
answer is returned verbatim before the answer cache, without retrieval or an LLM call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from rag.generation.llm import LLMClient
from rag.qa.curated import normalise
from rag.qa.prompt import NOT_COVERED
from rag.services import Services
from rag.store.models import QuestionRecord, WebhookDelivery
from tests.conftest import FIXTURES, FakeLLM, make_settings, upload, wait_document
from tests.llm_script import events

QUESTION = "入职满一年的员工有几天带薪年假？"
OFF_TOPIC = "红烧肉怎么做才能肥而不腻？"


def _world(tmp_path: Path, fake: FakeLLM, **extra: Any) -> Iterator[tuple[TestClient, Services]]:
    # The dispatcher is off: the outbox rows stay for the test to read.
    cfg = make_settings(tmp_path / "data", webhooks={"enabled": False}, **extra)
    svc = Services.create(cfg, llm=LLMClient(cfg.llm, transport=httpx.MockTransport(fake.handler)))
    with TestClient(create_app(services=svc, warm_up=False)) as c:
        assert c.post("/v1/knowledge-bases", json={"name": "hr"}).status_code == 201
        doc = upload(c, "hr", "handbook.md", (FIXTURES / "员工手册.md").read_bytes())
        assert wait_document(c, "hr", doc.json()["id"])["status"] == "ready"
        hook = c.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["*"]})
        assert hook.status_code == 201, hook.text
        yield c, svc
    svc.close()


@pytest.fixture
def fake() -> FakeLLM:
    return FakeLLM()


@pytest.fixture
def world(tmp_path: Path, fake: FakeLLM) -> Iterator[tuple[TestClient, Services]]:
    yield from _world(tmp_path, fake)


def _rows(svc: Services) -> list[QuestionRecord]:
    with svc.db.read() as session:
        return list(
            session.execute(select(QuestionRecord).order_by(QuestionRecord.created_at)).scalars()
        )


def _events(svc: Services, event: str) -> list[dict[str, Any]]:
    with svc.db.read() as session:
        rows = session.execute(
            select(WebhookDelivery.payload).where(WebhookDelivery.event == event)
        ).scalars()
        return [dict(p) for p in rows]


def test_a_generated_answer_is_logged_with_its_event(
    world: tuple[TestClient, Services], fake: FakeLLM
) -> None:
    client, svc = world
    asked = "我的邮箱是 zhang.san@example.com，手机 13812345678，" + QUESTION
    resp = client.post("/v1/knowledge-bases/hr/ask", json={"question": asked})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["answer_id"] and body["curated"] is False
    assert body["grounded"] is True and body["handoff_suggested"] is False
    [row] = _rows(svc)
    assert row.id == body["answer_id"] and row.channel == "api" and not row.cached
    # personal data never reaches the log, the rest of the question does
    assert "zhang.san@example.com" not in row.question and "13812345678" not in row.question
    assert row.question.count("[REDACTED]") == 2 and QUESTION in row.question
    assert row.answer == body["answer"] and row.grounded and row.covered
    assert row.latency_ms >= 0 and row.model == body["model"]
    assert row.citations == [
        {k: c[k] for k in ("chunk_id", "document_id", "filename", "page", "cited")}
        for c in body["citations"]
    ]
    [given] = _events(svc, "answer.given")
    assert given["data"]["answer_id"] == row.id and given["kb_id"] == row.kb_id
    assert given["data"]["question"] == row.question and given["data"]["grounded"] is True
    # the record is readable by its id
    got = client.get(f"/v1/answers/{row.id}").json()
    assert got["question"] == row.question and got["rating"] is None and got["answered"] is True


def test_cached_and_streamed_answers_are_logged_each_time(
    world: tuple[TestClient, Services], fake: FakeLLM
) -> None:
    client, svc = world
    first = client.post("/v1/knowledge-bases/hr/ask", json={"question": QUESTION}).json()
    again = client.post("/v1/knowledge-bases/hr/ask", json={"question": QUESTION}).json()
    assert again["cached"] is True and again["answer_id"] != first["answer_id"]
    streamed = client.post(
        "/v1/knowledge-bases/hr/ask", json={"question": "病假怎么请？", "stream": True}
    )
    done = events(streamed.text)[-1]
    assert done[0] == "done" and done[1]["answer_id"]
    assert done[1]["handoff_suggested"] is False and done[1]["curated"] is False
    replayed = client.post(
        "/v1/knowledge-bases/hr/ask", json={"question": "病假怎么请？", "stream": True}
    )
    replay_done = events(replayed.text)[-1][1]
    assert replay_done["cached"] is True and replay_done["answer_id"] != done[1]["answer_id"]
    rows = {r.id: r for r in _rows(svc)}
    assert len(rows) == 4
    assert rows[again["answer_id"]].cached and not rows[first["answer_id"]].cached
    assert rows[replay_done["answer_id"]].cached and not rows[done[1]["answer_id"]].cached
    assert len(_events(svc, "answer.given")) == 4
    # a retrieval-only result is not an answer: nothing logged
    only = client.post(
        "/v1/knowledge-bases/hr/ask", json={"question": QUESTION, "retrieval_only": True}
    ).json()
    assert only["answer_id"] is None and len(_rows(svc)) == 4


def test_a_refusal_is_logged_and_suggests_a_hand_off(
    world: tuple[TestClient, Services], fake: FakeLLM
) -> None:
    client, svc = world
    calibrated = client.post("/v1/knowledge-bases/hr/relevance/calibrate", json={})
    assert calibrated.status_code == 200, calibrated.text
    fake.requests.clear()
    body = client.post("/v1/knowledge-bases/hr/ask", json={"question": OFF_TOPIC}).json()
    assert body["covered"] is False and body["answer"] in NOT_COVERED.values()
    assert body["handoff_suggested"] is True and not fake.requests
    [row] = _rows(svc)
    assert row.id == body["answer_id"] and not row.covered and not row.grounded


def test_the_openai_endpoint_gives_the_answer_id(world: tuple[TestClient, Services]) -> None:
    client, svc = world
    chat = client.post(
        "/v1/chat/completions",
        json={"model": "kb:hr", "messages": [{"role": "user", "content": QUESTION}]},
    )
    assert chat.status_code == 200, chat.text
    flags = chat.json()["answer_flags"]
    [row] = _rows(svc)
    assert flags["answer_id"] == row.id


def test_a_curated_answer_comes_first_verbatim(
    world: tuple[TestClient, Services], fake: FakeLLM
) -> None:
    client, svc = world
    generated = client.post("/v1/knowledge-bases/hr/ask", json={"question": QUESTION}).json()
    curated = client.post(
        f"/v1/analytics/questions/{generated['answer_id']}/curated",
        json={"answer": "满一年有 5 天带薪年假，请在 OA 申请。"},
    )
    assert curated.status_code == 201, curated.text
    assert curated.json()["question"] == QUESTION
    fake.requests.clear()
    # the same question, worded a little differently, while the cache holds the old answer
    for variant in (
        QUESTION,
        "  入职满一年的员工有几天带薪年假?? ",
        "入职满一年的员工有几天带薪年假",
    ):
        body = client.post("/v1/knowledge-bases/hr/ask", json={"question": variant}).json()
        assert body["answer"] == "满一年有 5 天带薪年假，请在 OA 申请。", variant
        assert body["curated"] is True and body["cached"] is False
        assert body["citations"] == [] and body["handoff_suggested"] is False
        assert body["answer_id"]
    # and with the answer cache bypassed
    uncached = client.post(
        "/v1/knowledge-bases/hr/ask", json={"question": QUESTION, "cache": False}
    )
    assert uncached.json()["curated"] is True
    streamed = client.post(
        "/v1/knowledge-bases/hr/ask", json={"question": QUESTION, "stream": True}
    )
    parts = events(streamed.text)
    assert "".join(d["text"] for n, d in parts if n == "delta") == curated.json()["answer"]
    assert parts[-1][1]["curated"] is True and parts[-1][1]["answer_id"]
    assert not fake.requests  # no retrieval-and-LLM round for any of them
    logged = [r for r in _rows(svc) if r.curated]
    assert len(logged) == 5 and all(r.covered for r in logged)
    # listed, deleted: the question is answered as before (the cache never held the curated one)
    listed = client.get("/v1/knowledge-bases/hr/curated").json()["curated"]
    assert [c["id"] for c in listed] == [curated.json()["id"]]
    assert client.delete(f"/v1/curated/{curated.json()['id']}").status_code == 204
    after = client.post("/v1/knowledge-bases/hr/ask", json={"question": QUESTION}).json()
    assert after["curated"] is False and after["answer"] == generated["answer"]
    assert client.get("/v1/knowledge-bases/hr/curated").json()["curated"] == []
    assert client.delete(f"/v1/curated/{curated.json()['id']}").status_code == 404


def test_curating_again_replaces_and_a_conversation_records_the_turn(
    world: tuple[TestClient, Services], fake: FakeLLM
) -> None:
    client, _ = world
    first = client.post("/v1/knowledge-bases/hr/ask", json={"question": QUESTION}).json()
    for text in ("旧的回答", "新的回答"):
        made = client.post(
            f"/v1/analytics/questions/{first['answer_id']}/curated", json={"answer": text}
        )
        assert made.status_code == 201
    assert [
        c["answer"] for c in client.get("/v1/knowledge-bases/hr/curated").json()["curated"]
    ] == ["新的回答"]
    conv = client.post("/v1/conversations", json={"kb_id": "hr"}).json()
    body = client.post(
        "/v1/knowledge-bases/hr/ask", json={"question": QUESTION, "conversation_id": conv["id"]}
    ).json()
    assert body["answer"] == "新的回答" and body["message_id"]
    messages = client.get(f"/v1/conversations/{conv['id']}").json()["messages"]
    assert [m["content"] for m in messages] == [QUESTION, "新的回答"]
    # empty and oversized curated answers are refused with a reason
    empty = client.post(
        f"/v1/analytics/questions/{first['answer_id']}/curated", json={"answer": ""}
    )
    assert empty.status_code == 422


def test_normalised_questions() -> None:
    assert normalise("  年假  有几天？？ ") == normalise("年假 有几天")
    assert normalise("ＡＢＣ  Leave?") == normalise("abc leave")
    assert normalise("年假有几天") != normalise("病假有几天")


def test_with_the_log_off_nothing_is_recorded(tmp_path: Path, fake: FakeLLM) -> None:
    for client, svc in _world(tmp_path, fake, analytics={"enabled": False}):
        body = client.post("/v1/knowledge-bases/hr/ask", json={"question": QUESTION}).json()
        assert body["answer"] and body["answer_id"] is None
        assert _rows(svc) == [] and _events(svc, "answer.given") == []
        missing = client.post("/v1/answers/" + "0" * 32 + "/feedback", json={"rating": "up"})
        assert missing.status_code == 404
