"""A question the knowledge base does not cover gets the fixed "not covered" answer, without any
LLM call and without citations, on every way of asking; an answerable one is answered. /search
reports each hit's absolute relevance; the threshold is per knowledge base (PATCH, calibrate).
The tests' fake embedder has no fitted model: its knowledge bases refuse once calibrated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.generation.llm import LLMClient
from rag.qa.prompt import NOT_COVERED
from rag.services import Services
from tests.conftest import FIXTURES, FakeLLM, make_settings, upload, wait_document
from tests.llm_script import events

OFF_TOPIC = "红烧肉怎么做才能肥而不腻？"
ANSWERABLE = "入职满一年的员工有几天带薪年假？"


@pytest.fixture
def llm() -> FakeLLM:
    return FakeLLM()


def _client(
    tmp_path: Path, llm: FakeLLM, *, calibrate: bool = True, **retrieval: object
) -> Iterator[TestClient]:
    cfg = make_settings(tmp_path / "data", retrieval=retrieval)
    svc = Services.create(cfg, llm=LLMClient(cfg.llm, transport=httpx.MockTransport(llm.handler)))
    with TestClient(create_app(services=svc, warm_up=False)) as c:
        c.post("/v1/knowledge-bases", json={"name": "hr"})
        doc = upload(c, "hr", "handbook.md", (FIXTURES / "员工手册.md").read_bytes())
        assert wait_document(c, "hr", doc.json()["id"])["status"] == "ready"
        if calibrate:
            out = c.post("/v1/knowledge-bases/hr/relevance/calibrate", json={})
            assert out.status_code == 200, out.text
        yield c
    svc.close()


@pytest.fixture
def client(tmp_path: Path, llm: FakeLLM) -> Iterator[TestClient]:
    yield from _client(tmp_path, llm)


def _ask(client: TestClient, question: str, **extra: object) -> httpx.Response:
    return client.post(
        "/v1/knowledge-bases/hr/ask", json={"question": question, "cache": False, **extra}
    )


def test_off_topic_is_refused_without_llm(client: TestClient, llm: FakeLLM) -> None:
    body = _ask(client, OFF_TOPIC).json()
    assert body["covered"] is False
    assert body["answer"] == NOT_COVERED["zh"]
    assert body["citations"] == [] and body["grounded"] is False
    assert llm.requests == []

    english = _ask(client, "How do I bake sourdough bread at home?").json()
    assert english["covered"] is False and english["answer"] == NOT_COVERED["en"]
    assert llm.requests == []


def test_answerable_question_reaches_the_llm(client: TestClient, llm: FakeLLM) -> None:
    body = _ask(client, ANSWERABLE).json()
    assert body["covered"] is True
    assert body["citations"] and body["answer"] == llm.reply
    assert len(llm.requests) == 1


def test_streamed_and_openai_refusals(client: TestClient, llm: FakeLLM) -> None:
    streamed = _ask(client, OFF_TOPIC, stream=True)
    parsed = events(streamed.text)
    text = "".join(data["text"] for name, data in parsed if name == "delta")
    assert text == NOT_COVERED["zh"]
    assert ("citations", []) in parsed
    assert parsed[-1][0] == "done" and parsed[-1][1]["covered"] is False

    chat = {"model": "kb:hr", "messages": [{"role": "user", "content": OFF_TOPIC}]}
    whole = client.post("/v1/chat/completions", json=chat).json()
    assert whole["choices"][0]["message"]["content"] == NOT_COVERED["zh"]
    assert whole["answer_flags"]["covered"] is False and whole["citations"] == []
    chunks = client.post("/v1/chat/completions", json={**chat, "stream": True})
    last = [d for _, d in events(chunks.text) if d != "[DONE]" and d.get("choices")][-1]
    assert last["answer_flags"]["covered"] is False
    assert llm.requests == []


def test_search_reports_relevance(client: TestClient) -> None:
    def best(query: str) -> float:
        hits = client.post("/v1/knowledge-bases/hr/search", json={"query": query}).json()
        relevance = [hit["relevance"] for hit in hits["results"]]
        assert all(0.0 <= r <= 1.0 for r in relevance)
        return max(relevance, default=0.0)

    assert best(ANSWERABLE) > best(OFF_TOPIC)


def test_uncalibrated_knowledge_base_of_an_unfitted_model_never_refuses(
    tmp_path: Path, llm: FakeLLM
) -> None:
    for c in _client(tmp_path, llm, calibrate=False):
        assert c.get("/v1/knowledge-bases/hr").json()["relevance_threshold"] is None
        assert _ask(c, OFF_TOPIC).json()["covered"] is True
        assert len(llm.requests) == 1


def test_threshold_per_knowledge_base(client: TestClient, llm: FakeLLM) -> None:
    calibrated = client.get("/v1/knowledge-bases/hr").json()["relevance_threshold"]
    assert 0.0 < calibrated <= 1.0
    out = client.patch("/v1/knowledge-bases/hr", json={"relevance_threshold": 0.0})
    assert out.status_code == 200 and out.json()["relevance_threshold"] == 0.0
    assert _ask(client, OFF_TOPIC).json()["covered"] is True  # 0 never refuses
    assert len(llm.requests) == 1

    assert (
        client.patch("/v1/knowledge-bases/hr", json={"relevance_threshold": 1.5}).json()["error"][
            "code"
        ]
        == "validation_error"
    )
    client.patch("/v1/knowledge-bases/hr", json={"relevance_threshold": calibrated})
    assert _ask(client, OFF_TOPIC).json()["covered"] is False
    reset = client.patch("/v1/knowledge-bases/hr", json={"relevance_threshold": None})
    assert reset.json()["relevance_threshold"] is None


def test_calibrate_from_headings_and_golden(client: TestClient) -> None:
    out = client.post("/v1/knowledge-bases/hr/relevance/calibrate", json={}).json()
    assert out["source"] == "headings" and out["positives"] >= 4 and out["applied"] is True
    assert out["previous"] == out["threshold"]  # the fixture calibrated it the same way
    assert 0.0 <= out["threshold"] <= 1.0 and out["answered"] >= 0.9
    assert client.get("/v1/knowledge-bases/hr").json()["relevance_threshold"] == out["threshold"]

    golden = [{"question": ANSWERABLE}, {"question": "差旅住宿标准是多少？"}]
    dry = client.post(
        "/v1/knowledge-bases/hr/relevance/calibrate",
        json={"golden": golden, "negatives": [OFF_TOPIC], "apply": False, "min_answered": 1.0},
    ).json()
    assert dry["source"] == "golden" and dry["positives"] == 2 and dry["negatives"] == 1
    assert dry["answered"] == 1.0 and dry["applied"] is False
    bad = client.post("/v1/knowledge-bases/hr/relevance/calibrate", json={"golden": [{"q": 1}]})
    assert bad.status_code == 422


def test_refusal_can_be_turned_off(tmp_path: Path, llm: FakeLLM) -> None:
    for c in _client(tmp_path, llm, relevance_refusal=False):
        assert _ask(c, OFF_TOPIC).json()["covered"] is True
        assert len(llm.requests) == 1
